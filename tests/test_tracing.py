"""One trace per run on the embedded backend, read from an in-memory exporter.

The span tree (function_flow/tracing.py): the run's span is the root; each
attempt that runs is a claim span under it, with the body span inside; a
remote call is a span under the body (synchronous) or the claim
(asynchronous), and the remote function's span hangs from it; an external
event's completion is a span under the run. The HTTP service and the
hosted remote functions are real; only the exporter is in memory.
"""

from __future__ import annotations

import importlib.util
import pathlib
import uuid

import pytest

from function_flow import backends, remote, tasks, tracing
from function_flow.core.records import RunStatus
from function_flow.remote import hosting
from functions_stack import wait_for
from spans import Spans, memory_provider
from test_http_tasks import Service

pytestmark = pytest.mark.timeout(120)
ROUND_TRIP = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "remote_round_trip.py"


@pytest.fixture
def exporter():
    provider, exporter = memory_provider()
    with tracing.use(provider):
        yield exporter


@pytest.fixture
def service():
    service = Service()
    yield service
    service.close()


def ids(traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of a W3C traceparent, 00-TRACE-SPAN-FLAGS."""
    version, trace_id, span_id, flags = traceparent.split("-")
    return trace_id, span_id


def ids_of(span: dict) -> tuple[str, str]:
    return span["context"]["trace_id"][2:], span["context"]["span_id"][2:]


def traced_job(tmp_path, url: str) -> tasks.Job:
    """first -> flaky (raises on attempt 1) -> fetch (HTTP), and first -> timed (a child)."""
    job = tasks.Job(name=f"traced_{uuid.uuid4().hex[:6]}", max_parallel_tasks=4)

    @job.task(task_id="first")
    def first(task, job):
        return tracing.traceparent()  # what a log line of the body would name

    @job.task(task_id="flaky", deps=["first"], retries=1, retry_backoff=0.05)
    def flaky(task, job):
        if task.attempt == 1:
            raise RuntimeError("attempt one breaks")
        return 2

    @job.task(task_id="fetch", deps=["flaky"], call=remote.Http(f"{url}/echo"))
    def fetch(task, job):
        return {"n": 3}

    @job.task(task_id="timed", deps=["first"], timeout=60)  # its body runs in a child
    def timed(task, job):
        return tracing.traceparent()

    job.use_backend(backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4))
    return job


def test_a_run_is_one_trace_of_claims_and_bodies(tmp_path, exporter, service):
    job = traced_job(tmp_path, service.url)
    try:
        run = job.run({}, timeout=60)
        results = {t.task_id: t.result for t in job.engine.task_records(run.run_id)}
    finally:
        job.backend.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    spans = Spans.of(exporter)
    root = spans.one("run", run_id=run.run_id)
    assert root["parent_id"] is None and root["attributes"]["function_flow.created"] is True
    assert ids(run.traceparent) == ids_of(root)
    assert {s["context"]["trace_id"] for s in spans.all} == {root["context"]["trace_id"]}
    assert {s["attributes"]["function_flow.run_id"] for s in spans.all} == {run.run_id}
    assert all(isinstance(s["attributes"]["function_flow.attempt"], int) for s in spans.all
               if s is not root)

    claims = spans.named("claim", run_id=run.run_id)
    assert sorted((c["attributes"]["function_flow.task_id"],
                   c["attributes"]["function_flow.attempt"]) for c in claims) == [
        ("fetch", 1), ("first", 1), ("flaky", 1), ("flaky", 2), ("timed", 1)]
    for claim in claims:
        assert claim["parent_id"] == root["context"]["span_id"]  # not the sender's span
        assert claim["kind"] == "SpanKind.CONSUMER"
        task_id, attempt = (claim["attributes"][f"function_flow.{k}"]
                            for k in ("task_id", "attempt"))
        body = spans.one("body", task_id=task_id, attempt=attempt)
        assert spans.parent(body) is claim
        assert claim["start_time"] <= body["start_time"] <= body["end_time"] <= \
            claim["end_time"]

    # Each claim links to the one whose completion sent its message (a retry: to the
    # attempt that failed); the root tasks' message came from the run's own span.
    def linked(task_id: str, attempt: int = 1) -> list[str]:
        return [link["context"]["span_id"] for link in
                spans.one("claim", task_id=task_id, attempt=attempt)["links"]]

    def claim_id(task_id: str, attempt: int = 1) -> str:
        return spans.one("claim", task_id=task_id, attempt=attempt)["context"]["span_id"]

    assert linked("first") == []
    assert linked("flaky") == linked("timed") == [claim_id("first")]
    assert linked("flaky", 2) == [claim_id("flaky")] and linked("fetch") == [claim_id("flaky", 2)]

    # Inside a body its span is current, in a thread and in a forked child alike:
    # log lines (log_format.py) and the body's own spans sit under it.
    for task_id in ("first", "timed"):
        assert ids(results[task_id]) == ids_of(spans.one("body", task_id=task_id)), task_id

    broken = spans.one("body", task_id="flaky", attempt=1)
    assert broken["status"]["status_code"] == "ERROR"
    event, = broken["events"]
    assert event["name"] == "exception"
    assert event["attributes"]["exception.message"] == "attempt one breaks"
    failed = spans.one("claim", task_id="flaky", attempt=1)
    assert failed["status"]["status_code"] == "ERROR"
    assert failed["attributes"]["function_flow.outcome"] == "failed"
    assert spans.one("claim", task_id="flaky", attempt=2)["status"]["status_code"] == "UNSET"

    # The HTTP call: a client span in the body, whose context the request carried.
    call = spans.one("call", task_id="fetch")
    assert call["kind"] == "SpanKind.CLIENT"
    assert spans.parent(call) is spans.one("body", task_id="fetch")
    request, = service.seen
    assert ids(request["headers"]["traceparent"]) == ids_of(call)


def load_round_trip():
    spec = importlib.util.spec_from_file_location(f"rt_{uuid.uuid4().hex}", ROUND_TRIP)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_remote_function_answers_inside_the_runs_trace(tmp_path, exporter, monkeypatch):
    monkeypatch.setenv("FUNCTION_FLOW_TEST_EXECUTIONS", str(tmp_path / "executions.jsonl"))
    module = load_round_trip()
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    module.job.use_backend(backend)
    remote.host("RT_CLASSIC", module.classic_remote)
    try:
        run = module.job.run({"n": 2, "fail_first": True, "test_run": "t"}, timeout=60)
    finally:
        hosting.unhost("RT_CLASSIC")
        backend.close()
    assert run.status is RunStatus.SUCCEEDED, run.error

    def hosted_spans_ended() -> Spans | None:
        # The hosted functions' spans and the completions they delivered end on
        # their own threads, which may be just after the run has ended.
        spans = Spans.of(exporter).of_run(run.run_id)
        done = len(spans.named("remote")) == 2 and len(spans.named(
            "complete", task_id="wrapped")) == 2 and spans.named("complete", task_id="classic")
        return spans if done else None

    spans = wait_for(hosted_spans_ended, "the hosted functions' spans to end", timeout=30)
    root = spans.one("run", run_id=run.run_id)

    for attempt in (1, 2):
        send = spans.one("send", task_id="wrapped", attempt=attempt)
        assert send["kind"] == "SpanKind.PRODUCER"
        assert spans.parent(send) is spans.one("claim", task_id="wrapped", attempt=attempt)
        served, = [s for s in spans.named("remote") if s["parent_id"] ==
                   send["context"]["span_id"]]
        assert served["name"] == "remote multiply"
        assert served["attributes"]["function_flow.attempt"] == attempt
        assert served["attributes"]["function_flow.job_id"] == \
            send["attributes"]["function_flow.job_id"]
        done = spans.one("complete", task_id="wrapped", attempt=attempt)
        assert done["parent_id"] == root["context"]["span_id"]
    first = spans.one("remote", job_id=spans.one(
        "send", task_id="wrapped", attempt=1)["attributes"]["function_flow.job_id"])
    assert first["status"]["status_code"] == "ERROR"  # the function raised
    assert first["events"][0]["attributes"]["exception.message"] == "the first call fails"
    assert spans.one("complete", task_id="wrapped", attempt=1)["status"] == {
        "status_code": "ERROR", "description": "ValueError: the first call fails"}
    # Function Flow's own form answers by itself: its send and completion are traced.
    assert spans.one("complete", task_id="classic", attempt=1)["status"]["status_code"] \
        == "UNSET"


def test_without_a_provider_nothing_is_stored_or_sent(tmp_path, service):
    assert not tracing.recording()
    job = traced_job(tmp_path, service.url)
    try:
        run = job.run({}, timeout=60)
    finally:
        job.backend.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.traceparent is None
    request, = service.seen
    assert "traceparent" not in {k.lower() for k in request["headers"]}


@pytest.mark.parametrize("carried", ["not-a-traceparent", "00-" + "0" * 32 + "-" + "0" * 16
                                     + "-01", "x" * 10_000])
def test_a_malformed_traceparent_is_ignored(exporter, carried):
    """A context nobody can continue starts a trace of its own; the request is answered."""
    from function_flow.remote.functions import RemoteFunction

    answers = []
    function = RemoteFunction(lambda payload, context: payload["job_args"]["n"] * 2)
    with tracing.attached({"traceparent": carried}):
        outcome = function.answer({"job_id": "j1", "job_args": {"n": 21}},
                                  {"traceparent": carried, "run_id": "r"}, None,
                                  lambda message, attributes: answers.append(message), None)
    assert outcome == "answered" and answers[0]["result"] == 42
    served = Spans.of(exporter).one("remote", job_id="j1")
    assert served["parent_id"] is None and served["status"]["status_code"] == "UNSET"


def test_a_traced_caller_of_start_is_linked_not_joined(tmp_path, exporter, service):
    """A run is a trace of its own; the request that started it is a link."""
    from function_flow.cloud import functions
    from functions_stack import http_client

    job = traced_job(tmp_path, service.url)
    caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
    try:
        answer = http_client(functions.make_start(job), "start").post(
            "/", json={}, headers={"traceparent": caller})
        run = job.wait(answer.get_json()["run_id"], timeout=60)
    finally:
        job.backend.close()
    assert answer.status_code == 200 and run.status is RunStatus.SUCCEEDED, run.error
    root = Spans.of(exporter).one("run", run_id=run.run_id)
    assert root["parent_id"] is None and root["context"]["trace_id"] != "0x" + "ab" * 16
    link, = root["links"]
    assert ids_of(link) == ("ab" * 16, "cd" * 8)
