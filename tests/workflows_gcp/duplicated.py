"""a -> (b, c, d) -> e, every message published twice (duplicate.py).

Every body records its execution (record.py) and takes half a second, so
that copies of its message arrive while it runs; e sums what b, c and d
returned, so a lost or doubled result shows in the result too.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from duplicate import DuplicatingPublisher  # noqa: E402
from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="duplicated", pubsub=DuplicatingPublisher())


@job.task(task_id="a")
def a(task, job):
    record(task)
    time.sleep(0.5)
    return job.get_arguments().get("x", 1)


def times(factor):
    def body(task, job):
        record(task)
        time.sleep(0.5)
        return job.get_task_result("a") * factor
    return body


for task_id, factor in (("b", 2), ("c", 3), ("d", 4)):
    job.task(task_id=task_id, deps=["a"])(times(factor))


@job.task(task_id="e", deps=["b", "c", "d"])
def e(task, job):
    record(task)
    time.sleep(0.5)
    return sum(job.get_task_result(t) for t in "bcd")


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
