"""Exceptions raised to users of function_flow.

Every error a user can cause has its own class here, carries a message that
says what to do next, and derives from `FunctionFlowError`, so callers can
catch the whole family without catching Python's own errors.
"""


class FunctionFlowError(Exception):
    """Base class of every error raised by function_flow."""


class DefinitionError(FunctionFlowError):
    """A workflow definition is invalid (duplicate id, unknown dep, cycle...).

    Raised while the module that defines the workflow is imported, so a
    mistake is found before anything runs.
    """

    def __init__(self, message: str, task_id: str | None = None) -> None:
        super().__init__(message)
        self.task_id = task_id


class RunNotFoundError(FunctionFlowError):
    """No run with the given id exists in the configured store."""

    def __init__(self, run_id: str) -> None:
        super().__init__(
            f"no run with id {run_id!r} in this store; "
            "list runs with `function-flow status`")
        self.run_id = run_id


class RunStillActiveError(FunctionFlowError):
    """A run cannot be resumed because a live process is still executing it."""


class ConfigurationError(FunctionFlowError):
    """Settings (environment variables, Job arguments) are inconsistent."""


class TransientBackendError(FunctionFlowError):
    """The store or bus failed in a way that a later retry may fix.

    Cloud Functions entry points let this propagate so that Pub/Sub
    redelivers the message; everything else is acknowledged.
    """


class RunBlockedError(TransientBackendError):
    """The run was started with a definition that this one changes where it would go.

    Nothing of the run is advanced until the definition it started with is
    deployed again (see core/versions.py). An external event for it is
    therefore not acknowledged (a TransientBackendError: Pub/Sub delivers it
    again, an HTTP sender gets a 503), since only the event has its outcome;
    the message says what changed and what to do.
    """


class StoreUnavailableError(ConfigurationError):
    """The embedded store's database cannot be opened or created.

    A missing or read-only directory, or a file that is not a SQLite
    database. Retrying cannot fix it; the message names the path and how to
    point function_flow at a usable one.
    """


class RecordTooLargeError(FunctionFlowError):
    """A record could not be stored because it is too large for the store.

    A Firestore document holds at most 1 MiB. Retrying cannot fix it, so
    the engine fails the attempt at once with this as its error.
    """


class PayloadMissingError(FunctionFlowError):
    """A record references a large value whose blob cannot be found.

    The message names the value (which run, which task), the blob's key and
    where it was looked for.
    """

    def __init__(self, message: str, key: str) -> None:
        super().__init__(message)
        self.key = key


def transient_google_errors() -> tuple[type[BaseException], ...]:
    """The Google client errors that a later attempt may not see again.

    The one list for Firestore, Pub/Sub and the Cloud Functions entry
    points: they wrap these in TransientBackendError (or let them propagate)
    so the message is delivered again instead of the run stalling. Anything
    else (InvalidArgument, PermissionDenied, NotFound...) would fail the
    same way every time. Besides the RPC statuses: RetryError (a client's
    own retries ran out of time) and the timeout of waiting on a future (a
    publish Pub/Sub has not acknowledged yet).

    Imported here, lazily, so that importing function_flow.errors never
    loads the Google client libraries.
    """
    import concurrent.futures

    from google.api_core import exceptions as gexc

    return (gexc.ServiceUnavailable, gexc.DeadlineExceeded, gexc.InternalServerError,
            gexc.Aborted, gexc.ResourceExhausted, gexc.Unknown, gexc.GatewayTimeout,
            gexc.TooManyRequests, gexc.RetryError, concurrent.futures.TimeoutError)


class ReportedFailure(FunctionFlowError):
    """A failure an external event or a remote function reported (no exception here).

    For `retry_on`: `retry_on=(ReportedFailure,)` retries a remote task whose
    function answered with an error, or a Future whose event says it failed.
    """


class ContextError(FunctionFlowError):
    """A run context operation (`job.context`) that cannot be done as asked.

    A key that is not a short non-empty string, a value that is not JSON or
    too large, no current run, or a run that was deleted. The message names
    the key and says what to do instead.
    """


class RunEndedError(FunctionFlowError):
    """A control action (pause, resume, cancel) on a run that has already ended.

    Nothing was changed: a run's final status never changes.
    """

    def __init__(self, run_id: str, status: str, action: str) -> None:
        super().__init__(f"run {run_id} already ended ({status}): it cannot be "
                         f"{_DONE.get(action, action)}; nothing was changed")
        self.run_id = run_id
        self.status = status
        self.action = action


_DONE = {"pause": "paused", "resume": "resumed", "cancel": "cancelled"}


class RunConflictError(FunctionFlowError):
    """A start names a run id that exists, with other arguments or for another job.

    The same start again (a client or Pub/Sub retry) answers the existing
    run; a different one must not be answered with it, as if it had started
    what the caller asked for. Nothing was changed; the start function
    answers 409.
    """

    def __init__(self, run_id: str, message: str) -> None:
        super().__init__(message)
        self.run_id = run_id
