"""`run` and `validate` for state machine files (FILE.json, asl/files.py)."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, NoReturn

import click

from function_flow import backends
from function_flow.cli.common import EXIT_OK, fail
from function_flow.cli.follow import follow_to_end


def execution_args(input_json: str | None, arg_pairs: tuple[str, ...] = ()) -> dict[str, Any]:
    """A state machine run's arguments: the execution input (--input) and its start."""
    if arg_pairs:
        fail("a state machine takes its execution input as --input JSON, not --arg")
    try:
        value = json.loads(input_json) if input_json is not None else {}
    except ValueError as exc:
        fail(f"--input is not JSON: {exc}")
    return {"input": value, "started": time.time()}


def run(job: Any, file: str, input_json: str | None, workers: int | None,
        callback_url: str | None) -> NoReturn:
    """Start an execution with --input and follow it; print its output or error."""
    args = execution_args(input_json)
    backend = backends.embedded(workers=workers)
    job.use_backend(backend)
    try:
        run_id = job.start(args, source=os.path.abspath(file), callback_url=callback_url)
    except (TypeError, ValueError) as exc:
        fail(f"cannot start {file}: {exc}")

    def epilogue(out: Any) -> None:
        outcome = job.outcome(run_id)
        # One line each, however long (soft_wrap): scripts read the output's JSON.
        if outcome.status == "SUCCEEDED":
            out.print("output: " + json.dumps(outcome.output), markup=False, soft_wrap=True)
        else:
            out.print(f"error: {outcome.error}; cause: {outcome.cause}", markup=False,
                      soft_wrap=True)

    follow_to_end(job, backend, run_id, epilogue=epilogue)


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
def validate(file: str) -> None:
    """Check a state machine FILE.json without running it: one line per
    problem, naming the state; exit 1 when there is any."""
    from function_flow.asl import files

    try:
        found = files.problems(file)
    except files.MachineFileError as exc:
        fail(str(exc))
    if not found:
        click.echo(f"{file}: valid")
        sys.exit(EXIT_OK)
    for line in found:
        click.echo(f"{file}: {line}", err=True)
    sys.exit(1)
