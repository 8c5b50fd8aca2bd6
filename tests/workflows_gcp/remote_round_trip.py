"""Two remote tasks, one per way of writing a remote function.

    prepare --> wrapped (RT_WRAPPED: @remote.function)        --> combine
            \\-> classic (RT_CLASSIC: Function Flow's own form) -/

`multiply` is written with function_flow's wrapper: it returns a value.
`classic_remote` is written as Function Flow's sample writes one: it decodes
the event itself and publishes its answer with Pub/Sub's client. Both record
what they received in $FUNCTION_FLOW_TEST_EXECUTIONS (record.py).

Run arguments steer the faults: fail_first (the wrapped function raises on
its first call of the run), classic_fails (the classic answer has code 1),
silent (the classic function never answers), classic_raises, wrapped_fails
(every call fails, once classic's request is out).
"""

import base64
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import google.auth  # noqa: E402
from google.cloud import pubsub_v1  # noqa: E402

from function_flow import remote, tasks  # noqa: E402
from record import calls_of, record_payload  # noqa: E402

job = tasks.Job(name="remote_round_trip", max_parallel_tasks=4)


@job.task(task_id="prepare")
def prepare(task, job):
    return {"n": job.get_arguments().get("n", 3)}


@job.task(task_id="wrapped", deps=["prepare"], remote_topic="RT_WRAPPED",
          task_args={"factor": 10}, retries=1, retry_backoff=0.2)
def wrapped(task, job):
    return job.get_task_result("prepare")


@job.task(task_id="classic", deps=["prepare"], remote_topic="RT_CLASSIC",
          task_args={"region": "APAC"}, timeout=float(os.environ.get("RT_TIMEOUT", "600")))
def classic(task, job):
    return ""  # falsy: Function Flow sends no "result" then


@job.task(task_id="combine", deps=["wrapped", "classic"])
def combine(task, job):
    return {"wrapped": job.get_task_result("wrapped"),
            "classic": job.get_task_result("classic")}


@remote.function(topic="RT_WRAPPED")
def multiply(payload, context):
    calls = record_payload("multiply", payload)
    if payload["job_args"].get("fail_first") and calls == 1:
        raise ValueError("the first call fails")
    if payload["job_args"].get("wrapped_fails"):
        # Not before classic's request is out: the run's failure must find
        # classic's attempt waiting for its answer (not yet sent, it would
        # simply be cancelled unsent).
        deadline = time.monotonic() + 30
        while not calls_of("classic_remote", payload["job_args"].get("test_run", "")) \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        raise ValueError("every call fails")
    return {"product": payload["result"]["n"] * payload["task_args"]["factor"]}


def classic_remote(event, context):
    """A remote function as Function Flow's sample writes it."""
    del context
    args = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    record_payload("classic_remote", args)
    if args["job_args"].get("silent"):
        return
    if args["job_args"].get("classic_raises"):
        raise RuntimeError("the classic function broke")
    _, project = google.auth.default()
    publisher = pubsub_v1.PublisherClient()
    topic = os.environ.get("FUNCTION_FLOW_EVENTS_TOPIC", "SCHEDULE_EXTERNAL_EVENTS")
    failed = bool(args["job_args"].get("classic_fails"))
    answer = {"status": {"code": 1 if failed else 0,
                         "message": "the region is closed" if failed else "all good"},
              "resource": {"type": "remote_function_resource",
                           "labels": {"job_id": args["job_id"]}}}
    publisher.publish(publisher.topic_path(project, topic),
                      json.dumps(answer).encode("utf-8")).result()


scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
start = job.make_start()
