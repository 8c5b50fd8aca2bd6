"""`overrun` runs past its timeout in Python code on attempt 1; attempt 2 is quick.

On Cloud Functions the retry of an overrunning attempt waits for the
platform's request timeout (FUNCTION_FLOW_FUNCTION_TIMEOUT). `function-flow
dev` sets a short one, and its functions-framework interrupts the request
at that time: attempt 1 records when RequestTimeoutException reached it.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="overrun")


@job.task(task_id="overrun", timeout=1, retries=1, retry_backoff=0.1)
def overrun(task, job):
    record(task)
    if task.attempt == 1:
        deadline = time.time() + 120
        try:
            while time.time() < deadline:
                sum(range(1000))
        except BaseException as exc:
            record(task, interrupted_by=type(exc).__name__)
            raise
    return task.attempt
