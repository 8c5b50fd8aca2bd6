"""What the live view shows of a run: counts, and which rows fit on the screen.

A newcomer watching a wide DAG needs the state of the run at a glance
("23/42 done, 4 running, 1 failed") and the tasks that need attention,
not 400 rows cut off with `...` at the bottom of the terminal. When every
row fits, all are shown; when not, the running, retrying and failed ones
are listed and the others only counted by status (foreach items are
already collapsed by cli/items.py). Pure functions of the records, so the
choice is tested without a terminal.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import Iterable

from function_flow.cli import items
from function_flow.core.records import TaskRecord, TaskStatus

#: Lines of the live view that are not task rows: the run's header, the
#: counts, the table's heading and rule, the "not shown" line, and a spare.
FIXED_LINES = 6
#: However small the terminal, at least this many task rows are shown.
MIN_ROWS = 5


@dataclasses.dataclass
class Counts:
    """The run's tasks (not counting foreach items) by how far they got."""

    total: int = 0
    done: int = 0  # succeeded or skipped
    running: int = 0
    failed: int = 0
    retrying: int = 0  # queued again after a failed attempt
    upstream_failed: int = 0
    cancelled: int = 0

    def line(self) -> str:
        """"23/42 done, 4 running, 1 failed", then what else is non-zero."""
        text = f"{self.done}/{self.total} done, {self.running} running, {self.failed} failed"
        for count, words in ((self.retrying, "retrying"),
                             (self.upstream_failed, "upstream failed"),
                             (self.cancelled, "cancelled")):
            if count:
                text += f", {count} {words}"
        return text


def is_retrying(task: TaskRecord) -> bool:
    """Queued again after a failed attempt, maybe waiting out its backoff."""
    return task.status is TaskStatus.QUEUED and task.attempt > 1


def count(tasks: Iterable[TaskRecord]) -> Counts:
    counts = Counts()
    for task in tasks:
        if task.role == "item":
            continue  # counted in their foreach's row
        counts.total += 1
        status = task.status
        if status in (TaskStatus.SUCCEEDED, TaskStatus.SKIPPED):
            counts.done += 1
        elif status is TaskStatus.RUNNING:
            counts.running += 1
        elif status is TaskStatus.FAILED:
            counts.failed += 1
        elif status is TaskStatus.UPSTREAM_FAILED:
            counts.upstream_failed += 1
        elif status is TaskStatus.CANCELLED:
            counts.cancelled += 1
        elif is_retrying(task):
            counts.retrying += 1
    return counts


def needs_attention(row: items.Row) -> bool:
    """Rows a summarised view still lists: what runs, retries or failed."""
    if isinstance(row, items.ItemsRow):
        return any(status in row.counts for status in ("RUNNING", "QUEUED", "FAILED"))
    return row.status in (TaskStatus.RUNNING, TaskStatus.FAILED) or is_retrying(row)


def _priority(row: items.Row) -> int:
    if isinstance(row, items.ItemsRow):
        return 1
    if row.status is TaskStatus.FAILED:
        return 0
    return 1 if is_retrying(row) else 2


def fit(rows: list[items.Row], height: int | None) -> tuple[list[items.Row], dict[str, int]]:
    """The rows to show on a terminal `height` lines high, and how many rows
    of each status are not shown ("more RUNNING" when even the rows that
    need attention do not fit: failed first, then retrying, then running)."""
    if height is None or len(rows) + FIXED_LINES <= height:
        return rows, {}
    budget = max(MIN_ROWS, height - FIXED_LINES)
    hidden: collections.Counter[str] = collections.Counter()
    kept = [row for row in rows if needs_attention(row)]
    for row in rows:
        if not needs_attention(row) and isinstance(row, TaskRecord):
            hidden[row.status.value] += 1
    if len(kept) > budget:
        ranked = sorted(range(len(kept)), key=lambda i: (_priority(kept[i]), i))
        chosen = set(ranked[:budget])
        for i, row in enumerate(kept):
            if i not in chosen:
                hidden["more " + (row.status.value if isinstance(row, TaskRecord)
                                  else "foreach rows")] += 1
        kept = [row for i, row in enumerate(kept) if i in chosen]
    return kept, dict(hidden)


def hidden_line(hidden: dict[str, int]) -> str:
    """"not shown: 23 SUCCEEDED, 14 WAITING" (largest first)."""
    parts = sorted(hidden.items(), key=lambda kv: (-kv[1], kv[0]))
    return "not shown: " + ", ".join(f"{n:,} {status}" for status, n in parts)
