"""ask waits for a person (futures.Approval); use reads what they decided.

Run arguments: token_file (where ask "e-mails" its token: the file is
written whole, then renamed into place), timeout (seconds, default an hour)
and default (the result when nobody decides in time; none: the task fails).
`use` writes the pid of the process that ran it next to the token file.
"""

import os

from function_flow import futures, tasks

job = tasks.Job(name="approval")


@job.task(task_id="ask")
def ask(task, job):
    args = job.get_arguments()
    options = {"default": args["default"]} if "default" in args else {}
    approval = futures.Approval(timeout=args.get("timeout", 3600), **options)
    path = args["token_file"]
    with open(path + ".tmp", "w", encoding="utf-8") as mail:
        mail.write(approval.token)
    os.replace(path + ".tmp", path)
    return approval


@job.task(task_id="use", deps=["ask"])
def use(task, job):
    with open(job.get_arguments()["token_file"] + ".use_pid", "w", encoding="utf-8") as pid:
        pid.write(str(os.getpid()))  # which process ran it
    return {"got": job.get_task_result("ask")}
