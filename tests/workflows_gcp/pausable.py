"""first (waits for the file named by the run argument `gate`) -> next.

Deployed as scheduler, start and control; every body records its execution
(record.py).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="pausable_gcp")


@job.task(task_id="first")
def first(task, job):
    record(task)
    gate = job.get_arguments()["gate"]
    deadline = time.monotonic() + 25  # under the local function timeout
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.02)
    return "first"


@job.task(task_id="next", deps=["first"])
def next_task(task, job):
    record(task)
    return job.get_task_result("first") + " then next"


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
control = job.make_control()
