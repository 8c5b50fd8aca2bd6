"""Follow a run until it ends, and render runs and tasks for the terminal.

Backend-agnostic: `follow` only needs a callable returning the run record and
its task records, so the embedded `run`/`resume` commands and a `dev` command
that watches the emulators share the same view.

On a terminal the view is a live table (rich.Live). When stdout is not a
terminal (CI logs, tests, `| tee`), it prints one plain line per observed
state change instead, which reads well in a log and can be grepped.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from typing import Any, Callable, Collection, Iterable, Mapping

from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from function_flow import history, subdags
from function_flow.cli import items, overview
from function_flow.core import attempts, foreach, payloads
from function_flow.core.control import shown_status
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus

#: Returns the current run record and its task records (virtual tasks excluded).
Fetch = Callable[[], "tuple[RunRecord, list[TaskRecord]]"]
#: What to print of one view of the run (follow's `lines`).
Lines = Callable[[RunRecord, "list[TaskRecord]"], "list[str]"]

STATUS_STYLES = {
    "WAITING": "dim", "READY": "cyan", "QUEUED": "cyan", "RUNNING": "yellow",
    "SUCCEEDED": "green", "FAILED": "bold red", "SKIPPED": "dim",
    "UPSTREAM_FAILED": "red", "CANCELLED": "magenta", "PAUSED": "bold cyan",
}


def make_console(stderr: bool = False) -> Console:
    """A console that does not squeeze tables into 80 columns in logs.

    Rich assumes 80 columns when output is not a terminal, which would fold
    run ids; logs have no width limit, so use COLUMNS or a wide default.
    """
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, width=160)
    return console


def follow(fetch: Fetch, console: Console, *, live: bool | None = None,
           interval: float = 0.1, lines: Lines | None = None,
           pause: Callable[[float], None] = time.sleep
           ) -> tuple[RunRecord, list[TaskRecord]]:
    """Show the run's progress until it reaches a final status; return the last view.

    `lines(run, tasks)`: what to print of each view instead of the state
    changes (plain lines; `function-flow logs --follow` prints events).
    `pause(interval)` between views: one that a run's end cuts short
    (run_end.RunChanges) lets the caller return as soon as the run ends.
    """
    if live is None:
        live = console.is_terminal and lines is None
    if not live:
        return _follow_plain(fetch, console, interval, lines, pause)
    run, tasks = fetch()
    with Live(render_progress(run, tasks, console.size.height), console=console,
              transient=True, refresh_per_second=8) as view:
        while not run.status.is_final:
            pause(interval)
            run, tasks = fetch()
            view.update(render_progress(run, tasks, console.size.height))
    return run, tasks


def _follow_plain(fetch: Fetch, console: Console, interval: float,
                  lines: Lines | None = None,
                  pause: Callable[[float], None] = time.sleep
                  ) -> tuple[RunRecord, list[TaskRecord]]:
    seen: dict[str, tuple[TaskStatus, int]] = {}
    while True:
        run, tasks = fetch()
        for line in lines(run, tasks) if lines else state_changes(seen, tasks):
            console.print(line, markup=False, soft_wrap=True)
        if run.status.is_final:
            return run, tasks
        pause(interval)


def state_changes(seen: dict[str, tuple[TaskStatus, int]],
                  tasks: Iterable[TaskRecord]) -> list[str]:
    """Lines for tasks whose (status, attempt) changed since `seen`; updates it.

    Waiting for dependencies or a first start is not news, so it is not
    printed. Polling can miss a short-lived state (a fast task may go from
    QUEUED to SUCCEEDED between two looks).
    """
    lines = []
    for task in tasks:
        state = (task.status, task.attempt)
        if seen.get(task.task_id) == state:
            continue
        seen[task.task_id] = state
        if task.status in (TaskStatus.WAITING, TaskStatus.READY) or \
                (task.status is TaskStatus.QUEUED and task.attempt <= 1):
            continue
        if task.role == "item" and task.status is not TaskStatus.FAILED:
            continue  # a foreach of 10,000 items is news once, as its own task
        lines.append(describe_change(task))
    return lines


def describe_change(task: TaskRecord) -> str:
    """One log line for a task's current state."""
    status = task.status
    line = f"{task.task_id}: {status.value}"
    if status is TaskStatus.RUNNING:
        line += f" (attempt {task.attempt})"
    elif overview.is_retrying(task):
        line += f" (attempt {task.attempt}, {retry_note(task, time.time())})"
    elif status.is_final and task.duration is not None:
        line += f" in {format_duration(task.duration)}"
    if status is TaskStatus.FAILED and task.error:
        line += f": {last_line(task.error)}"
    return line


def retry_note(task: TaskRecord, now: float) -> str:
    """A retrying task's wait and the error of the attempt that failed:
    "retry in 4.20s after RuntimeError: boom"."""
    wait = (task.not_before or 0.0) - now
    when = f"retry in {format_duration(wait)}" if wait > 0 else "retry due now"
    return f"{when} after {last_line(task.error)}" if task.error else when


def task_note(task: TaskRecord, now: float) -> str:
    """The live view's last column: why a task retries, or failed."""
    if overview.is_retrying(task):
        return retry_note(task, now)
    if task.status is TaskStatus.RUNNING and task.attempt > 1 and task.error:
        return f"attempt {task.attempt - 1} failed: {last_line(task.error)}"
    if task.status is TaskStatus.FAILED and task.error:
        return last_line(task.error)
    return ""


def render_progress(run: RunRecord, tasks: list[TaskRecord],
                    height: int | None = None) -> Group:
    """The live view: the run's header, its counts, and a row per task; on a
    terminal of `height` lines too small for every row, the rows that need
    attention and the others counted (cli/overview.py)."""
    header = Text.assemble((f"run {run.run_id}", "bold"), f"  job {run.job_name}  ",
                           styled_status(shown_status(run)),
                           f"  {format_duration(run_duration(run))}")
    counts = Text(overview.count(tasks).line())
    table = Table(box=box.SIMPLE, show_edge=False)
    table.add_column("task", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempt", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True, overflow="ellipsis")
    now = time.time()
    rows, hidden = overview.fit(items.collapse(in_groups(tasks)), height)
    for task in rows:
        if isinstance(task, items.ItemsRow):
            table.add_row(Text("  " + task.label), Text(task.status_text()), "",
                          format_duration(task.duration), "")
            continue
        running = task.status is TaskStatus.RUNNING and task.started_at is not None
        duration = (now - task.started_at) if running else task.duration  # type: ignore[operator]
        table.add_row(Text(items.label(task)), styled_status(task.status.value),
                      str(task.attempt or ""), format_duration(duration),
                      Text(task_note(task, now)))
    parts: list[Any] = [header, counts, table]
    if hidden:
        parts.append(Text(overview.hidden_line(hidden), style="dim"))
    return Group(*parts)


def summary_table(tasks: list[TaskRecord], *, errors: bool = False) -> Table:
    """Task, status, attempts, duration (and the last error line, if asked)."""
    table = Table(box=box.SIMPLE, show_edge=False)
    table.add_column("task", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("attempts", justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    if errors:
        table.add_column("error", overflow="fold")
    for task in items.collapse(in_groups(tasks)):
        if isinstance(task, items.ItemsRow):
            table.add_row(Text("  " + task.label), Text(task.status_text()),
                          str(task.attempts), format_duration(task.duration),
                          *([Text("")] if errors else []))
            continue
        row: list[Any] = [Text(items.label(task)), styled_status(task.status.value),
                          format_attempts(task), format_duration(task.duration)]
        if errors:
            row.append(Text(last_line(task.error) if task.error else ""))
        table.add_row(*row)
    return table


def in_groups(tasks: list[TaskRecord]) -> list[TaskRecord]:
    """Each sub-DAG's node row first, then its tasks (indented by the caller)."""
    by_id = {task.task_id: task for task in tasks}
    return [by_id[task_id] for task_id in subdags.grouped(by_id)]


def runs_table(runs: list[RunRecord], notes: Mapping[str, str] | None = None,
               stopped: Collection[str] = ()) -> Table:
    """Run id, job, status, started, duration: one row per run.

    notes: words after a run's status ("RUNNING (process gone)"). stopped:
    RUNNING runs that nothing executes any more, whose duration would only
    grow: shown as "-".
    """
    notes = notes or {}
    table = Table(box=box.SIMPLE, show_edge=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("job", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("started", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    for run in runs:
        shown = styled_status(shown_status(run))
        if run.run_id in notes:
            shown.append(f" ({notes[run.run_id]})")
        duration = None if run.run_id in stopped else run_duration(run)
        table.add_row(Text(run.run_id), Text(run.job_name), shown,
                      format_time(run.created_at), format_duration(duration))
    return table


def results_lines(tasks: list[TaskRecord], task_ids: Iterable[str]) -> list[str]:
    """`task: <result as compact JSON>` for each of `task_ids` that succeeded."""
    by_id = {task.task_id: task for task in tasks}
    lines = []
    for task_id in task_ids:
        task = by_id.get(task_id)
        if task is not None and task.status is TaskStatus.SUCCEEDED:
            value = task.result
            if foreach.is_summary_of(task_id, value):  # its items' results
                value = foreach.assemble(task_id, value, by_id, _shown_inline)
            lines.append(f"{task_id}: {compact_json(value)}")
    return lines


def _shown_inline(stored: Any, _what: str) -> Any:
    """A foreach item's result inside its foreach's: a blob by its description."""
    return payloads.describe(stored) if payloads.is_reference(stored) else stored


def counted(count: int, noun: str) -> str:
    """"1 task", "3 tasks"."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def compact_json(value: Any, limit: int = 2000) -> str:
    """A result on one line, cut at `limit` characters so a big one stays readable.

    A value stored as a blob is shown by its size and location, not read.
    """
    if payloads.is_reference(value):
        return payloads.describe(value)
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=repr)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def styled_status(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def format_attempts(task: TaskRecord) -> str:
    """Attempts so far; those cut short by a killed process are shown apart."""
    if not task.attempt:
        return "0"
    if task.interrupted:
        return f"{task.attempt} ({task.interrupted} interrupted)"
    return str(task.attempt)


def format_duration(seconds: float | None) -> str:
    """As history.seconds, but tables keep two decimals below a second too."""
    if seconds is None:
        return "-"
    return f"{seconds:.2f}s" if seconds < 1 else history.seconds(seconds)


def format_time(timestamp: float | None) -> str:
    if not timestamp:
        return "-"
    return datetime.datetime.fromtimestamp(timestamp).strftime("%Y-%m-%d %H:%M:%S")


def run_duration(run: RunRecord) -> float | None:
    """Wall time of a run: until it ended, or until now while it runs."""
    if not run.created_at:
        return None
    end = run.finished_at if run.status.is_final else time.time()
    return None if end is None else max(0.0, end - run.created_at)


def last_line(error: str) -> str:
    """The line of a stored error that says what it is: `Type: message`."""
    return attempts.headline(error)


def final_status_line(run: RunRecord) -> str:
    return f"run {run.run_id} {run.status.value} in {format_duration(run_duration(run))}"


__all__ = ["Fetch", "follow", "make_console", "render_progress", "summary_table",
           "runs_table", "results_lines", "counted", "state_changes", "final_status_line",
           "last_line"]
