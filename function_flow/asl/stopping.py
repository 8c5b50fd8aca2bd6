"""Stopping a Parallel's branches or a Map's items, as AWS aborts them.

Every record inside a fan-out carries its scope's limits (`Envelope
"limits"`): the join, the fan (the visit that fanned out), the kind ("b"
branches: nothing tolerated; "i" items: the Map's tolerated failures) and
`within`, the joins of every fan-out it is nested in, outermost first.

When a state fails uncaught in a scope (a branch or an item fails) past
what the scope tolerates, `stop`:

1. marks the scope's join (`item.stopped`, the failing record's id): from
   then on, no state inside it starts. A state that was executing
   finishes, and its result is ignored: it adds no next record
   (`grow_unless_stopped`), and a record claimed after the mark ends
   SKIPPED without running (`skip_if_stopped`);
2. skips what has not started: a Map's items not begun, and every record
   of the scope that waits in a chain (the next state, a Wait's or a
   retry's timer, a call's or a task token's answer), so nothing waits
   for them;
3. lets the joins those skips wrote into decide, as any join.

The scope's join then sees every branch or item ended (SKIPPED ones count
as not run) and fails with the failure, where its Retry and Catch apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from function_flow.asl import map_state, stepper
from function_flow.core import completion
from function_flow.core.growth import Grow
from function_flow.core.records import TaskRecord, TaskStatus
from function_flow.core.step import Step

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

#: Records skipped per transaction (a read and a write each, and their joins').
STOP_CHUNK = 150
#: Queued or ready records of the run looked at per status (a query): any past
#: that skip themselves when claimed.
SCAN_LIMIT = 2000
_NOT_STARTED = (TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.READY)


def limits(join_id: str, fan: str, kind: str, count: int, outer: dict[str, Any] | None,
           **fields: Any) -> dict[str, Any]:
    """The limits the records of a new fan-out's scope carry."""
    within = list((outer or {}).get("within") or []) + [join_id]
    return {"join": join_id, "fan": fan, "kind": kind, "count": count, "within": within,
            **fields}


def past_tolerance(engine: "Engine", run_id: str, info: dict[str, Any]) -> bool:
    """Whether one more failure (the caller's, not recorded yet) stops the scope."""
    if info.get("kind", "i") == "b":
        return True  # a Parallel tolerates no failed branch
    count = int(info["count"])
    failed = 1
    for group in map_state.groups_of(info["join"], count):
        progress = engine.store.join_progress(run_id, group)
        failed += progress.failed if progress is not None else 0
    return not stepper.tolerates(stepper.Items({}, [], 0, info.get("tolerated_count"),
                                               info.get("tolerated_percentage")), failed, count)


def stop(engine: "Engine", run_id: str, info: dict[str, Any], by: str) -> int:
    """A state of the scope fails (record `by`): past the tolerance, stop the scope.

    Returns how many records were skipped (0 while the Map tolerates)."""
    if not past_tolerance(engine, run_id, info):
        return 0
    join = info["join"]
    engine.store.transact(lambda tx: tx.update_task(run_id, join, {"item.stopped": by}))
    ids: list[str] = []
    if info.get("kind", "i") == "i":  # every item's first record: those not begun
        ids = [map_state.first_id(info["fan"], i, info["start"])
               for i in range(int(info["count"]))]
    prefix = f"{info['fan']}."
    for status in _NOT_STARTED:
        ids += [r.task_id for r in engine.store.find_tasks(run_id, status, SCAN_LIMIT)
                if r.task_id.startswith(prefix) and r.task_id != by and _chained(r)]
    ids = list(dict.fromkeys(ids))
    skipping, now = set(ids), engine.clock()
    joins: dict[str, None] = {}
    slots = False
    skipped = 0
    for begin in range(0, len(ids), STOP_CHUNK):
        chunk = ids[begin:begin + STOP_CHUNK]

        def skip(tx: "Transaction", chunk: list[str] = chunk) -> Step:
            step = Step("skipped")
            for record in tx.get_tasks(run_id, chunk).values():
                if record.status in _NOT_STARTED:
                    _skip(step, record, now, skipping)
            step.write_to(tx, run_id)
            return step

        step = engine.store.transact(skip)
        skipped += sum(1 for w in step.writes if w.kind == "task"
                       and w.value.get("status") == TaskStatus.SKIPPED.value)
        joins.update(dict.fromkeys(step.joins))
        slots = slots or step.fill_slots
    # The joins decide once every skip is written (none queues a record skipped later).
    completion.follow_up(engine, run_id, Step(joins=tuple(joins),
                                                          fill_slots=slots))
    return skipped


def _chained(record: TaskRecord) -> bool:
    """Whether a record waits for one record of its chain (the next state, a
    timer, a call's answer), not a join of branches or items still running."""
    return record.role not in ("group", "collect") and len(record.deps or ()) <= 1


def _skip(step: Step, record: TaskRecord, now: float,
          skipping: frozenset[str] | set[str] = frozenset()) -> None:
    """Write `record` SKIPPED into the step, and its end into its dependents
    (until its success, its scope's exits), except those skipped with it."""
    step.task(record.task_id, status=TaskStatus.SKIPPED.value, finished_at=now,
              lease_until=None, slot=None)
    if record.slot is not None:
        step.slot(record.slot, None)
        step.fill_slots = True
    joins = list(step.joins)
    for dependent in record.dependents or []:
        if dependent in skipping:
            continue
        step.task(dependent, **{f"deps_done.{record.task_id}": TaskStatus.SKIPPED.value})
        joins.append(dependent)
    step.joins = tuple(joins)


def stopped(engine: "Engine", run_id: str, envelope: Any) -> bool:
    """Whether a fan-out the record of `envelope` is in has stopped."""
    within = ((envelope or {}).get("limits") or {}).get("within") \
        if isinstance(envelope, dict) else None
    if not within:
        return False
    return any((r.item or {}).get("stopped") for r in engine.store.get_tasks(run_id, within)
               if isinstance(r.item, dict))


def skip_if_stopped(engine: "Engine", run_id: str, task: Any) -> bool:
    """A claimed record inside a stopped fan-out: end it SKIPPED, without running.

    True when it was (its executor's completion then finds it ended, and
    changes nothing); False when the record runs."""
    if not stopped(engine, run_id, task.item):
        return False
    now = engine.clock()

    def skip(tx: "Transaction") -> Step | None:
        record = tx.get_tasks(run_id, [task.id]).get(task.id)
        if record is None or record.status is not TaskStatus.RUNNING \
                or record.attempt != task.attempt:
            return None
        step = Step("skipped")
        _skip(step, record, now)
        step.write_to(tx, run_id)
        return step

    step = engine.store.transact(skip)
    if step is not None:
        completion.follow_up(engine, run_id, step)
    return True


def grow_unless_stopped(engine: "Engine", run_id: str, task: Any, grow: Grow) -> Grow:
    """A state inside a fan-out goes on (`grow`): add its records, WAITING as
    usual, or SKIPPED when the fan-out stopped meanwhile (the state that ran
    succeeds; what it leads to never runs, and its scope's exits learn so).

    One transaction reads the stop marks and adds the records, so a stop
    either comes first, or finds the records and skips them: nothing is left
    waiting for a timer (a Wait, a retry)."""
    within = ((task.item or {}).get("limits") or {}).get("within") \
        if isinstance(task.item, dict) else None
    if not within or not grow.records:
        return grow
    now = engine.clock()
    ids = {r.task_id for r in grow.records}

    def add(tx: "Transaction") -> Step:
        found = tx.get_tasks(run_id, [*within, *ids])
        stop = any(isinstance(found[j].item, dict) and found[j].item.get("stopped")
                   for j in within if j in found)
        step = Step("skipped" if stop else "grown")
        for record in grow.records:
            if record.task_id in found:  # a retried body added them already
                continue
            if stop:
                _skip(step, record, now, ids)
                record.status, record.finished_at = TaskStatus.SKIPPED, now
            tx.add_task(run_id, record)
        step.writes = [w for w in step.writes if w.key not in ids]  # added whole, above
        step.write_to(tx, run_id)
        return step

    step = engine.store.transact(add)
    if step.joins:
        completion.follow_up(engine, run_id, step)
    return Grow(grow.value, [], grow.dependents)


class Stopped(Exception):
    """A remote call's record inside a stopped fan-out: no call is made."""

    no_retry = True
    expected = True
