"""`approve` and `reject`: decide a task waiting on `futures.Approval`, by its token;
`heartbeat`: tell a Step Functions task token's wait its worker is alive.

They work on the backend the settings select (cli/stores.py), like `status`.
The token is checked against the store first, read-only: a malformed,
unknown, used or expired token, or one of a run that already ended, is one
`error:` line (exit 2) and nothing changes. Then the workflow file is loaded
(the one the run recorded, or --file), because recording the outcome also
advances the run's graph, and the decision is recorded exactly once:

- embedded: the outcome and the tasks it makes ready are written to the
  SQLite file, but no body runs in this command. The process that runs the
  run (`function-flow run`, `job.run()`, `job.wait()`) sees them on its next
  idle poll (Job.repair_if_stalled, every 2 s) and executes them; if that
  process is gone, `function-flow resume RUN_ID` finishes the run.
- gcp (Firestore, or `function-flow dev`'s emulators): the follow-up
  messages go to the schedule topic, so the deployed scheduler runs what
  comes next. A deployed run records no workflow file: pass --file (the
  file deployed), or POST the token to the callback endpoint instead.
"""

from __future__ import annotations

import os
import shlex
import time
from typing import Any, Callable

import click

from function_flow import approvals, backends, owners, selection, tracing
from function_flow.cli import progress
from function_flow.cli.common import command_for, fail
from function_flow.cli.run import job_of
from function_flow.cli.stores import open_selected
from function_flow.config import Settings
from function_flow.core.engine import Engine
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus

FILE_HELP = "Workflow file to use instead of the one the run recorded (needed for deployed runs)."


class LeftToTheOwner(Bus):
    """The bus of an embedded engine that records but never executes.

    Its messages are dropped on purpose: every task they name is QUEUED in
    the store, and the run's own process re-sends queued tasks when it
    polls (or `resume` does), so no body runs in the approving command.
    """

    def publish(self, message: Message, delay: float = 0.0) -> None:
        del message, delay


@click.command()
@click.argument("token")
@click.option("--data", "data_json", metavar="JSON",
              help="The task's result, as JSON (default: null).")
@click.option("--file", "file", type=click.Path(dir_okay=False), help=FILE_HELP)
def approve(token: str, data_json: str | None, file: str | None) -> None:
    """Approve the task waiting for TOKEN: it succeeds with --data as its result."""
    data = _parse_data(data_json)
    _decide(token, file, lambda engine: approvals.approve(engine, token, data,
                                                          record_block=False))


@click.command()
@click.argument("token")
@click.option("--reason", metavar="TEXT", help="Why: it becomes the task's error.")
@click.option("--file", "file", type=click.Path(dir_okay=False), help=FILE_HELP)
def reject(token: str, reason: str | None, file: str | None) -> None:
    """Reject the task waiting for TOKEN: it fails with --reason, without retries."""
    _decide(token, file, lambda engine: approvals.reject(engine, token, reason,
                                                         record_block=False))


@click.command()
@click.argument("token")
def heartbeat(token: str) -> None:
    """Tell the task waiting for TOKEN that its worker is alive (Step Functions'
    SendTaskHeartbeat): its HeartbeatSeconds start again. Changes only the
    wait's end, in the store, so no workflow file is loaded."""
    selected = open_selected(Settings.from_env())
    if selected.store is None:
        fail(f"{approvals.UNKNOWN_TOKEN} (there are no runs in {selected.description})")
    try:
        waiting = approvals.find(selected.store, token, time.time())
        until = approvals.heartbeat(selected.store, token, time.time())
    except approvals.ApprovalError as exc:
        fail(str(exc))
    finally:
        selected.close()
    where = f"task {waiting.task_id} of run {waiting.run.run_id}"
    click.echo(f"heartbeat: {where} still waits" + (
        "" if until is None else f", now until {progress.format_time(until)}"))


def _parse_data(data_json: str | None) -> Any:
    from function_flow.cloud.delivery import parse_json

    if data_json is None:
        return None
    try:
        return parse_json(data_json, "--data", allow_nan=False)
    except ValueError as exc:
        fail(f"{exc} (quote it for your shell, e.g. --data '{{\"ok\": true}}'); "
             "nothing was changed")


def _decide(token: str, file: str | None,
            decide: Callable[[Engine], approvals.Decision]) -> None:
    settings = Settings.from_env()
    selected = open_selected(settings)
    if selected.store is None:
        fail(f"{approvals.UNKNOWN_TOKEN} (there are no runs in {selected.description})")
    try:
        waiting = approvals.find(selected.store, token, time.time())
    except approvals.ApprovalError as exc:
        fail(str(exc))
    run = waiting.run
    if selected.kind == "gcp" and not (file or run.source):
        where = "the emulators (function-flow dev)" if os.environ.get(
            "FIRESTORE_EMULATOR_HOST") else "Google Cloud"
        fail(f"run {run.run_id} runs on {where} and records no workflow file: pass "
             "--file FILE.py (the file deployed), or POST the token to the deployed "
             "callback's /approve or /reject; nothing was changed")
    job = job_of(run, file)
    if selected.kind == "gcp":
        selected.close()
        backend = backends.gcp(settings, job)
        selection.check_topic(backend.bus)
    else:
        assert selected.store is not None
        tracing.configure(settings)  # its `complete` span joins the run's trace
        backend = backends.Backend("embedded", selected.store, LeftToTheOwner(),
                                   description=selected.description)
    try:
        decision = decide(backend.engine(job))
    except approvals.ApprovalError as exc:
        fail(str(exc))
    finally:
        backend.close()
    # A run job.start() began records no file: resume needs the one given here.
    _report(decision, selected.kind, run.owner, run.paused_at is not None,
            file if file and not run.source else None)


def _report(decision: approvals.Decision, kind: str, owner: str | None, paused: bool,
            file: str | None) -> None:
    out = progress.make_console()
    what = "approved" if decision.approved else "rejected"
    became = "succeeded" if decision.approved else "failed"
    out.print(f"{what}: task {decision.task_id} of run {decision.run_id} {became}",
              markup=False, soft_wrap=True)
    status = f"{command_for(kind, 'status ' + decision.run_id)}"
    resume = command_for(kind, f"resume {decision.run_id}"
                         + (f" --file {shlex.quote(file)}" if file else ""))
    if decision.run_status is not RunStatus.RUNNING:
        out.print(f"run {decision.run_id} ended: {decision.run_status.value} (see {status})",
                  markup=False, soft_wrap=True)
    elif paused:
        out.print(f"run {decision.run_id} is paused: it goes on once resumed ({resume})",
                  markup=False, soft_wrap=True)
    elif kind == "gcp":
        out.print(f"the deployed functions continue the run; follow it with {status}",
                  markup=False, soft_wrap=True)
    elif owner and owners.owner_state(owner) == owners.OWNER_GONE:
        out.print(f"the process that ran it ({owner}) is gone: finish the run with "
                  f"{resume}", markup=False, soft_wrap=True)
    else:
        out.print(f"its process ({owner or 'unknown'}) continues the run; follow it with "
                  f"{status}", markup=False, soft_wrap=True)
