"""A foreach's items in the CLI's tables: one line for many, plus the ones that failed.

A foreach over 10,000 items would otherwise print 10,000 rows. Up to
SHOWN_ITEMS items are listed one by one; beyond that they become one row
that counts them by status, followed by the first failed items (with
their errors, where the table shows errors).
"""

from __future__ import annotations

import collections
import dataclasses
import os
from typing import Iterable, Union

from function_flow import subdags
from function_flow.core.records import ITEM_ROLES, TaskRecord, TaskStatus

#: Items of one foreach listed one by one; more are counted in one row.
SHOWN_ITEMS = 10
#: Failed items listed under a counted row.
SHOWN_FAILURES = 5


@dataclasses.dataclass
class ItemsRow:
    """The items of one foreach, counted: "work[0..9999]  9,998 SUCCEEDED, 2 FAILED"."""

    label: str
    counts: dict[str, int]
    attempts: int
    duration: float | None

    def status_text(self) -> str:
        return ", ".join(f"{count:,} {status}" for status, count in self.counts.items())


Row = Union[TaskRecord, ItemsRow]


def label(task: TaskRecord) -> str:
    """A task's id as a table shows it: a sub-DAG's tasks and a foreach's items
    (and their copies of its sub-DAG) indented under their node."""
    if task.role in ITEM_ROLES:
        return "  " * (subdags.template_of(task.task_id).count(subdags.SEPARATOR) + 1) \
            + task.task_id
    return subdags.indented(task.task_id)


def collapse(tasks: Iterable[TaskRecord]) -> list[Row]:
    """`tasks` with each foreach's items counted in one row when there are many
    (and, for a foreach over a sub-DAG, one row per task of the copies)."""
    tasks = list(tasks)
    items: dict[str, list[TaskRecord]] = collections.defaultdict(list)
    for task in tasks:
        if task.role in ITEM_ROLES and task.template is not None:
            items[task.template + "\0" + task.role].append(task)
    rows: list[Row] = []
    for task in tasks:
        group = items.get(f"{task.template}\0{task.role}") \
            if task.role in ITEM_ROLES else None
        if group is None or len(group) <= SHOWN_ITEMS:
            rows.append(task)
        elif task is group[0]:
            rows.append(_counted(group))
            failed = [t for t in group if t.status is TaskStatus.FAILED]
            rows.extend(failed[:SHOWN_FAILURES])
    return rows


def _counted(group: list[TaskRecord]) -> ItemsRow:
    counts = collections.Counter(t.status.value for t in group)
    started = [t.started_at for t in group if t.started_at is not None]
    finished = [t.finished_at for t in group if t.finished_at is not None]
    duration = max(finished) - min(started) if started and finished else None
    return ItemsRow(label=_label(group),
                    counts=dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                    attempts=sum(t.attempt for t in group), duration=duration)


def _label(group: list[TaskRecord]) -> str:
    """"work[0..9999]", or "work[0..9999]/clean" for a task of the copies; for
    items named otherwise (a Step Functions Map's, "0001.M.i7.0001.T"), the
    part their ids share around a "*": "0001.M.i*.0001.T"."""
    head, _, tail = group[0].task_id.rpartition("[")
    if head and "]" in tail:
        return f"{head}[0..{len(group) - 1}]{tail[tail.index(']') + 1:]}"
    ids = [t.task_id for t in group]
    prefix = os.path.commonprefix(ids)
    suffix = os.path.commonprefix([i[len(prefix):][::-1] for i in ids])[::-1]
    return f"{prefix}*{suffix}"
