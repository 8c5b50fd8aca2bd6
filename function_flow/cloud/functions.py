"""Cloud Functions entry points: start, scheduler, external_event_listener, poller.

Each one accepts every way Google Cloud delivers to it, so the same
`main.py` deploys as a 1st gen background function, a 2nd gen CloudEvent
function, or a plain HTTP endpoint behind a Pub/Sub push subscription:

- `fn(event, context)` with `event = {"data": base64, "attributes": {...}}`
- `fn(cloud_event)` whose data is `{"message": {...}, "subscription": ...}`
- `fn(request)`, a flask request whose JSON body is a push envelope.

A push subscription may also target an event or cloudevent function:
functions-framework turns a raw push envelope (one with "subscription" and
"message.messageId") into the first or second form before calling us.

Bad input never becomes an endless redelivery loop (DESIGN.md invariant 6):
a malformed, unknown or duplicate message is logged and acknowledged. A
store or bus failure is raised (logged as transient, or with its traceback
when unexpected), so Pub/Sub delivers again instead of the run stalling; a
task body's own exception never gets here, the engine records it.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

from function_flow.errors import FunctionFlowError, TransientBackendError
from function_flow.core.records import Message

if TYPE_CHECKING:
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.cloud.functions")

RUN_ID_HEADER = "X-Function-Flow-Run-Id"


class Rejected(ValueError):
    """The delivery is not a message we can act on; acknowledge and drop it."""


def _is_http_request(obj: Any) -> bool:
    return hasattr(obj, "get_json") and hasattr(obj, "headers")


def pubsub_payload(event: Any) -> tuple[bytes, dict[str, str]]:
    """Extract (data, attributes) from any of the three delivery forms."""
    if _is_http_request(event):
        envelope = event.get_json(silent=True)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("message"), dict):
            raise Rejected("request body is not a Pub/Sub push envelope")
        message = envelope["message"]
    elif isinstance(event, dict):
        message = event.get("message", event) if "data" not in event else event
    elif hasattr(event, "data"):  # a CloudEvent
        data = event.data
        message = data.get("message") if isinstance(data, dict) else None
        if not isinstance(message, dict):
            raise Rejected("CloudEvent carries no Pub/Sub message")
    else:
        raise Rejected(f"unsupported event type {type(event).__name__}")
    raw = message.get("data", "")
    if isinstance(raw, (bytes, bytearray)):
        raw = raw.decode("ascii", "replace")
    try:
        data = base64.b64decode(raw or "", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(f"message data is not base64: {exc}") from exc
    attributes = message.get("attributes") or {}
    return data, dict(attributes) if isinstance(attributes, dict) else {}


class _CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, the form Cloud Logging parses into fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"severity": record.levelname, "message": record.getMessage(),
                 "logger": record.name}
        if record.exc_info:
            entry["message"] += "\n" + self.formatException(record.exc_info)
        return json.dumps(entry)


def _log_like_a_cloud_function() -> None:
    """Make INFO logs of function_flow visible when running as a function.

    Python drops INFO records by default, which would hide every "run X task
    Y: succeeded" line. functions-framework sets FUNCTION_TARGET (so does the
    Cloud Functions runtime); then, unless the application configured
    logging itself, function_flow logs JSON lines to stdout.
    """
    if not os.environ.get("FUNCTION_TARGET"):
        return
    package_logger = logging.getLogger("function_flow")
    if package_logger.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_CloudLoggingFormatter())
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)


def _ack(event: Any, outcome: str, status: int = 200) -> Any:
    """What to return: a JSON response for HTTP pushes, None otherwise."""
    if _is_http_request(event):
        return {"outcome": outcome}, status
    return None


def _is_transient(exc: BaseException) -> bool:
    """Errors worth a redelivery: the store or Pub/Sub may answer next time."""
    if isinstance(exc, TransientBackendError):
        return True
    try:
        from function_flow.bus.pubsub import transient_errors
    except ImportError:  # google-cloud-pubsub not installed: embedded only
        return False
    return isinstance(exc, transient_errors())


def _raise_for_redelivery(what: str, exc: BaseException) -> None:
    """Log an error that must not be acknowledged; the caller re-raises it.

    Raising is how a Pub/Sub-triggered function says "not done": Pub/Sub
    (or functions-framework, answering 500 to a push) delivers again later.
    """
    if _is_transient(exc):
        logger.warning("%s: transient backend error, message will be redelivered: %s",
                       what, exc)
    else:
        logger.exception("%s: unexpected error, message will be redelivered", what)


def make_scheduler(job: "Job") -> Callable[..., Any]:
    """Build the scheduler: one message names one task attempt to advance."""
    _log_like_a_cloud_function()

    def scheduler(event: Any, context: Any = None) -> Any:
        del context
        try:
            data, _ = pubsub_payload(event)
            message = Message.from_json(data)
        except (Rejected, ValueError) as exc:
            if _is_http_request(event) and isinstance(exc, Rejected) \
                    and "push envelope" in str(exc):
                logger.warning("scheduler: bad request: %s", exc)
                return {"error": str(exc)}, 400
            logger.warning("scheduler: message rejected and acknowledged: %s", exc)
            return _ack(event, "rejected")
        try:
            outcome = job.engine.handle(message)
        except Exception as exc:
            _raise_for_redelivery(f"scheduler: {message}", exc)
            raise
        logger.info("scheduler: run %s task %s attempt %d: %s", message.run_id,
                    message.task_id, message.attempt, outcome)
        return _ack(event, outcome)

    return scheduler


def make_external_event_listener(job: "Job") -> Callable[..., Any]:
    """Build the listener: completes asynchronous tasks from external events."""
    _log_like_a_cloud_function()

    def external_event_listener(event: Any, context: Any = None) -> Any:
        del context
        try:
            data, _ = pubsub_payload(event)
            payload = json.loads(data)
        except (Rejected, ValueError) as exc:
            logger.warning("external event rejected and acknowledged: %s", exc)
            return _ack(event, "rejected")
        if not isinstance(payload, dict):
            logger.warning("external event is not a JSON object; acknowledged")
            return _ack(event, "rejected")
        try:
            outcome = _complete_from_event(job, payload)
        except Exception as exc:
            _raise_for_redelivery("external event listener", exc)
            raise
        return _ack(event, outcome)

    return external_event_listener


def _complete_from_event(job: "Job", payload: dict[str, Any]) -> str:
    """Find the Future class that recognises `payload` and complete its task."""
    from function_flow import futures

    for future_class in futures.Future.all_futures:
        try:
            result = future_class.handle_message(payload)
        except Exception:  # a user's parser choking on a foreign event
            logger.warning("external event: %s.handle_message failed; acknowledged",
                           future_class.__name__, exc_info=True)
            return "rejected"
        if result is None:
            continue
        if not isinstance(result.trigger_id, str) or not result.trigger_id:
            logger.warning("external event matched %s but has no trigger id; acknowledged",
                           future_class.__name__)
            return "rejected"
        error = None if result.is_success else str(result.error or "failed")
        return job.engine.complete_trigger(result.trigger_id, ok=bool(result.is_success),
                                           value=result.result, error=error)
    logger.info("external event matched no Future class; acknowledged")
    return "ignored"


def make_poller(job: "Job") -> Callable[..., Any]:
    """Build the poller: due timers, expired leases and lost messages.

    Cloud Scheduler calls it (over HTTP, or through a Pub/Sub topic) every
    minute; the policy is the engine's (core/recovery.py): due timers,
    expired leases, joins nobody queued, messages that never arrived.
    """
    _log_like_a_cloud_function()

    def poller(*args: Any, **kwargs: Any) -> Any:
        del kwargs
        report = job.engine.poll()
        logger.info("poller: %d due timer(s) published, %d live run(s) checked",
                    report.timers_published, report.runs_checked)
        if args and _is_http_request(args[0]):
            return {"runs_checked": report.runs_checked,
                    "timers_published": report.timers_published}, 200
        return None

    return poller


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")


def make_start(job: "Job") -> Callable[..., Any]:
    """Build the HTTP start function: JSON body = arguments; answers the run id.

    A caller-chosen run id (header X-Function-Flow-Run-Id) makes a retried
    request idempotent: the second call answers the run the first created.
    """
    _log_like_a_cloud_function()

    def start(request: Any) -> Any:
        raw = request.get_data(cache=True) if hasattr(request, "get_data") else b""
        if raw and raw.strip():
            try:
                args = json.loads(raw)
            except ValueError as exc:
                return {"error": f"request body is not JSON: {exc}"}, 400
        else:
            args = {}
        if not isinstance(args, dict):
            return {"error": "run arguments must be a JSON object, got "
                             f"{type(args).__name__}"}, 400
        run_id = request.headers.get(RUN_ID_HEADER) or None
        if run_id is not None and not _RUN_ID.fullmatch(run_id):
            return {"error": f"{RUN_ID_HEADER} must be 1-200 letters, digits, "
                             "'.', '_', ':' or '-', starting with a letter or digit"}, 400
        try:
            # The engine, not job.start(): job.id is shared by every request
            # this instance serves at once.
            started, created = job.engine.start(args, run_id=run_id)
        except (TypeError, ValueError) as exc:
            return {"error": str(exc)}, 400
        except Exception as exc:
            if _is_transient(exc):
                logger.warning("start: transient backend error: %s", exc)
                return {"error": f"backend unavailable, retry later: {exc}"}, 503
            if isinstance(exc, FunctionFlowError):
                logger.error("start: %s", exc)
                return {"error": str(exc)}, 500
            raise
        logger.info("start: run %s %s", started, "created" if created else "already exists")
        return {"run_id": started, "created": created}, 200

    return start
