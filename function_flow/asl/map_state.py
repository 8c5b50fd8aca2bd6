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

When an item fails beyond what the Map tolerates, the Map stops as a
Parallel does when a branch fails (stopping.py): items not begun are
SKIPPED (counted in their groups), and no further state of a running item
starts.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from function_flow.asl import stepper, stopping
from function_flow.asl.machine import record_id
from function_flow.core import foreach
from function_flow.core.records import TaskRecord

if TYPE_CHECKING:
    from function_flow.asl.engine_states import Visit
    from function_flow.core.engine import Engine

#: AWS runs at most 40 iterations of an inline Map at once.
MAP_LANES = 40


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
    info = stopping.limits(join_id, fan, "i", count, visit.env.get("limits"), start=start,
                           tolerated_count=outcome.tolerated_count,
                           tolerated_percentage=outcome.tolerated_percentage)
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
            machine, start, f"{fan}.i{index}.", 1, {"in": value, "exits": exits, "limits": info},
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
