"""BigQueryFuture, DataFlowFuture, RemoteFunctionFuture (the audit-log forms of
BigQuery one by one: test_bigquery_future.py).

Parsed from realistic log entries (tests/log_entries.py), one by one and
through the external event listener of an embedded run. The Dataflow API is
a local server that answers its REST contract and issues OAuth tokens, so
google.auth and AuthorizedSession run for real.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest

from function_flow import backends, futures, tasks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import TransientBackendError
from function_flow.services import dataflow
from log_entries import (DataflowApi, bigquery_job_change, bigquery_jobcompleted,
                         dataflow_worker_pool_stopped, encoded, pubsub_event)

# ------------------------------------------------- Function Flow's own tests


def upstream_bq_message(status: dict[str, Any]) -> dict[str, Any]:
    """futures_test.py's BigQuery message: no location, status {} on success."""
    return {"protoPayload": {"status": status, "serviceData": {"jobCompletedEvent": {
        "job": {"jobName": {"projectId": "test-project", "jobId": "test-bq-job-id"}}}}},
        "resource": {"type": "bigquery_resource"}}


UPSTREAM_DATAFLOW = {"textPayload": "Worker pool stopped.", "resource": {
    "type": "dataflow_step",
    "labels": {"job_name": "my_dataflow_job", "region": "us-central1", "job_id": "df_job_id"}}}


def test_upstream_bigquery_messages_parse_as_function_flow_parsed_them() -> None:
    ok = futures.BigQueryFuture.handle_message(upstream_bq_message({}))
    assert ok.is_success and ok.trigger_id == "test-bq-job-id"
    assert ok.result == {"job_id": "test-bq-job-id", "location": None}
    failed = futures.BigQueryFuture.handle_message(
        upstream_bq_message({"code": 1, "message": "test error message"}))
    assert not failed.is_success and failed.trigger_id == "test-bq-job-id"
    assert failed.error == "test error message"


def test_upstream_remote_function_replies() -> None:
    reply = {"status": {"code": 0, "message": "test success message"},
             "resource": {"type": "remote_function_resource",
                          "labels": {"job_id": "generic-job-id"}}}
    ok = futures.RemoteFunctionFuture.handle_message(reply)
    assert ok.is_success and ok.trigger_id == "generic-job-id"
    assert ok.result == {"job_id": "generic-job-id", "message": "test success message",
                         "code": 0}
    reply["status"] = {"code": 1, "message": "test error message"}
    failed = futures.RemoteFunctionFuture.handle_message(reply)
    assert not failed.is_success and failed.trigger_id == "generic-job-id"
    assert failed.error == "test error message"
    invalid = {"status": {"code": 1, "message": "test error message"}}
    assert futures.RemoteFunctionFuture.handle_message(invalid) is None


def test_remote_reply_with_a_result_or_without_code_or_id() -> None:
    labels = {"type": "remote_function_resource", "labels": {"job_id": "j1"}}
    wrapped = futures.RemoteFunctionFuture.handle_message(
        {"status": {"code": 0, "message": "ok"}, "resource": labels, "result": [1, 2]})
    assert wrapped.is_success and wrapped.result == [1, 2]
    no_code = futures.RemoteFunctionFuture.handle_message(  # proto3 JSON omits code 0
        {"status": {"message": "done"}, "resource": labels})
    assert no_code.is_success and no_code.result["code"] == 0
    assert futures.RemoteFunctionFuture.handle_message(
        {"status": {"code": 0}, "resource": {"type": "remote_function_resource"}}) is None


def test_get_value_keeps_function_flow_name_and_never_raises() -> None:
    assert futures._get_value is futures.get_value
    assert futures._get_value({"a": {"b": 2}}, "a.b") == 2
    assert futures._get_value({"a": {"b": 2}}, "a.c") is None
    assert futures._get_value({"a": "text"}, "a.b") is None
    assert futures._get_value({"a": [1]}, "a.0") is None


# ------------------------------------------------------------------- Dataflow


@pytest.fixture
def dataflow_api(tmp_path, monkeypatch):
    """The local Dataflow API, with Application Default Credentials that use it."""
    api = DataflowApi()
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS",
                       api.credentials_file(str(tmp_path / "adc.json")))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "credentials-project")
    monkeypatch.setenv("FUNCTION_FLOW_DATAFLOW_ENDPOINT", api.url)
    monkeypatch.setattr(futures.DataFlowFuture, "STATUS_CHECK_SLEEP_SECS", 0.01)
    dataflow._jobs.cache_clear()
    try:
        yield api
    finally:
        dataflow._jobs.cache_clear()
        api.close()


def test_upstream_dataflow_messages_with_done_and_failed_jobs(dataflow_api) -> None:
    dataflow_api.states["df_job_id"] = ["JOB_STATE_DONE"]
    ok = futures.DataFlowFuture.handle_message(UPSTREAM_DATAFLOW)
    assert ok.is_success and ok.trigger_id == "df_job_id"
    assert ok.result == {"job_id": "df_job_id", "job_name": "my_dataflow_job",
                         "state": "JOB_STATE_DONE"}
    # The entry names no project: the credentials' (GOOGLE_CLOUD_PROJECT) is asked.
    [request] = dataflow_api.requests
    assert request["path"] == "/v1b3/projects/credentials-project/locations/us-central1" \
                              "/jobs/df_job_id"
    assert request["authorization"] == f"Bearer {DataflowApi.TOKEN}"
    dataflow_api.states["df_job_id"] = ["JOB_STATE_FAILED"]
    failed = futures.DataFlowFuture.handle_message(UPSTREAM_DATAFLOW)
    assert not failed.is_success and failed.trigger_id == "df_job_id"
    assert "my_dataflow_job" in failed.error and "JOB_STATE_FAILED" in failed.error


@pytest.mark.parametrize("state", ["JOB_STATE_FAILED", "JOB_STATE_CANCELLED",
                                   "JOB_STATE_DRAINED", "JOB_STATE_UPDATED"])
def test_dataflow_job_that_ended_otherwise_fails_naming_job_and_state(dataflow_api,
                                                                      state) -> None:
    job_id = "2024-03-01_01_02_03-123456789"
    dataflow_api.states[job_id] = [state]
    result = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped(job_id))
    assert not result.is_success and result.trigger_id == job_id
    assert result.error.startswith(f"Dataflow job daily-aggregation (id {job_id}, "
                                   f"region europe-west1) ended {state}")
    assert dataflow_api.requests[0]["path"] == (
        f"/v1b3/projects/analytics-prod/locations/europe-west1/jobs/{job_id}")
    if state == "JOB_STATE_UPDATED":
        assert "replaced by job 2024-03-01_02_00_00-99" in result.error


def test_dataflow_job_still_stopping_is_asked_again_until_it_is_done(dataflow_api) -> None:
    dataflow_api.states["j7"] = ["JOB_STATE_RUNNING", "JOB_STATE_RESOURCE_CLEANING_UP",
                                 "JOB_STATE_DONE"]
    result = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("j7"))
    assert result.is_success
    assert len(dataflow_api.requests) == 3
    assert dataflow_api.tokens_issued == 1  # one token for every call


def test_dataflow_job_that_never_ends_fails_after_the_bounded_checks(dataflow_api) -> None:
    """The README's defaults: 12 checks (the fixture shortens only the sleep)."""
    dataflow_api.states["j8"] = ["JOB_STATE_DRAINING"]
    result = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("j8"))
    assert not result.is_success and result.trigger_id == "j8"
    assert "still JOB_STATE_DRAINING after 12 checks" in result.error
    assert len(dataflow_api.requests) == 12


def test_dataflow_checks_are_5_seconds_apart_by_default() -> None:
    assert futures.DataFlowFuture.STATUS_CHECK_SLEEP_SECS == 5


def test_dataflow_job_the_api_does_not_know_fails_saying_so(dataflow_api) -> None:
    result = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("nope"))
    assert not result.is_success
    assert "does not exist" in result.error and "Could not find job" in result.error


def test_dataflow_api_unavailable_is_transient_and_a_refusal_fails(dataflow_api) -> None:
    for status in (503, 429):
        dataflow_api.status = status
        with pytest.raises(TransientBackendError, match=str(status)):
            futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("j9"))
    dataflow_api.status = 403
    refused = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("j9"))
    assert not refused.is_success and "may not be read" in refused.error
    assert "roles/dataflow.viewer" in refused.error


@pytest.mark.parametrize("broken", ["no labels", "no job_id", "no region", "labels text"])
def test_dataflow_entry_without_labels_is_ignored_without_asking(dataflow_api,
                                                                 broken) -> None:
    entry = dataflow_worker_pool_stopped("j10")
    labels = entry["resource"]["labels"]
    if broken == "no labels":
        del entry["resource"]["labels"]
    elif broken == "labels text":
        entry["resource"]["labels"] = "job_id=j10"
    else:
        del labels[broken.split()[1]]
    assert futures.DataFlowFuture.handle_message(entry) is None
    assert dataflow_api.requests == []


def test_dataflow_without_credentials_fails_the_attempt_saying_what_to_do(
        tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    dataflow._jobs.cache_clear()
    result = futures.DataFlowFuture.handle_message(dataflow_worker_pool_stopped("j11"))
    dataflow._jobs.cache_clear()
    assert not result.is_success and result.trigger_id == "j11"
    assert "no credentials" in result.error and "gcloud auth" in result.error


# ------------------------------------------- through the listener, embedded


@pytest.fixture
def embedded_job(tmp_path):
    """A job whose task `wait` returns the Future its run's arguments describe."""
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job = tasks.Job(name="futures_test")
    bodies: list[str] = []

    @job.task(task_id="wait")
    def wait(task, job):
        args = job.get_arguments()
        bodies.append(args["id"])
        return getattr(futures, args["future"])(args["id"])

    @job.task(task_id="after", deps=["wait"])
    def after(task, job):
        return {"got": job.get_task_result("wait")}

    job.use_backend(backend)
    job.bodies = bodies
    yield job
    backend.close()


def waiting(job: tasks.Job, future: str, trigger_id: str) -> str:
    """Start a run whose task waits for `trigger_id`; return the run id once it does."""
    run_id = job.start({"future": future, "id": trigger_id})
    deadline = time.monotonic() + 30
    while not (record := job.engine.store.get_tasks(run_id, ["wait"])[0]).trigger_id:
        assert time.monotonic() < deadline, "the task never started waiting"
        time.sleep(0.02)
    assert record.status is TaskStatus.RUNNING
    return run_id


def state(job: tasks.Job, run_id: str) -> list[tuple]:
    run = job.engine.run_status(run_id)
    return [(run.status, run.error)] + [(t.task_id, t.status, t.attempt, t.result, t.error)
                                        for t in job.engine.task_records(run_id)]


def test_a_future_of_a_task_without_a_timeout_waits_seven_days(embedded_job) -> None:
    before = embedded_job.engine.clock()
    run_id = waiting(embedded_job, "BigQueryFuture", "bqjob_slow")
    after = embedded_job.engine.clock()
    lease_until = embedded_job.engine.store.get_tasks(run_id, ["wait"])[0].lease_until
    assert before + 7 * 86400 <= lease_until <= after + 7 * 86400


@pytest.mark.parametrize("form", [bigquery_jobcompleted, bigquery_job_change])
def test_bigquery_completion_through_the_listener(embedded_job, form) -> None:
    listener = embedded_job.make_external_event_listener()
    run_id = waiting(embedded_job, "BigQueryFuture", "bqjob_ok")
    assert listener(pubsub_event(encoded(form("bqjob_ok"))), None) is None
    run = embedded_job.wait(run_id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert embedded_job.get_task_result("after") == {
        "got": {"job_id": "bqjob_ok", "location": "EU"}}
    before = state(embedded_job, run_id)
    listener(pubsub_event(encoded(form("bqjob_ok"))), None)  # the sink delivers it again
    assert state(embedded_job, run_id) == before
    assert embedded_job.bodies == ["bqjob_ok"]


@pytest.mark.parametrize("form", [bigquery_jobcompleted, bigquery_job_change])
def test_bigquery_failure_through_the_listener_fails_the_run(embedded_job, form) -> None:
    listener = embedded_job.make_external_event_listener()
    run_id = waiting(embedded_job, "BigQueryFuture", "bqjob_bad")
    listener(pubsub_event(encoded(form("bqjob_bad", error="Access Denied: Table t"))), None)
    run = embedded_job.wait(run_id, timeout=30)
    assert run.status is RunStatus.FAILED and "Access Denied: Table t" in run.error


def test_bigquery_progress_and_malformed_entries_change_nothing(embedded_job) -> None:
    listener = embedded_job.make_external_event_listener()
    run_id = waiting(embedded_job, "BigQueryFuture", "bqjob_x")
    before = state(embedded_job, run_id)
    running = bigquery_job_change("bqjob_x", before="PENDING", after="RUNNING")
    no_name = bigquery_job_change("bqjob_x")
    del no_name["protoPayload"]["metadata"]["jobChange"]["job"]["jobName"]
    no_labels = dataflow_worker_pool_stopped("bqjob_x")
    del no_labels["resource"]["labels"]
    for entry in (running, no_name, no_labels, {"resource": "bigquery_resource"}):
        assert listener(pubsub_event(encoded(entry)), None) is None
    assert state(embedded_job, run_id) == before


def test_dataflow_completion_through_the_listener(embedded_job, dataflow_api) -> None:
    listener = embedded_job.make_external_event_listener()
    ok_run = waiting(embedded_job, "DataFlowFuture", "2024-03-01_01_00_00-1")
    dataflow_api.states["2024-03-01_01_00_00-1"] = ["JOB_STATE_RUNNING", "JOB_STATE_DONE"]
    entry = dataflow_worker_pool_stopped("2024-03-01_01_00_00-1")
    assert listener(pubsub_event(encoded(entry)), None) is None
    run = embedded_job.wait(ok_run, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert embedded_job.get_task_result("wait")["state"] == "JOB_STATE_DONE"

    failed_run = waiting(embedded_job, "DataFlowFuture", "2024-03-01_01_00_00-2")
    dataflow_api.states["2024-03-01_01_00_00-2"] = ["JOB_STATE_CANCELLED"]
    listener(pubsub_event(encoded(dataflow_worker_pool_stopped("2024-03-01_01_00_00-2"))),
             None)
    run = embedded_job.wait(failed_run, timeout=30)
    assert run.status is RunStatus.FAILED and "ended JOB_STATE_CANCELLED" in run.error
    # The sink sees every job of the project: one no task waits for costs no call
    # (one still RUNNING cost 12, a minute apart).
    dataflow_api.states["2024-03-01_09_00_00-9"] = ["JOB_STATE_RUNNING"]
    asked, before = len(dataflow_api.requests), state(embedded_job, failed_run)
    stranger = encoded(dataflow_worker_pool_stopped("2024-03-01_09_00_00-9"))
    assert listener(pubsub_event(stranger), None) is None
    assert len(dataflow_api.requests) == asked and state(embedded_job, failed_run) == before


def test_dataflow_api_down_leaves_the_event_for_redelivery(embedded_job, dataflow_api) -> None:
    listener = embedded_job.make_external_event_listener()
    run_id = waiting(embedded_job, "DataFlowFuture", "2024-03-01_01_00_00-3")
    before = state(embedded_job, run_id)
    dataflow_api.status = 503
    event = pubsub_event(encoded(dataflow_worker_pool_stopped("2024-03-01_01_00_00-3")))
    with pytest.raises(TransientBackendError):  # a background function: Pub/Sub retries
        listener(event, None)
    assert state(embedded_job, run_id) == before
    dataflow_api.status = None
    dataflow_api.states["2024-03-01_01_00_00-3"] = ["JOB_STATE_DONE"]
    assert listener(event, None) is None  # the redelivery
    assert embedded_job.wait(run_id, timeout=30).status is RunStatus.SUCCEEDED


def test_remote_function_reply_through_the_listener(embedded_job) -> None:
    listener = embedded_job.make_external_event_listener()
    run_id = waiting(embedded_job, "Future", "remote-job-1")
    reply = {"status": {"code": 0, "message": "loaded 12 rows"},
             "resource": {"type": "remote_function_resource",
                          "labels": {"job_id": "remote-job-1"}}}
    assert listener(pubsub_event(json.dumps(reply).encode()), None) is None
    assert embedded_job.wait(run_id, timeout=30).status is RunStatus.SUCCEEDED
    assert embedded_job.get_task_result("wait") == {
        "job_id": "remote-job-1", "message": "loaded 12 rows", "code": 0}


def test_a_failing_or_base_future_class_does_not_keep_an_event_from_the_right_one(
        embedded_job, caplog) -> None:
    """A base class of the user's Futures (no handle_message of its own), and
    one whose parser raises, declared before the class the event is for."""
    class Base(futures.Future):
        pass

    class Choking(Base):
        @classmethod
        def handle_message(cls, message):
            raise KeyError("not my kind of event")

    class Mine(Base):
        @staticmethod  # a staticmethod has no __func__: it is asked too
        def handle_message(message):
            if message.get("mine") is None:
                return None
            return futures.Result(trigger_id=message["mine"], is_success=True, result=7)

    try:
        listener = embedded_job.make_external_event_listener()
        run_id = waiting(embedded_job, "Future", "mine-1")
        with caplog.at_level(logging.WARNING, logger="function_flow"):
            assert listener(pubsub_event(b'{"mine": "mine-1"}'), None) is None
        assert embedded_job.wait(run_id, timeout=30).status is RunStatus.SUCCEEDED
        assert embedded_job.get_task_result("wait") == 7
        assert "Choking.handle_message failed" in caplog.text
        assert "Base" not in caplog.text and "NotImplementedError" not in caplog.text
    finally:
        for made in (Base, Choking, Mine):
            futures.Future.all_futures.remove(made)


def test_a_parsers_error_is_acknowledged_unless_it_is_transient(embedded_job, caplog) -> None:
    class Picky(futures.Future):
        @classmethod
        def handle_message(cls, message):
            if message.attributes.get("kind") != "picky":
                return None
            raise TransientBackendError("down") if message.get("again") else KeyError("x")

    try:
        listener = embedded_job.make_external_event_listener()
        run_id = waiting(embedded_job, "BigQueryFuture", "bqjob_picky")
        before = state(embedded_job, run_id)
        with caplog.at_level(logging.WARNING, logger="function_flow"):  # whatever set it
            assert listener(pubsub_event(b"{}", {"kind": "picky"}), None) is None
        assert "Picky.handle_message failed; trying the other Future classes" in caplog.text
        assert "matched no Future class, and one failed; acknowledged" in caplog.text
        with pytest.raises(TransientBackendError):  # Pub/Sub delivers it again
            listener(pubsub_event(b'{"again": true}', {"kind": "picky"}), None)
        assert state(embedded_job, run_id) == before
    finally:
        futures.Future.all_futures.remove(Picky)


def test_a_future_past_its_timeout_fails_the_attempt_and_its_retries_apply(tmp_path) -> None:
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job = tasks.Job(name="future_timeout")

    @job.task(task_id="wait", timeout=0.5, retries=1, retry_backoff=0.01)
    def wait(task, job):  # in a child process (it has a timeout)
        return futures.BigQueryFuture(f"never_{task.attempt}")

    job.use_backend(backend)
    try:
        run = job.run({}, timeout=60)
        record = job.engine.store.get_tasks(run.run_id, ["wait"])[0]
    finally:
        backend.close()
    assert run.status is RunStatus.FAILED and "TimeoutError" in run.error
    assert record.attempt == 2  # the retry waited again, and timed out too
    assert record.trigger_id == "never_2"


@pytest.mark.parametrize("trigger_id", [42, "", None])
def test_a_future_whose_trigger_id_is_not_text_fails_its_task_saying_so(tmp_path,
                                                                        trigger_id) -> None:
    job = tasks.Job("bad_trigger")
    job.task(task_id="wait")(lambda **_: futures.Future(trigger_id))
    job.use_backend(backends.embedded(str(tmp_path / "ff.db")))
    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    assert f"task 'wait' returned a Future whose trigger id is not a non-empty string, got " \
        f"{trigger_id!r}" in run.error
