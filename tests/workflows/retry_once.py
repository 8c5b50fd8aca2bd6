"""`a` fails its first attempt and is retried after a 1 s backoff; `b` uses its result.

On the GCP backend the delayed retry is a timer in Firestore that only the
poller publishes, so this run ends only if something calls the poller.
"""

from function_flow import tasks

job = tasks.Job(name="retry_once")


@job.task(task_id="a", retries=2, retry_backoff=1)
def a(task, job):
    if task.attempt < 2:
        raise RuntimeError("the first attempt fails")
    return task.attempt


@job.task(task_id="b", deps=["a"])
def b(task, job):
    return job.get_task_result("a") * 10
