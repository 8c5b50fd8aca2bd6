"""The `function-flow` command line: run, resume, status and graph.

One function per command; loading workflow files lives in loader.py and the
progress view in progress.py, so each command is only the presentation of
one use case. Add a command with one more `@cli.command()` function.

Exit codes: 0 the run succeeded (or the command did its job), 1 the run
failed, 2 bad usage or a bad workflow definition. Every error is one line on
stderr starting with "error:", never a traceback.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import sys
import time
from typing import Any, NoReturn

import click

from function_flow import __version__, backends, loader
from function_flow.cli import graphs, progress
from function_flow.config import Settings
from function_flow.core.graph import END_TASK_ID
from function_flow.errors import FunctionFlowError, RunNotFoundError, RunStillActiveError
from function_flow.core.ports import Store
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2

#: Once a run has ended, how long `run` and `resume` wait for its tasks that
#: are still busy before cancelling them and exiting.
FINAL_GRACE_SECONDS = 2.0


class CliError(click.ClickException):
    """An error for the user: printed as one `error:` line, exit code 2."""

    exit_code = EXIT_USAGE


def fail(message: str) -> NoReturn:
    raise CliError(" ".join(message.split()))


# --------------------------------------------------------------------- helpers


def parse_args(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`key=value` pairs as run arguments: JSON when the value parses, else a string.

    So `--arg n=3 --arg dry=true --arg ids=[1,2]` give 3, True and [1, 2],
    while `--arg name=bob` stays "bob".
    """
    args: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--arg {pair!r} must look like key=value")
        try:
            args[key.strip()] = json.loads(value)
        except ValueError:
            args[key.strip()] = value
    return args


def load_job(path: str, job_name: str | None) -> Job:
    try:
        return loader.load_job(path, job_name)
    except loader.LoadError as exc:
        fail(str(exc))


def db_path() -> str:
    """The embedded backend's SQLite file (FUNCTION_FLOW_DB overrides it)."""
    return Settings.from_env().db_path


def open_store() -> Store | None:
    """The embedded store that `run` writes to; None (not a new empty file) if absent."""
    if not os.path.exists(db_path()):
        return None
    from function_flow.store.sqlite import SqliteStore

    return SqliteStore(db_path())


def get_run(store: Store | None, run_id: str) -> RunRecord:
    run = store.get_run(run_id) if store is not None else None
    if run is None:
        fail(str(RunNotFoundError(run_id)))
    return run


def stored_tasks(store: Store, run_id: str) -> list[TaskRecord]:
    """A run's task records without the workflow file: in the order they started."""
    tasks = [t for t in store.get_tasks(run_id) if t.task_id != END_TASK_ID]
    never = float("inf")
    return sorted(tasks, key=lambda t: (t.started_at or t.queued_at or never, t.task_id))


def follow_to_end(job: Job, backend: backends.Backend, run_id: str, *,
                  resumed: bool = False) -> NoReturn:
    """Show the run's progress, then its summary; exit 0 or 1 by its outcome."""
    out, err = progress.make_console(), progress.make_console(stderr=True)
    engine = job.engine
    out.print(f"{'resuming' if resumed else 'started'} run {run_id} "
              f"(job {job.name}, {len(job.dag.tasks)} tasks)", markup=False)

    def fetch() -> tuple[RunRecord, list[TaskRecord]]:
        job.repair_if_stalled(run_id)
        return engine.run_status(run_id), engine.task_records(run_id)

    try:
        progress.follow(fetch, out)
        settle(job, backend, run_id)
    except KeyboardInterrupt:
        err.print(f"interrupted; the run is left as it is. Finish it with: "
                  f"function-flow resume {run_id}", markup=False)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)  # do not wait for the worker threads at exit
    run, tasks = fetch()
    report(out, run, tasks, sinks=job.dag.sinks)
    if run.status is RunStatus.SUCCEEDED:
        sys.exit(EXIT_OK)
    err.print(f"error: {run.error or 'run ' + run.status.value}", markup=False, soft_wrap=True)
    err.print(f"see the traceback with: function-flow status {run_id}", markup=False)
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
    if not bus.wait_idle(timeout=FINAL_GRACE_SECONDS):  # type: ignore[attr-defined]
        job.engine.retire_leftovers(run_id)
    # backends.embedded() waits for the bus at exit, for scripts that call
    # job.start() and return; the run is settled, so skip that wait.
    atexit.unregister(bus.wait_idle)  # type: ignore[attr-defined]


def report(out: Any, run: RunRecord, tasks: list[TaskRecord], sinks: tuple[str, ...],
           details: bool = True) -> None:
    """Summary table, results of the sinks, final status and (if `details`) the status hint."""
    out.print(progress.summary_table(tasks))
    results = progress.results_lines(tasks, sinks)
    if results:
        out.print("results:", markup=False)
        for line in results:
            out.print(f"  {line}", markup=False, soft_wrap=True)
    out.print(progress.final_status_line(run), markup=False)
    if details:
        out.print(f"details: function-flow status {run.run_id}", markup=False)


# -------------------------------------------------------------------- commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="function-flow")
@click.option("-v", "--verbose", is_flag=True, help="Log what the engine does (to stderr).")
def cli(verbose: bool) -> None:
    """Run function_flow workflows locally and inspect their runs."""
    setup_logging(verbose)


def setup_logging(verbose: bool) -> None:
    """Engine logs go to stderr: only real problems unless --verbose.

    A failing task is logged as a warning with its traceback; the CLI shows
    that failure itself (and `status` the traceback), so it is not repeated.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("function_flow")
    root.addHandler(handler)
    root.setLevel(logging.INFO if verbose else logging.ERROR)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to run when FILE defines several.")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Run argument (JSON value, else a string). Repeatable.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: FUNCTION_FLOW_WORKERS or 8).")
def run(file: str, job_name: str | None, arg_pairs: tuple[str, ...],
        workers: int | None) -> None:
    """Run a workflow FILE on the embedded backend and show its progress."""
    args = parse_args(arg_pairs)
    job = load_job(file, job_name)
    backend = backends.embedded(workers=workers)
    job.use_backend(backend)
    try:
        run_id = job.start(args, source=os.path.abspath(file))
    except (TypeError, ValueError) as exc:
        fail(f"cannot start job {job.name!r}: {exc}")
    follow_to_end(job, backend, run_id)


@cli.command()
@click.argument("run_id")
@click.option("--file", "file", type=click.Path(dir_okay=False),
              help="Workflow file to use instead of the one the run recorded.")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Worker threads (default: FUNCTION_FLOW_WORKERS or 8).")
def resume(run_id: str, file: str | None, workers: int | None) -> None:
    """Finish RUN_ID after its process died; succeeded tasks do not run again."""
    store = open_store()
    run = get_run(store, run_id)
    out = progress.make_console()
    if run.status.is_final:
        out.print(f"run {run_id} already ended: {run.status.value}; nothing to resume",
                  markup=False)
        out.print(progress.summary_table(stored_tasks(store, run_id)))
        sys.exit(EXIT_OK if run.status is RunStatus.SUCCEEDED else EXIT_RUN_FAILED)
    path = file or run.source
    if not path:
        fail(f"run {run_id} does not record its workflow file; pass --file FILE.py")
    job = load_job(path, run.job_name)
    if job.dag.digest() != run.dag_hash:
        fail(f"the tasks or dependencies in {path} changed since run {run_id} started; "
             "it cannot be resumed with this definition")
    backend = backends.embedded(workers=workers)
    job.use_backend(backend)
    try:
        job.resume(run_id)
    except (RunStillActiveError, RunNotFoundError) as exc:
        fail(str(exc))
    follow_to_end(job, backend, run_id, resumed=True)


@cli.command()
@click.argument("run_id", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True,
              help="How many recent runs to list.")
def status(run_id: str | None, limit: int) -> None:
    """List recent runs, or show the tasks of RUN_ID (with tracebacks of failures)."""
    store = open_store()
    out = progress.make_console()
    if run_id is None:
        runs = store.list_runs(limit) if store is not None else []
        if not runs:
            out.print(f"no runs yet in {db_path()}", markup=False)
            return
        out.print(progress.runs_table(runs))
        return
    run = get_run(store, run_id)
    tasks = stored_tasks(store, run_id)
    out.print(progress.final_status_line(run) if run.status.is_final
              else f"run {run.run_id} {run.status.value} "
                   f"for {progress.format_duration(progress.run_duration(run))}",
              markup=False)
    out.print(f"job {run.job_name}, started {progress.format_time(run.created_at)}"
              + (f", args {progress.compact_json(run.args)}" if run.args else ""),
              markup=False, soft_wrap=True)
    out.print(progress.summary_table(tasks, errors=True))
    for task in tasks:
        if task.status is TaskStatus.FAILED and task.error:
            out.print(f"--- {task.task_id} (attempt {task.attempt}) ---", markup=False)
            out.print(task.error.rstrip(), markup=False, soft_wrap=True)
    if run.error:
        out.print(f"run error: {run.error}", markup=False, soft_wrap=True)


@cli.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to draw when FILE defines several.")
@click.option("--format", "fmt", type=click.Choice(graphs.FORMATS), default="text",
              show_default=True, help="text for a terminal, mermaid or dot for diagrams.")
def graph(file: str, job_name: str | None, fmt: str) -> None:
    """Print the task graph of a workflow FILE."""
    job = load_job(file, job_name)
    click.echo(graphs.render(job.dag, fmt))


@cli.command("dev")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to run when FILE defines several.")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Run argument (JSON value, else a string). Repeatable.")
@click.option("--signature-type", type=click.Choice(["event", "cloudevent", "http"]),
              default="event", show_default=True,
              help="How scheduler and external_event_listener take Pub/Sub pushes: "
                   "1st gen event, 2nd gen cloudevent, or http (raw push envelope).")
def dev_command(file: str, job_name: str | None, arg_pairs: tuple[str, ...],
                signature_type: str) -> None:
    """Run FILE on the deployed topology, locally: Firestore and Pub/Sub
    emulators, one functions-framework process per entry point."""
    from function_flow.local import emulators
    from function_flow.local import stack as dev
    from function_flow.core.engine import new_run_id

    args = parse_args(arg_pairs)
    job = load_job(file, job_name)
    try:
        emulators.check_requirements()
    except emulators.EmulatorError as exc:
        fail(str(exc))
    out, err = progress.make_console(), progress.make_console(stderr=True)
    run_id = new_run_id(job.name)
    stack = dev.LocalStack(file, job_name, schedule_topic=job.schedule_topic,
                           events_topic=job.external_event_topic,
                           signature_type=signature_type,
                           log_path=dev.default_log_path(run_id))
    out.print(f"starting emulators and functions; their log: {stack.log_path}", markup=False)
    code = EXIT_RUN_FAILED
    with dev.sigterm_unwinds():
        try:
            stack.start()
            out.print(f"Pub/Sub emulator on {stack.pubsub.host} (topics {job.schedule_topic}, "
                      f"{job.external_event_topic}), Firestore emulator on "
                      f"{stack.firestore.host}, project {stack.project}", markup=False)
            run_id = stack.start_run(args, run_id=run_id)
            code = follow_dev_run(stack, job, run_id, out, err)
        except KeyboardInterrupt:
            err.print("interrupted; stopping emulators and functions", markup=False)
            code = 130
        except dev.Terminated:
            err.print("terminated; stopping emulators and functions", markup=False)
            code = 128 + 15
        except (dev.DevError, emulators.EmulatorError) as exc:
            err.print(f"error: {exc}", markup=False, soft_wrap=True)
            code = EXIT_USAGE
        finally:
            with dev.signals_ignored():
                stack.stop()
    sys.exit(code)


def follow_dev_run(stack: Any, job: Job, run_id: str, out: Any, err: Any) -> int:
    """`run`'s progress view and summary, reading the run from the Firestore emulator."""
    store = stack.store
    out.print(f"started run {run_id} (job {job.name}, {len(job.dag.tasks)} tasks) "
              f"through {stack.start_url}", markup=False)

    def fetch() -> tuple[RunRecord, list[TaskRecord]]:
        run = store.get_run(run_id)
        if run is None:
            fail(f"run {run_id} vanished from the Firestore emulator")
        return run, stored_tasks(store, run_id)

    progress.follow(fetch, out, interval=0.25)
    # Tasks already running when the run failed still finish: give them a
    # moment so the summary shows where they ended.
    deadline = time.monotonic() + 10
    run, tasks = fetch()
    while any(t.status in (TaskStatus.RUNNING, TaskStatus.QUEUED) for t in tasks) \
            and time.monotonic() < deadline:
        time.sleep(0.25)
        run, tasks = fetch()
    report(out, run, tasks, sinks=job.dag.sinks, details=False)
    out.print(f"function logs: {stack.log_path}", markup=False)
    if run.status is RunStatus.SUCCEEDED:
        return EXIT_OK
    err.print(f"error: {run.error or 'run ' + run.status.value}", markup=False, soft_wrap=True)
    err.print(f"last lines of {stack.log_path}:", markup=False)
    err.print(stack.log_tail(20).rstrip(), markup=False, soft_wrap=True)
    return EXIT_RUN_FAILED


# ------------------------------------------------------------------ entry point


def main(argv: list[str] | None = None) -> None:
    """Console script: run the group and turn every error into one line + exit 2."""
    try:
        code = cli.main(args=argv, prog_name="function-flow", standalone_mode=False)
    except CliError as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except click.UsageError as exc:
        hint = f" (see function-flow {exc.ctx.command_path.split(' ', 1)[-1]} --help)" \
            if exc.ctx is not None and " " in exc.ctx.command_path else \
            " (see function-flow --help)"
        click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
        code = EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        code = EXIT_USAGE
    except click.Abort:
        click.echo("aborted", err=True)
        code = 130
    except FunctionFlowError as exc:  # e.g. a bad FUNCTION_FLOW_* setting
        click.echo(f"error: {' '.join(str(exc).split())}", err=True)
        code = EXIT_USAGE
    sys.exit(code if isinstance(code, int) else EXIT_OK)


if __name__ == "__main__":
    main()
