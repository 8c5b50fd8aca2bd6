"""The Cloud Functions a `Job` makes: `job.make_scheduler()` and the rest.

A mixin of `tasks.Job`, so that Function Flow's names stay on the job while
the job's own module stays about defining and running workflows. Building
an entry point reads nothing: a workflow file may build them before it
declares its tasks (Function Flow's PyPI example does). The definition is
validated when a function first serves a request. Each one exports its
spans before it returns (tracing.flushed: an instance may be frozen between
requests).
"""

from __future__ import annotations

from typing import Any, Callable

from function_flow.tracing import flushed


class EntryPoints:
    """Function Flow's `make_*` methods; each returns a Cloud Function."""

    def make_scheduler(self) -> Callable[..., Any]:
        """The `scheduler` Cloud Function (Pub/Sub trigger on SCHEDULE)."""
        from function_flow.cloud import functions

        return flushed(functions.make_scheduler(self))

    def make_external_event_listener(self) -> Callable[..., Any]:
        """The `external_event_listener` Cloud Function (SCHEDULE_EXTERNAL_EVENTS)."""
        from function_flow.cloud import functions

        return flushed(functions.make_external_event_listener(self))

    def make_poller(self) -> Callable[..., Any]:
        """The `poller` Cloud Function (Cloud Scheduler or HTTP)."""
        from function_flow.cloud import functions

        return flushed(functions.make_poller(self))

    def make_callback(self) -> Callable[..., Any]:
        """The `callback` Cloud Function (HTTP): asynchronous answers, e.g. OpenFaaS's.

        Deploy it where the gateway can reach it and set FUNCTION_FLOW_CALLBACK_URL
        to its URL. The job is validated on the first request.
        """
        from function_flow.cloud import functions

        return flushed(functions.make_callback(self))

    def make_start(self) -> Callable[..., Any]:
        """The `start` Cloud Function (HTTP): JSON body = run arguments."""
        from function_flow.cloud import functions

        return flushed(functions.make_start(self))

    def make_control(self) -> Callable[..., Any]:
        """The `control` Cloud Function (HTTP): pause, resume or cancel a run.

        Not public: deploy it so that only callers allowed by IAM may invoke it.
        """
        from function_flow.cloud import functions

        return flushed(functions.make_control(self))
