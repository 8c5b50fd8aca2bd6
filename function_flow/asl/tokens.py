"""Task tokens: SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat equivalents.

A `.waitForTaskToken` Task visit waits as an approval does
(function_flow/approvals.py): the token is 256 random bits, only its hash
is stored, and it works once. `send_success` completes the visit with the
output as the task's result; `send_failure` fails it with an Error and a
Cause (Retry and Catch apply); `send_heartbeat` checks that the token still
waits. A forged, used or expired token raises approvals.ApprovalError and
changes nothing; `function-flow approve|reject` and POST /approve|/reject
work on these tokens too (reject's reason is the JSON {"Error", "Cause"}).
"""

from __future__ import annotations

import json
import time
from typing import Any

from function_flow import approvals
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


def send_success(engine: Any, token: str, output: Any, *, wait: bool = False) -> Any:
    """SendTaskSuccess: the waiting Task's result is `output`."""
    _when_waiting(engine, token, wait)
    return approvals.approve(engine, token, output)


def send_failure(engine: Any, token: str, error: str | None = None,
                 cause: str | None = None, *, wait: bool = False) -> Any:
    """SendTaskFailure: the waiting Task fails with `error` and `cause`."""
    _when_waiting(engine, token, wait)
    return approvals.reject(engine, token, json.dumps({"Error": error, "Cause": cause}))


def send_heartbeat(engine: Any, token: str) -> None:
    """SendTaskHeartbeat: the token still waits (ApprovalError if not)."""
    approvals.find(engine.store, token, engine.clock())
