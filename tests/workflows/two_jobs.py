"""Two jobs in one file: the CLI must be told which one with --job."""

from function_flow import tasks

first = tasks.Job(name="first_job")
second = tasks.Job(name="second_job")


@first.task(task_id="one")
def one(task, job):
    return "first"


@second.task(task_id="two")
def two(task, job):
    return "second"
