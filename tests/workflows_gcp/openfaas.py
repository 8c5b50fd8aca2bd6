"""An OpenFaaS workflow as deployed: a sync call, then an async one answered
through the `callback` function.

The gateway (FUNCTION_FLOW_OPENFAAS_GATEWAY, its password) and the callback
function's URL (FUNCTION_FLOW_CALLBACK_URL) come from the environment.
"""

from function_flow import remote, tasks

job = tasks.Job(name="openfaas")


@job.task(task_id="score", call=remote.OpenFaaS("score"))
def score(task, job):
    return {"x": job.get_arguments().get("x", 1)}


@job.task(task_id="render", deps=["score"], timeout=60,
          call=remote.OpenFaaS("render", asynchronous=True))
def render(task, job):
    return {"x": job.get_task_result("score")["double"]}


@job.task(task_id="publish", deps=["render"])
def publish(task, job):
    return {"published": job.get_task_result("render")}


scheduler = job.make_scheduler()
poller = job.make_poller()
start = job.make_start()
callback = job.make_callback()
