"""Remote functions hosted in this process: the embedded backend's Pub/Sub remote calls.

On Google Cloud a remote task's request goes to a topic and a deployed
function answers on the external events topic. With the embedded backend
there is no Pub/Sub, so the functions a workflow file defines answer here,
in threads of their own, and their answers go straight to the job's
external event listener (`cloud.functions.handle_event`).

How a topic finds its function (the README says the same):

- `@remote.function(topic="T")` registers itself when the file is loaded;
- a function written for Function Flow, `f(event, context)`, which
  publishes its own answer, is registered with `host("T", f)`, which is
  what `function-flow run|dev --remote T=f` does. While it runs, Pub/Sub's
  PublisherClient and google.auth.default are stood in for (stand_ins.py),
  so its answer reaches this process and nothing leaves the machine.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import functools
import json
import logging
import threading
import types
import uuid
from typing import TYPE_CHECKING, Any, Callable

from function_flow import tracing
from function_flow.core.definition import Call
from function_flow.core.ports import Request
from function_flow.errors import ConfigurationError
from function_flow.remote.pubsub import answers_later, request_attributes, request_data

if TYPE_CHECKING:
    from function_flow.bus.local import LocalBus
    from function_flow.core.engine import Engine

logger = logging.getLogger("function_flow.remote")

_hosted: dict[str, Callable[..., Any]] = {}
#: Messages this thread published, so that a hosted function that returns
#: without answering is noticed (it runs in a thread of its own).
_published = threading.local()
_hosted_lock = threading.Lock()


def host(topic: str, function: Callable[..., Any]) -> None:
    """Answer requests sent to `topic` with `function` in this process."""
    with _hosted_lock:
        _hosted[topic] = function


def hosted() -> dict[str, Callable[..., Any]]:
    """Topic -> function, for every remote function hosted here."""
    with _hosted_lock:
        return dict(_hosted)


def unhost(topic: str) -> None:
    with _hosted_lock:
        _hosted.pop(topic, None)


def pubsub_event(data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    """The `event` a 1st gen Pub/Sub-triggered Cloud Function receives."""
    return {"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": base64.b64encode(data).decode("ascii"), "attributes": attributes}


def event_context(topic: str, project: str) -> Any:
    """The `context` a 1st gen function receives (google.cloud.functions.Context's fields)."""
    return types.SimpleNamespace(
        event_id=uuid.uuid4().hex,
        timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        event_type="google.pubsub.topic.publish",
        resource={"service": "pubsub.googleapis.com",
                  "name": f"projects/{project}/topics/{topic}",
                  "type": "type.googleapis.com/google.pubsub.v1.PubsubMessage"})


def _name(function: Any) -> str:
    return getattr(function, "__name__", repr(function))


class LocalHost:
    """ports.Caller for `Call.kind == "pubsub"` on the embedded backend.

    Its functions and their answers run on a pool of its own, counted as
    `bus`'s work (LocalBus.beside): an answer that ends a run retires the
    run's leftovers there, and `job.wait` waits for the bus to be idle.
    """

    def __init__(self, project: str, events_topic: str, workers: int = 8,
                 bus: "LocalBus | None" = None) -> None:
        self.project = project
        self.events_topic = events_topic
        self._bus = bus
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="function-flow-remote")
        self._engine: Engine | None = None

    def attach(self, engine: "Engine") -> None:
        """Send answers to `engine`'s job (Backend.engine calls this)."""
        self._engine = engine

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        answers_later(call)

    def send(self, call: Call, request: Request) -> None:
        self.publish(call.target, request_data(request),
                     tracing.inject(request_attributes(request)))

    def publish(self, topic: str, data: bytes, attributes: dict[str, str]) -> None:
        """Deliver one Pub/Sub message: to the listener, or to a hosted function."""
        _published.count = getattr(_published, "count", 0) + 1
        if topic == self.events_topic:
            self._submit(self._event, data)
            return
        function = hosted().get(topic)
        if function is None:
            raise ConfigurationError(
                f"nothing answers the Pub/Sub topic {topic!r} in this process: wrap a "
                f"function with @remote.function(topic={topic!r}) in the workflow file, or "
                f"host one written for Function Flow (function-flow run --remote "
                f"{topic}=FUNCTION, or remote.host({topic!r}, function) in Python)")
        self._submit(self._run, topic, function, data, attributes)

    def _submit(self, work: Callable[..., None], *args: Any) -> None:
        task = functools.partial(work, *args)
        counted = task if self._bus is None else self._bus.beside(task)
        try:
            self._pool.submit(counted)
        except RuntimeError:
            # At interpreter exit concurrent.futures refuses new work before
            # atexit runs the bus's wait (backends.embedded), so a script that
            # called job.start() and returned would lose this request, and the
            # wait, which counts it already, would never end: a thread of its own.
            threading.Thread(target=counted, name="function-flow-remote-at-exit",
                             daemon=True).start()

    def _run(self, topic: str, function: Callable[..., Any], data: bytes,
             attributes: dict[str, str]) -> None:
        from function_flow.remote.functions import remote_function_of
        from function_flow.remote.stand_ins import google_stand_ins

        context = event_context(topic, self.project)
        remote = remote_function_of(function)
        try:
            if remote is not None:
                store = self._engine.store if self._engine is not None else None
                remote.answer(json.loads(data), attributes, context,
                                lambda message, _: self._event(json.dumps(message).encode()),
                                store)
            else:
                _published.count = 0
                with google_stand_ins(self.publish, self.project):
                    function(pubsub_event(data, attributes), context)
                if not _published.count:
                    logger.warning(
                        "remote function %s for topic %s returned without publishing; its "
                        "task waits for an answer naming job %s (or its timeout)",
                        _name(function), topic, attributes.get("job_id"))
        except Exception as exc:
            # Deployed, it would be retried or time out; here its failure is
            # known at once: it is the attempt's.
            self._fail(attributes.get("job_id"), f"{_name(function)}() for topic {topic} "
                       f"raised {type(exc).__name__}: {exc}")

    def _fail(self, job_id: str | None, error: str) -> None:
        engine = self._engine
        if engine is None or not job_id:
            logger.warning("remote function failed and nothing can be told: %s", error)
            return
        logger.warning("job %s: %s", job_id, error)
        engine.complete_trigger(job_id, ok=False, error=error)

    def _event(self, data: bytes) -> None:
        """An answer on the external events topic: what the listener would get."""
        from function_flow.cloud import functions

        engine = self._engine
        if engine is None:
            logger.warning("external event with no engine attached; dropped")
            return
        try:
            functions.handle_event(engine.workflow, pubsub_event(data, {}))  # type: ignore[arg-type]
        except Exception:
            logger.exception("external event listener failed on %r", data[:200])

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
