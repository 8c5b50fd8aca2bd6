"""A task with a timeout (so it runs in a child process) that waits for a gate file.

Every execution of a task appends "<task> <run id> <pid>" to the file named
by FF_TEST_MARKERS; `blocker` then starts a process of its own (in its process
group, as subprocess does by default; its pid is appended to FF_TEST_MARKERS +
".spawned") and waits until the file FF_TEST_GATE exists.
"""

import os
import subprocess
import sys
import time

from function_flow import tasks

job = tasks.Job(name="timed_blocker")


def mark(task):
    with open(os.environ["FF_TEST_MARKERS"], "a", encoding="utf-8") as markers:
        markers.write(f"{task.id} {task.run_id} {os.getpid()}\n")


@job.task(task_id="blocker", timeout=60)
def blocker(task, job):
    mark(task)
    spawned = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    with open(os.environ["FF_TEST_MARKERS"] + ".spawned", "a", encoding="utf-8") as pids:
        pids.write(f"{spawned.pid}\n")
    while not os.path.exists(os.environ["FF_TEST_GATE"]):
        time.sleep(0.02)
    print("blocker saw the gate")
    return "unblocked"


@job.task(task_id="last", deps=["blocker"])
def last(task, job):
    mark(task)
    return job.get_task_result("blocker")
