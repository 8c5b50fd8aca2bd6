"""Task tokens: SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat equivalents.

A `.waitForTaskToken` Task visit waits as an approval does
(function_flow/approvals.py): the token is 256 random bits, only its hash
is stored, and it works once. `send_success` completes the visit with the
output as the task's result; `send_failure` fails it with an Error and a
Cause (Retry and Catch apply); `send_heartbeat` says the worker is alive.
The same from the command line or over HTTP: `function-flow approve TOKEN
--data JSON`, `reject TOKEN --reason '{"Error": ..., "Cause": ...}'` and
`heartbeat TOKEN`; POST /approve, /reject, /heartbeat.

The wait is a durable timer (its lease, which the engine checks when it
ends; nothing sleeps): TimeoutSeconds after it began the Task fails with
States.Timeout; with HeartbeatSeconds, it fails with
States.HeartbeatTimeout when that long passes without a heartbeat. Both
are the Task's failures, which its Retry and Catch see (a retry asks
again, with a new token).

A forged, used or expired token raises approvals.ApprovalError (its status
is the HTTP answer), saying which state it was for when that is known,
and changes nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

from function_flow import approvals, futures
from function_flow.asl.errors import HEARTBEAT_TIMEOUT, TIMEOUT
from function_flow.core.records import TaskStatus

#: How long a worker started beside the run waits for the wait to be recorded.
WORKER_PATIENCE_SECONDS = 30.0


def _when_waiting(engine: Any, token: str, wait: bool) -> None:
    deadline = time.monotonic() + (WORKER_PATIENCE_SECONDS if wait else 0.0)
    while True:
        trigger = engine.store.get_trigger(approvals.token_hash(token))
        if trigger is not None:
            found = engine.store.get_tasks(trigger.run_id, [trigger.task_id])
            if found and found[0].status is TaskStatus.RUNNING:
                return
        if time.monotonic() >= deadline:
            return
        time.sleep(0.01)


def timed(approval: futures.Approval, state: str, now: float, timeout: float | None,
          heartbeat: float | None) -> futures.Approval:
    """Set the wait's end: TimeoutSeconds and HeartbeatSeconds, with their errors.

    The engine does not retry an ended wait: the visit's continuation applies
    the state's Retry and Catch (engine_states.Visit.answered)."""
    within = f"its TimeoutSeconds ({timeout:g})" if timeout is not None \
        else "the longest wait (7 days; set TimeoutSeconds)"
    timeout_error = _failed(TIMEOUT, f"state {state!r} got no SendTaskSuccess or "
                                     f"SendTaskFailure within {within}")
    on_timeout: dict[str, Any] = {"error": timeout_error, "retry": False}
    wait = timeout
    if heartbeat is not None and (timeout is None or heartbeat < timeout):
        wait = heartbeat
        on_timeout.update(
            error=_failed(HEARTBEAT_TIMEOUT, f"state {state!r} got no SendTaskHeartbeat "
                                             f"within its HeartbeatSeconds ({heartbeat:g})"),
            heartbeat=heartbeat, deadline_error=timeout_error,
            deadline=None if timeout is None else now + timeout)
    approval.wait_seconds = wait
    approval.on_timeout = on_timeout
    return approval


def _failed(error: str, cause: str) -> str:
    # What the record's error says: engine_states.failure_of reads it back.
    return "StateFailed: " + json.dumps({"Error": error, "Cause": cause})


def _refused(engine: Any, token: Any, exc: approvals.ApprovalError) -> approvals.ApprovalError:
    """The refusal in Step Functions' words, naming the state when it is known."""
    names = {approvals.MalformedToken: "InvalidToken", approvals.UnknownToken:
             "TaskDoesNotExist", approvals.RunEnded: "TaskDoesNotExist",
             approvals.TokenExpired: "TaskTimedOut"}
    name = next((n for kind, n in names.items() if isinstance(exc, kind)), "InvalidToken")
    trigger = engine.store.get_trigger(approvals.token_hash(token)) \
        if isinstance(token, str) else None
    where = "" if trigger is None else (
        f" (the token of state {trigger.task_id.rsplit('.', 1)[-1]!r}, "
        f"task {trigger.task_id} of run {trigger.run_id})")
    return type(exc)(f"{name}: {exc}{where}")


def send_success(engine: Any, token: str, output: Any, *, wait: bool = False) -> Any:
    """SendTaskSuccess: the waiting Task's result is `output`."""
    _when_waiting(engine, token, wait)
    try:
        return approvals.approve(engine, token, output)
    except approvals.ApprovalError as exc:
        raise _refused(engine, token, exc) from None


def send_failure(engine: Any, token: str, error: str | None = None,
                 cause: str | None = None, *, wait: bool = False) -> Any:
    """SendTaskFailure: the waiting Task fails with `error` and `cause`."""
    _when_waiting(engine, token, wait)
    try:
        return approvals.reject(engine, token, json.dumps({"Error": error, "Cause": cause}))
    except approvals.ApprovalError as exc:
        raise _refused(engine, token, exc) from None


def send_heartbeat(engine: Any, token: str) -> float | None:
    """SendTaskHeartbeat: the worker is alive; the HeartbeatSeconds wait starts again.
    Returns when the wait now ends (None when the state sets no HeartbeatSeconds)."""
    try:
        return approvals.heartbeat(engine.store, token, engine.clock())
    except approvals.ApprovalError as exc:
        raise _refused(engine, token, exc) from None
