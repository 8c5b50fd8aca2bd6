"""`status --json`: runs and tasks as JSON objects whose keys do not change.

For scripts and monitoring (`function-flow status --json | jq`), so the keys
are a promise: every key is always present (null when it has no value),
times are ISO 8601 in UTC, durations are seconds. New keys may be added;
none is renamed or removed. The output is standard JSON (RFC 8259), which
has no NaN or infinities: a float that is one (a model's loss can be NaN)
is written as the string "NaN", "Infinity" or "-Infinity" (`dumps`).
"""

from __future__ import annotations

import datetime
import json
import math
from typing import Any, Collection, Mapping

from function_flow.cli import progress
from function_flow.core import foreach
from function_flow.core.control import shown_status
from function_flow.core.records import RunRecord, TaskRecord

#: The keys of one run, in this order.
RUN_KEYS = ("run_id", "job", "status", "created_at", "finished_at", "duration_seconds",
            "error", "args", "redrives", "note")
#: The keys of one task, in this order.
TASK_KEYS = ("task_id", "status", "attempts", "interrupted", "started_at", "finished_at",
             "duration_seconds", "not_before", "error", "result")


#: How a float JSON cannot hold is written: as the string Python's json would print bare.
NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}


def finite(value: Any) -> Any:
    """`value` with every NaN or infinite float replaced by its name as a string.

    Python's json writes them as bare NaN/Infinity, which jq, JavaScript's
    JSON.parse and every other standard parser refuse; null would lose the
    fact that a result was NaN, a string keeps it readable.
    """
    if isinstance(value, float) and not math.isfinite(value):
        return NON_FINITE.get(value, "NaN")
    if isinstance(value, dict):
        return {key: finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def dumps(document: Any) -> str:
    """One line of standard JSON (every --json output of the CLI is one)."""
    return json.dumps(finite(document), ensure_ascii=False, allow_nan=False)


def iso(timestamp: float | None) -> str | None:
    if not timestamp:
        return None
    moment = datetime.datetime.fromtimestamp(timestamp, tz=datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def run_object(run: RunRecord, note: str | None = None,
               stopped: bool = False) -> dict[str, Any]:
    """One run: status as `status` shows it (PAUSED for a paused run), note as
    the table's words after it ("process gone"), or null. A run nothing
    executes (`stopped`: its process is gone) has no duration, as in the table."""
    duration = None if stopped else progress.run_duration(run)
    return {"run_id": run.run_id, "job": run.job_name, "status": shown_status(run),
            "created_at": iso(run.created_at), "finished_at": iso(run.finished_at),
            "duration_seconds": None if duration is None else round(duration, 3),
            "error": run.error, "args": run.args, "redrives": run.redrives, "note": note}


def task_object(task: TaskRecord, others: Mapping[str, TaskRecord] | None = None
                ) -> dict[str, Any]:
    """One task: its whole last error (a traceback), its stored result (a large
    one as the reference to its blob; a foreach's, its items' results from
    `others`, the run's records), and when a retry waits, `not_before`."""
    duration = task.duration
    result = task.result
    if others is not None and foreach.is_summary_of(task.task_id, result):
        result = foreach.assemble(task.task_id, result, others, foreach.as_stored)
    return {"task_id": task.task_id, "status": task.status.value, "attempts": task.attempt,
            "interrupted": task.interrupted, "started_at": iso(task.started_at),
            "finished_at": iso(task.finished_at),
            "duration_seconds": None if duration is None else round(duration, 3),
            "not_before": iso(task.not_before), "error": task.error, "result": result}


def runs_document(runs: list[RunRecord], notes: dict[str, str],
                  stopped: Collection[str] = ()) -> dict[str, Any]:
    return {"runs": [run_object(run, notes.get(run.run_id), run.run_id in stopped)
                     for run in runs]}


def run_document(run: RunRecord, tasks: list[TaskRecord], note: str | None,
                 stopped: bool = False) -> dict[str, Any]:
    by_id = {task.task_id: task for task in tasks}
    return {**run_object(run, note, stopped),
            "tasks": [task_object(task, by_id) for task in tasks]}
