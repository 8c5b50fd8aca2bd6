"""A task without a timeout whose body kills its own process, every time.

It runs in the worker thread (no timeout: no child process), so os._exit
ends the whole `function-flow run` or `resume`. Each execution appends
"<task> <run id> <pid> <attempt>" to the file named by FF_TEST_MARKERS.
"""

import os

from function_flow import tasks

job = tasks.Job(name="dies_inline")


@job.task(task_id="first")
def first(task, job):
    return "first"


@job.task(task_id="suicidal", deps=["first"], retries=1, retry_backoff=0.01)
def suicidal(task, job):
    with open(os.environ["FF_TEST_MARKERS"], "a", encoding="utf-8") as markers:
        markers.write(f"{task.id} {task.run_id} {os.getpid()} {task.attempt}\n")
    os._exit(17)
