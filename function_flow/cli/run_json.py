"""`status --json`: runs and tasks as JSON objects whose keys do not change.

For scripts and monitoring (`function-flow status --json | jq`), so the keys
are a promise: every key is always present (null when it has no value),
times are ISO 8601 in UTC, durations are seconds. New keys may be added;
none is renamed or removed.
"""

from __future__ import annotations

import datetime
from typing import Any

from function_flow.cli import progress
from function_flow.core.control import shown_status
from function_flow.core.records import RunRecord, TaskRecord

#: The keys of one run, in this order.
RUN_KEYS = ("run_id", "job", "status", "created_at", "finished_at", "duration_seconds",
            "error", "args", "redrives", "note")
#: The keys of one task, in this order.
TASK_KEYS = ("task_id", "status", "attempts", "interrupted", "started_at", "finished_at",
             "duration_seconds", "not_before", "error", "result")


def iso(timestamp: float | None) -> str | None:
    if not timestamp:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_object(run: RunRecord, note: str | None = None) -> dict[str, Any]:
    """One run: status as `status` shows it (PAUSED for a paused run), note as
    the table's words after it ("process gone"), or null."""
    duration = progress.run_duration(run)
    return {"run_id": run.run_id, "job": run.job_name, "status": shown_status(run),
            "created_at": iso(run.created_at), "finished_at": iso(run.finished_at),
            "duration_seconds": None if duration is None else round(duration, 3),
            "error": run.error, "args": run.args, "redrives": run.redrives, "note": note}


def task_object(task: TaskRecord) -> dict[str, Any]:
    """One task: its whole last error (a traceback), its stored result (a large
    one as the reference to its blob), and when a retry waits, `not_before`."""
    duration = task.duration
    return {"task_id": task.task_id, "status": task.status.value, "attempts": task.attempt,
            "interrupted": task.interrupted, "started_at": iso(task.started_at),
            "finished_at": iso(task.finished_at),
            "duration_seconds": None if duration is None else round(duration, 3),
            "not_before": iso(task.not_before), "error": task.error, "result": task.result}


def runs_document(runs: list[RunRecord], notes: dict[str, str]) -> dict[str, Any]:
    return {"runs": [run_object(run, notes.get(run.run_id)) for run in runs]}


def run_document(run: RunRecord, tasks: list[TaskRecord], note: str | None) -> dict[str, Any]:
    return {**run_object(run, note), "tasks": [task_object(task) for task in tasks]}
