"""explode fails the run while slow's body still sleeps and flaky waits out
a long retry backoff: `function-flow run` must not wait for either."""

import time

from function_flow import tasks
from function_flow.core.records import TaskStatus

job = tasks.Job(name="leftovers")


@job.task(task_id="slow")
def slow(task, job):
    time.sleep(600)  # longer than the test waits for the command


@job.task(task_id="flaky", retries=3, retry_backoff=600)
def flaky(task, job):
    raise RuntimeError("try again later")


@job.task(task_id="explode")
def explode(task, job):
    # Fail once slow's body runs and flaky's retry waits out its backoff.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = {t.task_id: t for t in job.engine.store.get_tasks(task.run_id,
                                                                   ["slow", "flaky"])}
        if found["slow"].status is TaskStatus.RUNNING and found["flaky"].attempt >= 2:
            break
        time.sleep(0.02)
    raise ValueError("boom")
