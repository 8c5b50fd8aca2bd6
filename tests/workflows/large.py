"""Large payloads: a 5 MiB result passed from `produce` to `consume`.

`consume` reads it with job.get_task_result and returns its length and hash;
`echo` returns it again, so a sink's result is large too (the CLI shows its
size and location instead of the value).
"""

import hashlib

from function_flow.tasks import Job

SIZE = 5 * 1024 * 1024

job = Job("large")


@job.task(task_id="produce")
def produce(task, job):
    return {"blob": "x" * SIZE, "n": job.get_arguments().get("n", 0)}


@job.task(task_id="consume", deps=["produce"])
def consume(task, job):
    value = job.get_task_result("produce")
    return {"length": len(value["blob"]), "n": value["n"],
            "sha256": hashlib.sha256(value["blob"].encode()).hexdigest()}


@job.task(task_id="echo", deps=["produce"])
def echo(task, job):
    return job.get_task_result("produce")
