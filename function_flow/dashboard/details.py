"""Everything the dashboard shows about one task, in one place (`task_detail`).

The task page and its JSON (`/api/runs/<run>/tasks/<task>`) both come from
here. Each attempt comes from the run's history (function_flow/history.py,
which `function-flow logs` prints too): every attempt the record keeps,
with its times, outcome, error and the output its body printed and logged,
the current one last. A record keeps the first and the most recent
attempts; `earlier_attempts` says how many between them it no longer holds.
"""

from __future__ import annotations

import time
from typing import Any

from function_flow import history
from function_flow.cli import progress
from function_flow.core import foreach
from function_flow.core.ports import Store
from function_flow.core.records import TaskRecord, TaskStatus

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
    run = store.get_run(run_id)
    times = history.redrive_times(run) if run is not None else []
    attempts = [_attempt(a, now) for a in history.attempts(task, times)]
    trigger = store.get_trigger(task.trigger_id) if running and task.trigger_id else None
    return {
        "run_id": run_id, "task_id": task.task_id, "status": task.status.value,
        "attempt": task.attempt, "attempts": attempts,
        "earlier_attempts": history.dropped(task),
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
        "result": _result(task),
        "item_key": None if task.item_key is None else preview(task.item_key),
        "item": preview(task.item) if task.role == "item" else None,
        "deps": list(task.deps) if task.deps is not None else None,
        "deps_done": dict(sorted(task.deps_done.items())),
        "template": task.template, "role": task.role,
        "waits_for_event": trigger is not None,
        "waits_for_watch": trigger.watch if trigger is not None else None,
        "lease_until": progress.format_time(task.lease_until) if running else None,
    }


#: The colour of an attempt's outcome (history.Attempt.outcome).
OUTCOME_STATUS = {"succeeded": "SUCCEEDED", "failed": "FAILED", "cancelled": "CANCELLED",
                  "interrupted": "UPSTREAM_FAILED", "waiting": "RUNNING",
                  "running": "RUNNING", "queued": "QUEUED"}


def _attempt(attempt: history.Attempt, now: float) -> dict[str, Any]:
    """One attempt as the task page shows it."""
    live = attempt.outcome in ("running", "waiting") and attempt.finished_at is None
    duration = now - attempt.started_at if live and attempt.started_at else attempt.duration
    return {
        "number": attempt.attempt, "outcome": attempt.outcome,
        "status": OUTCOME_STATUS.get(attempt.outcome, attempt.outcome.upper()),
        "redrive": attempt.redrive,
        "queued": progress.format_time(attempt.queued_at),
        "started": progress.format_time(attempt.started_at),
        "finished": progress.format_time(attempt.finished_at),
        "duration": progress.format_duration(duration),
        "retry_at": progress.format_time(attempt.retry_at) if attempt.retry_at else None,
        "starts_at": progress.format_time(attempt.not_before)
        if attempt.not_before and attempt.not_before > now else None,
        "error": attempt.error,
        "error_line": progress.last_line(attempt.error) if attempt.error else None,
        "output": attempt.output, "output_cut": attempt.output_cut,
    }


def _result(task: TaskRecord) -> str | None:
    """Its result, previewed; a foreach's is its items', which the page lists
    (reading every item here would make one look cost a read per item)."""
    if foreach.is_summary_of(task.task_id, task.result):
        how = "by key" if task.result.get("mapping") else "in item order"
        return f"the results of its {int(task.result.get('items', 0)):,} items, {how}"
    return preview(task.result) if task.result is not None else None


def preview(value: Any) -> str:
    """A value as compact JSON, cut at PREVIEW_CHARS (a blob is described, not read)."""
    return progress.compact_json(value, limit=PREVIEW_CHARS)
