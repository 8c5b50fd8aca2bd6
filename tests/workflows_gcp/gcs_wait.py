"""a -> wait -> after: `wait` returns a GCSFuture for the run's "prefix" argument."""

from function_flow import futures, tasks

job = tasks.Job(name="gcs_wait")


@job.task(task_id="a")
def a(task, job):
    return job.get_arguments()["prefix"]


@job.task(task_id="wait", deps=["a"])
def wait(task, job):
    return futures.GCSFuture(job.get_task_result("a"))


@job.task(task_id="after", deps=["wait"])
def after(task, job):
    return {"found": job.get_task_result("wait")}


scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
start = job.make_start()
