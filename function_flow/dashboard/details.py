"""Everything the dashboard shows about one task, in one place (`task_detail`).

The task page and its JSON (`/api/runs/<run>/tasks/<task>`) both come from
here. A task record keeps its current attempt only: its number, its times,
the last error and the result. So `attempts` lists that attempt, and
`earlier_attempts` says how many came before it whose details the record
no longer holds.
"""

from __future__ import annotations

import time
from typing import Any

from function_flow.cli import progress
from function_flow.core.ports import Store
from function_flow.core.records import TaskStatus

#: Characters of a result or an item shown; the rest is cut, saying how much.
PREVIEW_CHARS = 4000


def task_detail(store: Store, run_id: str, task_id: str,
                now: float | None = None) -> dict[str, Any] | None:
    """The task's detail as plain JSON values, or None when the run has no such task."""
    found = store.get_tasks(run_id, [task_id])
    if not found:
        return None
    task = found[0]
    now = time.time() if now is None else now
    running = task.status is TaskStatus.RUNNING
    attempts = []
    if task.attempt:
        end = task.finished_at if task.status.is_final else None
        error = task.error if task.status is not TaskStatus.SUCCEEDED else None
        attempts.append({
            "number": task.attempt, "status": task.status.value,
            "started_at": task.started_at, "finished_at": end,
            "started": progress.format_time(task.started_at),
            "duration": progress.format_duration(
                (now - task.started_at) if running and task.started_at else task.duration),
            "error": error, "error_line": progress.last_line(error) if error else None,
            "output": None})
    trigger = store.get_trigger(task.trigger_id) if running and task.trigger_id else None
    return {
        "run_id": run_id, "task_id": task.task_id, "status": task.status.value,
        "attempt": task.attempt, "attempts": attempts,
        "earlier_attempts": max(0, task.attempt - 1),
        "interrupted": task.interrupted,
        "queued": progress.format_time(task.queued_at),
        "started": progress.format_time(task.started_at),
        "finished": progress.format_time(task.finished_at),
        "duration": attempts[-1]["duration"] if attempts else "-",
        "retry_at": progress.format_time(task.not_before)
        if task.status is TaskStatus.QUEUED and task.not_before and task.not_before > now
        else None,
        "error": task.error,
        "last_error": progress.last_line(task.error) if task.error else None,
        "result": preview(task.result) if task.result is not None else None,
        "item_key": None if task.item_key is None else preview(task.item_key),
        "item": preview(task.item) if task.role == "item" else None,
        "deps": list(task.deps) if task.deps is not None else None,
        "deps_done": dict(sorted(task.deps_done.items())),
        "template": task.template, "role": task.role,
        "waits_for_event": trigger is not None,
        "waits_for_watch": trigger.watch if trigger is not None else None,
        "lease_until": progress.format_time(task.lease_until) if running else None,
    }


def preview(value: Any) -> str:
    """A value as compact JSON, cut at PREVIEW_CHARS (a blob is described, not read)."""
    return progress.compact_json(value, limit=PREVIEW_CHARS)
