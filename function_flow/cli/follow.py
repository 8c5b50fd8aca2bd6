"""Follow a run to its end and summarise it: in this process, or deployed.

`follow_to_end` is for runs this process executes (embedded `run` and
`resume`): it repairs a stalled run and settles leftovers. `watch` only
reads a store, for runs that deployed functions execute (`resume` on
Google Cloud, `dev`): it never runs a body.
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from typing import Any, NoReturn

from function_flow import backends
from function_flow.cli import progress
from function_flow.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED,
                                      command_for, fail)
from function_flow.cli.hook_lines import hook_lines, print_hooks
from function_flow.core.listing import ordered_tasks
from function_flow.core.ports import Store
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.run_end import RunChanges
from function_flow.tasks import Job

#: Once a run has ended, how long `run` and `resume` wait for its tasks that
#: are still busy before cancelling them and exiting.
FINAL_GRACE_SECONDS = 2.0
#: Deployed, tasks still running when the run ended finish in their
#: functions: how long to wait for them so the summary shows where they ended.
DEPLOYED_GRACE_SECONDS = 10.0


def follow_to_end(job: Job, backend: backends.Backend, run_id: str, *,
                  resumed: bool = False, existed: bool = False,
                  epilogue: Any = None) -> NoReturn:
    """Show the run's progress, then its summary; exit 0 or 1 by its outcome.

    existed: `run --run-id` named a run that was already there (with the
    same arguments), so this is that run, not a new one. epilogue: called
    with the console before the exit (a state machine prints its output)."""
    out, err = progress.make_console(), progress.make_console(stderr=True)
    engine = job.engine
    verb = "resuming" if resumed else "already started:" if existed else "started"
    counted = progress.counted(len(job.dag.tasks), "task")
    out.print(f"{verb} run {run_id} (job {job.name}, {counted})", markup=False)

    changes = RunChanges(engine.store)  # the run's end cuts a pause short

    def fetch() -> tuple[RunRecord, list[TaskRecord]]:
        job.repair_if_stalled(run_id)
        changes.mark()
        return engine.run_status(run_id), engine.task_records(run_id)

    try:
        progress.follow(fetch, out, pause=changes.pause)
        follow_hooks(job, run_id, out)
        settle(job, backend, run_id)
    except KeyboardInterrupt:
        err.print(f"interrupted; the run is left as it is. Finish it with: "
                  f"{command_for(backend.kind, 'resume ' + run_id)}", markup=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # do not wait for the worker threads at exit
    run, tasks = fetch()
    report(out, run, tasks, sinks=results_of(job), kind=backend.kind,
           hook_records=hook_records(engine.store, run))
    if epilogue is not None:  # what the workflow adds (a state machine: its output)
        epilogue(out)
    exit_by_outcome(err, run, backend.kind)


def hook_records(store: Store, run: RunRecord) -> list[TaskRecord]:
    return store.get_tasks(run.run_id, run.hooks) if run.hooks else []


def follow_hooks(job: Job, run_id: str, out: Any, interval: float = 0.1) -> None:
    """After the run ended, wait for its hooks and callback (core/hooks.py), saying
    what each does meanwhile (the summary says how they ended): a callback
    that keeps failing is retried here with its backoff. The commit of the
    hooks' end cuts a pause short (run_end.RunChanges)."""
    changes = RunChanges(job.engine.store)
    changes.mark()
    run = job.engine.run_status(run_id)
    shown: list[str] = []
    while run.hooks_pending:
        lines = hook_lines(run, hook_records(job.engine.store, run))
        for line in lines:
            if line not in shown:
                out.print(line, markup=False, soft_wrap=True)
        shown = lines
        changes.pause(interval)
        job.repair_if_stalled(run_id)
        changes.mark()
        run = job.engine.run_status(run_id)


def exit_by_outcome(err: Any, run: RunRecord, kind: str) -> NoReturn:
    if run.status is RunStatus.SUCCEEDED:
        sys.exit(EXIT_OK)
    err.print(f"error: {run.error or 'run ' + run.status.value}", markup=False, soft_wrap=True)
    hint = "see the traceback with" if run.status is RunStatus.FAILED else "see its tasks with"
    err.print(f"{hint}: {command_for(kind, 'status ' + run.run_id)}", markup=False)
    sys.exit(EXIT_RUN_FAILED)


def settle(job: Job, backend: backends.Backend, run_id: str) -> None:
    """Once the run has ended, leave no task of it queued or running, promptly.

    Tasks already running when the run failed get a short grace to finish,
    so the summary shows where they ended. What is still busy after it (a
    body that overran its timeout, a retry waiting out its backoff) cannot
    change the outcome and would keep the command waiting for minutes, so
    it is cancelled instead: the bodies die when this process exits, and
    `status` must not show them running forever in an ended run.
    """
    bus = backend.bus
    if not bus.wait_idle(timeout=FINAL_GRACE_SECONDS):
        # Stop the bus first: a worker taking a queued attempt would be cut
        # off by the exit between its claim and its cancel, leaving the task
        # RUNNING in an ended run. This thread cancels them all.
        bus.close()
        job.engine.retire_leftovers(run_id)
    # backends.embedded() waits for the bus at exit, for scripts that call
    # job.start() and return; the run is settled, so skip that wait.
    atexit.unregister(bus.wait_idle)


def results_of(job: Job) -> tuple[str, ...]:
    """The tasks whose results the summary lists: the sinks; none for a state
    machine, whose records are state visits (a Map's first visit holds its
    input) and whose output line says what it produced."""
    return () if hasattr(job, "describe_end") else job.dag.sinks


def report(out: Any, run: RunRecord, tasks: list[TaskRecord], sinks: tuple[str, ...],
           details: bool = True, kind: str = "embedded",
           hook_records: list[TaskRecord] | None = None) -> None:
    """Summary table, results of the sinks, hooks, final status and (if `details`)
    the status hint."""
    out.print(progress.summary_table(tasks))
    results = progress.results_lines(tasks, sinks)
    if results:
        out.print("results:", markup=False)
        for line in results:
            out.print(f"  {line}", markup=False, soft_wrap=True)
    print_hooks(out, run, hook_records or [])
    out.print(progress.final_status_line(run), markup=False)
    if details:
        out.print(f"details: {command_for(kind, 'status ' + run.run_id)}", markup=False)


def watch(store: Store, run_id: str, where: str, out: Any, *,
          order: list[str] | None = None, interval: float = 0.25,
          grace: float = DEPLOYED_GRACE_SECONDS) -> tuple[RunRecord, list[TaskRecord]]:
    """Show the progress of a run others execute, reading only `store`, until it ends.

    Tasks still running when it ended get `grace` seconds to finish, so the
    returned view shows where they ended.
    """
    def fetch() -> tuple[RunRecord, list[TaskRecord]]:
        run = store.get_run(run_id)
        if run is None:
            fail(f"run {run_id} vanished from {where}")
        return run, ordered_tasks(store.get_tasks(run_id), order)

    progress.follow(fetch, out, interval=interval)
    deadline = time.monotonic() + grace
    run, tasks = fetch()
    while (run.hooks_pending or any(t.status in (TaskStatus.RUNNING, TaskStatus.QUEUED)
                                    for t in tasks)) and time.monotonic() < deadline:
        time.sleep(interval)
        run, tasks = fetch()
    return run, tasks


def follow_dev_run(stack: Any, job: Job, run_id: str, out: Any, err: Any) -> int:
    """`run`'s progress view and summary, reading the run from the Firestore emulator."""
    counted = progress.counted(len(job.dag.tasks), "task")
    out.print(f"started run {run_id} (job {job.name}, {counted}) through {stack.start_url}",
              markup=False)
    run, tasks = watch(stack.store, run_id, "the Firestore emulator", out,
                       order=job.dag.order)
    report(out, run, tasks, sinks=results_of(job), details=False,
           hook_records=hook_records(stack.store, run))
    describe_end = getattr(job, "describe_end", None)  # a state machine: its output
    if describe_end is not None:
        out.print(describe_end(run, tasks), markup=False, soft_wrap=True)
    out.print(f"function logs: {stack.log_path}", markup=False)
    if run.status is RunStatus.SUCCEEDED:
        return EXIT_OK
    err.print(f"error: {run.error or 'run ' + run.status.value}", markup=False, soft_wrap=True)
    err.print(f"last lines of {stack.log_path}:", markup=False)
    err.print(stack.log_tail(20).rstrip(), markup=False, soft_wrap=True)
    return EXIT_RUN_FAILED
