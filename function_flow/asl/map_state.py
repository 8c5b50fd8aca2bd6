"""Map states on the engine: items in lanes, counted by groups, stopped past their tolerance.

A Map visit adds, as a foreach does (core/foreach.py, whose group records
and chunked adding it reuses):

- each item's first record `<fan>.i<n>.0001.<StartAt>`, in lanes: item n
  waits (all_done) for the end of item n - lanes, so at most `lanes`
  (MaxConcurrency, at most 40 as AWS runs an inline Map) run at once;
- group records `__group__<join>[g]`, each counting the ends of up to
  GROUP_SIZE items (an item's end writes into its group, never into a
  record every item writes);
- the join `<scope><seq>.<Map>`, waiting for the groups, which applies
  the Map's result fields to the items' outputs (engine_states.Visit.join).

The records go to the store CHUNK per transaction before the visit's
success, which then only starts the first lane of each: a Map of any size
fits Firestore's 500 writes per transaction. Adding is idempotent (ids are
fixed), so a visit whose process died adds them again harmlessly.

When an item fails beyond what the Map tolerates, `stop` skips every item
that has not started (SKIPPED, counted in its group), so they never run,
as AWS stops a failed Map's iterations; items already running end their
current state's chain.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from function_flow.asl import stepper
from function_flow.asl.local import tolerates
from function_flow.asl.machine import record_id
from function_flow.core import foreach
from function_flow.core.records import TaskRecord, TaskStatus

if TYPE_CHECKING:
    from function_flow.asl.engine_states import Visit
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

#: AWS runs at most 40 iterations of an inline Map at once.
MAP_LANES = 40
#: Items skipped per transaction by `stop` (a read and a write each, and groups).
STOP_CHUNK = 150
_NOT_STARTED = (TaskStatus.WAITING, TaskStatus.QUEUED, TaskStatus.READY)


def first_id(fan: str, index: int, start: str) -> str:
    """The id of item `index`'s first record."""
    return record_id(f"{fan}.i{index}.", 1, start)


def groups_of(join_id: str, count: int) -> list[str]:
    return [foreach.group_id(join_id, g) for g in range(math.ceil(count / foreach.GROUP_SIZE))]


def plan(visit: "Visit", outcome: stepper.Items, join_id: str, seq: int
         ) -> tuple[list[TaskRecord], list[str]]:
    """The join, the groups and the items' first records; and the first lane's ids."""
    inputs, count = outcome.inputs, len(outcome.inputs)
    machine = visit.compiled.children[(visit.machine, visit.name)][0]
    start = visit.compiled.machines[machine]["StartAt"]
    lanes = min(count, outcome.max_concurrency or MAP_LANES, MAP_LANES)
    scope, fan = visit.env.get("scope", ""), visit.record
    groups = groups_of(join_id, count)
    info = {"join": join_id, "fan": fan, "count": count, "start": start,
            "tolerated_count": outcome.tolerated_count,
            "tolerated_percentage": outcome.tolerated_percentage}
    join = TaskRecord(
        task_id=join_id, template=visit.template, trigger_rule="all_done",
        deps=groups, dependents=list(visit.env.get("exits") or []),  # as Visit._record
        role="member" if scope else None,
        item={"scope": scope, "seq": seq, "phase": "join", **visit._scoped(),
              "in": visit.value, "fan": fan, "kind": "i", "retries": visit.retries,
              "count": count, "tolerated_count": outcome.tolerated_count,
              "tolerated_percentage": outcome.tolerated_percentage})
    records = [join] + [TaskRecord(
        task_id=group, template=visit.template, role="group", trigger_rule="all_done",
        deps=[f"{fan}.i{i}" for i in range(g * foreach.GROUP_SIZE,
                                           min(count, (g + 1) * foreach.GROUP_SIZE))],
        dependents=[join_id]) for g, group in enumerate(groups)]
    for index, value in enumerate(inputs):
        after = index + lanes
        exits = [groups[index // foreach.GROUP_SIZE]] + (
            [first_id(fan, after, start)] if after < count else [])
        records.append(visit._record(
            machine, start, f"{fan}.i{index}.", 1, {"in": value, "exits": exits, "map": info},
            [fan] if index < lanes else [f"{fan}.lane{index - lanes}"],
            trigger_rule="all_done"))
    return records, [first_id(fan, i, start) for i in range(lanes)]


def ended(engine: "Engine", run_id: str, join: TaskRecord) -> list[TaskRecord]:
    """The records that ended the join's items (through its groups) or branches."""
    keys = sorted((join.deps_done or {}).keys())
    if not keys:
        return []
    groups = [k for k in keys if k.startswith("__group__")]
    if groups:
        keys = sorted({key for group in engine.store.get_tasks(run_id, groups)
                       for key in (group.deps_done or {})})
    return engine.store.get_tasks(run_id, keys)


def stop(engine: "Engine", run_id: str, info: dict[str, Any]) -> int:
    """An item is failing: past the Map's tolerance, skip the items not started yet.

    Counts the failures its groups recorded, and this one (not recorded
    yet). Returns how many items were skipped (0 while the Map tolerates).
    """
    count = int(info["count"])
    groups = groups_of(info["join"], count)
    failed = 1
    for group in groups:
        progress = engine.store.join_progress(run_id, group)
        failed += progress.failed if progress is not None else 0
    limits = stepper.Items({}, [], 0, info.get("tolerated_count"),
                           info.get("tolerated_percentage"))
    if tolerates(limits, failed, count):
        return 0
    ids = [first_id(info["fan"], i, info["start"]) for i in range(count)]
    now, skipped = engine.clock(), 0
    for begin in range(0, count, STOP_CHUNK):
        chunk = ids[begin:begin + STOP_CHUNK]

        def skip(tx: "Transaction", chunk: list[str] = chunk, begin: int = begin) -> int:
            found = tx.get_tasks(run_id, chunk)
            into: dict[str, dict[str, Any]] = {}
            for offset, task_id in enumerate(chunk):
                record = found.get(task_id)
                if record is None or record.status not in _NOT_STARTED:
                    continue
                tx.update_task(run_id, task_id, {"status": TaskStatus.SKIPPED.value,
                                                 "finished_at": now, "slot": None})
                if record.slot is not None:
                    tx.set_slot(run_id, record.slot, None)
                group = groups[(begin + offset) // foreach.GROUP_SIZE]
                into.setdefault(group, {})[f"deps_done.{task_id}"] = \
                    TaskStatus.SKIPPED.value
            for group, fields in into.items():  # one write per group
                tx.update_task(run_id, group, fields)
            return sum(len(f) for f in into.values())

        skipped += engine.store.transact(skip)
    return skipped
