"""A definition error found only when the graph is validated: a cycle."""

from function_flow import tasks

job = tasks.Job(name="cyclic")


@job.task(task_id="x", deps=["z"])
def x(task, job):
    return 1


@job.task(task_id="y", deps=["x"])
def y(task, job):
    return 2


@job.task(task_id="z", deps=["y"])
def z(task, job):
    return 3
