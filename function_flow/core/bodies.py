"""What runs once an attempt is claimed: its body, in the executor, then its outcome.

The engine claims (engine.py, chaining.py); this module runs what was
claimed. A hook runs its hook (hooks.py), the join of a foreach item's
sub-DAG reads its result (foreach.py), and any other task its body, then,
for a remote task, the call (remote/caller.py through `Engine.caller`),
both inside the executor so the task's timeout covers the two. The outcome
goes to `Engine.complete` (completion.py), in a record, whatever happened.
"""

from __future__ import annotations

import logging
import traceback
from typing import TYPE_CHECKING, Any, Callable

from function_flow import tracing
from function_flow.core import foreach, hooks, output, waiting
from function_flow.core.definition import TaskSpec
from function_flow.core.ports import Request
from function_flow.core.records import ITEM_ROLES, RunRecord, TaskRecord
from function_flow.core.waiting import Pending

if TYPE_CHECKING:
    from function_flow.core.engine import Engine

logger = logging.getLogger("function_flow.engine")


def run_claimed(engine: "Engine", run: RunRecord, task_id: str, spec: TaskSpec,
                attempt: int, claimed: TaskRecord, claimed_until: float) -> str:
    """Run a claimed attempt's body in the executor and record its outcome.

    Whatever the body raises, BaseException included, is the task's error
    and is recorded, so an attempt never ends without a record saying how.
    A Future the body returns, or an asynchronous remote call, leaves the
    attempt waiting (waiting.py), to be completed by its event.
    """
    run_id = run.run_id
    what = f"attempt {attempt} of task {task_id!r}"
    request: Request | None = None
    captured = None  # what the body prints and logs (core/output.py)
    if spec.foreach is not None and claimed.role is None:
        return foreach.run_attempt(engine, run, spec, attempt)
    try:
        if spec.call is not None:  # a remote function gets the real arguments
            run = engine.payloads.with_args(run)
        # A foreach's items, and any record a run added with its own input.
        item = {} if claimed.role not in ITEM_ROLES and claimed.item is None \
            else {
            "item": engine.payloads.load(claimed.item, f"the item of {task_id!r}"),
            "item_key": claimed.item_key, "item_id": task_id}
        body = _body(engine, run, task_id, spec, attempt, claimed, item)
        with tracing.body(run_id, task_id, attempt), \
                output.capturing(run_id, task_id, attempt) as captured, \
                engine.bus.blocking():
            value = engine.executor.run(body, spec.timeout, what)
        if spec.call is not None and spec.call.asynchronous:
            request = waiting.make_request(run, spec, attempt, value)
            value = waiting.RemoteAnswer(request.job_id)
        if isinstance(value, Pending):
            if not waiting.await_event(engine, run_id, task_id, spec, attempt, value,
                                         captured):
                return "stale"
            if request is None:
                return "waiting"
            assert spec.call is not None
            engine.caller.send(spec.call, request)
            logger.info("run %s task %s attempt %d: sent to %s as job %s",
                        run_id, task_id, attempt, spec.call.describe(), request.job_id)
            return "waiting"
    except BaseException as exc:  # noqa: B036 -- the task's own error: record it
        error = traceback.format_exc()
        if getattr(exc, "expected", False):
            # An outcome the workflow's own rules raise (a state machine's
            # Fail state, its retrier): recorded in full, logged in one line.
            logger.info("run %s task %s attempt %d ended: %s", run_id, task_id, attempt, exc)
        else:
            logger.warning("run %s task %s attempt %d failed:\n%s",
                           run_id, task_id, attempt, error)
        # An exception may say when its retry may start (`retry_not_before`,
        # epoch seconds), that no retry may follow (`no_retry`), or that it
        # is no news (`expected`, above).
        return engine.complete(run_id, task_id, attempt, ok=False, error=error,
                               claimed=claimed, claimed_until=claimed_until,
                               trigger_id=None if request is None else request.job_id,
                               cause=exc, output=captured,
                               not_before=getattr(exc, "retry_not_before", 0.0),
                               retry=not getattr(exc, "no_retry", False))
    return engine.complete(run_id, task_id, attempt, ok=True, value=value,
                           claimed=claimed, claimed_until=claimed_until, output=captured)


def _body(engine: "Engine", run: RunRecord, task_id: str, spec: TaskSpec, attempt: int,
          claimed: TaskRecord, item: dict[str, Any]) -> Callable[[], Any]:
    """What an attempt runs: a hook, an item's sub-DAG's join, or the task's body."""
    if hooks.is_hook(task_id):
        return hooks.body(engine, run, spec)
    if foreach.joins_instance(spec, claimed):
        return lambda: foreach.instance_result(engine, run.run_id, claimed)
    return lambda: _attempt(engine, run, spec, attempt, item)


def _attempt(engine: "Engine", run: RunRecord, spec: TaskSpec, attempt: int,
             item: dict[str, Any] | None = None) -> Any:
    """The body, then, for a synchronous remote task, its call (both inside
    the executor, so the task's timeout covers the two)."""
    value = engine.workflow.invoke(spec, run.run_id, attempt, **(item or {}))
    if spec.call is None:
        return value
    if isinstance(value, Pending):
        raise TypeError(f"task {spec.task_id!r} calls {spec.call.describe()}, so its "
                        "body returns what to send, not a Future")
    if spec.call.asynchronous:
        return value
    return engine.caller.call(spec.call, waiting.make_request(run, spec, attempt, value),
                              spec.timeout)
