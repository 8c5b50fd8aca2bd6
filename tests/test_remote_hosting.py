"""Remote functions hosted in-process (embedded backend), as a script or `function-flow
run` uses them: an answer that never comes.

Real parts only: SQLite, the in-process bus and LocalHost.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from function_flow import backends, remote, tasks
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

