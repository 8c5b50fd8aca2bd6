"""Redrive: start a FAILED or CANCELLED run again from the tasks that did not succeed.

Step Functions' redrive, for this engine. The run keeps its id, its
arguments and every succeeded result, and counts its redrives. Each task
that did not succeed is written afresh (`Transaction.replace_task`):
WAITING, attempt 0, with the `deps_done` entries of its succeeded
dependencies only, so its join is counted again as those that run again
end. Inside a foreach only the items that did not succeed run again: the
foreach task itself starts over, finds its items' records in place
(foreach.expand adds only what is missing) and queues the ones whose turn
has come. Skips are decided again too, from the same succeeded results, so
a branch not taken stays not taken.

The run record goes back to RUNNING in the same transaction as nothing
else: the run is marked `redriving` (what its end left to retire is no
longer the end's, core/leftovers.py), the tasks are reset, one
transaction each, while the run is still ended (nothing can advance
them), then the run is reopened, then the tasks whose dependencies are
all done are decided. A redrive that dies
half way leaves an ended run, which a second redrive finishes resetting.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from function_flow.core import attempts, hooks, versions
from function_flow.core.definition import END_TASK_ID
from function_flow.core.records import (ITEM_ROLES, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus)
from function_flow.core.step import Step
from function_flow.errors import FunctionFlowError, RunNotFoundError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

logger = logging.getLogger("function_flow.engine")

REDRIVABLE = (RunStatus.FAILED, RunStatus.CANCELLED)


class RedriveRefusedError(FunctionFlowError):
    """The run cannot be redriven (still running, succeeded, or its definition changed)."""


def redrive(engine: "Engine", run_id: str) -> RunRecord:
    """Restart run `run_id` from the tasks that did not succeed; returns the run.

    Raises RunNotFoundError, or RedriveRefusedError saying why not.
    """
    run = engine.store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status not in REDRIVABLE:
        paused = run.paused_at is not None and not run.status.is_final
        raise RedriveRefusedError(
            f"run {run_id} is {'PAUSED' if paused else run.status.value}: only FAILED or "
            "CANCELLED runs can be redriven"
            + ("; cancel it first" if not run.status.is_final else ""))
    if run.hooks_pending:
        raise RedriveRefusedError(
            f"run {run_id} ended, but its hooks ({_names(run)}) are still "
            "running; redrive it once they are done (function-flow status shows them)")
    tasks = engine.store.get_tasks(run_id)
    allowed, reason = versions.redrive_allowed(run, tasks, engine.dag)
    if not allowed:
        raise RedriveRefusedError(reason)  # it names the run
    # A foreach that runs again counts its items again: its groups and
    # collector (which always end SUCCEEDED, with counts) start over too.
    again_nodes = {t.task_id for t in tasks if t.status is not TaskStatus.SUCCEEDED}
    # Hooks run again when the run ends again (core/hooks.py).
    kept = {t.task_id for t in tasks if t.status is TaskStatus.SUCCEEDED
            and t.task_id != END_TASK_ID and not hooks.is_hook(t.task_id)
            and not (t.role in ("group", "collect") and t.template in again_nodes)}
    again = [t for t in tasks if t.task_id not in kept]

    def mark(tx: "Transaction") -> bool:
        current = tx.get_run(run_id)
        if current is None or current.status not in REDRIVABLE:
            return False
        tx.update_run(run_id, {"redriving": True})
        return True

    # The run's end may still be retiring its leftovers in another thread or
    # process (leftovers.py): marked, it leaves the records reset here alone.
    if not engine.store.transact(mark):
        raise _changed(run_id)
    for record in again:
        engine.store.transact(lambda tx, r=record: tx.replace_task(run_id, fresh(r, kept)))

    def reopen(tx: "Transaction") -> RunRecord | None:
        current = tx.get_run(run_id)
        if current is None or current.status not in REDRIVABLE:
            return None
        fields = {"status": RunStatus.RUNNING.value, "finished_at": None, "error": None,
                  "redrives": current.redrives + 1, "redriving": False,
                  # A pause the run had when it ended would hold every task.
                  "paused_at": None,
                  **versions.recorded(engine.dag),
                  **attempts.run_event(current, "redriven", engine.clock(),
                                       ended=current.status.value,
                                       ended_at=current.finished_at, error=current.error)}
        tx.update_run(run_id, fields)
        return dataclasses.replace(current, status=RunStatus.RUNNING,
                                   redrives=current.redrives + 1)

    reopened = engine.store.transact(reopen)
    if reopened is None:
        raise _changed(run_id)
    step = Step("redriven")
    for record in again:
        if record.role in (*ITEM_ROLES, "group", "collect"):
            continue  # the foreach starts them again (foreach.expand)
        deps = engine.graph.deps_of(record.task_id, record)
        rule = engine.graph.rule_of(record.task_id, record)
        if all(d in kept for d in deps) or rule == "always":
            step.joins += (record.task_id,)
    engine.follow_up(run_id, step)
    logger.info("run %s redriven (redrive %d): %d tasks run again, %d results kept",
                run_id, reopened.redrives, len(again), len(kept))
    return reopened


def _names(run: RunRecord) -> str:
    return ", ".join(hooks.NAMES.get(hook_id, hook_id) for hook_id in run.hooks or ()) \
        or "on_failure, on_end, callback"


def _changed(run_id: str) -> RedriveRefusedError:
    return RedriveRefusedError(f"run {run_id} changed while it was being redriven "
                               "(another redrive?); look at it with function-flow status")


def fresh(record: TaskRecord, kept: set[str]) -> TaskRecord:
    """A task as it is before it first runs, keeping its place in the run's graph
    and what its succeeded dependencies told it."""
    return TaskRecord(task_id=record.task_id,
                      deps_done={d: s for d, s in record.deps_done.items() if d in kept},
                      template=record.template, deps=record.deps,
                      dependents=record.dependents, role=record.role, item=record.item,
                      item_key=record.item_key, node_attempt=record.node_attempt,
                      trigger_rule=record.trigger_rule, attempts=record.attempts)
