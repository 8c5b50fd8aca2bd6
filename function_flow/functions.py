"""Cloud Functions entry points: start, scheduler, external_event_listener, poller.

Each one accepts every way Google Cloud delivers to it, so the same
`main.py` deploys as a 1st gen background function, a 2nd gen CloudEvent
function, or a plain HTTP endpoint behind a Pub/Sub push subscription:

- `fn(event, context)` with `event = {"data": base64, "attributes": {...}}`
- `fn(cloud_event)` whose data is `{"message": {...}, "subscription": ...}`
- `fn(request)`, a flask request whose JSON body is a push envelope.

Bad input never becomes an endless redelivery loop (DESIGN.md invariant 6):
a malformed, unknown or duplicate message is logged and acknowledged; only a
transient backend error is raised, so that Pub/Sub delivers again.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import TYPE_CHECKING, Any, Callable

from function_flow.errors import FunctionFlowError
from function_flow.records import Message

if TYPE_CHECKING:
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.functions")

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


def _ack(event: Any, outcome: str, status: int = 200) -> Any:
    """What to return: a JSON response for HTTP pushes, None otherwise."""
    if _is_http_request(event):
        return {"outcome": outcome}, status
    return None


def make_scheduler(job: "Job") -> Callable[..., Any]:
    """Build the scheduler: one message names one task attempt to advance."""

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
        outcome = job.engine.handle(message)
        logger.info("scheduler: run %s task %s attempt %d: %s", message.run_id,
                    message.task_id, message.attempt, outcome)
        return _ack(event, outcome)

    return scheduler


def make_external_event_listener(job: "Job") -> Callable[..., Any]:
    """Build the listener: completes asynchronous tasks from external events."""
    from function_flow import futures

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
        for future_class in futures.Future.all_futures:
            result = future_class.handle_message(payload)
            if result is None:
                continue
            trigger = job.engine.store.get_trigger(result.trigger_id)
            if trigger is None:
                logger.warning("external event for unknown trigger %r; acknowledged",
                               result.trigger_id)
                return _ack(event, "unknown_trigger")
            run_id, task_id, attempt = trigger
            if task_id not in job.dag.tasks:
                return _ack(event, "unknown_task")
            error = None if result.is_success else str(result.error or "failed")
            outcome = job.engine.complete(run_id, task_id, attempt, ok=result.is_success,
                                          value=result.result, error=error)
            job.engine.store.delete_trigger(result.trigger_id)
            return _ack(event, outcome)
        logger.info("external event matched no Future class; acknowledged")
        return _ack(event, "ignored")

    return external_event_listener


def make_poller(job: "Job") -> Callable[..., Any]:
    """Build the poller: finds expired leases and lost messages of live runs."""

    def poller(*args: Any, **kwargs: Any) -> Any:
        del kwargs
        recovered = 0
        for run in job.engine.store.list_runs(limit=100):
            if run.job_name == job.name and not run.status.is_final:
                job.engine.recover(run.run_id)
                recovered += 1
        if args and _is_http_request(args[0]):
            return {"runs_checked": recovered}, 200
        return None

    return poller


def make_start(job: "Job") -> Callable[..., Any]:
    """Build the HTTP start function: JSON body = arguments; answers the run id."""

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
            return {"error": "run arguments must be a JSON object"}, 400
        run_id = request.headers.get(RUN_ID_HEADER) or None
        if run_id is not None and ("/" in run_id or len(run_id) > 200):
            return {"error": f"{RUN_ID_HEADER} must be at most 200 characters, no '/'"}, 400
        try:
            started = job.start(args, run_id=run_id)
        except (FunctionFlowError, TypeError, ValueError) as exc:
            return {"error": str(exc)}, 400
        return {"run_id": started}, 200

    return start
