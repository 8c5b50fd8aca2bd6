"""A job whose definition uses every kind of setting (test_versions: its hash
must be the same in every process, whatever PYTHONHASHSEED says)."""

from function_flow import remote
from function_flow.core.graph import Backoff
from function_flow.tasks import Job

job = Job(name="versioned_settings")


def factory(n):
    def body(task, job):
        return n
    return body


@job.task(task_id="first", retries=2, retry_backoff=Backoff(1.0, 10.0, 3.0), timeout=30,
          task_args={"b": [1, 2.5, None], "a": {"x": True}}, retry_on=(TimeoutError, KeyError))
def first(task, job):
    return {"ok": 1}


job.task(task_id="second", deps=["first"], call=remote.PubSub("a-topic"))(
    lambda task, job: {"send": 1})
job.task(task_id="third", deps=["first"])(factory(3))
job.task(task_id="fourth", deps=["second", "third"], retry_backoff=2.5)(factory("four"))
job.task(task_id="fifth", deps=["fourth"])(factory(frozenset({"alpha", "beta", "gamma", "delta"})))
