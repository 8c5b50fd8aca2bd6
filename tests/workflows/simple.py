"""A diamond: a -> (b, c) -> d. `a` returns the run's arguments."""

from function_flow import tasks

job = tasks.Job(name="simple")


@job.task(task_id="a")
def a(task, job):
    return job.get_arguments()


@job.task(task_id="b", deps=["a"])
def b(task, job):
    return "from b"


@job.task(task_id="c", deps=["a"])
def c(task, job):
    return "from c"


@job.task(task_id="d", deps=["b", "c"])
def d(task, job):
    return {"args": job.get_task_result("a"), "parts": [job.get_task_result("b"),
                                                        job.get_task_result("c")]}
