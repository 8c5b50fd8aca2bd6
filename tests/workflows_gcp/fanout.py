"""1 -> 50 -> 1 with max_parallel_tasks=50: the shape upstream never finished.

Every body records its execution (record.py); `join` sums what the 50
branches returned, so a lost or doubled branch shows in the result.
$FANOUT_MAX_PARALLEL lowers max_parallel_tasks, so that the run hands
concurrency slots from task to task.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

WIDTH = 50

job = tasks.Job(name="fanout", max_parallel_tasks=int(os.environ.get("FANOUT_MAX_PARALLEL", "50")))


@job.task(task_id="root")
def root(task, job):
    record(task)
    return WIDTH


def branch(task, job):
    record(task)
    return int(task.id.split("_")[1])


for number in range(WIDTH):
    job.task(task_id=f"branch_{number}", deps=["root"])(branch)


@job.task(task_id="join", deps=[f"branch_{n}" for n in range(WIDTH)])
def join(task, job):
    record(task)
    return sum(job.get_task_result(f"branch_{n}") for n in range(WIDTH))


scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
start = job.make_start()
