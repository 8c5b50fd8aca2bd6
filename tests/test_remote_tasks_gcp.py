"""Remote tasks on the emulators: requests and answers through real push subscriptions.

The workflow file (tests/workflows_gcp/remote_round_trip.py) is served as a
deployment serves it: scheduler and external_event_listener behind push
subscriptions from their topics, and each remote function behind a push
subscription from its own topic, as `gcloud functions deploy NAME
--trigger-topic TOPIC` makes. The Function Flow-style function publishes its
answer itself, with Pub/Sub's client and google.auth.default().
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from emulators import PROJECT
from function_flow.core.records import RunStatus
from function_flow.local.credentials import offline_credentials_env
from functions_stack import Stack, post, wait_for
from spans import Spans

WORKFLOW = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "remote_round_trip.py"


@pytest.fixture
def executions(tmp_path) -> pathlib.Path:
    return tmp_path / "executions.jsonl"


@pytest.fixture
def stack(gcp_env, executions, tmp_path) -> Any:
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(executions),
                       **offline_credentials_env(str(tmp_path))), PROJECT)
    stack.events_topic = f"EVENTS-{stack.suffix}"
    stack.env["FUNCTION_FLOW_EVENTS_TOPIC"] = stack.events_topic
    try:
        yield stack
    finally:
        stack.close()


def received(executions: pathlib.Path, function: str) -> list[dict[str, Any]]:
    if not executions.exists():
        return []
    lines = [json.loads(line) for line in executions.read_text().splitlines()]
    return [line["payload"] for line in lines if line.get("function") == function]


def final_run(store, run_id: str, poller: Any = None):
    """Wait for the run to end, calling the poller as Cloud Scheduler would
    (it publishes the retry's timer)."""
    def ended():
        if poller is not None:
            post(poller.url, {})
        run = store.get_run(run_id)
        return run if run is not None and run.status.is_final else None

    return wait_for(ended, f"run {run_id} to end", interval=1.0)


def deploy(stack: Stack, listener_signature: str, wrapped_subscriptions: int = 1,
           with_poller: bool = False) -> dict[str, Any]:
    """The workflow's functions, each behind push subscriptions from its topic,
    as `gcloud functions deploy` makes them; returns them by entry point."""
    names = ["scheduler", "start", "multiply", "classic_remote"] + \
        (["poller"] if with_poller else [])
    functions = {name: stack.function(WORKFLOW, name, "http" if name in ("start", "poller")
                                      else "event") for name in names}
    functions["listener"] = stack.function(WORKFLOW, "external_event_listener",
                                           listener_signature)
    stack.push(functions["scheduler"])
    stack.push(functions["listener"], stack.events_topic)
    for copy in range(wrapped_subscriptions):
        stack.push(functions["multiply"], "RT_WRAPPED", f"rt-wrapped-{copy}-{stack.suffix}")
    stack.push(functions["classic_remote"], "RT_CLASSIC", f"rt-classic-{stack.suffix}")
    return functions


def test_both_forms_round_trip_through_push_subscriptions_once_per_request(
        stack, firestore_store, executions):
    # Every request to the wrapped function arrives twice (two subscriptions):
    # it must act on, and answer, each job id once.
    stack.env["FUNCTION_FLOW_TRACING"] = "console"  # one JSON line per span in each log
    deployed = deploy(stack, "cloudevent", wrapped_subscriptions=2, with_poller=True)
    start, poller, multiply = deployed["start"], deployed["poller"], deployed["multiply"]
    scheduler, listener = deployed["scheduler"], deployed["listener"]

    status, body = post(start.url, {"n": 5, "fail_first": True, "test_run": stack.suffix})
    assert status == 200, body
    run = final_run(firestore_store, body["run_id"], poller)
    assert run.status is RunStatus.SUCCEEDED, (run.error, stack.logs()[-3000:])

    records = {t.task_id: t for t in firestore_store.get_tasks(run.run_id)}
    assert records["wrapped"].result == {"product": 50} and records["wrapped"].attempt == 2
    classic_request, = received(executions, "classic_remote")
    assert records["classic"].result == {"job_id": classic_request["job_id"],
                                         "message": "all good", "code": 0}
    assert sorted(classic_request) == ["job_args", "job_id", "task_args"]
    wrapped_requests = received(executions, "multiply")
    # Two attempts (the first raised), each acted on once despite two deliveries.
    assert len(wrapped_requests) == 2, stack.logs()[-3000:]
    assert len({r["job_id"] for r in wrapped_requests}) == 2
    # The second subscription's copy may arrive after the run ended.
    wait_for(lambda: "already answered; duplicate acknowledged" in multiply.log(),
             "a duplicated request to be acknowledged", timeout=60)
    assert records["combine"].result == {"wrapped": {"product": 50},
                                         "classic": records["classic"].result}
    assert "Traceback (most recent call last)" not in listener.log() + scheduler.log()

    def last_spans_written() -> bool:
        # A span ends after the commit it covers, and its process writes it when
        # the delivery returns: combine's claim (it ended the run) and the
        # listener's completions may come after the test saw the run end.
        spans = Spans.in_logs(stack.logs())
        return any(c["attributes"]["function_flow.task_id"] == "combine" for c in
                   spans.named("claim", run_id=run.run_id)) and \
            len(spans.named("complete", run_id=run.run_id, task_id="wrapped")) >= 2

    wait_for(last_spans_written, "the run's last spans to be written", timeout=60)
    assert_one_trace_across_functions(Spans.in_logs(stack.logs()), run.run_id)
    assert_logs_sit_under_the_trace(stack.logs(), Spans.in_logs(stack.logs()), run.run_id)


def assert_one_trace_across_functions(spans: Spans, run_id: str) -> None:
    """The run's spans, written by five processes, make one trace (tracing.py's tree)."""
    root = spans.one("run", run_id=run_id)
    trace_id, root_id = root["context"]["trace_id"], root["context"]["span_id"]
    mine = [s for s in spans.all if s["attributes"].get("function_flow.run_id") == run_id]
    assert {s["context"]["trace_id"] for s in mine} == {trace_id}
    assert {s["resource"]["attributes"]["service.name"] for s in mine} == {
        "start", "scheduler", "multiply", "external_event_listener"}
    claims = spans.named("claim", run_id=run_id)
    assert {c["attributes"]["function_flow.task_id"] for c in claims} == {
        "prepare", "wrapped", "classic", "combine"}
    assert {c["parent_id"] for c in claims} == {root_id}
    # A claim links to the step that sent its message: prepare's claim queued wrapped.
    prepare = spans.one("claim", task_id="prepare")["context"]["span_id"]
    first = spans.one("claim", task_id="wrapped", attempt=1)
    assert [link["context"]["span_id"] for link in first["links"]] == [prepare]
    for attempt in (1, 2):
        send = spans.one("send", task_id="wrapped", attempt=attempt)
        served = [s for s in spans.named("remote") if s["parent_id"] ==
                  send["context"]["span_id"]]  # in the multiply process
        answered, = [s for s in served
                     if s["attributes"].get("function_flow.outcome") != "duplicate"]
        done = spans.one("complete", task_id="wrapped", attempt=attempt)
        assert done["parent_id"] == root_id
        assert [link["context"]["span_id"] for link in done["links"]] == [
            answered["context"]["span_id"]]
    assert spans.one("complete", task_id="wrapped", attempt=1)["status"]["status_code"] \
        == "ERROR"


def assert_logs_sit_under_the_trace(logs: str, spans: Spans, run_id: str) -> None:
    """The JSON log lines about the run name its trace, as Cloud Logging reads them."""
    trace_id = spans.one("run", run_id=run_id)["context"]["trace_id"][2:]
    lines = [json.loads(line) for line in logs.splitlines() if line.startswith('{"severity"')]
    about = [line for line in lines if run_id in line["message"] and line["logger"] in (
        "function_flow.engine", "function_flow.remote")]  # the steps', in their spans
    assert len(about) >= 8
    assert {line.get("logging.googleapis.com/trace") for line in about} == {
        f"projects/{PROJECT}/traces/{trace_id}"}, [l["message"] for l in about]
    # The remote function's error is logged inside its span.
    job_id = spans.one("send", task_id="wrapped", attempt=1)["attributes"]["function_flow.job_id"]
    failed, = [s for s in spans.named("remote", job_id=job_id)  # (the other: a duplicate)
               if s["status"]["status_code"] == "ERROR"]
    logged, = [line for line in lines if "failed:" in line["message"]
               and line["logger"] == "function_flow.remote"]
    assert logged["logging.googleapis.com/spanId"] == failed["context"]["span_id"][2:]


def test_a_failed_answer_fails_the_task_with_its_message(stack, firestore_store, executions):
    start = deploy(stack, "event")["start"]

    status, body = post(start.url, {"classic_fails": True, "test_run": stack.suffix})
    assert status == 200, body
    run = final_run(firestore_store, body["run_id"])
    assert run.status is RunStatus.FAILED
    record, = firestore_store.get_tasks(run.run_id, ["classic"])
    assert record.error == "the region is closed"
