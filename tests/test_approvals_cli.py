"""`function-flow approve` and `reject` on the embedded backend, as a user runs them.

A run of tests/workflows/approval.py waits in its own `function-flow run`
process; its body "e-mails" the token by writing it to a file; another
`function-flow` process decides. The run's own process then executes what
became ready. On Google Cloud (the emulators) see test_approvals_http.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from function_flow import approvals, backends, loader
from function_flow.cli import cli
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.store.sqlite import SqliteStore
from functions_stack import wait_for
from cli_runs import WORKFLOWS, assert_one_error_line, flow

pytestmark = pytest.mark.timeout(180)

APPROVAL = str(WORKFLOWS / "approval.py")


class Run:
    """A `function-flow run` of the approval workflow, waiting for its decision."""

    def __init__(self, cwd: Path, *args: str) -> None:
        self.cwd = cwd
        self.token_file = cwd / "mail.txt"
        env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "function_flow.cli", "run", APPROVAL,
             "--arg", f"token_file={self.token_file}", *args],
            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_for(self._mailed, "the approval token")
        self.token = self.token_file.read_text()
        listed = flow(cwd, "status").stdout
        self.run_id = re.search(r"(approval-\S+)", listed).group(1)
        wait_for(lambda: self.task("ask").trigger_id is not None, "the wait to be recorded")

    def _mailed(self) -> bool:
        assert self.process.poll() is None, self.process.communicate()
        return self.token_file.exists()

    def store(self) -> SqliteStore:
        return SqliteStore(str(self.cwd / ".function_flow" / "function_flow.db"))

    def task(self, task_id: str):
        store = self.store()
        try:
            return store.get_tasks(self.run_id, [task_id])[0]
        finally:
            store.close()

    def records(self) -> dict:
        store = self.store()
        try:
            return {t.task_id: t for t in store.get_tasks(self.run_id)}
        finally:
            store.close()

    def finish(self) -> subprocess.CompletedProcess:
        out, err = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out, err)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stored_text(self) -> str:
        db = self.cwd / ".function_flow"
        return "".join(p.read_bytes().decode("latin-1") for p in db.iterdir())


@pytest.fixture
def running(tmp_path: Path):
    runs: list[Run] = []

    def start(*args: str) -> Run:
        runs.append(Run(tmp_path, *args))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.kill()


def test_an_approval_on_the_command_line_is_traced_as_the_settings_say(running) -> None:
    """Its `complete ask` span is exported, as the callback function's is."""
    from test_tracing_export import OtlpReceiver

    run = running()
    receiver = OtlpReceiver()
    try:
        result = flow(run.cwd, "approve", run.token, env={
            "FUNCTION_FLOW_TRACING": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
    finally:
        receiver.server.shutdown()
    assert result.returncode == 0, result.stderr
    names = [span.name for _, request in receiver.requests
             for resource in request.resource_spans
             for scope in resource.scope_spans for span in scope.spans]
    assert "complete ask" in names, names
    assert run.finish().returncode == 0


def test_approve_with_data_finishes_the_run_in_its_own_process(running) -> None:
    run = running()

    result = flow(run.cwd, "approve", run.token, "--data", '{"ok": true, "by": "ana"}')

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"approved: task ask of run {run.run_id} succeeded"
    assert "continues the run" in lines[1] or "ended: SUCCEEDED" in lines[1], lines
    finished = run.finish()
    assert finished.returncode == 0, finished.stderr
    assert re.search(r"^\s*use\s+SUCCEEDED\s+1\s", finished.stdout, re.MULTILINE)
    result_line = finished.stdout.split("\nresults:\n", 1)[1].splitlines()[0]
    assert json.loads(result_line.split(": ", 1)[1]) == {"got": {"ok": True, "by": "ana"}}
    assert run.records()["ask"].result == {"ok": True, "by": "ana"}
    # The approving command ran no body: the run's own process did.
    assert (run.cwd / "mail.txt.use_pid").read_text() == str(run.process.pid)
    assert run.token not in run.stored_text()
    assert approvals.token_hash(run.token) in run.stored_text()  # the scan sees the file


def test_a_used_token_is_refused_with_one_line_and_changes_nothing(running) -> None:
    run = running()
    assert flow(run.cwd, "approve", run.token, "--data", "1").returncode == 0
    assert run.finish().returncode == 0
    before = run.records()

    assert_one_error_line(flow(run.cwd, "approve", run.token, "--data", "2"), "already used")
    assert_one_error_line(flow(run.cwd, "reject", run.token), "already used")

    assert run.records() == before
    assert before["ask"].result == 1


def test_reject_fails_the_task_with_the_reason(running) -> None:
    run = running()

    result = flow(run.cwd, "reject", run.token, "--reason", "not this quarter")

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"rejected: task ask of run {run.run_id} failed"
    finished = run.finish()
    assert finished.returncode == 1
    assert "ApprovalRejected: not this quarter" in finished.stdout + finished.stderr
    records = run.records()
    assert records["ask"].status is TaskStatus.FAILED
    assert records["use"].status is TaskStatus.UPSTREAM_FAILED
    shown = flow(run.cwd, "status", run.run_id)
    assert "ApprovalRejected: not this quarter" in shown.stdout


@pytest.mark.parametrize("args, fragment", [
    (["approve", "x" * 43], "unknown approval token"),
    (["approve", "not-a-token!"], "not an approval token"),
    (["reject", "A" * 43, "--reason", "forged"], "unknown approval token"),
    (["approve", "TOKEN", "--data", "{ok: yes}"], "--data is not JSON"),
    (["approve", "TOKEN", "--data", "NaN"], "NaN is not standard JSON"),
])
def test_bad_tokens_and_data_are_refused_with_one_line(running, args, fragment) -> None:
    run = running()
    before = run.records()

    result = flow(run.cwd, *[run.token if a == "TOKEN" else a for a in args])

    assert_one_error_line(result, fragment, "nothing was changed")
    assert run.records() == before
    assert flow(run.cwd, "approve", run.token).returncode == 0  # the real token still works
    assert run.finish().returncode == 0
    assert run.records()["use"].result == {"got": None}  # no --data: null


def test_when_its_process_is_gone_approve_says_so_and_resume_finishes(running) -> None:
    run = running()
    run.kill()

    result = flow(run.cwd, "approve", run.token, "--data", '"yes"')

    assert result.returncode == 0, result.stderr
    assert "is gone: finish the run with function-flow resume " + run.run_id in result.stdout
    resumed = flow(run.cwd, "resume", run.run_id)
    assert resumed.returncode == 0, resumed.stderr
    assert run.records()["use"].result == {"got": "yes"}


def test_resume_before_the_decision_keeps_the_same_token_waiting(running) -> None:
    """The waiting attempt ran in no process: resuming must not ask again."""
    run = running()
    run.kill()
    mailed = run.token_file.stat().st_mtime_ns
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    resume = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "resume", run.run_id],
                              cwd=run.cwd, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (run.store().get_run(run.run_id).owner or "").endswith(
            f":{resume.pid}"), "resume to take the run over")
        assert run.task("ask").status is TaskStatus.RUNNING and run.task("ask").attempt == 1

        approved = flow(run.cwd, "approve", run.token, "--data", "7")

        assert approved.returncode == 0, approved.stderr
        assert "continues the run" in approved.stdout
        out, err = resume.communicate(timeout=120)
    finally:
        if resume.poll() is None:
            resume.kill()
    assert resume.returncode == 0, err
    assert run.records()["use"].result == {"got": 7}
    assert run.token_file.stat().st_mtime_ns == mailed  # asked once


def test_an_expired_token_is_refused_and_resume_applies_the_timeout(running) -> None:
    # The run's process must still be alive, with the wait open, when killed:
    # an hour's timeout, however slow the fixture is under load; the hour then
    # passes in the record (nobody applies the timeout once the process is gone).
    run = running("--arg", "timeout=3600")
    run.kill()
    store = run.store()
    try:
        store.transact(lambda tx: tx.update_task(run.run_id, "ask",
                                                 {"lease_until": time.time() - 1}))
    finally:
        store.close()
    before = run.records()

    assert_one_error_line(flow(run.cwd, "approve", run.token), "expired", "nothing was changed")

    assert run.records() == before
    resumed = flow(run.cwd, "resume", run.run_id)
    assert resumed.returncode == 1
    assert "neither given nor refused within 1 hour" in resumed.stdout + resumed.stderr


def test_an_expired_token_with_a_default_completes_the_run_with_it(running) -> None:
    run = running("--arg", "timeout=0.5", "--arg", 'default={"approved": false}')

    finished = run.finish()

    assert finished.returncode == 0, finished.stderr
    assert run.records()["use"].result == {"got": {"approved": False}}
    assert_one_error_line(flow(run.cwd, "approve", run.token), "unknown approval token")


# --------------------------------------- a run started from Python, approved in-process


def test_cli_approves_a_run_that_job_start_began_in_this_process(tmp_path, monkeypatch) -> None:
    """job.start() records no workflow file: the CLI needs --file; the process
    waiting in job.wait() runs what comes next."""
    db = tmp_path / "state.db"
    for name in [k for k in os.environ if k.startswith("FUNCTION_FLOW_")]:
        monkeypatch.delenv(name)
    env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": str(db)}
    job = loader.load_job(APPROVAL, None)
    backend = backends.embedded(str(db), workers=2)
    job.use_backend(backend)
    token_file = tmp_path / "mail.txt"
    run_id = job.start({"token_file": str(token_file)})
    wait_for(token_file.exists, "the approval token")
    token = token_file.read_text()
    wait_for(lambda: job.engine.store.get_tasks(run_id, ["ask"])[0].trigger_id,
             "the wait to be recorded")
    runner = CliRunner()

    missing = runner.invoke(cli, ["approve", token], env=env)
    assert missing.exit_code == 2 and "--file" in missing.output, missing.output

    approved = runner.invoke(cli, ["approve", token, "--file", APPROVAL, "--data", "[1, 2]"],
                             env=env)

    assert approved.exit_code == 0, approved.output
    assert f"approved: task ask of run {run_id} succeeded" in approved.output
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.engine.store.get_tasks(run_id, ["use"])[0].result == {"got": [1, 2]}
    backend.close()


@pytest.mark.parametrize("paused", [False, True])
def test_the_next_step_after_approving_a_job_start_run_names_its_file(
        tmp_path, monkeypatch, paused) -> None:
    """Its process gone, or its run paused: the resume it suggests carries the
    --file given (without it that resume was refused: no file recorded)."""
    import socket

    db = tmp_path / "state.db"
    for name in [k for k in os.environ if k.startswith("FUNCTION_FLOW_")]:
        monkeypatch.delenv(name)
    env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": str(db)}
    job = loader.load_job(APPROVAL, None)
    job.use_backend(backends.embedded(str(db), workers=2))
    token_file = tmp_path / "mail.txt"
    run_id = job.start({"token_file": str(token_file)})
    wait_for(token_file.exists, "the approval token")
    wait_for(lambda: job.engine.store.get_tasks(run_id, ["ask"])[0].trigger_id,
             "the wait to be recorded")
    job.backend.close()  # nothing executes it now
    gone = subprocess.Popen(["true"])  # a pid that is gone
    gone.wait()
    store = SqliteStore(str(db))
    fields = {"paused_at": time.time()} if paused else {
        "owner": f"{socket.gethostname()}:{gone.pid}"}
    store.transact(lambda tx: tx.update_run(run_id, fields))
    store.close()

    approved = CliRunner().invoke(cli, ["approve", token_file.read_text(), "--file", APPROVAL],
                                  env=env)

    assert approved.exit_code == 0, approved.output
    resume = f"function-flow resume {run_id} --file {APPROVAL}"
    expected = f"run {run_id} is paused: it goes on once resumed ({resume})" if paused \
        else f"is gone: finish the run with {resume}"
    assert expected in " ".join(approved.output.split()), approved.output


def test_a_token_of_a_run_that_ended_says_so_and_changes_nothing(running) -> None:
    """The run's end deletes its waits' triggers, so such a token is unknown;
    the refusal must still name that case, not only "already used"."""
    run = running()
    run.kill()
    cancelled = flow(run.cwd, "cancel", run.run_id)
    assert cancelled.returncode == 0, cancelled.stderr
    assert "bodies still executing" not in cancelled.stdout  # it waited for a decision
    before = run.records()

    result = flow(run.cwd, "approve", run.token)

    assert_one_error_line(result, "unknown approval token, one already used (a token works "
                          "once), or one of a run that ended: nothing was changed")
    assert run.records() == before


def test_a_file_that_defines_other_tasks_is_refused_and_changes_nothing(running) -> None:
    run = running()
    run.kill()
    other = run.cwd / "other.py"
    other.write_text("from function_flow import tasks\n\njob = tasks.Job(name='approval')\n\n\n"
                     "@job.task(task_id='ask')\ndef ask(task, job):\n    return 1\n\n\n"
                     "@job.task(task_id='publish', deps=['ask'])\n"
                     "def publish(task, job):\n    return 2\n")
    before = run.records()

    result = flow(run.cwd, "approve", run.token, "--file", str(other))

    assert_one_error_line(result, "was started with a different definition",
                          "task 'use' was removed")
    assert run.records() == before
    store = run.store()
    try:  # not marked blocked: `status` said so until someone resumed it
        assert store.get_run(run.run_id).blocked is None
    finally:
        store.close()
    assert flow(run.cwd, "approve", run.token).returncode == 0  # the token still works
