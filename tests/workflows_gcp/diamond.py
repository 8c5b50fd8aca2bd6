"""a -> (b, c) -> d, every body recording its execution (record.py)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="diamond")


@job.task(task_id="a")
def a(task, job):
    record(task)
    return job.get_arguments().get("x", 1)


@job.task(task_id="b", deps=["a"])
def b(task, job):
    record(task)
    return job.get_task_result("a") * 2


@job.task(task_id="c", deps=["a"])
def c(task, job):
    record(task)
    return job.get_task_result("a") * 3


@job.task(task_id="d", deps=["b", "c"])
def d(task, job):
    record(task)
    return job.get_task_result("b") + job.get_task_result("c")


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
