"""Attempts that wait: Futures, and remote functions that answer later.

A task body that returns a `Pending` (every `futures.Future` is one), or a
remote task whose call is asynchronous, leaves its attempt RUNNING: the
transaction that says so also writes a records.Trigger, which the external
event that completes the attempt names. Sending an asynchronous remote
call happens after that commit, so an answer can never arrive before the
trigger it completes exists.
"""

from __future__ import annotations

import math
import uuid
from typing import TYPE_CHECKING, Any

from function_flow.core import attempts, versions
from function_flow.core.definition import Call, TaskSpec
from function_flow.core.messages import Message, MessageKind
from function_flow.core.ports import Request, Store, Transaction
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus, Trigger
from function_flow.core.values import MAX_MESSAGE_VALUE_BYTES, storable
from function_flow.errors import ConfigurationError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine

#: How long an asynchronous attempt may wait for its event when the task
#: sets no timeout. Long, but not forever: nothing waits silently.
DEFAULT_ASYNC_LEASE_SECONDS = 7 * 24 * 3600.0


class Pending:
    """Base of values a task returns to say "an external event completes me".

    `futures.Future` derives from it. The engine reads `trigger_id` and the
    two optional attributes below, which become the records.Trigger.
    """

    trigger_id: str
    #: A gs:// path prefix the poller looks for (GCSFuture), else None.
    watch: str | None = None
    #: What the attempt becomes when its timeout passes with no event: None
    #: fails it; {"error": text} fails it with that error; {"result": value}
    #: succeeds it with value (see records.Trigger).
    on_timeout: dict[str, Any] | None = None
    #: How many seconds the attempt waits for its event (an Approval's own
    #: timeout); None: the task's timeout, else DEFAULT_ASYNC_LEASE_SECONDS.
    wait_seconds: float | None = None


class RemoteAnswer(Pending):
    """What an asynchronous remote call waits for: the answer naming its job id.

    When the process that made the call dies, `resume` retries the attempt
    instead of waiting on: on the embedded backend the remote function (or
    the callback server its answer goes to) ran in that process.
    """

    on_timeout = {"resume": "retry"}

    def __init__(self, job_id: str) -> None:
        self.trigger_id = job_id


def answered_by_dead_process(trigger: Trigger) -> bool:
    """Whether `resume` should retry this wait rather than keep it (RemoteAnswer)."""
    return isinstance(trigger.on_timeout, dict) and trigger.on_timeout.get("resume") == "retry"


class NoCaller:
    """The caller of a backend that cannot reach remote functions."""

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        raise ConfigurationError(f"task {request.task_id!r} calls {call.describe()}, "
                                 "and this backend has no caller for remote functions")

    def send(self, call: Call, request: Request) -> None:
        self.call(call, request, None)


def make_request(run: RunRecord, spec: TaskSpec, attempt: int, value: Any) -> Request:
    """One attempt's call: a new job id, the run's arguments, the body's result."""
    target = spec.call.describe() if spec.call else "its remote function"
    result = storable(f"what task {spec.task_id!r} sends to {target}", value,
                      limit=MAX_MESSAGE_VALUE_BYTES)
    return Request(job_id=uuid.uuid4().hex, run_id=run.run_id, task_id=spec.task_id,
                   attempt=attempt, job_args=dict(run.args),
                   task_args=dict(spec.task_args), result=result)


def await_event(engine: "Engine", run_id: str, task_id: str, spec: TaskSpec, attempt: int,
                pending: Pending, captured: Any = None) -> bool:
    """Record that the attempt waits for `pending`'s event (its lease: the timeout),
    and what its body printed (`captured`, see core/attempts.py).

    Returns False when the attempt is no longer this executor's (its lease
    ran out meanwhile): nothing is recorded then.
    """
    trigger_id = pending.trigger_id
    if not isinstance(trigger_id, str) or not trigger_id:
        raise ValueError(f"task {task_id!r} returned a Future whose trigger id is not a "
                         f"non-empty string, got {trigger_id!r}")
    trigger = Trigger(trigger_id, run_id, task_id, attempt,
                      watch=getattr(pending, "watch", None),
                      on_timeout=getattr(pending, "on_timeout", None),
                      definition=versions.of(engine.dag).hash)
    # The Future's own wait (an approval's timeout) first, then the task's
    # timeout, then how long its call may take to answer (remote.OpenFaaS says).
    lease = _wait_of(task_id, pending) or spec.timeout \
        or (spec.call.options.get("wait") if spec.call else None) \
        or DEFAULT_ASYNC_LEASE_SECONDS
    now = engine.clock()

    def record(tx: Transaction) -> bool:
        task = tx.get_tasks(run_id, [task_id]).get(task_id)
        if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
            return False
        tx.update_task(run_id, task_id, {"trigger_id": trigger_id, "lease_until": now + lease,
                                         **attempts.waiting(task, now, captured)})
        tx.put_trigger(trigger)
        return True

    recorded = engine.store.transact(record)
    if recorded:
        # The wait read only the task: if the run ended meanwhile, nothing
        # would ever end this wait (leftovers.cancel_waits ran before it).
        run = engine.store.get_run(run_id)
        if run is None or run.status.is_final:
            from function_flow.core import leftovers

            leftovers.cancel_waits(engine, run_id)
            return False
    if recorded and engine.lease_check_messages:
        engine.bus.publish(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE), lease)
    return recorded


def _wait_of(task_id: str, pending: Pending) -> float | None:
    wait = getattr(pending, "wait_seconds", None)
    if wait is None:
        return None
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) \
            or not math.isfinite(wait) or wait <= 0:
        raise ValueError(f"task {task_id!r} returned a Future whose wait_seconds is "
                         f"{wait!r}; it must be a number of seconds > 0")
    return float(wait)


def waiting_trigger(store: Store, run_id: str, task: TaskRecord) -> Trigger | None:
    """The trigger the task's current attempt waits for, or None if it waits for none.

    A task record keeps the trigger id of its last wait; only a trigger that
    still exists and names this very attempt means the attempt's body has
    returned and an event (or its timeout) is all that can end it.
    """
    if task.status is not TaskStatus.RUNNING or not task.trigger_id:
        return None
    trigger = store.get_trigger(task.trigger_id)
    if trigger is None or (trigger.run_id, trigger.task_id, trigger.attempt) != \
            (run_id, task.task_id, task.attempt):
        return None
    return trigger
