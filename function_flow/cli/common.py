"""What every command shares: exit codes, the one-line error, arguments, loading.

Exit codes: 0 the run succeeded (or the command did its job), 1 the run
failed, 2 bad usage, a bad workflow definition or a backend that cannot be
used. Every error is one line on stderr starting with "error:".
"""

from __future__ import annotations

import json
import math
import os
import traceback
from typing import Any, NoReturn

import click

from function_flow import loader
from function_flow.config import Settings
from function_flow.errors import DefinitionError
from function_flow.tasks import Job

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2
#: A command the user interrupted (Ctrl-C), as shells report SIGINT.
EXIT_INTERRUPTED = 130


#: ctx.meta key: -v/--verbose was given (before or after the command's name).
VERBOSE = "function_flow.verbose"


class CliError(click.ClickException):
    """An error for the user: printed as one `error:` line, exit code 2.

    `details` (a traceback, shown only with -v) is printed before that line.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, details: str | None = None) -> None:
        super().__init__(message)
        self.details = details


def fail(message: str, details: str | None = None) -> NoReturn:
    raise CliError(" ".join(message.split()), details)


def verbose() -> bool:
    """Whether this invocation asked for -v, wherever on the command line."""
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.find_root().meta.get(VERBOSE))


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
            args[key.strip()] = json.loads(value, parse_constant=_not_json,
                                           parse_float=_finite)
        except ValueError:  # not JSON (NaN, Infinity, 1e400 are not either): the text
            args[key.strip()] = value
    return args


def _not_json(constant: str) -> Any:
    """Python's json reads NaN and Infinity; standard JSON (and run arguments) has none."""
    raise ValueError(f"{constant} is not JSON")


def _finite(text: str) -> float:
    """A number too large for a float (1e400) would be read as infinity."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text} is out of range")
    return number


def load_job(path: str, job_name: str | None) -> Job:
    """The file's job, or one error line; a file that fails to import shows its
    traceback with -v (and says so without)."""
    try:
        return loader.load_job(path, job_name)
    except loader.LoadError as exc:
        cause = exc.__cause__
        if cause is None or isinstance(cause, DefinitionError):
            fail(str(exc))  # the message says all: the task and what is wrong
        if verbose():
            fail(str(exc), details=workflow_traceback(cause, path))
        fail(f"{exc} (run with -v to see the traceback)")


def workflow_traceback(exc: BaseException, path: str) -> str:
    """The traceback of an exception raised while importing the workflow at
    `path`, from the workflow's own frame on (the loader's and importlib's
    frames above it are noise to the user)."""
    absolute = os.path.abspath(path)
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != absolute:
        tb = tb.tb_next
    # No frame of the file (a SyntaxError in it): the exception names file and line.
    return "".join(traceback.format_exception(type(exc), exc, tb))


#: The --remote option of `run` and `dev` (see local/remotes.py).
remote_option = click.option(
    "--remote", "remote_pairs", multiple=True, metavar="TOPIC=FUNCTION",
    help="Answer remote tasks sending to TOPIC with FUNCTION(event, context) of FILE "
         "(written for Function Flow). @remote.function(topic=...) functions need none. "
         "Repeatable.")


def remote_functions_for(job: Job, path: str, pairs: tuple[str, ...]) -> dict[str, str]:
    """{topic: function name} of FILE for the job's remote tasks; fails in one line."""
    from function_flow.local import remotes

    source: str | None = path
    if path.endswith(".json"):  # a state machine: its functions are in machine.py
        from function_flow.asl.files import companion

        source = companion(path)
    try:
        answered = remotes.remote_functions(loader.load_module(source), source, pairs) \
            if source is not None else {}
        remotes.check_answered(job, answered, source or path, pairs)
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
