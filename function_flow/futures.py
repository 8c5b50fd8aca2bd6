"""Futures: what an asynchronous task returns (upstream-compatible).

A task that starts something long (a BigQuery job, a Dataflow pipeline, a
file that will appear in Cloud Storage) returns a `Future` naming a trigger
id. Its attempt stays RUNNING until the external event listener receives a
message that one of the `Future` subclasses recognises, whose `Result`
carries the same trigger id.

Subclass `Future` and implement `handle_message` to teach the listener a new
kind of event; subclasses register themselves, as in Function Flow.
"""

from __future__ import annotations

import datetime
import math
import urllib.parse
from typing import Any, ClassVar, Mapping, Optional

from function_flow import approvals
from function_flow.core.records import storable
from function_flow.core.waiting import Pending


class Result:
    """The outcome of an asynchronous task, parsed from an external event."""

    def __init__(self, trigger_id: str, is_success: bool,
                 result: Optional[Any] = None, error: Optional[Any] = None) -> None:
        self.trigger_id = trigger_id
        self.is_success = is_success
        self.result = result
        self.error = error

    def __repr__(self) -> str:
        return (f"Result(trigger_id={self.trigger_id!r}, is_success={self.is_success!r}, "
                f"result={self.result!r}, error={self.error!r})")


class Future(Pending):
    """Returned by a task whose completion arrives later as an event."""

    all_futures: ClassVar[list[type["Future"]]] = []

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.all_futures.append(cls)

    def __init__(self, trigger_id: str) -> None:
        self.trigger_id = trigger_id

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        """Return a Result if this class recognises `message`, else None."""
        raise NotImplementedError("Future subclasses implement handle_message")


class BigQueryFuture(Future):
    """Completed by a BigQuery `jobservice.jobcompleted` audit log message.

    Route those logs to the external events topic with a log sink (see the
    README); the BigQuery job id is the trigger id.
    """

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        if get_value(message, "resource.type") != "bigquery_resource":
            return None
        job = "protoPayload.serviceData.jobCompletedEvent.job.jobName"
        job_id = get_value(message, f"{job}.jobId")
        location = get_value(message, f"{job}.location")
        if get_value(message, "protoPayload.status.code"):
            return Result(trigger_id=job_id, is_success=False,
                          error=get_value(message, "protoPayload.status.message"))
        return Result(trigger_id=job_id, is_success=True,
                      result={"job_id": job_id, "location": location})


class RemoteFunctionFuture(Future):
    """Completed by a remote function's answer (Function Flow's remote tasks).

    The answer, published to the external events topic, is
    `{"status": {"code": 0, "message": "..."}, "resource": {"type":
    "remote_function_resource", "labels": {"job_id": ID}}}`; a non-zero code
    fails the attempt with the message. An answer from `remote.function`
    also carries the function's return value under "result", which then
    becomes the task's result instead of {"job_id", "message", "code"}.
    """

    RESOURCE_TYPE = "remote_function_resource"

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        if get_value(message, "resource.type") != cls.RESOURCE_TYPE:
            return None
        job_id = get_value(message, "resource.labels.job_id")
        code = get_value(message, "status.code")
        text = get_value(message, "status.message")
        if not isinstance(job_id, str) or not job_id:
            return None
        if code:
            return Result(trigger_id=job_id, is_success=False, error=text or f"code {code}")
        result = message["result"] if "result" in message \
            else {"job_id": job_id, "message": text, "code": code or 0}
        return Result(trigger_id=job_id, is_success=True, result=result)


class GCSFuture(Future):
    """Completed when an object with the given gs:// prefix exists."""

    GCS_EVENT_TYPE = "gcs_path_create"

    def __init__(self, path_prefix: str) -> None:
        super().__init__(urllib.parse.quote(path_prefix, safe=""))
        self.path_prefix = path_prefix

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        if get_value(message, "function_flow_event_type") != cls.GCS_EVENT_TYPE:
            return None
        prefix = get_value(message, "path_prefix")
        return Result(trigger_id=urllib.parse.quote(prefix, safe=""), is_success=True,
                      result=prefix)


class _NoDefault:
    def __repr__(self) -> str:
        return "<no default>"


_NO_DEFAULT: Any = _NoDefault()


class Approval(Future):
    """Waits for a person to approve or reject, with a token only they get.

        approval = futures.Approval(timeout=datetime.timedelta(days=2))
        send_mail(to, f"function-flow approve {approval.token}")
        return approval

    `token` is new and unguessable (256 bits); only its SHA-256 is stored
    (it is the trigger id), so send it now: it cannot be read back later.
    `function-flow approve TOKEN --data JSON` (or POST /approve) makes the
    data the task's result; `function-flow reject TOKEN --reason TEXT` (or
    POST /reject) fails the task with that reason, without retries.

    timeout: seconds or a timedelta this attempt waits for the decision
    (instead of the task's timeout; None: the task's timeout, else 7 days).
    When it passes, the task fails (its retries apply, and each retry sends
    a new token), unless a `default` is given: then the task succeeds with
    the default as its result (`default=None` included).
    """

    def __init__(self, timeout: float | datetime.timedelta | None = None,
                 default: Any = _NO_DEFAULT) -> None:
        self.token = approvals.new_token()
        super().__init__(approvals.token_hash(self.token))
        self.wait_seconds = _seconds(timeout)
        within = f"within {_describe(self.wait_seconds)}" if self.wait_seconds \
            else "before the task's timeout"
        if default is _NO_DEFAULT:
            self.on_timeout = {"error": f"TimeoutError: the approval was neither given nor "
                                        f"refused {within}"}
        else:
            self.on_timeout = {"result": storable("the default of an Approval", default,
                                                  allow_nan=False)}

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        """Approvals arrive through the CLI or the HTTP callback, never as events."""
        return None

    def __repr__(self) -> str:
        # Never the token: a repr ends up in logs.
        return f"Approval(trigger_id={self.trigger_id[:12]}..., wait={self.wait_seconds})"

    __str__ = __repr__


def _seconds(timeout: float | datetime.timedelta | None) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, datetime.timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, (int, float)) and not isinstance(timeout, bool):
        seconds = float(timeout)
    else:
        raise TypeError(f"Approval timeout must be seconds or a timedelta, "
                        f"got {type(timeout).__name__}")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"Approval timeout must be more than 0 seconds, got {timeout!r}")
    return seconds


def _describe(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def get_value(obj: Mapping[str, Any], keypath: str) -> Any:
    """`get_value(d, 'a.b')` is d['a']['b'], or None when any key is missing."""
    for key in keypath.split("."):
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj
