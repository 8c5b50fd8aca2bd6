"""ask waits for a person (futures.Approval); use reads what they decided.

Deployed as scheduler, start and the approval callback (POST /approve,
/reject). The token goes to the file named by the run argument token_file.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from function_flow import futures, tasks  # noqa: E402
from record import record  # noqa: E402

job = tasks.Job(name="approval_gcp")


@job.task(task_id="ask")
def ask(task, job):
    record(task)
    approval = futures.Approval(timeout=3600)
    path = job.get_arguments()["token_file"]
    with open(path + ".tmp", "w", encoding="utf-8") as mail:
        mail.write(approval.token)
    os.replace(path + ".tmp", path)
    return approval


@job.task(task_id="use", deps=["ask"])
def use(task, job):
    record(task)
    return {"got": job.get_task_result("ask")}


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
callback = job.make_callback()
