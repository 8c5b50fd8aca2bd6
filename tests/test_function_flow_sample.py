"""Function Flow's sample and PyPI example, with only the import changed, end to end.

tests/upstream_style/function_flow_sample.py has the sample's shape: remote
tasks on SAMPLE_REMOTE_TRIGGER answered by `sample_remote_function`, which
publishes its own answer with Pub/Sub's client (hosted by the embedded
backend, which stands in for that client), and a BigQuery task whose
`bigquery.Client` is replaced at the client boundary; its completion log
entry is delivered to `external_event_listener` as the log sink would.
"""

from __future__ import annotations

import importlib.util
import json
import pathlib
import time
import uuid
from typing import Any

import pytest

from function_flow import backends, remote
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import hosting
from test_api_compat import bigquery_job_completed, pubsub_event

UPSTREAM = pathlib.Path(__file__).resolve().parent / "upstream_style"


def load(name: str) -> Any:
    spec = importlib.util.spec_from_file_location(f"{name}_{uuid.uuid4().hex}",
                                                  UPSTREAM / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeQueryJob:
    def __init__(self, job_id: str) -> None:
        self.job_id = job_id


class FakeBigQueryClient:
    """bigquery.Client at its boundary: records queries, makes no call."""

    queries: list[tuple[str, Any]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    def query(self, sql: str, job_config: Any = None) -> FakeQueryJob:
        self.queries.append((sql, job_config))
        return FakeQueryJob(f"bquxjob_{uuid.uuid4().hex[:12]}")


@pytest.fixture
def no_cloud(monkeypatch):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    FakeBigQueryClient.queries = []
    monkeypatch.setattr(bigquery, "Client", FakeBigQueryClient)
    monkeypatch.setattr("google.auth.default",
                        lambda *a, **k: (AnonymousCredentials(), "sample-project"))


def wait_until(condition, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while (value := condition()) is None or value is False:
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return value


def test_the_sample_runs_end_to_end_on_the_embedded_backend(tmp_path, no_cloud):
    sample = load("function_flow_sample")
    job = sample.example_job
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    job.use_backend(backend)
    remote.host("SAMPLE_REMOTE_TRIGGER", sample.sample_remote_function)
    try:
        run_id = json.loads(sample.start(None, None))["id"]
        store = backend.store

        def bigquery_waiting():
            record, = store.get_tasks(run_id, ["task_6"])
            return record if record.status is TaskStatus.RUNNING and record.trigger_id \
                else None

        record = wait_until(bigquery_waiting, "task_6 to wait for its BigQuery job")
        (sql, config), = FakeBigQueryClient.queries
        assert "shakespeare" in sql and config.destination.table_id == "test_table"
        assert record.trigger_id.startswith("bquxjob_")
        # The log sink delivers the job's completion to the listener.
        sample.external_event_listener(pubsub_event(bigquery_job_completed(record.trigger_id)),
                                       None)
        run = job.wait(run_id, timeout=60)
    finally:
        hosting.unhost("SAMPLE_REMOTE_TRIGGER")
        backend.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    records = {t.task_id: t for t in job.engine.task_records(run_id)}
    assert all(r.status is TaskStatus.SUCCEEDED and r.attempt == 1 for r in records.values())
    for task_id in ("remote_task_1", "remote_task_2"):
        result = records[task_id].result
        assert result == {"job_id": records[task_id].trigger_id,
                          "message": "Everything went well.", "code": 0}
    assert records["task_6"].result == {"job_id": records["task_6"].trigger_id,
                                        "location": "US"}
    assert run.args["a_dict"] == {"a": 1, "b": 2, "c": "three"}


def test_the_pypi_example_builds_its_functions_before_its_tasks(tmp_path):
    example = load("pypi_example")
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    example.job.use_backend(backend)
    try:
        run = example.job.wait(example.main(), timeout=30)
    finally:
        backend.close()
    assert run.status is RunStatus.SUCCEEDED
    assert example.job.get_task_result("load") == 12
    assert run.args == {"rows": [1, 2, 3]}


def test_task_takes_function_flows_argument_order_and_its_older_one():
    from function_flow import tasks

    def body(task, job):
        return 1

    task = tasks.Task("t", ["a"], "REMOTE_TOPIC", {"region": "APAC"}, body)
    assert (task.id, task.deps, task.remote_topic, task.task_args, task.func) == \
        ("t", ["a"], "REMOTE_TOPIC", {"region": "APAC"}, body)
    older = tasks.Task("t", ["a"], body)
    assert older.func is body and older.remote_topic is None
    job = tasks.Job(name="listed")
    job.task(task_id="r", remote_topic="REMOTE_TOPIC", task_args={"k": 1})(body)
    assert job.tasks[0].remote_topic == "REMOTE_TOPIC" and job.tasks[0].task_args == {"k": 1}


def test_start_takes_job_args_or_argv_but_not_both(tmp_path):
    from function_flow import FunctionFlowError, tasks

    job = tasks.Job(name="args")
    job.task(task_id="a")(lambda task, job: job.get_arguments())
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    job.use_backend(backend)
    try:
        with pytest.raises(FunctionFlowError, match="argv or as job_args, not both"):
            job.start({"x": 1}, job_args={"x": 2})
        assert job.wait(job.start(job_args={"x": 2}), timeout=30).status is RunStatus.SUCCEEDED
        assert job.get_task_result("a") == {"x": 2}
        assert job.run(job_args={"x": 3}, timeout=30).status is RunStatus.SUCCEEDED  # run too
        assert job.get_task_result("a") == {"x": 3}
    finally:
        backend.close()


@pytest.mark.parametrize("falsy", [0, "", [], {}, False])
def test_falsy_results_are_stored_too(tmp_path, falsy):
    from function_flow import tasks

    job = tasks.Job(name="falsy")
    job.task(task_id="a")(lambda task, job: falsy)
    job.task(task_id="b", deps=["a"])(lambda task, job: [job.get_task_result("a")])
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    job.use_backend(backend)
    try:
        assert job.run(timeout=30).status is RunStatus.SUCCEEDED
        assert job.get_task_result("b") == [falsy]
    finally:
        backend.close()
