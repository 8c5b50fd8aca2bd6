"""Remote functions hosted in-process (embedded backend), as a script or `function-flow
run` uses them: an answer that never comes, and a script that starts a run and returns.

Real parts only: SQLite, the in-process bus and LocalHost, and for the
script a Python subprocess that imports this worktree's function_flow.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import pytest

from function_flow import DefinitionError, backends, remote, tasks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import hosting
from functions_stack import wait_for


@pytest.mark.parametrize("timeout, wait", [(None, 7 * 24 * 3600), (45, 45)])
def test_an_answer_that_never_comes_is_logged_and_waited_for_a_week_or_the_timeout(
        tmp_path, caplog, timeout, wait):
    """A hosted Function Flow-style function that publishes nothing leaves its
    attempt RUNNING, waiting for the task's timeout, or 7 days without one."""
    job = tasks.Job(name="unanswered")
    job.task(task_id="r", remote_topic="NOBODY_ANSWERS", timeout=timeout)(
        lambda task, job: "payload")
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job.use_backend(backend)
    events: list[dict[str, Any]] = []
    remote.host("NOBODY_ANSWERS", lambda event, context: events.append(event))
    try:
        with caplog.at_level("WARNING", logger="function_flow"):
            started = time.time()
            run_id = job.start({})
            wait_for(lambda: "returned without publishing" in caplog.text,
                     "the hosted function to return")
        record, = backend.store.get_tasks(run_id, ["r"])
        assert (record.status, record.attempt) == (TaskStatus.RUNNING, 1)
        assert started + wait <= record.lease_until <= time.time() + wait
        assert job.engine.run_status(run_id).status is RunStatus.RUNNING
        # The request's attributes name the run, the task, the attempt and the job id.
        [event] = events
        assert {key: event["attributes"].get(key) for key in (
            "run_id", "task_id", "attempt", "job_id")} == {
            "run_id": run_id, "task_id": "r", "attempt": "1", "job_id": record.trigger_id}
    finally:
        hosting.unhost("NOBODY_ANSWERS")
        backend.close()


AT_EXIT_SCRIPT = """
from function_flow import backends, remote, tasks
job = tasks.Job(name="at_exit")
job.task(task_id="ask", remote_topic="AT_EXIT")(lambda task, job: {"n": 2})
job.task(task_id="after", deps=["ask"])(lambda task, job: job.get_task_result("ask")["n2"])
remote.host("AT_EXIT", remote.function(lambda payload, context: {"n2": payload["result"]["n"]
                                                                 * 2}, topic="AT_EXIT"))
job.use_backend(backends.embedded(db_path="runs.db"))
print(job.start({}))
"""


def test_a_script_that_starts_a_run_and_returns_waits_for_its_hosted_functions(tmp_path):
    (tmp_path / "script.py").write_text(AT_EXIT_SCRIPT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    env["PYTHONPATH"] = str(pathlib.Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, "script.py"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    try:
        run_id = done.stdout.split()[-1]
        assert backend.store.get_run(run_id).status is RunStatus.SUCCEEDED
        assert backend.store.get_tasks(run_id, ["after"])[0].result == 4
    finally:
        backend.close()


@pytest.mark.parametrize("define, said", [
    (lambda: remote.function(topic="SIG_ASYNC")(_async_answer),
     "a remote function: _async_answer() is an async function"),
    (lambda: remote.function(topic="SIG_ONE")(lambda payload: 1),
     "remote function <lambda>() must take two arguments, (payload, context)"),
    (lambda: remote.host("SIG_HOST", 5), "a remote function must be a function"),
    (lambda: remote.host("ab", lambda event, context: None), "is not a Pub/Sub topic name"),
])
def test_a_remote_function_that_cannot_be_called_is_refused_when_defined(define, said):
    """It failed only when a task first called it (a coroutine nobody awaited,
    a TypeError from the call)."""
    with pytest.raises((DefinitionError, ValueError)) as refused:
        define()
    assert said in str(refused.value)


async def _async_answer(payload, context):
    return 1
