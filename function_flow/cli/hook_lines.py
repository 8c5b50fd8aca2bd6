"""How `status`, `run` and `resume` show a run's hooks and its callback.

Hooks are task records with reserved ids (core/hooks.py) that the task
tables leave out; these lines say what each did, in words: whether
on_failure ran, and above all whether the callback was delivered.
"""

from __future__ import annotations

from typing import Any

from function_flow.cli import progress
from function_flow.core import hooks
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus


#: How much of what a hook returned its line shows.
HOOK_RESULT_CHARS = 200


def hook_lines(run: RunRecord, records: list[TaskRecord]) -> list[str]:
    """One line per hook of the run, in the order they run."""
    by_id = {r.task_id: r for r in records}
    lines = []
    previous = None
    for hook_id in run.hooks or ():
        record = by_id.get(hook_id)
        if record is not None:
            name = hooks.NAMES[hook_id]
            if hook_id == hooks.CALLBACK:
                name = f"callback to {run.callback_url}"
            lines.append(f"{name}: {_state(run, record, previous)}")
        previous = hook_id
    return lines


def _state(run: RunRecord, record: TaskRecord, previous: str | None) -> str:
    status, attempt = record.status, record.attempt
    error = progress.last_line(record.error) if record.error else ""
    callback = record.task_id == hooks.CALLBACK
    if status is TaskStatus.WAITING:
        if not run.status.is_final:
            return "waits for the run to end"
        return f"waits for the {hooks.NAMES[previous]} hook" if previous else "WAITING"
    if status is TaskStatus.SKIPPED:
        return "skipped (the run did not fail)"
    if status is TaskStatus.SUCCEEDED:
        if callback:
            code = record.result.get("status_code") if isinstance(record.result, dict) else None
            return f"delivered (HTTP {code}, attempt {attempt})"
        kept = "" if record.result is None else \
            f": {progress.compact_json(record.result, HOOK_RESULT_CHARS)}"
        return f"SUCCEEDED (attempt {attempt}){kept}"
    if status is TaskStatus.FAILED:
        what = "not delivered" if callback else "FAILED"
        return f"{what} after {attempt} attempt(s): {error}"
    if status is TaskStatus.QUEUED and attempt > 1:
        when = progress.format_time(record.not_before) if record.not_before else "soon"
        what = "not delivered yet" if callback else "retrying"
        return f"{what}: attempt {attempt - 1} failed: {error}; attempt {attempt} at {when}"
    if status is TaskStatus.RUNNING:
        return f"{'sending' if callback else 'RUNNING'} (attempt {attempt})"
    return f"{status.value} (attempt {attempt})"


def print_hooks(out: Any, run: RunRecord, records: list[TaskRecord],
                tracebacks: bool = False) -> None:
    """The run's hooks and callback, in words (and the traceback of a failed hook)."""
    lines = hook_lines(run, records)
    if not lines:
        return
    out.print("hooks:", markup=False)
    for line in lines:
        out.print(f"  {line}", markup=False, soft_wrap=True)
    for record in records if tracebacks else ():
        if hooks.is_hook(record.task_id) and record.status is TaskStatus.FAILED \
                and record.error and record.task_id != hooks.CALLBACK:
            out.print(f"--- {hooks.NAMES[record.task_id]} hook (attempt {record.attempt}) "
                      "---", markup=False)
            out.print(record.error.rstrip(), markup=False, soft_wrap=True)
