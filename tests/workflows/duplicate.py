"""A definition error raised while the module is imported: a duplicate id."""

from function_flow import tasks

job = tasks.Job(name="duplicate")


@job.task(task_id="same")
def first(task, job):
    return 1


@job.task(task_id="same")
def second(task, job):
    return 2
