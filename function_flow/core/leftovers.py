"""What a run leaves behind when it ends before all its tasks did.

A run that fails fast (docs/design.md, "Trigger rules") or is cancelled
ends while some tasks have not: they wait for dependencies, for a slot,
for their message, or for an external event. Nothing would ever end them,
and `status` must never show them WAITING in an ended run. Each is ended
here in a compare-and-set transaction on its own record, so a task that
advances meanwhile (a claim, a completion) simply wins, and the engine's
own checks end it instead (a claim of an ended run's task cancels it).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterable

from function_flow.core import transitions, waiting
from function_flow.core.definition import END_TASK_ID
from function_flow.core.records import (OUTCOME_FAILED, RunStatus, TaskRecord, TaskStatus,
                                        outcome_of)

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

logger = logging.getLogger("function_flow.engine")

#: Tasks an ended run still shows as not done, that no executor holds.
UNSTARTED = (TaskStatus.WAITING, TaskStatus.READY, TaskStatus.QUEUED)
#: A foreach's own records that count its items (core/foreach.py).
FOREACH_COUNTERS = ("group", "collect")


def retire(engine: "Engine", run_id: str, ended: RunStatus) -> None:
    """A run ended: end what it left unfinished (nothing is left when it SUCCEEDED).

    Attempts waiting for an event are CANCELLED. After a failure, tasks not
    started become UPSTREAM_FAILED when a dependency failed (directly or
    through another such task), else CANCELLED. Bodies still executing
    finish; their outcome is recorded, and nothing new starts after it.
    """
    if ended is RunStatus.SUCCEEDED:
        return  # every task ended: nothing waits, nothing is left
    cancel_waits(engine, run_id)
    every = {t.task_id: t for t in engine.store.get_tasks(run_id)}
    now = engine.clock()
    cancel_foreach_waits(engine, run_id, every.values(), now)
    # Not function_flow's own records: the end task, and hooks (core/hooks.py),
    # which the run's end has just queued or left waiting for their turn; but
    # a foreach's groups and collector, which only its items would end.
    records = [t for t in every.values() if t.status in UNSTARTED
               and (not t.task_id.startswith("__") or t.role in FOREACH_COUNTERS)]
    if not records:
        return
    position = {task_id: i for i, task_id in enumerate(engine.dag.order)}
    records.sort(key=lambda t: (position.get(t.template or t.task_id, len(position)),
                                t.task_id))
    failed_upstream: set[str] = set()
    ended_here: set[str] = set()
    for record in records:
        if _may_be_queued_blindly(engine, record, every, ended_here):
            continue  # its claim will find the run ended and cancel it
        status = TaskStatus.CANCELLED
        if any(outcome_of(s) == OUTCOME_FAILED and s != TaskStatus.CANCELLED.value
               for s in record.deps_done.values()) \
                or failed_upstream.intersection(engine.graph.deps_of(record.task_id, record)):
            status = TaskStatus.UPSTREAM_FAILED
        if end_unstarted(engine, run_id, record, status, now):
            ended_here.add(record.task_id)
            if status is TaskStatus.UPSTREAM_FAILED:
                failed_upstream.add(record.task_id)


def cancel_foreach_waits(engine: "Engine", run_id: str, records: Iterable[TaskRecord],
                        now: float) -> None:
    """A run ended: a foreach task RUNNING (its items added, or being added)
    ends CANCELLED now, as an attempt waiting for an event does.

    It runs no body of its own: it waits for its collector, which items
    cancelled or never started would never complete. Its items already
    running finish, and what they return changes nothing for it.
    """
    for record in records:
        spec = engine.dag.spec_of(record.template or record.task_id)
        if record.status is not TaskStatus.RUNNING or record.role is not None \
                or spec is None or spec.foreach is None:
            continue

        def cancel(tx: "Transaction", task_id: str = record.task_id,
                   attempt: int = record.attempt) -> None:
            task = tx.get_tasks(run_id, [task_id]).get(task_id)
            if task is not None and still_ended(engine, run_id):
                transitions.cancel(task, attempt, now, among=(TaskStatus.RUNNING,)
                                   ).write_to(tx, run_id)

        engine.store.transact(cancel, compare_and_set=True)


def cancel_claim(engine: "Engine", run_id: str, task_id: str, attempt: int) -> None:
    """A claimed (or queued) attempt of a run that has ended: it never runs."""
    now = engine.clock()

    def cancel(tx: "Transaction") -> TaskRecord | None:
        task = tx.get_tasks(run_id, [task_id]).get(task_id)
        if task is None or not still_ended(engine, run_id):
            return None
        step = transitions.cancel(task, attempt, now)
        step.write_to(tx, run_id)
        return task if step.verdict == "cancelled" else None

    cancelled = engine.store.transact(cancel, compare_and_set=True)
    if cancelled is not None:
        end_downstream(engine, run_id, cancelled)


def end_downstream(engine: "Engine", run_id: str, ended: TaskRecord) -> None:
    """A task of an ended run was cancelled: end what waited for it.

    `retire` left those tasks for it (their dependency was still running, and
    its success would have queued them without reading them); they end now,
    and so, in turn, do the tasks that waited for them.
    """
    now = engine.clock()
    pending = [(ended, TaskStatus.CANCELLED)]
    while pending:
        task, status = pending.pop()
        dependents = [d for d in engine.graph.dependents_of(task.task_id, task)
                      if d != END_TASK_ID]
        for record in engine.store.get_tasks(run_id, dependents):
            if record.status is not TaskStatus.WAITING:
                continue
            mine = TaskStatus.UPSTREAM_FAILED if status is TaskStatus.UPSTREAM_FAILED or any(
                outcome_of(s) == OUTCOME_FAILED and s != TaskStatus.CANCELLED.value
                for s in record.deps_done.values()) else TaskStatus.CANCELLED
            if end_unstarted(engine, run_id, record, mine, now):
                pending.append((record, mine))


def _may_be_queued_blindly(engine: "Engine", record: TaskRecord,
                           every: dict[str, TaskRecord], ended_here: set[str]) -> bool:
    """Whether a still-running dependency's success may queue `record` without
    reading it (transitions.succeed queues single-dependency dependents in
    its own commit): ending it now would be overwritten."""
    if record.status is not TaskStatus.WAITING:
        return False
    deps = engine.graph.deps_of(record.task_id, record)
    if len(deps) != 1 or deps[0] in ended_here:
        return False
    dep = every.get(deps[0])
    if dep is not None and dep.status.is_final:
        return False
    return record.task_id in engine.graph.single_dependency_dependents(deps[0], dep)


def end_unstarted(engine: "Engine", run_id: str, seen: TaskRecord, status: TaskStatus,
                  now: float) -> bool:
    """End a task that has not started, if it is still as `seen`; True if this did."""
    def end(tx: "Transaction") -> bool:
        task = tx.get_tasks(run_id, [seen.task_id]).get(seen.task_id)
        if task is None or task.status is not seen.status or task.attempt != seen.attempt \
                or not still_ended(engine, run_id):
            return False
        if task.status is TaskStatus.WAITING and status is TaskStatus.UPSTREAM_FAILED:
            tx.update_task(run_id, task.task_id, {"status": status.value, "finished_at": now})
            return True
        transitions.cancel(task, task.attempt, now, among=UNSTARTED).write_to(tx, run_id)
        return True

    return engine.store.transact(end, compare_and_set=True)


def still_ended(engine: "Engine", run_id: str) -> bool:
    """Whether the run is still ended and no redrive has started resetting it.

    Each transaction here calls it after reading its task: the end retires
    its leftovers after its commit, in its own time, and a quick redrive
    may meanwhile reset them (WAITING, attempt 0, just like the unstarted
    tasks the end left) and reopen the run. The run is read from the store,
    not the transaction (a read without a write would cost the
    compare-and-set its lock-free commit): a redrive marks the run before
    it resets a task, so either this sees the mark, or the reset came after
    the task was read and the compare-and-set fails and runs this again.
    """
    run = engine.store.get_run(run_id)
    return run is not None and run.status.is_final and not run.redriving


def cancel_waits(engine: "Engine", run_id: str) -> None:
    """A run ended: attempts still waiting for an event end CANCELLED now.

    Nothing runs them (their body returned), so nobody else would ever end
    them; their triggers go in the same transactions, so a late event or
    approval finds nothing.
    """
    now = engine.clock()
    for task in engine.store.find_tasks(run_id, TaskStatus.RUNNING, 100_000):
        trigger = waiting.waiting_trigger(engine.store, run_id, task)
        if trigger is None:
            continue

        def cancel(tx: "Transaction", task_id: str = task.task_id,
                   attempt: int = task.attempt, trigger_id: str = trigger.trigger_id
                   ) -> TaskRecord | None:
            record = tx.get_tasks(run_id, [task_id]).get(task_id)
            if record is None or not still_ended(engine, run_id):
                return None
            step = transitions.cancel(record, attempt, now)
            if step.verdict != "cancelled":
                return None
            step.write_to(tx, run_id)
            tx.delete_trigger(trigger_id)
            return record

        cancelled = engine.store.transact(cancel)
        if cancelled is not None:
            end_downstream(engine, run_id, cancelled)
