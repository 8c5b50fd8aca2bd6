"""`function-flow redrive RUN_ID`: run a FAILED or CANCELLED run again from what did not succeed.

The engine does the redrive (core/redrive.py); this needs the workflow
file, as `resume` does, because the tasks that run again are the file's.
On the embedded backend this process then executes the run, as `resume`
does; on Google Cloud the deployed functions do, and the command ends.
"""

from __future__ import annotations

import sys

import click

from function_flow import backends, selection
from function_flow.cli import progress
from function_flow.cli.common import EXIT_OK, command_for, fail, remote_option
from function_flow.cli.follow import follow_to_end
from function_flow.cli.run import WORKERS_HELP, host_remote_functions, job_of
from function_flow.cli.stores import get_run, open_selected
from function_flow.config import Settings
from function_flow.core.redrive import REDRIVABLE, RedriveRefusedError
from function_flow.core.starts import process_owner
from function_flow.errors import RunNotFoundError


@click.command()
@click.argument("run_id")
@click.option("--file", "file", type=click.Path(dir_okay=False),
              help="Workflow file to use instead of the one the run recorded "
                   "(with the fix, when the tasks it succeeded are unchanged).")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help=WORKERS_HELP + " Embedded runs only.")
@remote_option
def redrive(run_id: str, file: str | None, workers: int | None,
            remote_pairs: tuple[str, ...]) -> None:
    """Run RUN_ID (FAILED or CANCELLED) again from the tasks that did not succeed,
    keeping every succeeded result and the run's id."""
    settings = Settings.from_env()
    selected = open_selected(settings)
    run = get_run(selected, run_id)
    if run.status not in REDRIVABLE:
        fail(f"run {run_id} is {run.status.value}: only FAILED or CANCELLED runs can be "
             "redriven; nothing was changed")
    job = job_of(run, file)
    selected.close()
    if selected.kind == "gcp":
        backend = backends.gcp(settings, job)
        job.use_backend(backend)
        selection.check_topic(backend.bus)
        redriven = _redrive(job, run_id)
        progress.make_console().print(
            f"redrove run {run_id} (redrive {redriven.redrives}) in {backend.description}; "
            f"the deployed functions execute it; follow it with "
            f"{command_for('gcp', 'status ' + run_id)}", markup=False, soft_wrap=True)
        sys.exit(EXIT_OK)
    host_remote_functions(job, file or str(run.source), remote_pairs)
    backend = backends.embedded(settings.db_path, workers=workers)
    job.use_backend(backend)
    # This process executes the run now (`resume` and `status` look at its owner).
    backend.store.transact(lambda tx: tx.update_run(run_id, {"owner": process_owner()}))
    redriven = _redrive(job, run_id)
    progress.make_console().print(f"redriving run {run_id} (redrive {redriven.redrives})",
                                  markup=False)
    follow_to_end(job, backend, run_id, resumed=True)


def _redrive(job, run_id: str):
    try:
        return job.engine.redrive(run_id)
    except (RedriveRefusedError, RunNotFoundError) as exc:
        fail(str(exc))
