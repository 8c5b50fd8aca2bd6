"""a -> b, where b fails when the run's argument "fail" is true; both hooks
record their execution (record.py) and the run's status."""

import os
import sys
import types

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="hooked")


@job.task(task_id="a")
def a(task, job):
    record(task)
    return job.get_arguments().get("x", 1)


@job.task(task_id="b", deps=["a"])
def b(task, job):
    record(task)
    if job.get_arguments().get("fail"):
        raise RuntimeError("b was told to fail")
    return job.get_task_result("a") * 2


def record_hook(name, run):
    record(types.SimpleNamespace(run_id=run.run_id, id=name, attempt=0),
           status=run.status.value)


@job.on_failure
def alert(run):
    record_hook("on_failure", run)


@job.on_end
def clean_up(run):
    record_hook("on_end", run)


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
