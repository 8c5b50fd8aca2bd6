"""What every command shares: exit codes, the one-line error, arguments, loading.

Exit codes: 0 the run succeeded (or the command did its job), 1 the run
failed, 2 bad usage, a bad workflow definition or a backend that cannot be
used. Every error is one line on stderr starting with "error:".
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

import click

from function_flow import loader
from function_flow.config import Settings
from function_flow.tasks import Job

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
#: A command the user interrupted (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130


class CliError(click.ClickException):
    """An error for the user: printed as one `error:` line, exit code 2."""

    exit_code = EXIT_USAGE


def fail(message: str) -> NoReturn:
    raise CliError(" ".join(message.split()))


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


#: The --remote option of `run` and `dev` (see local/remotes.py).
remote_option = click.option(
    "--remote", "remote_pairs", multiple=True, metavar="TOPIC=FUNCTION",
    help="Answer remote tasks sending to TOPIC with FUNCTION(event, context) of FILE "
         "(written for Function Flow). @remote.function(topic=...) functions need none. "
         "Repeatable.")


def remote_functions_for(job: Job, path: str, pairs: tuple[str, ...]) -> dict[str, str]:
    """{topic: function name} of FILE for the job's remote tasks; fails in one line."""
    from function_flow.local import remotes

    try:
        answered = remotes.remote_functions(loader.load_module(path), path, pairs)
        remotes.check_answered(job, answered, path, pairs)
    except (remotes.RemoteSetupError, loader.LoadError) as exc:
        fail(str(exc))
    return answered


def command_for(kind: str, command: str) -> str:
    """`function-flow COMMAND` as the user must type it to reach a run on `kind`.

    `status` and `resume` read the backend the settings select; when that is
    not where the run is (a local run while GOOGLE_CLOUD_PROJECT is set),
    the hint says how to select it.
    """
    prefix = "" if Settings.from_env().backend == kind else f"FUNCTION_FLOW_BACKEND={kind} "
    return f"{prefix}function-flow {command}"
