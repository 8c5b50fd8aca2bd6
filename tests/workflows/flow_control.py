from function_flow.tasks import Job
job = Job("flow_control")

@job.task(task_id="list")
def make_list(job, **_):
    return list(range(int(job.get_arguments().get("count", 40))))

@job.foreach(task_id="square", over="list", max_concurrency=8, tolerated_failures=2)
def square(item, **_):
    if item in (5, 17):
        raise ValueError(f"bad item {item}")
    return item * item

@job.task(task_id="decide", deps=["square"], branch=True)
def decide(job, **_):
    return "big" if sum(x or 0 for x in job.get_task_result("square")) > 1000 else "small"

@job.task(task_id="big", deps=["decide"])
def big(**_):
    return "big"

@job.task(task_id="small", deps=["decide"])
def small(**_):
    return "small"

@job.task(task_id="report", deps=["big", "small"], trigger_rule="none_failed_min_one_success")
def report(job, **_):
    return job.get_task_result("big") or job.get_task_result("small")
