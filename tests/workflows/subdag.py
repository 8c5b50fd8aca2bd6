"""A sub-DAG used twice: extract -> (left, right: each a use of `prep`) -> load.

`prep` is a job of its own (it can run alone); `main` uses it as two nodes.
`function-flow run` picks `main`: a job used as a sub-DAG is not a candidate.
"""

from function_flow import tasks

prep = tasks.Job(name="prep")


@prep.task(task_id="clean", task_args={"factor": 10})
def clean(task, job):
    # Its input is whatever its node waits for (extract in main; nothing alone).
    inputs = [job.get_task_result(dep) for dep in task.deps]
    return sum(inputs) * task.task_args["factor"]


@prep.task(task_id="split", deps=["clean"])
def split(task, job):
    return job.get_task_result("clean") + 1  # the sibling in the same use of prep


main = tasks.Job(name="main")


@main.task(task_id="extract")
def extract(task, job):
    return job.get_arguments().get("n", 1)


main.subdag(task_id="left", dag=prep, deps=["extract"])
main.subdag(task_id="right", dag=prep, deps=["left"])


@main.task(task_id="load", deps=["left", "right"])
def load(task, job):
    return {"left": job.get_task_result("left"), "right": job.get_task_result("right")}
