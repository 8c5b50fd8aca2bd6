"""What a body with a timeout can and cannot do: it runs in a forked copy of
the program (the embedded backend), or inline where there is no os.fork.

Real runs on a real embedded backend, as in test_timeouts.py, whose
fixture and helpers these tests share.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from functions_stack import wait_for
from processes import process_exists
from test_timeouts import embedded, lines, records  # noqa: F401 -- a fixture

from function_flow import backends, tasks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.local.child import ChildProcessExecutor

pytestmark = pytest.mark.timeout(120)

#: What a body in a child changes; the rest of the run keeps its own copy.
SEEN_BY_THE_RUN = {"value": "the program's"}


@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_processes_a_body_started_die_with_it_when_it_ends(embedded, tmp_path,  # noqa: F811
                                                           ending) -> None:
    pids = tmp_path / "pids.txt"
    job = tasks.Job(name="leaves_a_sleeper")

    @job.task(task_id="spawner", timeout=60)
    def spawner():
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        pids.write_text(f"{sleeper.pid}\n")
        if ending == "raises":
            raise RuntimeError("left a sleeper behind")
        return "left a sleeper behind"

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is (RunStatus.SUCCEEDED if ending == "returns" else RunStatus.FAILED)
    [[sleeper]] = lines(pids)
    # Killed with the body's group as the attempt ended; init reaps the orphan.
    wait_for(lambda: not process_exists(int(sleeper)),
             f"the body's own process {sleeper} to be gone", timeout=60)


def test_a_process_the_body_moved_to_its_own_session_is_its_own_business(
        embedded, tmp_path) -> None:  # noqa: F811
    pids = tmp_path / "pids.txt"
    job = tasks.Job(name="daemon")

    @job.task(task_id="starts_a_daemon", timeout=60)
    def starts_a_daemon():
        daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                                  start_new_session=True)
        pids.write_text(f"{daemon.pid}\n")

    job.use_backend(embedded())
    run = job.run(timeout=30)
    [[daemon]] = lines(pids)
    try:
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert process_exists(int(daemon))  # the attempt ended; the daemon lives on
    finally:
        os.kill(int(daemon), signal.SIGKILL)


def test_a_body_killed_at_its_timeout_runs_no_finally(embedded, tmp_path) -> None:  # noqa: F811
    cleaned = tmp_path / "cleaned"
    job = tasks.Job(name="no_cleanup")

    @job.task(task_id="hangs", timeout=0.5)
    def hangs():
        try:
            threading.Event().wait()
        finally:
            cleaned.touch()

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED and "stopped at its timeout" in run.error
    assert not cleaned.exists()  # SIGKILL: the child was reaped before the attempt failed


def test_a_body_in_a_child_changes_its_own_copy_of_the_program(embedded) -> None:  # noqa: F811
    job = tasks.Job(name="globals")

    @job.task(task_id="changes", timeout=10)
    def changes():
        SEEN_BY_THE_RUN["value"] = "the child's"
        return SEEN_BY_THE_RUN["value"]

    @job.task(task_id="reads", deps=["changes"])
    def reads():
        return SEEN_BY_THE_RUN["value"]

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    found = records(job, run.run_id)
    assert found["changes"].result == "the child's"
    assert found["reads"].result == "the program's"  # return values pass data on
    assert SEEN_BY_THE_RUN["value"] == "the program's"


@pytest.mark.parametrize("whose", ["its own", "another job's, opened before",
                                   "another job's, opened in the child"])
def test_a_body_in_a_child_cannot_start_other_runs(embedded, whose, tmp_path,  # noqa: F811
                                                   monkeypatch) -> None:
    """Also not through another job's store: one the program opened hung on
    a writer lock the fork copied held; one the child opened (a job with no
    backend yet takes the settings') started a run nobody executes."""
    job = tasks.Job(name="starts")
    other = tasks.Job(name="other")
    other.task(task_id="o")(lambda: 1)

    @job.task(task_id="starter", timeout=10)
    def starter(task, job):
        return (job if whose == "its own" else other).start({})

    monkeypatch.setenv("FUNCTION_FLOW_DB", str(tmp_path / "runs.db"))
    job.use_backend(embedded())
    if whose == "another job's, opened before":
        assert other.run(timeout=30).status is RunStatus.SUCCEEDED  # the settings' backend
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    assert "job.start() inside a task body with a timeout" in run.error
    assert "start other runs from a task without a timeout" in run.error
    started = [r.job_name for r in job.engine.store.list_runs(10)]
    assert sorted(started) == (["other", "starts"] if whose == "another job's, opened before"
                               else ["starts"])


def test_without_os_fork_a_timeout_only_fails_the_attempt(tmp_path, monkeypatch) -> None:
    """Windows: the body runs inline; at its timeout the attempt fails and its
    retry starts, while the first body still runs (nothing can stop it)."""
    monkeypatch.delattr(os, "fork")
    released, running = threading.Event(), []
    job = tasks.Job(name="no_fork")

    @job.task(task_id="slow", timeout=0.5, retries=1, retry_backoff=0.01)
    def slow(task):
        running.append(task.attempt)
        if task.attempt == 1:
            released.wait(60)
        return [task.attempt, os.getpid(), list(running)]

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"))
    try:
        assert not isinstance(backend.executor, ChildProcessExecutor)
        job.use_backend(backend)
        try:
            run = job.run(timeout=60)
        finally:
            released.set()
        assert run.status is RunStatus.SUCCEEDED, run.error
        record = records(job, run.run_id)["slow"]
        assert record.status is TaskStatus.SUCCEEDED
        # Attempt 2 ran in this process while attempt 1 had not returned.
        assert record.result == [2, os.getpid(), [1, 2]]
        assert "TimeoutError: attempt 1 of task 'slow' did not finish within its timeout " \
               "(0.5 s)" in record.attempts[0]["error"]
    finally:
        assert backend.bus.wait_idle(timeout=60)
        backend.close()
