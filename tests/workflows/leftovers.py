"""explode fails the run while slow's body still sleeps and flaky waits out
a long retry backoff: `function-flow run` must not wait for either."""

import time

from function_flow import tasks

job = tasks.Job(name="leftovers")


@job.task(task_id="slow")
def slow(task, job):
    time.sleep(20)


@job.task(task_id="flaky", retries=3, retry_backoff=120)
def flaky(task, job):
    raise RuntimeError("try again later")


@job.task(task_id="explode")
def explode(task, job):
    time.sleep(0.5)  # after flaky's first failure, so its retry is waiting
    raise ValueError("boom")
