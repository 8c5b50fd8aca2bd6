"""Two roots that each wait for a gate file, and a task after the first.

    first ──> next          long

Every execution appends "<task> <run id> <pid>" to the file FF_TEST_MARKERS;
`first` waits until the file FF_TEST_GATE + ".first" exists, `long` until
FF_TEST_GATE + ".long" does (each gives up after two minutes).
"""

import os
import time

from function_flow import tasks

job = tasks.Job(name="pausable")


def mark(task):
    with open(os.environ["FF_TEST_MARKERS"], "a", encoding="utf-8") as markers:
        markers.write(f"{task.id} {task.run_id} {os.getpid()}\n")


def wait_for_gate(suffix):
    deadline = time.monotonic() + 120
    while not os.path.exists(os.environ["FF_TEST_GATE"] + suffix):
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {suffix} never opened")
        time.sleep(0.02)


@job.task(task_id="first")
def first(task, job):
    mark(task)
    wait_for_gate(".first")
    return "first"


@job.task(task_id="long")
def long_running(task, job):
    mark(task)
    wait_for_gate(".long")
    return "long"


@job.task(task_id="next", deps=["first"])
def next_task(task, job):
    mark(task)
    return job.get_task_result("first") + " then next"
