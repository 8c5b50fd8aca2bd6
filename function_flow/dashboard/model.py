"""What a run page shows, from the run's records: coloured boxes, table rows, counts.

One function, `run_view`, builds it all, for the page and for its live
updates (`live_state`, the JSON the page polls), so the two never
disagree. Sub-DAGs and foreach nodes are summed up from their members; a
foreach of 10,000 items is one box with a bar of its items' statuses, and
one table row that counts them (cli/items.py's collapse), never 10,000 of
either.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import time
from typing import Any, Iterable, Union

from function_flow import subdags
from function_flow.cli import items as item_rows
from function_flow.cli import overview, progress
from function_flow.core import hooks
from function_flow.core.control import shown_status
from function_flow.core.graph import Dag
from function_flow.core.listing import ordered_tasks
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus
from function_flow.dashboard import graph, layout

#: Statuses as the bar of a foreach and the counts line group them.
ACTIVE = {TaskStatus.RUNNING}
PENDING = {TaskStatus.WAITING, TaskStatus.READY, TaskStatus.QUEUED}


@dataclasses.dataclass
class NodeState:
    """How one box looks: its colour (a status) and its second line."""

    status: str
    text: str
    #: A foreach's bar: (status, fraction of its items), in a fixed order.
    bar: list[tuple[str, float]] = dataclasses.field(default_factory=list)

    def to_json(self) -> list[Any]:
        return [self.status, self.text, [[s, round(f, 4)] for s, f in self.bar]]

    def segments(self, x: float, width: float) -> list[tuple[str, float, float]]:
        """(status, x, width) of each of the bar's segments, every status of
        BAR_ORDER included (0 wide when absent), so a script can resize them."""
        fractions = dict(self.bar)
        found = []
        for status in BAR_ORDER:
            size = width * fractions.get(status, 0.0)
            found.append((status, x, size))
            x += size
        return found


@dataclasses.dataclass
class RunView:
    run: RunRecord
    status: str
    drawing: layout.Drawing
    states: dict[str, NodeState]
    #: An open foreach's shown items' statuses, by node, in item order.
    cells: dict[str, list[tuple[str, str]]]
    rows: list[Union[TaskRecord, item_rows.ItemsRow]]
    summary: str
    #: Whether the edges come from the definition (else from the records alone).
    defined: bool
    #: Changes when the page must be drawn again (new boxes, rows or cells).
    shape: str
    records: int
    #: How many items each foreach has so far.
    item_counts: dict[str, int]
    #: The run's hooks (on_failure, on_end, callback) by name, once queued.
    hooks: list[tuple[str, TaskRecord]] = dataclasses.field(default_factory=list)
    #: Why the edges come from the records alone ("" when they do not).
    undefined_because: str = ""

    @property
    def final(self) -> bool:
        """Nothing more will change: the run ended and its hooks have run."""
        return self.run.status.is_final and not self.run.hooks_pending

    def live_state(self) -> dict[str, Any]:
        """What the page's script updates in place, as JSON."""
        return {"status": self.status, "final": self.final,
                "shape": self.shape, "summary": self.summary,
                "duration": progress.format_duration(progress.run_duration(self.run)),
                "nodes": {k: v.to_json() for k, v in self.states.items()},
                "cells": {k: [s for _, s in v] for k, v in self.cells.items()},
                "rows": {row_key(r): row_cells(r) for r in self.rows}}


def run_view(run: RunRecord, records: list[TaskRecord], dag: Dag | None,
             expanded: Iterable[str] = ()) -> RunView:
    """Everything the run page draws, for `records` read just now."""
    by_id = {r.task_id: r for r in records}
    members = graph.members_of(records)
    defined = dag is not None
    if dag is None:
        dag = graph.from_records(run.job_name, records)
    foreach = {t for t in dag.tasks if graph.is_foreach(dag, t, members)}
    counts = {node: len(found) for node, found in members.items()}
    drawing = layout.layout(dag, foreach=foreach, expanded=set(expanded), item_counts=counts)
    states: dict[str, NodeState] = {}
    cells: dict[str, list[tuple[str, str]]] = {}
    for box in drawing.all_boxes():
        if box.kind in ("subdag", "frame"):
            states[box.id] = _group_state(box.id, by_id, dag)
        elif box.kind in ("foreach", "items"):
            states[box.id] = _foreach_state(by_id.get(box.id), members.get(box.id, []))
            if box.kind == "items":
                cells[box.id] = [(r.task_id, r.status.value)
                                 for r in members.get(box.id, [])[:len(box.cells)]]
        else:
            states[box.id] = _task_state(by_id.get(box.id))
    tasks = ordered_tasks(records, dag.order if defined else None)
    rows = item_rows.collapse(progress.in_groups(tasks))
    found_hooks = [(hooks.NAMES[h], by_id[h]) for h in hooks.ORDER if h in by_id]
    shape = hashlib.sha1(repr((sorted(states), sorted((k, len(v)) for k, v in cells.items()),
                               [row_key(r) for r in rows],
                               [(n, h.status, h.attempt) for n, h in found_hooks]
                               )).encode()).hexdigest()[:16]
    return RunView(run=run, status=shown_status(run), drawing=drawing, states=states,
                   cells=cells, rows=rows, summary=summary(tasks), defined=defined,
                   shape=shape, records=len(records), item_counts=counts,
                   hooks=found_hooks)


def summary(tasks: list[TaskRecord]) -> str:
    """"23/42 done, 4 running, 1 failed", as the live view of `function-flow run`
    counts (cli/overview.py: a foreach's items are counted in its own row)."""
    return overview.count(tasks).line()


def row_key(row: Union[TaskRecord, item_rows.ItemsRow]) -> str:
    return row.label if isinstance(row, item_rows.ItemsRow) else row.task_id


def row_cells(row: Union[TaskRecord, item_rows.ItemsRow]) -> list[str]:
    """[status, attempts, duration, last error line] as the task table shows them."""
    if isinstance(row, item_rows.ItemsRow):
        return ["MIXED", f"{row.attempts:,}", progress.format_duration(row.duration),
                row.status_text()]
    running = row.status is TaskStatus.RUNNING and row.started_at is not None
    duration = time.time() - row.started_at if running else row.duration  # type: ignore
    return [row.status.value, progress.format_attempts(row), progress.format_duration(duration),
            progress.last_line(row.error) if row.error else ""]


def _task_state(record: TaskRecord | None) -> NodeState:
    if record is None:
        return NodeState("WAITING", "not started")
    text = record.status.value
    if record.attempt > 1:
        text += f" \u00b7 attempt {record.attempt}"
    if record.status is TaskStatus.QUEUED and record.not_before and record.attempt > 1:
        text = f"retry {record.attempt} queued"
    return NodeState(record.status.value, text)


def _group_state(node: str, by_id: dict[str, TaskRecord], dag: Dag) -> NodeState:
    """A sub-DAG: its join's status once final, else what its tasks are doing."""
    prefix = node + subdags.SEPARATOR
    inner = [by_id[t] for t in dag.tasks if t.startswith(prefix) and t in by_id
             and not graph.is_subdag(dag, t)]
    join = by_id.get(node)
    statuses = collections.Counter(t.status for t in inner)
    done = sum(n for s, n in statuses.items() if s.is_final)
    failed = statuses[TaskStatus.FAILED]
    text = f"{done}/{len(inner)} done" + (f", {failed} failed" if failed else "")
    if join is not None and join.status.is_final:
        status = join.status.value
    elif statuses[TaskStatus.RUNNING]:
        status = "RUNNING"
    elif any(statuses[s] for s in PENDING if s is not TaskStatus.WAITING) or done:
        status = "QUEUED"
    else:
        status = "WAITING"
    return NodeState(status, text)


#: The bar's segments, in this order.
BAR_ORDER = ("SUCCEEDED", "FAILED", "RUNNING", "QUEUED", "SKIPPED", "UPSTREAM_FAILED",
             "CANCELLED", "WAITING")


def _foreach_state(record: TaskRecord | None, found: list[TaskRecord]) -> NodeState:
    state = _task_state(record)
    if not found:
        return state
    counts = collections.Counter(
        "QUEUED" if t.status in (TaskStatus.READY, TaskStatus.QUEUED) else t.status.value
        for t in found)
    total = len(found)
    # Done as the run's own line counts (cli/overview.py): succeeded or skipped.
    done = counts["SUCCEEDED"] + counts["SKIPPED"]
    text = f"{done:,}/{total:,} items done"
    failed = counts["FAILED"] + counts["UPSTREAM_FAILED"]  # (a task of its copy failed)
    if failed:
        text += f", {failed:,} failed"
    if counts["CANCELLED"]:
        text += f", {counts['CANCELLED']:,} cancelled"
    state.text = text
    state.bar = [(s, counts[s] / total) for s in BAR_ORDER if counts[s]]
    return state
