"""The dashboard's buttons: pause, resume, cancel, redrive, approve and reject.

Each does what its `function-flow` command does (cli/control.py,
cli/redrive.py, cli/approvals.py), through the same engine functions, and
answers one line, or raises `Refused` (with the HTTP status) and changes
nothing: an unknown run 404, a finished run 409 (a redrive of one that is
not FAILED or CANCELLED too), a token that is not this run's 404.

Who executes what comes next:

- pause and cancel change records only; whatever executes the run reads them.
- resume on Google Cloud sends the queued tasks on the schedule topic. On
  the embedded backend the process that runs the run (its owner) sends its
  held tasks itself (it looks every 2 s); a Job of this very process is
  resumed through its own engine; if the owner is gone, a `function-flow
  resume` process is started to continue the run, as `resume` would.
- redrive needs the workflow (definitions.py): on Google Cloud the deployed
  functions execute the run; on the embedded backend a Job of this
  process runs it here, else a `function-flow redrive` process does.
- approve/reject record the decision (the workflow is needed: the decision
  advances the run's graph), as `function-flow approve|reject` does.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any, Callable

from function_flow import approvals, backends, owners, selection, tracing
from function_flow.cli.approvals import LeftToTheOwner
from function_flow.core import control
from function_flow.core.engine import Engine
from function_flow.core.records import RunRecord, RunStatus
from function_flow.core.redrive import REDRIVABLE, RedriveRefusedError
from function_flow.core.starts import process_owner
from function_flow.dashboard.app import Dashboard
from function_flow.dashboard.definitions import Found
from function_flow.errors import RunEndedError, RunNotFoundError

CONTROLS = ("pause", "resume", "cancel", "redrive")
#: How long an action waits for the process it started to take the run over.
SPAWN_WAIT_SECONDS = 20.0


class Refused(Exception):
    """An action that was not taken; `status` is its HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def get_run(dash: Dashboard, run_id: str) -> RunRecord:
    """The run, or Refused(404)."""
    store = dash.store()
    run = store.get_run(run_id) if store is not None else None
    if run is None:
        raise Refused(404, f"no run with id {run_id!r} in {dash.description}; "
                           "nothing was changed")
    return run


def act(dash: Dashboard, run_id: str, action: str) -> str:
    """Apply a control action to the run; returns what happened, in a sentence."""
    if action not in CONTROLS:
        raise Refused(404, f"no action {action!r}: use one of {', '.join(CONTROLS)}")
    run = get_run(dash, run_id)
    if action == "redrive":
        return _redrive(dash, run)
    if run.status.is_final:
        raise Refused(409, str(RunEndedError(run_id, run.status.value, action)))
    store = dash.store()
    assert store is not None
    try:
        if action == "pause":
            outcome = control.pause(store, run_id, time.time())
            return (f"paused run {run_id}: nothing new starts; tasks already running finish"
                    if outcome.changed else f"run {run_id} was already paused")
        if action == "cancel":
            outcome = control.cancel(store, run_id, time.time())
            return (f"cancelled run {run_id}: {outcome.tasks} unfinished task(s) marked "
                    "CANCELLED; bodies still executing finish, what they return is discarded")
        return _resume(dash, run)
    except RunEndedError as exc:  # it ended meanwhile
        raise Refused(409, str(exc)) from None
    except RunNotFoundError as exc:
        raise Refused(404, str(exc)) from None


def _resume(dash: Dashboard, run: RunRecord) -> str:
    store = dash.store()
    assert store is not None
    run_id, found = run.run_id, dash.definitions.job_for(run)
    alive = bool(run.owner) and owners.owner_state(run.owner) != owners.OWNER_GONE
    if run.paused_at is None and (dash.kind == "gcp" or _runs_here(found, run) or alive):
        # (A run whose process is gone is continued, paused or not.)
        return f"run {run_id} is not paused: there is nothing to resume; nothing was changed"
    if dash.kind == "gcp":
        backend = _deployed(dash, found)
        try:
            outcome = control.unpause(store, backend.bus, run_id, time.time())
        finally:
            backend.close()
        return (f"resumed run {run_id}: sent its {outcome.tasks} queued task(s) again; "
                "the deployed functions continue it")
    if _runs_here(found, run):
        assert found.job is not None
        outcome = found.job.engine.unpause(run_id)
        return f"resumed run {run_id}: its {outcome.tasks} queued task(s) were sent again"
    control.unpause(store, LeftToTheOwner(), run_id, time.time())
    if alive:
        return (f"resumed run {run_id}: its process {run.owner} starts its held tasks again "
                "within seconds")
    if found.path is None:
        return (f"resumed run {run_id}, but the process that ran it ({run.owner or 'unknown'}) "
                f"is gone: continue it with function-flow resume {run_id}")
    return _spawn(dash, "resume", run, found.path,
                  lambda now: now.owner != run.owner or now.status.is_final)


def _redrive(dash: Dashboard, run: RunRecord) -> str:
    run_id = run.run_id
    if run.status not in REDRIVABLE:
        raise Refused(409, f"run {run_id} is {run.status.value}: only FAILED or CANCELLED "
                           "runs can be redriven; nothing was changed")
    found = dash.definitions.job_for(run)
    if found.job is None:
        raise Refused(409, f"redriving run {run_id} needs its workflow: {found.why}; "
                           "nothing was changed")
    if dash.kind == "gcp":
        backend = _deployed(dash, found)
        try:
            redriven = _engine_redrive(backend.engine(found.job), run_id)
        finally:
            backend.close()
        return (f"redrove run {run_id} (redrive {redriven.redrives}); the deployed "
                "functions execute it")
    if found.path is None:  # a Job of this process: its own backend executes it
        engine = found.job.engine
        engine.store.transact(lambda tx: tx.update_run(run_id, {"owner": process_owner()}))
        redriven = _engine_redrive(engine, run_id)
        return f"redriving run {run_id} (redrive {redriven.redrives}) in this process"
    return _spawn(dash, "redrive", run, found.path,
                  lambda now: now.redrives > run.redrives)


def _engine_redrive(engine: Engine, run_id: str) -> RunRecord:
    try:
        return engine.redrive(run_id)
    except (RedriveRefusedError, RunNotFoundError) as exc:
        raise Refused(409, str(exc)) from None


def _runs_here(found: Found, run: RunRecord) -> bool:
    """Whether this process executes the run, with a Job given to create_app."""
    return found.job is not None and found.path is None and run.owner == process_owner()


def _deployed(dash: Dashboard, found: Found) -> backends.Backend:
    """A gcp backend whose bus reaches the deployed scheduler, or Refused(503)."""
    backend = backends.gcp(dash.settings, found.job)
    try:
        selection.check_topic(backend.bus)
    except selection.BackendUnavailableError as exc:
        backend.close()
        raise Refused(503, f"{exc}; nothing was changed") from None
    return backend


def _spawn(dash: Dashboard, command: str, run: RunRecord, path: str,
           took_over: Callable[[RunRecord], bool]) -> str:
    """Start `function-flow COMMAND RUN_ID --file PATH` on this store, and wait
    until it has taken the run over (or failed, which is then the answer)."""
    for child in dash.children:
        child.poll()  # reap those that ended
    database = os.path.abspath(dash.settings.db_path)
    logs = os.path.join(os.path.dirname(database), "dashboard")
    os.makedirs(logs, exist_ok=True)
    log_path = os.path.join(logs, f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-"
                                  f"{os.getpid()}-{len(dash.children)}.log")
    env = dict(os.environ, FUNCTION_FLOW_BACKEND="embedded", FUNCTION_FLOW_DB=database)
    with open(log_path, "w", encoding="utf-8") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "function_flow.cli", command, run.run_id, "--file", path],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)
    dash.children.append(child)
    store = dash.store()
    assert store is not None
    deadline = time.monotonic() + SPAWN_WAIT_SECONDS
    while time.monotonic() < deadline:
        code = child.poll()
        now = store.get_run(run.run_id)
        if now is not None and took_over(now):
            return (f"{command} of run {run.run_id}: process {child.pid} executes it "
                    f"(function-flow {command}); its output: {log_path}")
        if code is not None:
            lines = _lines(log_path)
            errors = [line for line in lines if line.startswith("error:")]
            if code != 0 and errors:
                raise Refused(409, errors[0][len("error:"):].strip())
            return f"function-flow {command} {run.run_id}: {lines[-1] if lines else 'done'}"
        time.sleep(0.2)
    return (f"started function-flow {command} {run.run_id} (process {child.pid}); "
            f"its output: {log_path}")


def _lines(path: str) -> list[str]:
    with open(path, encoding="utf-8", errors="replace") as log:
        return [line.strip() for line in log if line.strip()]


def decide(dash: Dashboard, run_id: str, token: str, *, approve: bool, data: Any = None,
           reason: str | None = None) -> str:
    """Approve or reject the task of run `run_id` that waits for `token`."""
    run = get_run(dash, run_id)
    store = dash.store()
    assert store is not None
    try:
        waiting = approvals.find(store, token.strip(), time.time())
    except approvals.ApprovalError as exc:
        raise Refused(exc.status, str(exc)) from None
    if waiting.run.run_id != run_id:
        raise Refused(404, f"that token is not one of run {run_id}; nothing was changed")
    found = dash.definitions.job_for(run)
    if found.job is None:
        raise Refused(409, f"recording the decision needs the run's workflow: {found.why}; "
                           "nothing was changed")
    backend = None
    if dash.kind == "gcp":
        backend = _deployed(dash, found)
        engine = backend.engine(found.job)
    elif _runs_here(found, run):
        engine = found.job.engine
    else:
        tracing.configure(dash.settings)  # its `complete` span joins the run's trace
        engine = backends.Backend("embedded", store, LeftToTheOwner()).engine(found.job)
    try:
        decision = approvals.approve(engine, token.strip(), data) if approve else \
            approvals.reject(engine, token.strip(), reason)
    except approvals.ApprovalError as exc:
        raise Refused(exc.status, str(exc)) from None
    finally:
        if backend is not None:
            backend.close()
    what = "approved" if decision.approved else "rejected"
    line = f"{what}: task {decision.task_id} {'succeeded' if approve else 'failed'}"
    if decision.run_status is not RunStatus.RUNNING:
        line += f"; run {run_id} ended {decision.run_status.value}"
    return line
