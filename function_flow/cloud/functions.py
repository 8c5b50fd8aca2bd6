"""Cloud Functions entry points: start, scheduler, external_event_listener, poller,
callback (callback.py: asynchronous answers over HTTP) and control (control.py:
pause, resume or cancel a run over HTTP).

Each one translates its delivery (delivery.py knows every shape Google
Cloud uses) and calls one engine operation: `engine.start`, `engine.handle`,
`engine.complete_trigger` or `engine.poll`. The same `main.py` therefore
deploys as 1st gen background functions, 2nd gen CloudEvent functions, or
HTTP endpoints behind Pub/Sub push subscriptions.

Bad input never becomes an endless redelivery loop (docs/design.md, invariant 6):
a malformed, unknown or duplicate message is logged and acknowledged, and a
bad HTTP request gets a 4xx JSON error. A store or bus failure is not
acknowledged (raised, or 503/500 over HTTP), so Pub/Sub delivers again
instead of the run stalling; a task body's own exception never gets here,
the engine records it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from function_flow import callbacks, futures, signing, tracing
from function_flow.cloud import delivery
from function_flow.cloud.callback import make_callback
from function_flow.cloud.control import make_control
from function_flow.cloud.delivery import HttpError, NotAnEnvelope, Rejected
from function_flow.core import starts
from function_flow.core.messages import Message
from function_flow.core.output import labelled
from function_flow.errors import ConfigurationError, RecordTooLargeError, RunConflictError
from function_flow.log_format import install_for_functions as log_like_a_cloud_function
from function_flow.remote.web import RUN_ID_HEADER

if TYPE_CHECKING:
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.cloud.functions")

__all__ = ["make_start", "make_scheduler", "make_external_event_listener", "make_poller",
           "make_callback", "make_control", "RUN_ID_HEADER"]


def make_scheduler(job: "Job") -> Callable[..., Any]:
    """Build the scheduler: one message names one task attempt to advance."""
    log_like_a_cloud_function()

    def scheduler(event: Any, context: Any = None) -> Any:
        try:
            data, attributes = delivery.signed_pubsub_payload(
                event, context, delivery.receiver_keys(job.backend))
            message = Message.from_json(data)
        except ConfigurationError as exc:  # no key: redelivered once it is set
            return delivery.not_done(event, "scheduler", exc)
        except NotAnEnvelope as exc:
            logger.warning("scheduler: bad request: %s", exc)
            return {"error": str(exc)}, 400
        except (Rejected, ValueError, RecursionError) as exc:
            # RecursionError: Message.from_json parsing `[[[[...` data.
            logger.warning("scheduler: message rejected and acknowledged: %s", exc)
            return delivery.acknowledge(event, "rejected")
        try:
            with tracing.attached(attributes), labelled(  # the claim links to the sender
                    job=job.name, run_id=message.run_id, task_id=message.task_id,
                    attempt=message.attempt):
                outcome = job.engine.handle(message)
                logger.info("scheduler: run %s task %s attempt %d: %s", message.run_id,
                            message.task_id, message.attempt, outcome)  # in the run's trace
        except Exception as exc:
            return delivery.not_done(event, f"scheduler: {message}", exc)
        return delivery.acknowledge(event, outcome)

    return scheduler


def make_external_event_listener(job: "Job") -> Callable[..., Any]:
    """Build the listener: completes asynchronous tasks from external events."""
    log_like_a_cloud_function()

    def external_event_listener(event: Any, context: Any = None) -> Any:
        return handle_event(job, event, context)

    return external_event_listener


def handle_event(job: "Job", event: Any, context: Any = None) -> Any:
    """One external event, in any delivery shape: complete the task it names.

    The external event listener's whole body; the embedded backend's
    hosted remote functions (remote/hosting.py) deliver their answers here.
    A signed event (a `remote.function`'s answer) must verify. An unsigned
    one is taken as an outside event: Cloud Storage notifications, BigQuery
    and Dataflow jobs, and remote functions written for Function Flow cannot
    sign; what they complete, they name by an unguessable id.
    """
    try:
        data, attributes = delivery.pubsub_payload(event)
        if signing.is_signed(attributes):
            delivery.check_signature(data, attributes, signing.ATTRIBUTES,
                                     delivery.receiver_keys(job.backend),
                                     at=delivery.publish_time(event, context))
        # A Cloud Storage notification without payload says it all in
        # its attributes (payloadFormat NONE): an empty body then.
        payload = {} if attributes and not data.strip() else \
            delivery.parse_json(data, "external event")
    except ConfigurationError as exc:  # no key: redelivered once it is set
        return delivery.not_done(event, "external event listener", exc)
    except NotAnEnvelope as exc:
        logger.warning("external event listener: bad request: %s", exc)
        return {"error": str(exc)}, 400
    except (Rejected, ValueError) as exc:
        logger.warning("external event rejected and acknowledged: %s", exc)
        return delivery.acknowledge(event, "rejected")
    if not isinstance(payload, dict):
        logger.warning("external event is %s, not a JSON object; acknowledged",
                       delivery.kind_of(payload))
        return delivery.acknowledge(event, "rejected")
    try:
        with tracing.attached(attributes):
            outcome = _complete_from_event(job, futures.Event(payload, attributes))
    except Exception as exc:
        return delivery.not_done(event, "external event listener", exc)
    return delivery.acknowledge(event, outcome)


def _complete_from_event(job: "Job", payload: "futures.Event") -> str:
    """Find the Future class that recognises `payload` and complete its task.

    A parser's transient error (the Dataflow API unreachable) propagates, so
    the event is delivered again; any other error is logged and acknowledged.
    """
    failed = False
    for future_class in futures.Future.all_futures:
        parser = future_class.handle_message  # a classmethod, or a staticmethod
        if getattr(parser, "__func__", parser) is futures.Future.handle_message.__func__:
            continue  # a base class of the user's Futures: it recognises nothing
        try:
            waited = _waited_for(job, future_class, payload)
            if waited is not None:
                return waited
            result = parser(payload)
        except Exception as exc:  # a user's parser choking on a foreign event
            if delivery.is_transient(exc):
                raise
            # Another class may still be the one this event is for.
            logger.warning("external event: %s.handle_message failed; trying the other "
                           "Future classes", future_class.__name__, exc_info=True)
            failed = True
            continue
        if result is None:
            continue
        if isinstance(result, futures.PathCreated):
            return job.engine.complete_watches(result.path)
        if not isinstance(result.trigger_id, str) or not result.trigger_id:
            logger.warning("external event matched %s but has no trigger id; acknowledged",
                           future_class.__name__)
            return "rejected"
        error = None if result.is_success else str(result.error or "failed")
        return job.engine.complete_trigger(result.trigger_id, ok=bool(result.is_success),
                                           value=result.result, error=error)
    if failed:
        logger.warning("external event matched no Future class, and one failed; acknowledged")
        return "rejected"
    logger.info("external event matched no Future class; acknowledged")
    return "ignored"


def _waited_for(job: "Job", future_class: type, payload: "futures.Event") -> str | None:
    """"unknown_trigger" when the class can name the event's trigger without
    its parser (DataFlowFuture.trigger_id_of: the parser asks an API) and
    nothing waits for it; else None, and the parser decides."""
    trigger_of = getattr(future_class, "trigger_id_of", None)
    trigger_id = trigger_of(payload) if trigger_of is not None else None
    if not isinstance(trigger_id, str) or not trigger_id \
            or job.engine.store.get_trigger(trigger_id) is not None:
        return None
    logger.info("external event for %s %r: no task waits for it; acknowledged",
                future_class.__name__, trigger_id)
    return "unknown_trigger"


def make_poller(job: "Job") -> Callable[..., Any]:
    """Build the poller: due timers, expired leases and lost messages.

    Cloud Scheduler calls it (over HTTP, or through a Pub/Sub topic) every
    minute; the policy is the engine's (core/recovery.py). What the call
    carries does not matter: every call is one tick.
    """
    log_like_a_cloud_function()

    def poller(*args: Any, **kwargs: Any) -> Any:
        del kwargs
        event = args[0] if args else None
        try:
            report = job.engine.poll()
        except Exception as exc:
            return delivery.not_done(event, "poller", exc)
        logger.info("poller: %d due timer(s) published, %d wait(s) for objects completed, "
                    "%d live run(s) checked", report.timers_published,
                    report.watches_completed, report.runs_checked)
        if delivery.is_http_request(event):
            return {"runs_checked": report.runs_checked,
                    "timers_published": report.timers_published}, 200
        return None

    return poller


def make_start(job: "Job") -> Callable[..., Any]:
    """Build the HTTP start function: JSON body = arguments; answers the run id.

    A caller-chosen run id (header X-Function-Flow-Run-Id) makes a retried
    request idempotent: the second call answers the run the first created;
    the same id with other arguments is refused with a 409. The answer names
    the run in its body and in the header X-Function-Flow-Run-Id.
    A header X-Function-Flow-Callback-Url gives the run a completion
    callback (callbacks.py); a header, because the body is the arguments.
    Every bad request gets a 4xx with a JSON error; only a transient backend
    error is a 503 (worth retrying with the same run id).
    """
    log_like_a_cloud_function()

    def start(request: Any) -> Any:
        try:
            args = delivery.run_arguments(request)
            run_id = _run_id_of(request)
            callback_url = _callback_url_of(request)
        except HttpError as exc:
            logger.warning("start: bad request (%d): %s", exc.status, exc)
            return exc.answer()
        try:
            # The engine, not job.start(): job.id is shared by every request
            # this instance serves at once.
            with tracing.attached(request.headers):  # a traced caller: the run links to it
                started, created = job.engine.start(args, run_id=run_id,
                                                    callback_url=callback_url)
        except RunConflictError as exc:  # the run id names another start (core/starts.py)
            logger.warning("start: refused (409): %s", exc)
            _name_the_run(exc.run_id)
            return {"error": str(exc), "run_id": exc.run_id}, 409
        except RecordTooLargeError as exc:
            return {"error": str(exc)}, 413
        except (TypeError, ValueError, RecursionError) as exc:
            # The engine refusing the arguments (not JSON-storable, over
            # MAX_VALUE_BYTES, nested too deeply to serialise).
            return {"error": str(exc) or "run arguments are nested too deeply"}, 400
        except Exception as exc:
            if delivery.is_transient(exc):
                logger.warning("start: transient backend error: %s", exc)
                return {"error": f"backend unavailable, retry later (with the same "
                                 f"{RUN_ID_HEADER} to keep it to one run): {exc}"}, 503
            logger.error("start: unexpected error", exc_info=exc)
            return {"error": f"internal error ({type(exc).__name__}: {exc}); the "
                             "function's logs have the traceback"}, 500
        logger.info("start: run %s %s", started, "created" if created else "already exists")
        _name_the_run(started)
        return {"run_id": started, "created": created}, 200

    return start


def _name_the_run(run_id: str) -> None:
    """The answer's header X-Function-Flow-Run-Id (faas-flow's X-Faas-Flow-Reqid),
    besides the body's run_id; the answer stays (body, status) for callers in
    Python, and a call outside a request (a test's dict) gets no header."""
    import flask

    if flask.has_request_context():
        @flask.after_this_request
        def header(response: Any) -> Any:
            response.headers[RUN_ID_HEADER] = run_id
            return response


def _callback_url_of(request: Any) -> str | None:
    url = request.headers.get(callbacks.CALLBACK_URL_HEADER) or None
    if url is None:
        return None
    try:
        callbacks.check_start(url)
    except ValueError as exc:
        raise HttpError(400, f"{callbacks.CALLBACK_URL_HEADER}: {exc}") from None
    except ConfigurationError as exc:  # the deployment's fault, not the caller's
        logger.error("start: a callback was asked for, but %s", exc)
        raise HttpError(501, f"this deployment cannot sign callbacks: {exc}") from None
    return url


def _run_id_of(request: Any) -> str | None:
    run_id = request.headers.get(RUN_ID_HEADER) or None
    if run_id is not None and not starts.RUN_ID.fullmatch(run_id):
        raise HttpError(400, f"{RUN_ID_HEADER} must be {starts.RUN_ID_RULE}")
    return run_id
