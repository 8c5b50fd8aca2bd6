"""Futures: what an asynchronous task returns (upstream-compatible).

A task that starts something long (a BigQuery job, a Dataflow pipeline, a
file that will appear in Cloud Storage) returns a `Future` naming a trigger
id. Its attempt stays RUNNING until the external event listener receives a
message that one of the `Future` subclasses recognises, whose `Result`
carries the same trigger id.

Subclass `Future` and implement `handle_message` to teach the listener a new
kind of event; subclasses register themselves, as in Function Flow. The
listener hands each class the message's JSON body as a dict; it is an
`Event`, whose `attributes` are the Pub/Sub message's attributes.
"""

from __future__ import annotations

import datetime
import math
import logging
import time
import urllib.parse
import uuid
from typing import Any, ClassVar, Mapping, Optional

from function_flow import approvals
from function_flow.core.values import storable
from function_flow.core.waiting import Pending

logger = logging.getLogger("function_flow.futures")


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


class PathCreated(Result):
    """An object exists at gs:// `path`: every GCSFuture waiting for a prefix of it is done.

    The listener completes all of those waits, each with its own prefix as
    the result; `trigger_id` and `result` are Function Flow's for `path`.
    """

    def __init__(self, path: str) -> None:
        super().__init__(trigger_id=urllib.parse.quote(path, safe=""), is_success=True,
                         result=path)
        self.path = path


class Event(dict):
    """An external event's JSON body, plus the Pub/Sub message's `attributes`.

    A plain dict to Function Flow's handle_message code; a Cloud Storage
    notification says what happened in its attributes only.
    """

    def __init__(self, body: Mapping[str, Any] = (),
                 attributes: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(body)
        self.attributes: dict[str, str] = dict(attributes or {})


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
    """Completed by BigQuery's audit log entry for the job (trigger id: its job id).

    Both log forms are understood (route either to the external events
    topic with a log sink, see the README):

    - the older AuditData form, `protoPayload.methodName="jobservice.jobcompleted"`
      with `protoPayload.serviceData.jobCompletedEvent`; an error is
      `protoPayload.status`;
    - the BigQueryAuditMetadata form, `protoPayload.metadata.jobChange` with
      `after == "DONE"` and `job.jobName` "projects/PROJECT/jobs/JOB_ID"; an
      error is `job.jobStatus.errorResult`. Other state changes are not a
      completion (None).

    The result is {"job_id", "location"}.
    """

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        change = get_value(message, "protoPayload.metadata.jobChange")
        if isinstance(change, Mapping):
            return cls._job_change(message, change)
        if get_value(message, "resource.type") != "bigquery_resource":
            return None
        job = "protoPayload.serviceData.jobCompletedEvent.job.jobName"
        job_id = get_value(message, f"{job}.jobId")
        if not isinstance(job_id, str) or not job_id:
            return None  # another BigQuery entry (an insert, a table read...)
        location = get_value(message, f"{job}.location")
        if get_value(message, "protoPayload.status.code"):
            return Result(trigger_id=job_id, is_success=False,
                          error=get_value(message, "protoPayload.status.message"))
        return Result(trigger_id=job_id, is_success=True,
                      result={"job_id": job_id, "location": location})

    @classmethod
    def _job_change(cls, message: Mapping[str, Any],
                    change: Mapping[str, Any]) -> Optional[Result]:
        if change.get("after") != "DONE":
            return None  # PENDING -> RUNNING and the like: not done yet
        name = get_value(change, "job.jobName")
        owner, jobs, job_id = name.rpartition("/jobs/") if isinstance(name, str) \
            else ("", "", "")
        if not owner.startswith("projects/") or not jobs or not job_id or "/" in job_id:
            logger.warning("BigQuery jobChange entry without a job name of the form "
                           "projects/PROJECT/jobs/JOB_ID (got %r); ignored", name)
            return None
        location = get_value(message, "resource.labels.location")
        error = get_value(change, "job.jobStatus.errorResult")
        if error:
            text = error.get("message") if isinstance(error, Mapping) else None
            return Result(trigger_id=job_id, is_success=False, error=text or str(error))
        return Result(trigger_id=job_id, is_success=True,
                      result={"job_id": job_id, "location": location})


class DataFlowFuture(Future):
    """Completed when the Dataflow job (trigger id: its job id) ends.

    Route Dataflow's `resource.type="dataflow_step" AND textPayload="Worker
    pool stopped."` log entries to the external events topic (see the
    README). The entry names the job (resource.labels job_id, region,
    project_id); the Dataflow API then says how it ended: JOB_STATE_DONE
    succeeds with {"job_id", "job_name", "state"}; FAILED, CANCELLED,
    DRAINED and UPDATED fail with an error naming the job and its state.
    A job still in another state (RUNNING, CANCELLING, DRAINING, its
    resources being cleaned up...) is asked again, up to
    STATUS_CHECK_RETRY_TIMES times STATUS_CHECK_SLEEP_SECS apart; then the
    attempt fails saying so (its retries, if any, run the body again).
    """

    STATUS_CHECK_RETRY_TIMES = 12
    STATUS_CHECK_SLEEP_SECS = 5.0
    DONE = "JOB_STATE_DONE"
    FAILED_STATES = ("JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_DRAINED",
                     "JOB_STATE_UPDATED")

    @classmethod
    def trigger_id_of(cls, message: Mapping[str, Any]) -> Optional[str]:
        """The job id an entry is about, read without the Dataflow API: the
        listener asks the API only when a task waits for that job."""
        labels = cls._labels(message)
        return labels["job_id"] if labels else None

    @staticmethod
    def _labels(message: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
        if get_value(message, "resource.type") != "dataflow_step":
            return None
        labels = get_value(message, "resource.labels")
        labels = labels if isinstance(labels, Mapping) else {}
        job_id, region = labels.get("job_id"), labels.get("region")
        if not isinstance(job_id, str) or not job_id or not isinstance(region, str) \
                or not region:
            logger.warning("Dataflow log entry without resource.labels.job_id and region "
                           "(labels: %r); ignored", dict(labels))
            return None
        return labels

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        labels = cls._labels(message)
        if labels is None:
            return None
        job_id, region = labels["job_id"], labels["region"]
        job_name = labels.get("job_name") or job_id
        from function_flow.services import dataflow

        what = f"Dataflow job {job_name} (id {job_id}, region {region})"
        try:
            api = dataflow.jobs()
        except dataflow.JobLookupError as exc:
            return Result(trigger_id=job_id, is_success=False, error=f"{what}: {exc}")
        state = "JOB_STATE_UNKNOWN"
        for check in range(max(1, cls.STATUS_CHECK_RETRY_TIMES)):
            if check:
                time.sleep(cls.STATUS_CHECK_SLEEP_SECS)
            try:
                job = api.get(labels.get("project_id"), region, job_id)
            except dataflow.JobLookupError as exc:
                return Result(trigger_id=job_id, is_success=False, error=str(exc))
            state = str(job.get("currentState") or "JOB_STATE_UNKNOWN")
            if state == cls.DONE:
                return Result(trigger_id=job_id, is_success=True,
                              result={"job_id": job_id, "job_name": job_name, "state": state})
            if state in cls.FAILED_STATES:
                replaced = job.get("replacedByJobId")
                by = f", replaced by job {replaced}" if replaced else ""
                return Result(trigger_id=job_id, is_success=False,
                              error=f"{what} ended {state}{by}")
        return Result(trigger_id=job_id, is_success=False, error=(
            f"{what} is still {state} after {max(1, cls.STATUS_CHECK_RETRY_TIMES)} checks "
            f"{cls.STATUS_CHECK_SLEEP_SECS:g} s apart, although its worker pool stopped; "
            "raise DataFlowFuture.STATUS_CHECK_RETRY_TIMES or STATUS_CHECK_SLEEP_SECS to "
            "wait longer"))


class GCSFuture(Future):
    """Completed when an object whose gs:// path starts with `path_prefix` exists.

    Its result is the prefix. Two ways to see the object, use either or
    both (see the README): the poller lists the prefix (google-cloud-storage
    `list_blobs`), or a Cloud Storage Pub/Sub notification (OBJECT_FINALIZE)
    arrives on the external events topic. The trigger id is unique to this
    wait, so several tasks may wait for one prefix.
    """

    GCS_EVENT_TYPE = "gcs_path_create"
    FINALIZE = "OBJECT_FINALIZE"

    def __init__(self, path_prefix: str) -> None:
        from function_flow.services.gcs import split_path

        split_path(path_prefix)  # a ValueError here fails the attempt, saying why
        super().__init__(f"gcs-{uuid.uuid4().hex}")
        self.path_prefix = path_prefix
        self.watch = path_prefix

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        """Function Flow's "gcs_path_create" event, or a Cloud Storage notification."""
        if get_value(message, "function_flow_event_type") == cls.GCS_EVENT_TYPE:
            prefix = get_value(message, "path_prefix")
            return PathCreated(prefix) if isinstance(prefix, str) and prefix else None
        attributes = getattr(message, "attributes", None) or {}
        if attributes.get("eventType") != cls.FINALIZE:
            return None
        bucket, name = attributes.get("bucketId"), attributes.get("objectId")
        if not bucket or not name:
            logger.warning("Cloud Storage notification without bucketId and objectId "
                           "attributes (%r); ignored", attributes)
            return None
        return PathCreated(f"gs://{bucket}/{name}")


class RemoteFunctionFuture(Future):
    """Completed by a remote function's reply naming the job id it was sent.

    The reply, as Function Flow's remote functions publish it:
    `{"status": {"code": 0, "message": "..."}, "resource": {"type":
    "remote_function_resource", "labels": {"job_id": ID}}}`. Code 0 (or no
    code, as proto3 JSON omits it) succeeds with {"job_id", "message",
    "code"}; any other fails with the message. A reply that also carries a
    top-level "result" succeeds with that value instead (what a function
    wrapped by function_flow answers). Anything else is not a reply (None).
    """

    RESOURCE_TYPE = "remote_function_resource"

    @classmethod
    def handle_message(cls, message: Mapping[str, Any]) -> Optional[Result]:
        if get_value(message, "resource.type") != cls.RESOURCE_TYPE:
            return None
        job_id = get_value(message, "resource.labels.job_id")
        if not isinstance(job_id, str) or not job_id:
            logger.warning("remote function reply without resource.labels.job_id; ignored")
            return None
        status = message.get("status", {})
        code = status.get("code", 0) if isinstance(status, Mapping) else None
        if isinstance(code, bool) or not isinstance(code, int):
            logger.warning("remote function reply for job %s has no integer status.code "
                           "(status: %.200r); ignored", job_id, status)
            return None
        text = status.get("message")
        if code != 0:
            return Result(trigger_id=job_id, is_success=False,
                          error=text or f"the remote function answered code {code}")
        result = message["result"] if "result" in message else \
            {"job_id": job_id, "message": text, "code": code}
        return Result(trigger_id=job_id, is_success=True, result=result)


class GCSPoller:
    """Function Flow's GCSPoller is not needed here, and says so when used.

    A GCSFuture records the prefix it waits for in the same transaction as
    the wait, and `job.make_poller()` checks it, so there is nothing to
    register, deregister or poll separately.
    """

    ADVICE = ("futures.GCSPoller is not needed with function_flow: a GCSFuture registers "
              "its prefix itself, and the `poller` function (job.make_poller()) checks it; "
              "deploy that instead of a GCSPoller function")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(self.ADVICE)

    @classmethod
    def register_path_prefix(cls, path_prefix: str, db: Any = None) -> None:
        raise NotImplementedError(cls.ADVICE)

    @classmethod
    def deregister_path_prefix(cls, path_prefix: str, db: Any = None) -> None:
        raise NotImplementedError(cls.ADVICE)


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
        raise ValueError(f"Approval timeout must be a finite number of seconds greater "
                         f"than 0, got {timeout!r}")
    return seconds


def _describe(seconds: float) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} second{'' if seconds == 1 else 's'}"


def get_value(obj: Mapping[str, Any], keypath: str) -> Any:
    """`get_value(d, 'a.b')` is d['a']['b'], or None when any key is missing."""
    for key in keypath.split("."):
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


#: Function Flow's name for get_value.
_get_value = get_value
