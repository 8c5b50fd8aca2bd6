"""The `function-flow` command line: run, resume, status, logs, graph, approve,
reject, heartbeat, pause, cancel, dashboard, dev, deploy, validate (a state machine).

One module per job: common.py (exit codes, the one-line error, loading a
workflow file), stores.py (which store `status` and `resume` read), run.py
(run, resume), inspect.py (status), logs.py (logs), graph.py, approvals.py
(approve, reject), control.py (pause, cancel, resuming a paused run),
deploy.py (deploy), follow.py (following a run to its end), dashboard.py
(the web dashboard, function_flow/dashboard/) and progress.py (the terminal
view). This module is the group, the `dev` command and the entry point that
turns every error into one line.
Add a command with one more `cli.add_command(...)`.

Exit codes: 0 the run succeeded (or the command did its job), 1 the run
failed, 2 bad usage, a bad workflow definition or a backend that cannot be
reached. Every error is one line on stderr starting with "error:", never a
traceback.
"""

from __future__ import annotations

import logging
import sys

import click

from function_flow import __version__
from function_flow.cli import progress
from function_flow.cli.approvals import approve, heartbeat, reject
from function_flow.cli.common import (EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE,  # noqa: F401
                                      VERBOSE, CliError, fail, load_job, parse_args,
                                      remote_functions_for, remote_option)
from function_flow.cli.control import cancel, pause
from function_flow.cli.deploy import deploy
from function_flow.cli.dashboard import dashboard
from function_flow.cli.follow import follow_dev_run
from function_flow.cli.graph import graph
from function_flow.cli.inspect import status
from function_flow.cli.logs import logs
from function_flow.cli.machines import validate
from function_flow.cli.redrive import redrive
from function_flow.cli.run import resume, run
from function_flow.errors import FunctionFlowError


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.find_root().meta[VERBOSE] = True
        setup_logging(True)


def verbose_option() -> click.Option:
    """-v/--verbose, accepted before the command's name and after it alike."""
    return click.Option(["-v", "--verbose"], is_flag=True, expose_value=False,
                        callback=_set_verbose,
                        help="Log what the engine does (to stderr); show the traceback "
                             "of a workflow that fails to import.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", "-V", prog_name="function-flow")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Run function_flow workflows locally and inspect their runs."""
    setup_logging(bool(ctx.meta.get(VERBOSE)))


cli.params.append(verbose_option())

def setup_logging(verbose: bool) -> None:
    """Engine logs go to stderr: only real problems unless --verbose.

    A failing task is logged as a warning with its traceback; the CLI shows
    that failure itself (and `status` the traceback), so it is not repeated.
    """
    from function_flow import log_format

    log_format.install("function_flow", level=logging.INFO if verbose else logging.ERROR)


for command in (run, resume, redrive, status, logs, graph, approve, reject, heartbeat, pause,
                cancel, dashboard, deploy, validate):
    cli.add_command(command)


@cli.command("dev")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--job", "job_name", metavar="NAME", help="Job to run when FILE defines several.")
@click.option("--arg", "arg_pairs", multiple=True, metavar="KEY=VALUE",
              help="Run argument (JSON value, else a string). Repeatable.")
@click.option("--signature-type", type=click.Choice(["event", "cloudevent", "http"]),
              default="event", show_default=True,
              help="How scheduler and external_event_listener take Pub/Sub pushes: "
                   "1st gen event, 2nd gen cloudevent, or http (raw push envelope).")
@click.option("--callback-url", metavar="URL", default=None,
              help="POST the run's results, signed with the dev key, to URL once it ended.")
@click.option("--input", "input_json", metavar="JSON", default=None,
              help="A state machine's execution input (FILE.json), as JSON.")
@remote_option
def dev_command(file: str, job_name: str | None, arg_pairs: tuple[str, ...],
                signature_type: str, callback_url: str | None,
                input_json: str | None, remote_pairs: tuple[str, ...]) -> None:
    """Run FILE on the deployed topology, locally: Firestore and Pub/Sub
    emulators, one functions-framework process per entry point and per
    remote function, each behind a push subscription from its topic."""
    from function_flow.config import Settings
    from function_flow.local import emulators
    from function_flow.local import stack as dev
    from function_flow.local.keys import dev_key
    from function_flow.local.credentials import placeholder_credentials
    from function_flow.core.starts import new_run_id

    args = parse_args(arg_pairs)
    if file.endswith(".json"):  # a state machine (asl/): --input is its execution input
        from function_flow.cli.machines import execution_args

        args = execution_args(input_json, arg_pairs)
    with placeholder_credentials():  # a Google client built at module level needs some
        job = load_job(file, job_name)
    answered = remote_functions_for(job, file, remote_pairs)
    if callback_url is not None:  # before the emulators start, not after
        from function_flow.core.hooks import check_callback_url

        try:
            check_callback_url(callback_url)
        except ValueError as exc:
            fail(str(exc))
    try:
        emulators.check_requirements()
        storage = emulators.given_storage(dev.DEV_PROJECT)
    except emulators.EmulatorError as exc:
        fail(str(exc))
    out, err = progress.make_console(), progress.make_console(stderr=True)
    run_id = new_run_id(job.name)
    hmac_key, key_source = dev_key(Settings.from_env())
    stack = dev.LocalStack(file, job_name, schedule_topic=job.schedule_topic,
                           events_topic=job.external_event_topic,
                           signature_type=signature_type, remote_functions=answered,
                           log_path=dev.default_log_path(run_id), hmac_key=hmac_key,
                           storage=storage)
    out.print(f"starting emulators and functions; their log: {stack.log_path}", markup=False)
    out.print(f"messages are signed with the HMAC key of {key_source}", markup=False)
    code = EXIT_RUN_FAILED
    with dev.sigterm_unwinds():
        try:
            stack.start()
            out.print(f"Pub/Sub emulator on {stack.pubsub.host} (topics {job.schedule_topic}, "
                      f"{job.external_event_topic}), Firestore emulator on "
                      f"{stack.firestore.host}, project {stack.project}", markup=False)
            if stack.storage is not None:
                out.print(f"storage emulator on {stack.storage.env['STORAGE_EMULATOR_HOST']}"
                          f" (large values, GCSFuture's poller)", markup=False)
            out.print(f"pause, resume or cancel the run: POST {{\"action\": \"pause\", "
                      f"\"run_id\": \"{run_id}\"}} to {stack.control_url}", markup=False,
                      soft_wrap=True)
            callback = stack.functions["callback"].url
            out.print(f"approve or reject an approval: POST a signed {{\"token\": ...}} to "
                      f"{callback}approve or {callback}reject", markup=False, soft_wrap=True)
            prefix = f"FUNCTION_FLOW_COLLECTION_PREFIX={stack.collection_prefix} " \
                if stack.collection_prefix else ""
            out.print(f"watch it from another shell while it runs: FIRESTORE_EMULATOR_HOST="
                      f"{stack.firestore.host} GOOGLE_CLOUD_PROJECT={stack.project} {prefix}"
                      f"function-flow logs {run_id} --follow (or dashboard)", markup=False,
                      soft_wrap=True)
            run_id = stack.start_run(args, run_id=run_id, callback_url=callback_url)
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


for command in cli.commands.values():
    command.params.append(verbose_option())


# ------------------------------------------------------------------ entry point


#: What click (8.2+) raises for a group called without a command.
NO_ARGS_IS_HELP: type[click.UsageError] = getattr(click.exceptions, "NoArgsIsHelpError",
                                                  type("NoArgsIsHelp", (click.UsageError,), {}))


def main(argv: list[str] | None = None) -> None:
    """Console script: run the group and turn every error into one line + exit 2."""
    try:
        code = cli.main(args=argv, prog_name="function-flow", standalone_mode=False)
    except CliError as exc:
        if exc.details:
            click.echo(exc.details.rstrip(), err=True)
        click.echo(f"error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except NO_ARGS_IS_HELP as exc:  # `function-flow` alone: its help, as click prints it
        exc.show()
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
