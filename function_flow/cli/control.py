"""`pause` and `cancel` a run, and what `resume` does for a paused one (core/control.py).

They act on the backend the settings select (cli/stores.py), like `status`,
and need no workflow file: pausing and cancelling change records only, and
whatever executes the run (the `function-flow run` process of an embedded
run, the deployed scheduler) reads them.

- pause: nothing new starts; tasks already running finish. Their
  dependents are queued and held, and `status` shows the run PAUSED.
- cancel: the run ends CANCELLED, and every task that has not finished with
  it. A body still executing goes on in its process, but what it returns
  is discarded.
- resume (cli/run.py) of a paused run clears the pause first (`resume_paused`),
  then keeps its meaning. An embedded run whose process lives: that
  process sends the held tasks again (it looks every 2 s), and the command
  ends. One whose process died: the command continues the run itself, as
  for any run whose process died. A deployed run: its queued tasks are
  sent again on the schedule topic and the deployed functions continue.

An unknown run, or one that already ended, is one `error:` line (exit 2),
and nothing changes.
"""

from __future__ import annotations

import sys
import time
from typing import Callable

import click

from function_flow import backends, owners, selection
from function_flow.cli import progress
from function_flow.cli.approvals import LeftToTheOwner
from function_flow.cli.common import EXIT_OK, command_for, fail, load_job
from function_flow.cli.stores import get_run, open_selected
from function_flow.config import Settings
from function_flow.core import control, foreach, waiting
from function_flow.core.records import RunRecord, TaskStatus
from function_flow.errors import RunEndedError, RunNotFoundError


@click.command()
@click.argument("run_id")
def pause(run_id: str) -> None:
    """Pause RUN_ID: nothing new starts until `function-flow resume RUN_ID`;
    tasks already running finish."""
    selected, run = _live_run(run_id, "pause")
    store = selected.store
    assert store is not None
    outcome = _act(lambda: control.pause(store, run_id, time.time()))
    out = progress.make_console()
    if not outcome.changed:
        out.print(f"run {run_id} is already paused (since "
                  f"{progress.format_time(run.paused_at)}); nothing was changed", markup=False)
    else:
        running = [t.task_id for t in store.find_tasks(run_id, TaskStatus.RUNNING, 50)]
        out.print(f"paused run {run_id}: nothing new starts"
                  + (f"; still running (they finish): {', '.join(running)}" if running else ""),
                  markup=False, soft_wrap=True)
    out.print(f"resume it with {command_for(selected.kind, 'resume ' + run_id)}",
              markup=False)


@click.command()
@click.argument("run_id")
def cancel(run_id: str) -> None:
    """Cancel RUN_ID: it ends CANCELLED, with every task that has not finished."""
    selected, run = _live_run(run_id, "cancel")
    store = selected.store
    assert store is not None
    # What is RUNNING but waits (for an event, an approval, a foreach's items)
    # executes no body: only the others go on in their process.
    running = [t.task_id for t in store.find_tasks(run_id, TaskStatus.RUNNING, 50)
               if waiting.waiting_trigger(store, run_id, t) is None
               and not foreach.is_summary_of(t.task_id, t.result)]
    outcome = _act(lambda: control.cancel(store, run_id, time.time()))
    out = progress.make_console()
    out.print(f"cancelled run {run_id}: {outcome.tasks} unfinished task(s) marked CANCELLED",
              markup=False)
    gone = selected.kind == "embedded" and (
        not run.owner or owners.owner_state(run.owner) == owners.OWNER_GONE)
    if running and not gone:  # a dead process executes nothing
        out.print(f"bodies still executing ({', '.join(running)}) finish in their process; "
                  "what they return is discarded", markup=False, soft_wrap=True)


def resume_paused(selected: selection.SelectedStore, settings: Settings, run: RunRecord,
                  file: str | None) -> None:
    """`function-flow resume` of a paused run: clear the pause, say who continues it.

    Returns only when this command must continue the run itself (an
    embedded run whose process is gone); otherwise exits.
    """
    out = progress.make_console()
    run_id = run.run_id
    status = command_for(selected.kind, "status " + run_id)
    if selected.kind == "gcp":
        job = load_job(file, run.job_name) if file else None
        backend = backends.gcp(settings, job)
        topic = backend.bus.topic_path  # type: ignore[attr-defined]
        try:
            selection.check_topic(backend.bus)
            outcome = _act(lambda: control.unpause(backend.store, backend.bus, run_id,
                                                   time.time()))
        finally:
            backend.close()
        out.print(f"resumed run {run_id}: sent its {outcome.tasks} queued task(s) again on "
                  f"{topic}; the deployed functions continue it. Follow it with {status}",
                  markup=False, soft_wrap=True)
        sys.exit(EXIT_OK)
    assert selected.store is not None
    store = selected.store
    _act(lambda: control.unpause(store, LeftToTheOwner(), run_id, time.time()))
    state = owners.owner_state(run.owner) if run.owner else owners.OWNER_GONE
    if state == owners.OWNER_GONE:
        out.print(f"resumed run {run_id}; the process that ran it "
                  f"({run.owner or 'unknown'}) is gone, so this command continues it",
                  markup=False, soft_wrap=True)
        return
    where = "" if state == owners.OWNER_ALIVE else (
        f" (on another host: if it no longer runs, run "
        f"{command_for(selected.kind, 'resume ' + run_id)} again to continue it here)")
    out.print(f"resumed run {run_id}: its process {run.owner} starts its held tasks again "
              f"within seconds{where}. Follow it with {status}", markup=False, soft_wrap=True)
    sys.exit(EXIT_OK)


def _live_run(run_id: str, action: str) -> tuple[selection.SelectedStore, RunRecord]:
    """The selected store and the run; one error line if it is unknown or ended."""
    selected = open_selected(Settings.from_env())
    run = get_run(selected, run_id)
    if run.status.is_final:
        fail(str(RunEndedError(run_id, run.status.value, action)))
    return selected, run


def _act(action: Callable[[], control.Outcome]) -> control.Outcome:
    """Run a control action; a run that vanished or ended meanwhile is one error line."""
    try:
        return action()
    except (RunEndedError, RunNotFoundError) as exc:
        fail(str(exc))
