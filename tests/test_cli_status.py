"""`function-flow status` and `resume`, run as a user runs them: in a subprocess.

Each test runs in its own temporary working directory, so the embedded
backend's database (.function_flow/function_flow.db) is private to it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_runs import assert_one_error_line, flow, run_id_of, workflow

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------------- status


def test_status_lists_runs(tmp_path: Path) -> None:
    ok = run_id_of(flow(tmp_path, "run", workflow("simple")).stdout)
    bad = run_id_of(flow(tmp_path, "run", workflow("failing")).stderr)
    listed = flow(tmp_path, "status")
    assert listed.returncode == 0
    assert re.search(rf"{re.escape(ok)}\s+simple\s+SUCCEEDED", listed.stdout), listed.stdout
    assert re.search(rf"{re.escape(bad)}\s+failing\s+FAILED", listed.stdout), listed.stdout


def test_status_of_a_run_shows_its_tasks(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("simple"), "--arg", "n=1").stdout)
    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0
    assert re.match(rf"run {run_id} SUCCEEDED in \d+\.\d\ds\njob simple, started "
                    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d, args \{\"n\": 1\}\n", shown.stdout), \
        shown.stdout
    for task in "abcd":
        assert re.search(rf"^\s*{task}\s+SUCCEEDED\s+1\s", shown.stdout, re.MULTILINE)
    assert '{"n": 1}' in shown.stdout
    assert "Traceback" not in shown.stdout


def test_status_without_database_creates_none(tmp_path: Path) -> None:
    result = flow(tmp_path, "status")
    assert result.returncode == 0
    assert " ".join(result.stdout.split()) == (
        f"no runs yet in the embedded store .function_flow/function_flow.db (no such file in "
        f"{tmp_path}: run this where the workflow ran, or set FUNCTION_FLOW_DB to its store)")
    assert not (tmp_path / ".function_flow").exists()


def test_not_found_after_runs_names_the_store_it_read(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    env = {"FUNCTION_FLOW_DB": str(db)}
    assert flow(tmp_path, "run", workflow("simple"), env=env).returncode == 0
    for command in ("status", "resume"):
        assert_one_error_line(flow(tmp_path, command, "simple-nope", env=env),
                              f"no run with id 'simple-nope' in the embedded store {db}")


def stalled_run(db: Path, owner: str, source: str | None = workflow("simple")) -> str:
    """A RUNNING run in the SQLite file `db`, executed by `owner`, whose messages were lost."""
    from function_flow import loader
    from function_flow.backends import Backend
    from function_flow.store.sqlite import SqliteStore

    from function_flow.core.ports import Bus

    class DroppingBus(Bus):
        def publish(self, message, delay=0.0): pass

    job = loader.load_job(workflow("simple"), None)
    store = SqliteStore(str(db))
    try:
        engine = Backend("embedded", store, DroppingBus()).engine(job)
        run_id, _ = engine.start({}, owner=owner, source=source)
    finally:
        store.close()
    return run_id


def test_status_of_a_run_owned_on_another_host_says_it_cannot_tell(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    run_id = stalled_run(db, "other-host:1234")
    env = {"FUNCTION_FLOW_DB": str(db)}
    shown = flow(tmp_path, "status", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith(f"run {run_id} RUNNING for "), first
    assert "run by other-host:1234" in first and "cannot be checked" in first, first
    assert "gone" not in shown.stdout
    listed = flow(tmp_path, "status", env=env)
    assert re.search(rf"{re.escape(run_id)}\s+simple\s+RUNNING \(run by other-host:1234\)",
                     listed.stdout), listed.stdout
    [as_json] = json.loads(flow(tmp_path, "status", "--json", env=env).stdout)["runs"]
    assert (as_json["status"], as_json["note"]) == ("RUNNING", "run by other-host:1234")


def test_status_says_when_the_process_of_a_run_is_gone(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(
        "import time\n"
        "from function_flow import tasks\n"
        "job = tasks.Job(name='sleepy')\n"
        "@job.task(task_id='nap')\n"
        "def nap(task, job):\n"
        "    open('napping', 'w').close()\n"
        "    time.sleep(600)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    process = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "run", "sleepy.py"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while not (tmp_path / "napping").exists():
            assert process.poll() is None, "the run ended early"
            time.sleep(0.05)
        listed = flow(tmp_path, "status")
        run_id = re.search(r"(sleepy-\S+)", listed.stdout).group(1)
        alive = flow(tmp_path, "status", run_id)
        assert f"run {run_id} RUNNING for " in alive.stdout, alive.stdout
        assert "gone" not in alive.stdout and f":{process.pid}" in alive.stdout
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    owner = f"{socket.gethostname()}:{process.pid}"
    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == (
        f"run {run_id} RUNNING, but its process {owner} is gone; continue it with "
        f"function-flow resume {run_id}"), shown.stdout
    listed = flow(tmp_path, "status")
    row = next(line for line in listed.stdout.splitlines() if run_id in line)
    assert re.search(r"RUNNING \(process gone\)\s.*\s-\s*$", row), row
    [as_json] = json.loads(flow(tmp_path, "status", "--json").stdout)["runs"]
    assert (as_json["status"], as_json["note"], as_json["duration_seconds"]) == \
        ("RUNNING", "process gone", None)
    one = json.loads(flow(tmp_path, "status", run_id, "--json").stdout)
    assert (one["note"], one["duration_seconds"]) == ("process gone", None)
    assert "continue one with function-flow resume RUN_ID" in listed.stdout


# --------------------------------------------------------------------- resume


def test_resume_of_a_finished_run_reports_it(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("simple")).stdout)
    result = flow(tmp_path, "resume", run_id)
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} already ended: SUCCEEDED" in result.stdout


def test_resume_of_a_failed_run_reports_it_and_exits_1(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("failing")).stderr)
    result = flow(tmp_path, "resume", run_id)
    assert result.returncode == 1
    assert f"run {run_id} already ended: FAILED" in result.stdout


def test_resume_needs_file_when_the_run_recorded_none_or_its_file_moved(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    env = {"FUNCTION_FLOW_DB": str(db)}
    moved = tmp_path / "moved.py"
    shutil.copy(workflow("simple"), moved)
    from_a_file = stalled_run(db, "other-host:1", str(moved))
    from_nowhere = stalled_run(db, "other-host:1", None)  # as the start function makes them
    moved.unlink()

    assert_one_error_line(flow(tmp_path, "resume", from_a_file, env=env),
                          f"no such file: {moved} (the workflow file run {from_a_file} "
                          "recorded); pass --file FILE.py to say where it is now")
    assert_one_error_line(flow(tmp_path, "resume", from_nowhere, env=env),
                          f"run {from_nowhere} does not record its workflow file; "
                          "pass --file FILE.py")
    for run_id in (from_a_file, from_nowhere):
        resumed = flow(tmp_path, "resume", run_id, "--file", workflow("simple"), env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        assert f"run {run_id} SUCCEEDED" in resumed.stdout


def test_the_exit_of_a_failed_run_leaves_no_attempt_to_a_bus_worker(tmp_path: Path) -> None:
    """`run`'s exit path (follow.settle) cancels a still-running attempt of the
    ended run: attempt 1 ends CANCELLED, not counted as interrupted (its process
    did not die), and no second attempt is queued. A bus worker must not take
    it: the exit would cut it off between its claim and its cancel, leaving the
    task RUNNING in an ended run. The store here would hold such a worker inside
    that window until the test has looked."""
    import threading

    from function_flow import backends, tasks
    from function_flow.cli.follow import settle
    from function_flow.core.records import RunStatus, TaskStatus
    from function_flow.store.sqlite import SqliteStore

    exiting, looked, body_done = threading.Event(), threading.Event(), threading.Event()
    claimed = threading.Event()

    class WorkerHeldAfterClaim(SqliteStore):
        def get_run(self, run_id):  # what a claim reads once it committed
            if exiting.is_set() and threading.current_thread().name.startswith(
                    "function-flow-worker"):
                claimed.set()
                looked.wait(60)
            return super().get_run(run_id)

        def find_tasks(self, *args, **kwargs):  # the exit path's look for queued ones
            if exiting.is_set() and threading.current_thread() is threading.main_thread():
                claimed.wait(0.5)  # lets a worker claim first, if one takes a message
            return super().find_tasks(*args, **kwargs)

    job = tasks.Job(name="exit_path")

    @job.task(task_id="slow")
    def slow(task, job):
        body_done.wait(60)  # still running when the run fails

    @job.task(task_id="explode")
    def explode(task, job):
        while job.engine.store.get_tasks(task.run_id, ["slow"])[0].status \
                is not TaskStatus.RUNNING:
            time.sleep(0.01)
        raise ValueError("boom")

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    backend.store.close()
    backend.store = WorkerHeldAfterClaim(str(tmp_path / "runs.db"))
    job.use_backend(backend)
    try:
        run = job.run(timeout=60)
        assert run.status is RunStatus.FAILED
        exiting.set()
        settle(job, backend, run.run_id)
        slow_record = job.engine.store.get_tasks(run.run_id, ["slow"])[0]
    finally:
        looked.set()
        body_done.set()
        backend.close()
    assert (slow_record.status, slow_record.attempt, slow_record.interrupted) == \
        (TaskStatus.CANCELLED, 1, 0), slow_record
    assert not claimed.is_set()
