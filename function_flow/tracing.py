"""One trace per run (OpenTelemetry): the spans function_flow opens, and where they go.

A run is one trace, however many functions and hours it spans:

    run <job>            started by `start`; its W3C traceparent is kept in the run record
    ├── claim <task>     one per attempt that runs (consumer): parent the run's span, link
    │   │                to the step that sent the message (the context the message carried)
    │   ├── body <task>  the task's body; a failing attempt's is an error with the exception
    │   │   └── call <task>   a synchronous remote call (client: OpenFaaS, HTTP)
    │   └── send <task>  an asynchronous one (producer: Pub/Sub, OpenFaaS async)
    │       └── remote <function>   the remote function, in its own process
    └── complete <task>  an external event's outcome (the listener, the callback)

Every claim hangs from the run's stored context, not from the message that
queued it (docs/design.md, "Tracing"): a run outlives its root span by
hours, and a chain of 1,000 tasks would nest 1,000 deep. The link says
which step sent the message, as OpenTelemetry's messaging conventions do.

The context travels as W3C `traceparent` (opentelemetry.propagate) in the
Pub/Sub attributes of every message (bus/pubsub.py's Topic) and the headers
of every HTTP call (remote/web.py); receivers extract it (`attached`, and
the remote function's `serving`).

Off by default: with no TracerProvider configured, OpenTelemetry's API is a
no-op and none of this costs more than a few attribute lookups; no
traceparent is stored or sent. An application that sets its own provider
gets function_flow's spans in it. FUNCTION_FLOW_TRACING=console|otlp|gcp
makes `configure` install one (the SDK and exporters: the `tracing` extra);
that set-up is tracing_setup.py's, its names importable from here too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, TypeVar

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

# Where spans go, and the names that say so: re-exported, as they were defined here.
from function_flow.tracing_setup import (EXTRA, FLUSH_TIMEOUT_MILLIS, MODES, PACKAGES,  # noqa: F401
                                         VARIABLE, configure, flush, flushed, mode_of,
                                         provider_for)

if TYPE_CHECKING:
    from function_flow.core.definition import Call
    from function_flow.core.ports import Request
    from function_flow.core.records import RunRecord, Trigger

logger = logging.getLogger("function_flow.tracing")

#: Span attributes (OpenTelemetry's convention: a namespace, then the name).
JOB, RUN_ID, TASK_ID, ATTEMPT = ("function_flow.job", "function_flow.run_id",
                                 "function_flow.task_id", "function_flow.attempt")
JOB_ID, CALL, OUTCOME = "function_flow.job_id", "function_flow.call", "function_flow.outcome"
_W3C = TraceContextTextMapPropagator()  # the stored form, whatever OTEL_PROPAGATORS says
#: The provider function_flow's spans go to instead of the global one (tests).
_provider: Any = None
_tracer: tuple[Any, Any] = (None, None)
F = TypeVar("F", bound=Callable[..., Any])


# ------------------------------------------------------------- the tracer

#: Whether OpenTelemetry's variable names a provider class (read at start, as
#: OpenTelemetry reads it once, at the first get_tracer_provider()).
_PROVIDER_NAMED = "OTEL_PYTHON_TRACER_PROVIDER" in os.environ


def _current_tracer() -> trace.Tracer:
    global _tracer
    provider = _provider or trace.get_tracer_provider()
    cached_for, tracer = _tracer
    if cached_for is not provider:
        tracer = provider.get_tracer("function_flow")
        _tracer = (provider, tracer)
    return tracer


def recording() -> bool:
    """Whether spans go anywhere: a TracerProvider of the SDK (or any real one) is set.

    Asked several times per task: with none set (and none named by the
    environment), it answers without get_tracer_provider's environment look-up.
    """
    provider = _provider or getattr(trace, "_TRACER_PROVIDER", None)
    if provider is None and not _PROVIDER_NAMED:
        return False
    provider = provider or trace.get_tracer_provider()
    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


@contextlib.contextmanager
def use(provider: Any) -> Iterator[Any]:
    """Send function_flow's spans to `provider` meanwhile (tests: an in-memory exporter)."""
    global _provider
    before, _provider = _provider, provider
    try:
        yield provider
    finally:
        _provider = before


def now() -> int:
    """A span time: nanoseconds since the epoch."""
    return time.time_ns()


# ---------------------------------------------------------- propagation


def traceparent() -> str | None:
    """The current span's W3C traceparent (what a run record keeps), None without one."""
    carrier: dict[str, str] = {}
    _W3C.inject(carrier)
    return carrier.get("traceparent")


def _stored(traceparent_: str | None) -> otel_context.Context | None:
    """The context a run record stored, None when it stored none."""
    return _W3C.extract({"traceparent": traceparent_}) if traceparent_ else None


def inject(carrier: dict[str, str]) -> dict[str, str]:
    """Add the current context (traceparent, tracestate) to message attributes or
    HTTP headers, and return them; nothing when there is no valid span."""
    propagate.inject(carrier)
    return carrier


def attached(carrier: Mapping[str, str] | Any) -> Any:
    """Make the context a received message or request carried the current one.

    A receiver's: the scheduler, the listener and `start` wrap the engine
    operation in it, so its spans link to the sender, and its log lines
    carry the run's trace id (log_format) before any span of its own starts.
    """
    carried = carrier is not None and "traceparent" in carrier
    return resumed(propagate.extract(carrier) if carried else None)


def sender() -> otel_context.Context | None:
    """The current context, for an in-process bus to hand to its handler (None when
    no spans are recorded)."""
    return otel_context.get_current() if recording() else None


@contextlib.contextmanager
def resumed(context: Any) -> Iterator[None]:
    """Attach a context `sender` captured in another thread (None: nothing to do)."""
    if context is None:
        yield
        return
    token = otel_context.attach(context)
    try:
        yield
    finally:
        otel_context.detach(token)


def _link_to_current(parent: otel_context.Context | None) -> list[Link]:
    """A link to the current span (the sender's), unless it is the parent (None: the
    span's parent is the current one)."""
    current = trace.get_current_span().get_span_context()
    stored = trace.get_current_span(parent).get_span_context() if parent is not None \
        else current
    if not current.is_valid or (stored.trace_id, stored.span_id) == (current.trace_id,
                                                                    current.span_id):
        return []
    return [Link(current)]


# ---------------------------------------------------------------- spans


def starts_run(start: F) -> F:
    """Engine.start in the run's span: a new trace, linked to the caller's context.

    A new trace rather than a child of the caller's: a run is one trace of
    its own, of hours maybe, not a part of the request that started it.
    """
    @functools.wraps(start)
    def traced(engine: Any, *args: Any, **kwargs: Any) -> Any:
        name = engine.workflow.name
        new_trace = otel_context.Context()
        with _current_tracer().start_as_current_span(
                f"run {name}", context=new_trace, links=_link_to_current(new_trace),
                attributes={JOB: name}) as span:
            run_id, created = start(engine, *args, **kwargs)
            span.set_attributes({RUN_ID: run_id, "function_flow.created": created})
            return run_id, created

    return traced  # type: ignore[return-value]


def claimed(run: "RunRecord", task_id: str, attempt: int, since: int,
            act: Callable[[], str]) -> str:
    """Run `act` (the claimed attempt) in its claim span, and return its outcome.

    The span starts at `since`, before the claim's commit, and is created
    once the run is known (its stored context is the parent); a failed
    outcome makes it an error (the body span says why, or the completion
    that refused the result). Without a recording provider, no span at all:
    the no-op one still costs a context switch per attempt.
    """
    if not recording():
        return act()
    parent = _stored(run.traceparent)
    span = _current_tracer().start_span(
        f"claim {task_id}", context=parent, kind=SpanKind.CONSUMER, start_time=since,
        links=_link_to_current(parent),
        attributes={JOB: run.job_name, RUN_ID: run.run_id, TASK_ID: task_id,
                    ATTEMPT: attempt})
    with trace.use_span(span, end_on_exit=True):
        outcome = act()
        span.set_attribute(OUTCOME, outcome)
        if outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, f"attempt {attempt} failed"))
        return outcome


def body(run_id: str, task_id: str, attempt: int) -> Any:
    """The span of a task's body (the current claim's child); an exception makes it an
    error with the exception and its traceback recorded."""
    if not recording():
        return contextlib.nullcontext()
    return _current_tracer().start_as_current_span(
        f"body {task_id}", attributes={RUN_ID: run_id, TASK_ID: task_id, ATTEMPT: attempt})


@contextlib.contextmanager
def completing(store: Any, trigger: "Trigger", error: str | None) -> Iterator[None]:
    """An external event's completion of an attempt, under the run's span.

    The run is read for its stored context only while spans are recorded.
    `error`: what the event reported when it failed the attempt.
    """
    if not recording():
        yield
        return
    run = store.get_run(trigger.run_id)
    parent = _stored(run.traceparent if run is not None else None)
    with _current_tracer().start_as_current_span(
            f"complete {trigger.task_id}", context=parent, kind=SpanKind.CONSUMER,
            links=_link_to_current(parent),
            attributes={RUN_ID: trigger.run_id, TASK_ID: trigger.task_id,
                        ATTEMPT: trigger.attempt}) as span:
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, _first_line(error)))
        yield


def remote_call(call: "Call", request: "Request") -> Any:
    """The span of one remote call: `call` (client) when it answers at once, `send`
    (producer) when its answer comes later; the adapter injects it into what it sends."""
    attributes: dict[str, Any] = {RUN_ID: request.run_id, TASK_ID: request.task_id,
                                  ATTEMPT: request.attempt, JOB_ID: request.job_id,
                                  CALL: call.describe()}
    if call.kind == "pubsub":
        attributes.update({"messaging.system": "gcp_pubsub",
                           "messaging.destination.name": call.target})
    elif call.kind == "http":
        attributes["url.full"] = call.target
    kind = SpanKind.PRODUCER if call.asynchronous else SpanKind.CLIENT
    verb = "send" if call.asynchronous else "call"
    return _current_tracer().start_as_current_span(f"{verb} {request.task_id}", kind=kind,
                                                   attributes=attributes)


@contextlib.contextmanager
def serving(function: str, attributes: Mapping[str, str], job_id: str) -> Iterator[Any]:
    """A remote function's span: the child of the `send` span its request carried."""
    parent = propagate.extract(attributes) if "traceparent" in attributes else None
    with _current_tracer().start_as_current_span(
            f"remote {function}", context=parent, kind=SpanKind.CONSUMER,
            attributes={RUN_ID: attributes.get("run_id", ""),
                        TASK_ID: attributes.get("task_id", ""), JOB_ID: job_id,
                        ATTEMPT: _whole(attributes.get("attempt"))}) as span:
        yield span


def record_error(exc: BaseException) -> None:
    """Mark the current span failed by `exc` (an error caught and answered, not raised)."""
    span = trace.get_current_span()
    span.record_exception(exc)
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))


def _whole(text: str | None) -> int:
    """An attribute's whole number (0 when it is none: a request from elsewhere)."""
    return int(text) if text and text.isdigit() else 0


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else text[:300]
