"""The run context on the deployed topology: a sets, b and c (in parallel, in any
scheduler instance) set keys of their own, d deletes one and returns the rest."""

from function_flow import tasks

job = tasks.Job(name="context", max_parallel_tasks=2)


@job.task(task_id="a")
def a(task, job):
    job.context.set("source", job.get_arguments().get("source", "none"))
    job.context.set("scratch", [1, 2])


@job.task(task_id="b", deps=["a"])
def b(task, job):
    job.context.set("b", {"from": job.context.get("source")})


@job.task(task_id="c", deps=["a"])
def c():  # the module's job: its context is that of the run this body runs in
    job.context.set("c/part", job.context["scratch"] + [3])


@job.task(task_id="d", deps=["b", "c"])
def d(task, job):
    job.context.delete("scratch")
    return dict(job.context.items())


scheduler = job.make_scheduler()
start = job.make_start()
