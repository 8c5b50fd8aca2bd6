"""`status`: list recent runs, or show one run's tasks, on the selected backend.

Needs no workflow file: everything shown comes from the records. A RUNNING
embedded run whose process is gone (killed, crashed) says so and how to
continue it, instead of looking busy forever; a process on another host
cannot be checked, and the view says that rather than guess.
"""

from __future__ import annotations


import click

from function_flow import owners, selection
from function_flow.cli import progress, run_json
from function_flow.cli.common import command_for, fail
from function_flow.cli.stores import get_run, open_selected
from function_flow.cli import items
from function_flow.cli.hook_lines import print_hooks
from function_flow.core.control import shown_status
from function_flow.core.listing import ordered_tasks
from function_flow.store.indexes import MissingIndexError
from function_flow.core.records import RunRecord, RunStatus, TaskStatus


#: What --status accepts: a run's statuses, and PAUSED (a RUNNING run that is paused).
STATUS_CHOICES = [status.value for status in RunStatus] + ["PAUSED"]


@click.command()
@click.argument("run_id", required=False)
@click.option("--job", "job_name", metavar="NAME", help="Only runs of the job NAME.")
@click.option("--status", "status_name", type=click.Choice(STATUS_CHOICES, case_sensitive=False),
              help="Only runs in that status.")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many recent runs to list.")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON (stable keys: see the README) instead of tables.")
def status(run_id: str | None, job_name: str | None, status_name: str | None, limit: int,
           as_json: bool) -> None:
    """List recent runs (of one job, in one status), or show the tasks of RUN_ID
    (with tracebacks of failures).

    Reads the backend the settings select: the embedded store, or Firestore
    (or its emulator) when FUNCTION_FLOW_BACKEND=gcp, GOOGLE_CLOUD_PROJECT or
    FIRESTORE_EMULATOR_HOST is set.
    """
    if run_id is not None and (job_name or status_name):
        fail("--job and --status filter the list of runs; give them without RUN_ID")
    selected = open_selected()
    if run_id is None:
        list_runs(selected, limit, job_name, status_name.upper() if status_name else None,
                  as_json)
    else:
        show_run(selected, run_id, as_json)


def matching_runs(selected: selection.SelectedStore, limit: int, job_name: str | None,
                  status_name: str | None) -> list[RunRecord]:
    """Up to `limit` runs of `job_name` in `status_name`, newest first.

    PAUSED is a RUNNING run with paused_at set: RUNNING runs are read and
    the paused ones kept. On Firestore a filtered list newest first needs a
    composite index (store/indexes.py; deploy and terraform/ create them):
    without it, the list is read unordered and sorted here, with a warning
    that the newest may be missing past `limit`.
    """
    if selected.store is None:
        return []
    paused = status_name == "PAUSED"
    stored = RunStatus.RUNNING if paused else RunStatus(status_name) if status_name else None
    count = limit if not paused else max(limit, 1000)
    try:
        runs = selected.store.list_runs(count, status=stored, job_name=job_name,
                                        newest_first=True)
    except MissingIndexError as exc:  # Firestore without the composite index
        click.echo(f"warning: {exc}; listing without order, the newest runs may be missing "
                   "past --limit", err=True)
        runs = selected.store.list_runs(count, status=stored, job_name=job_name)
    if paused:
        runs = [run for run in runs if shown_status(run) == "PAUSED"]
    return sorted(runs, key=lambda run: run.created_at, reverse=True)[:limit]


def owner_of(kind: str, run: RunRecord) -> str | None:
    """OWNER_GONE / OWNER_ELSEWHERE / OWNER_ALIVE for an embedded run its process
    still executes (RUNNING, or ended with hooks to run), else None.

    Runs on Google Cloud have no owner: the deployed functions execute them.
    """
    executing = run.status is RunStatus.RUNNING or (run.status.is_final and run.hooks_pending)
    if kind != "embedded" or not executing or not run.owner:
        return None
    return owners.owner_state(run.owner)


def list_runs(selected: selection.SelectedStore, limit: int, job_name: str | None = None,
              status_name: str | None = None, as_json: bool = False) -> None:
    out = progress.make_console()
    runs = matching_runs(selected, limit, job_name, status_name)
    notes, stopped = run_notes(selected.kind, runs)
    if as_json:
        click.echo(run_json.dumps(run_json.runs_document(runs, notes, stopped)))
        return
    filters = "".join([f" of job {job_name}" if job_name else "",
                       f" in status {status_name}" if status_name else ""])
    if not runs:
        out.print(f"no runs{filters or ' yet'} in {selected.description}", markup=False,
                  soft_wrap=True)
        return
    out.print(f"runs{filters} in {selected.description}, newest first:", markup=False,
              soft_wrap=True)
    out.print(progress.runs_table(runs, notes=notes, stopped=stopped))
    if stopped:
        out.print(f"{len(stopped)} run(s) lost their process; continue one with "
                  f"{command_for(selected.kind, 'resume RUN_ID')}", markup=False)


def run_notes(kind: str, runs: list[RunRecord]) -> tuple[dict[str, str], set[str]]:
    """The words after each run's status, and the RUNNING runs nothing executes."""
    notes: dict[str, str] = {}
    stopped: set[str] = set()
    for run in runs:
        state = owner_of(kind, run)
        if state == owners.OWNER_GONE:
            notes[run.run_id] = "process gone"
            stopped.add(run.run_id)
        elif state == owners.OWNER_ELSEWHERE:
            notes[run.run_id] = f"run by {run.owner}"
        if run.blocked and run.status is RunStatus.RUNNING:
            notes[run.run_id] = "blocked: its definition changed"
        if run.status.is_final and run.hooks_pending:
            notes[run.run_id] = "hooks left: process gone" if state == owners.OWNER_GONE \
                else "hooks still running"
    return notes, stopped


def headline(kind: str, run: RunRecord) -> str:
    """The first line of `status RUN_ID`: status, duration, and who runs it."""
    state = owner_of(kind, run)
    if run.status.is_final:
        if state == owners.OWNER_GONE:
            return (f"{progress.final_status_line(run)}; its process {run.owner} is gone "
                    f"before its hooks ran: run them with "
                    f"{command_for(kind, 'resume ' + run.run_id)}")
        return progress.final_status_line(run)
    if state == owners.OWNER_GONE:
        return (f"run {run.run_id} {shown_status(run)}, but its process {run.owner} is gone; "
                f"continue it with {command_for(kind, 'resume ' + run.run_id)}")
    line = f"run {run.run_id} {shown_status(run)} " \
           f"for {progress.format_duration(progress.run_duration(run))}"
    if state == owners.OWNER_ELSEWHERE:
        return (f"{line}, run by {run.owner} (another host: whether that process still "
                "runs cannot be checked from here)")
    if state == owners.OWNER_ALIVE:
        return f"{line}, in process {run.owner}"
    return line


def show_run(selected: selection.SelectedStore, run_id: str, as_json: bool = False) -> None:
    out = progress.make_console()
    run = get_run(selected, run_id)
    assert selected.store is not None
    records = selected.store.get_tasks(run_id)
    tasks = ordered_tasks(records)
    if as_json:
        notes, stopped = run_notes(selected.kind, [run])
        click.echo(run_json.dumps(run_json.run_document(run, tasks, notes.get(run_id),
                                                        run_id in stopped)))
        return
    out.print(headline(selected.kind, run), markup=False, soft_wrap=True)
    if run.blocked and run.status is RunStatus.RUNNING:
        out.print(f"BLOCKED: {run.blocked}", markup=False, soft_wrap=True)
    out.print(f"job {run.job_name}, started {progress.format_time(run.created_at)}"
              + (f", args {progress.compact_json(run.args)}" if run.args else "")
              + (f", redriven {run.redrives} time(s)" if run.redrives else ""),
              markup=False, soft_wrap=True)
    out.print(progress.summary_table(tasks, errors=True))
    failed = [t for t in tasks if t.status is TaskStatus.FAILED and t.error]
    failed_items = [t for t in failed if t.role == "item"]
    for task in [t for t in failed if t.role != "item"] + failed_items[:items.SHOWN_FAILURES]:
        out.print(f"--- {task.task_id} (attempt {task.attempt}) ---", markup=False)
        out.print(task.error.rstrip(), markup=False, soft_wrap=True)
    if len(failed_items) > items.SHOWN_FAILURES:
        out.print(f"({len(failed_items) - items.SHOWN_FAILURES:,} more failed items not "
                  "shown)", markup=False)
    if run.error:
        out.print(f"run error: {run.error}", markup=False, soft_wrap=True)
    if shown_status(run) == "PAUSED":
        out.print(f"paused since {progress.format_time(run.paused_at)}: nothing new starts "
                  f"until {command_for(selected.kind, 'resume ' + run_id)}",
                  markup=False, soft_wrap=True)
    print_hooks(out, run, records, tracebacks=True)

