"""`flaky` fails its first attempt; its retry waits out a backoff as a timer.

Pub/Sub cannot delay a message, so the retry is stored in Firestore and the
poller publishes it when due; no function instance sleeps meanwhile. Each
attempt prints and logs, for the output its attempt keeps.
"""

import logging
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="flaky")


@job.task(task_id="flaky", retries=2, retry_backoff=1.0)
def flaky(task, job):
    record(task)
    print(f"flaky prints on attempt {task.attempt}")
    logging.getLogger("flaky").warning("flaky logs on attempt %d", task.attempt)
    if task.attempt == 1:
        raise RuntimeError("first attempt fails on purpose")
    return f"ok on attempt {task.attempt}"


@job.task(task_id="after", deps=["flaky"])
def after(task, job):
    record(task)
    return job.get_task_result("flaky")


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
