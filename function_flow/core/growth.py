"""A body that grows the run's graph as it succeeds.

A front end whose next task is only known when a task ends (a state
machine: the state a Choice picks, the branches a Parallel starts) has the
body return `Grow(value, records, dependents)`. The task succeeds with
`value`, and in the same transaction that records it, `records` are added
to the run and the task's dependents become `dependents` (the ids that its
success writes into, as a join's dependencies). Nothing is added unless the
success commits, so a body that dies, or a duplicate delivery, adds nothing;
the dependents then do what any join does (core/completion.py).
`dependents=[]` makes the task a sink: its success ends the run when
nothing else is left to wait for (graph.RunGraph.dependents_of).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from function_flow.core.records import TaskRecord

if TYPE_CHECKING:
    from function_flow.core.ports import Transaction


@dataclasses.dataclass
class Grow:
    """What a body returns to add `records` and set its own `dependents` on success."""

    value: Any
    records: list[TaskRecord] = dataclasses.field(default_factory=list)
    dependents: list[str] = dataclasses.field(default_factory=list)


def rewire(task: TaskRecord, grow: Grow) -> None:
    """Give `task` its new dependents in memory: the success follows them."""
    task.dependents = list(grow.dependents)


def write(tx: "Transaction", run_id: str, task: TaskRecord, grow: Grow) -> None:
    """Add the records and store the task's new dependents (after every read)."""
    for record in grow.records:
        tx.add_task(run_id, record)
    tx.update_task(run_id, task.task_id, {"dependents": list(grow.dependents)})
