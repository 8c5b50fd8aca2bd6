"""prepare succeeds, then explode raises: the run fails."""

from function_flow import tasks

job = tasks.Job(name="failing")


@job.task(task_id="prepare")
def prepare(task, job):
    return 1


def helper_that_breaks(value):
    raise ValueError(f"boom happened with {value}")


@job.task(task_id="explode", deps=["prepare"])
def explode(task, job):
    return helper_that_breaks(job.get_task_result("prepare"))
