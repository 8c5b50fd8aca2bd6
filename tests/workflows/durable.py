"""A workflow for kill -9 / resume tests.

Every execution of a task appends "<task> <run id> <pid>" to the file named by
FF_TEST_MARKERS. `blocker` then waits until the file FF_TEST_GATE exists, so a
test can kill the process while it is deterministically mid-run.
"""

import os
import time

from function_flow import tasks

job = tasks.Job(name="durable")


def mark(task):
    with open(os.environ["FF_TEST_MARKERS"], "a", encoding="utf-8") as markers:
        markers.write(f"{task.id} {task.run_id} {os.getpid()}\n")


@job.task(task_id="first")
def first(task, job):
    mark(task)
    return "first"


@job.task(task_id="second", deps=["first"])
def second(task, job):
    mark(task)
    return "second"


@job.task(task_id="side", deps=["first"])
def side(task, job):
    mark(task)
    return "side"


@job.task(task_id="blocker", deps=["second", "side"])
def blocker(task, job):
    mark(task)
    while not os.path.exists(os.environ["FF_TEST_GATE"]):
        time.sleep(0.02)
    return "unblocked"


@job.task(task_id="last", deps=["blocker"])
def last(task, job):
    mark(task)
    return [job.get_task_result(t) for t in ("first", "second", "side", "blocker")]
