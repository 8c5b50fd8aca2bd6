"""`run` a workflow file locally, and `resume` a run that did not finish.

`run` always executes on the embedded backend, in this process. `resume`
reads the run where the settings say (cli/stores.py): an embedded run is
continued in this process; a run on Google Cloud is handed back to the
deployed functions (the poll policy re-sends what it waits for through
Pub/Sub) and followed from Firestore, without executing any body here.
"""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from function_flow import backends, owners, selection
from function_flow.cli import progress
from function_flow.cli.common import (EXIT_INTERRUPTED, EXIT_OK, EXIT_RUN_FAILED,
                                      command_for, fail, load_job, parse_args,
                                      remote_functions_for, remote_option)
from function_flow.cli.follow import (exit_by_outcome, follow_to_end, hook_records, report,
                                      results_of, watch)
from function_flow.cli.stores import get_run, open_selected
from function_flow.config import Settings
from function_flow.core import starts, versions
from function_flow.core.listing import ordered_tasks
from function_flow.core.records import RunRecord, RunStatus, TaskStatus
from function_flow.errors import (ConfigurationError, RunBlockedError, RunConflictError,
                                   RunNotFoundError, RunStillActiveError)
from function_flow.tasks import Job

WORKERS_HELP = "Worker threads (default: FUNCTION_FLOW_WORKERS or 8)."


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to run when FILE defines several.")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Run argument (JSON value, else a string). Repeatable.")
@click.option("--workers", type=click.IntRange(min=1), default=None, help=WORKERS_HELP)
@click.option("--run-id", metavar="ID", default=None,
              help="Give the run this id: running it again with the same arguments "
                   "shows that run; with other arguments it is refused.")
@click.option("--callback-url", metavar="URL", default=None,
              help="POST the run's final status and results here, signed with "
                   "FUNCTION_FLOW_HMAC_KEY, once it ended (retried until a 2xx).")
@click.option("--input", "input_json", metavar="JSON", default=None,
              help="A state machine's execution input (FILE.json), as JSON.")
@remote_option
def run(file: str, job_name: str | None, arg_pairs: tuple[str, ...],
        workers: int | None, run_id: str | None, callback_url: str | None,
        input_json: str | None,
        remote_pairs: tuple[str, ...]) -> None:
    """Run a workflow FILE (or a state machine FILE.json) on the embedded
    backend and show its progress.

    Remote functions that FILE defines answer its remote tasks here."""
    args = parse_args(arg_pairs)
    if run_id is not None and not starts.RUN_ID.fullmatch(run_id):
        fail(f"--run-id {run_id!r} must be {starts.RUN_ID_RULE}")
    job = load_job(file, job_name)
    if file.endswith(".json"):
        from function_flow.cli import machines

        machines.run(job, file, input_json, workers, callback_url)
    host_remote_functions(job, file, remote_pairs)
    backend = backends.embedded(workers=workers)
    job.use_backend(backend)
    existed = run_id is not None and backend.store.get_run(run_id) is not None
    try:
        run_id = job.start(args, run_id=run_id, source=os.path.abspath(file),
                           callback_url=callback_url)
    except (TypeError, ValueError, ConfigurationError, RunConflictError) as exc:
        fail(f"cannot start job {job.name!r}: {exc}")
    follow_to_end(job, backend, run_id, existed=existed)


@click.command()
@click.argument("run_id")
@click.option("--file", "file", type=click.Path(dir_okay=False),
              help="Workflow file to use instead of the one the run recorded.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help=WORKERS_HELP + " Embedded runs only.")
@remote_option
def resume(run_id: str, file: str | None, workers: int | None,
           remote_pairs: tuple[str, ...]) -> None:
    """Resume RUN_ID if it is paused; finish it after its process died or a
    message was lost (succeeded tasks do not run again). On Google Cloud the
    deployed functions run it."""
    settings = Settings.from_env()
    selected = open_selected(settings)
    run = get_run(selected, run_id)
    out = progress.make_console()
    # An embedded run whose process still runs it needs nothing from us
    # (repeating a resume is harmless); it is not resumed under that process.
    live = selected.kind != "gcp" and bool(run.owner) \
        and owners.owner_state(run.owner) == owners.OWNER_ALIVE
    if run.status.is_final and (live or not run.hooks_pending):
        assert selected.store is not None
        hooks = f"; its process {run.owner} is still running its hooks" \
            if run.hooks_pending else ""
        out.print(f"run {run_id} already ended: {run.status.value}{hooks}; nothing to resume",
                  markup=False)
        out.print(progress.summary_table(ordered_tasks(selected.store.get_tasks(run_id))))
        sys.exit(EXIT_OK if run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED)
    if run.paused_at is not None:
        from function_flow.cli.control import resume_paused

        resume_paused(selected, settings, run, file)  # exits, unless this process continues it
    if live:
        out.print(f"run {run_id} is not paused, and its process {run.owner} is still "
                  f"running it; nothing to resume. Follow it with "
                  f"{command_for(selected.kind, 'status ' + run_id)}",
                  markup=False, soft_wrap=True)
        sys.exit(EXIT_OK)
    job = job_of(run, file)
    if selected.kind == "gcp":
        if workers is not None:
            fail("--workers only applies to runs on the embedded backend; "
                 "on Google Cloud the deployed functions execute the tasks")
        assert selected.store is not None
        blocked = versions.refusal(run, selected.store, job.dag)
        if blocked is not None:
            fail(blocked)
        selected.close()
        resume_deployed(job, settings, run_id)
    if run.owner and owners.owner_state(run.owner) == owners.OWNER_ELSEWHERE:
        progress.make_console(stderr=True).print(
            f"note: run {run_id} was run by {run.owner}, on another host; whether that "
            "process still runs cannot be checked from here", markup=False)
    host_remote_functions(job, file or str(run.source), remote_pairs)
    backend = backends.embedded(settings.db_path, workers=workers)
    job.use_backend(backend)
    try:
        job.resume(run_id)
    except (RunStillActiveError, RunNotFoundError, RunBlockedError) as exc:
        fail(str(exc))
    follow_to_end(job, backend, run_id, resumed=True)


def resend(job: Job, backend: backends.Backend, run_id: str, out: Any) -> None:
    """The poller's policy for this run once, and what it sent again, in words."""
    before = ordered_tasks(backend.store.get_tasks(run_id), job.dag.order)
    job.engine.poll(stale_after=0, run_ids=[run_id])
    queued = [t.task_id for t in before if t.status is TaskStatus.QUEUED]
    running = [t.task_id for t in before if t.status is TaskStatus.RUNNING]
    topic = backend.bus.topic_path  # type: ignore[attr-defined]
    counted = progress.counted(len(job.dag.tasks), "task")
    out.print(f"resuming run {run_id} (job {job.name}, {counted}) in {backend.description}",
              markup=False, soft_wrap=True)
    out.print(f"sent the messages of {len(queued)} queued task(s) again on {topic}"
              + (f" ({', '.join(queued)})" if queued else "")
              + "; the deployed functions execute them", markup=False, soft_wrap=True)
    if running:
        out.print(f"still running in deployed functions: {', '.join(running)} (an "
                  "attempt whose function died is retried when its lease expires)",
                  markup=False, soft_wrap=True)


def host_remote_functions(job: Job, file: str, pairs: tuple[str, ...]) -> None:
    """Answer the job's remote topics in this process, with FILE's functions."""
    from function_flow import loader
    from function_flow.local import remotes

    remotes.host_all(loader.load_module(file), remote_functions_for(job, file, pairs))


def job_of(run: RunRecord, file: str | None) -> Job:
    """The run's workflow, from --file or the file it recorded."""
    path = file or run.source
    if not path:
        fail(f"run {run.run_id} does not record its workflow file; pass --file FILE.py")
    if file is None and not os.path.exists(path):
        fail(f"no such file: {path} (the workflow file run {run.run_id} recorded); "
             "pass --file FILE.py to say where it is now")
    job = load_job(path, run.job_name)
    # Whether a changed definition may continue the run is the engine's
    # call (core/versions.py): resuming refuses it with the reason.
    return job


def resume_deployed(job: Job, settings: Settings, run_id: str) -> NoReturn:
    """Re-send what the run waits for through Pub/Sub, then follow it from Firestore.

    The engine's poll policy, for this run once, with no staleness allowance:
    queued tasks are published again, expired leases retried, complete joins
    queued, free slots filled. Its engine never handles a message here, so
    no task body runs in this process.
    """
    backend = backends.gcp(settings, job)
    job.use_backend(backend)
    selection.check_topic(backend.bus)
    out, err = progress.make_console(), progress.make_console(stderr=True)
    store = backend.store
    try:  # a Ctrl-C at any point stops this command only: the deployment goes on
        resend(job, backend, run_id, out)
        run, tasks = watch(store, run_id, backend.description, out, order=job.dag.order)
    except KeyboardInterrupt:
        err.print(f"interrupted; run {run_id} goes on in the deployed functions. "
                  f"Follow it with: {command_for('gcp', 'status ' + run_id)}", markup=False)
        sys.stdout.flush()
        sys.stderr.flush()
        # As `run` does: a Google client's thread, cut off mid-call, must not
        # keep the exit waiting (seen once in CI: the command hung after this line).
        os._exit(EXIT_INTERRUPTED)
    report(out, run, tasks, sinks=results_of(job), kind="gcp",
           hook_records=hook_records(store, run))
    exit_by_outcome(err, run, "gcp")
