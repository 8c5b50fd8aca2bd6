"""a -> b; b fails when the run's argument "fail" is true. Both hooks print."""

from function_flow import tasks

job = tasks.Job(name="hooked")


@job.task(task_id="a")
def a(task, job):
    return job.get_arguments().get("x", 1)


@job.task(task_id="b", deps=["a"])
def b(task, job):
    if job.get_arguments().get("fail"):
        raise RuntimeError("b was told to fail")
    return job.get_task_result("a") * 2


@job.on_failure
def alert(run):
    print(f"ALERT {run.run_id} {run.status.value}: {run.error}", flush=True)


@job.on_end
def clean_up(run):
    print(f"CLEAN UP {run.status.value} {run.results}", flush=True)
