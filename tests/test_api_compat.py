"""Code written for Google's Function Flow runs on function_flow unchanged.

Covers the README workflow (tests/upstream_style/readme_workflow.py), the
call styles of task functions, the Cloud Functions entry points fed with the
event dicts Cloud Functions (1st gen) delivers, futures, cleanup, and the
options function_flow adds: retries, retry_backoff and timeout.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib
import random
import socket
import threading
import time
import uuid
from typing import Any

import pytest

from function_flow import Backoff, DefinitionError, FunctionFlowError, backends, futures, tasks
from function_flow.backends import Backend
from function_flow.core.engine import Engine
from function_flow.core.messages import Message, MessageKind
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.store.sqlite import SqliteStore
from signatures import KEYS, signed

README_WORKFLOW = pathlib.Path(__file__).resolve().parent / "upstream_style" / "readme_workflow.py"


# ------------------------------------------------------------------ helpers

def load_readme_workflow():
    """A fresh copy of the README workflow module (its Job is module state)."""
    spec = importlib.util.spec_from_file_location(
        f"readme_workflow_{uuid.uuid4().hex}", README_WORKFLOW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordingBus(Bus):
    """Records published messages instead of delivering them.

    The test delivers them by hand to the `scheduler` Cloud Function, as
    Pub/Sub would, so every step of a run is visible.
    """

    def __init__(self) -> None:
        self.published: list[tuple[Message, float]] = []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        self.published.append((message, delay))


def pubsub_event(data: bytes, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """The `event` dict a 1st gen Pub/Sub-triggered Cloud Function receives
    (from BigQuery, Cloud Storage...: unsigned)."""
    return {"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": attributes or {}}


def scheduling_event(data: bytes, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """A scheduling message's event: signed, as function_flow signs what it publishes."""
    return pubsub_event(data, signed(data, attributes))


def bigquery_job_completed(job_id: str, error: str | None = None) -> bytes:
    """A BigQuery `jobservice.jobcompleted` audit log entry, as a log sink publishes it."""
    entry = {
        "logName": "projects/local-project/logs/cloudaudit.googleapis.com%2Fdata_access",
        "resource": {"type": "bigquery_resource", "labels": {"project_id": "local-project"}},
        "severity": "ERROR" if error else "INFO",
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "serviceName": "bigquery.googleapis.com",
            "methodName": "jobservice.jobcompleted",
            "status": {"code": 3, "message": error} if error else {},
            "serviceData": {
                "@type": "type.googleapis.com/google.cloud.bigquery.logging.v1.AuditData",
                "jobCompletedEvent": {
                    "eventName": "query_job_completed",
                    "job": {"jobName": {"projectId": "local-project", "jobId": job_id,
                                        "location": "US"}},
                },
            },
        },
    }
    return json.dumps(entry).encode()


def recording_backend(tmp_path: pathlib.Path) -> Backend:
    """SQLite store plus a recording bus; leases are left to the poller, as on GCP."""
    return Backend(kind="embedded", store=SqliteStore(str(tmp_path / "runs.db")),
                   bus=RecordingBus(), lease_check_messages=False, keys=KEYS)


@pytest.fixture
def embedded(tmp_path):
    """A factory of real embedded backends, closed after the test."""
    made = []

    def make() -> Backend:
        backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def records_of(job: tasks.Job, run_id: str):
    return {r.task_id: r for r in job.engine.task_records(run_id)}


class ApprovalFuture(futures.Future):
    """A user-defined Future: completed by {'approval_id': ..., 'approved': bool}."""

    @classmethod
    def handle_message(cls, message):
        if "approval_id" not in message:
            return None
        approved = bool(message.get("approved"))
        return futures.Result(trigger_id=message["approval_id"], is_success=approved,
                              result={"approved_by": message.get("by")} if approved else None,
                              error=None if approved else f"rejected by {message.get('by')}")


# ------------------------------------------------------ the README workflow

def test_readme_workflow_runs_unchanged_on_embedded_backend(embedded):
    module = load_readme_workflow()
    module.example_job.use_backend(embedded())

    response = json.loads(module.start(None))
    run_id = module.example_job.id
    assert response == {"id": run_id}

    # step3 submitted its "query" and waits for BigQuery's completion event.
    assert module.example_job.backend.bus.wait_idle(timeout=30)
    records = records_of(module.example_job, run_id)
    assert records["step3"].status is TaskStatus.RUNNING
    assert records["step4"].status is TaskStatus.WAITING
    assert module.example_job.engine.run_status(run_id).status is RunStatus.RUNNING
    [bq_job_id] = module.submitted_queries

    ack = module.external_event_listener(pubsub_event(bigquery_job_completed(bq_job_id)), None)
    assert ack is None  # a background function acknowledges by returning

    run = module.example_job.wait(run_id, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert module.example_job.get_task_result("step4") == "result4"
    assert module.example_job.get_task_result("step3") == {"job_id": bq_job_id,
                                                           "location": "US"}


def test_readme_workflow_failed_bigquery_job_fails_the_run(embedded):
    module = load_readme_workflow()
    module.example_job.use_backend(embedded())
    module.start(None)
    assert module.example_job.backend.bus.wait_idle(timeout=30)
    [bq_job_id] = module.submitted_queries

    module.external_event_listener(
        pubsub_event(bigquery_job_completed(bq_job_id, error="Syntax error at [1:8]")), None)

    run = module.example_job.wait(timeout=30)
    assert run.status is RunStatus.FAILED
    assert "Syntax error at [1:8]" in run.error
    # It can no longer run, and says why (Function Flow leaves it waiting).
    assert records_of(module.example_job, run.run_id)["step4"].status \
        is TaskStatus.UPSTREAM_FAILED


def test_scheduler_driven_by_hand_with_pubsub_events(tmp_path):
    """Every message the engine publishes, delivered by hand to `scheduler`."""
    module = load_readme_workflow()
    backend = recording_backend(tmp_path)
    module.example_job.use_backend(backend)
    bus: RecordingBus = backend.bus

    run_id = module.example_job.start({"day": "2024-03-01"})
    assert run_id == module.example_job.id
    delivered: list[Message] = []

    def deliver_all() -> None:
        while len(delivered) < len(bus.published):
            message, delay = bus.published[len(delivered)]
            assert delay == 0 and message.kind is MessageKind.RUN_TASK
            assert module.scheduler(scheduling_event(message.to_json(), message.attributes()),
                                    None) is None
            delivered.append(message)

    deliver_all()
    assert [m.task_id for m in delivered] in (["step1", "step2", "step3"],
                                              ["step1", "step3", "step2"])
    records = records_of(module.example_job, run_id)
    assert records["step3"].status is TaskStatus.RUNNING
    assert records["step4"].status is TaskStatus.WAITING

    [bq_job_id] = module.submitted_queries
    module.external_event_listener(pubsub_event(bigquery_job_completed(bq_job_id)), None)
    deliver_all()
    assert [m.task_id for m in delivered][-1] == "step4"
    assert module.example_job.engine.run_status(run_id).status is RunStatus.SUCCEEDED

    # Pub/Sub delivers at least once: every message again changes nothing.
    before = records_of(module.example_job, run_id)
    for message in list(delivered):
        module.scheduler(scheduling_event(message.to_json()), None)
    module.external_event_listener(pubsub_event(bigquery_job_completed(bq_job_id)), None)
    after = records_of(module.example_job, run_id)
    assert {t: (r.status, r.attempt, r.result) for t, r in after.items()} == \
        {t: (r.status, r.attempt, r.result) for t, r in before.items()}
    assert len(module.submitted_queries) == 1  # step3's body ran once
    assert [m.task_id for m, _ in bus.published].count("step4") == 1


def test_scheduler_acknowledges_garbage(tmp_path):
    module = load_readme_workflow()
    module.example_job.use_backend(recording_backend(tmp_path))
    assert module.scheduler(scheduling_event(b"not json"), None) is None
    assert module.scheduler({"data": "%%% not base64"}, None) is None
    assert module.scheduler(scheduling_event(json.dumps(
        {"run_id": "nope", "task_id": "step1", "attempt": 1}).encode()), None) is None
    assert module.external_event_listener(pubsub_event(b"[1, 2]"), None) is None


# -------------------------------------------------------------- call styles

def test_all_call_styles_receive_task_and_job(embedded):
    job = tasks.Job(name="styles", schedule_topic="SCHEDULE")

    @job.task(task_id="positional")
    def positional(task, job):
        return {"task": task.id, "run": job.id, "args": job.get_arguments()}

    @job.task(task_id="annotated", deps=["positional"])
    def annotated(job: tasks.Job, **context):
        return {"task": context["task"].id, "run": job.id,
                "previous": job.get_task_result("positional")["task"]}

    @job.task(task_id="context_only", deps=["positional"])
    def context_only(**context):
        return {"task": context["task"].id, "run": context["job"].id,
                "deps": context["task"].deps}

    @job.task(task_id="by_position", deps=["annotated", "context_only"])
    def by_position(t, j):
        return {"task": t.id, "run": j.id, "attempt": t.attempt,
                "region": j.get_arguments()["region"]}

    job.use_backend(embedded())
    run_id = job.start({"region": "EMEA"})
    assert job.id == run_id
    run = job.wait(timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    results = {t: r.result for t, r in records_of(job, run_id).items()}
    assert results == {
        "positional": {"task": "positional", "run": run_id, "args": {"region": "EMEA"}},
        "annotated": {"task": "annotated", "run": run_id, "previous": "positional"},
        "context_only": {"task": "context_only", "run": run_id, "deps": ["positional"]},
        "by_position": {"task": "by_position", "run": run_id, "attempt": 1,
                        "region": "EMEA"},
    }
    assert job.get_task_result("by_position")["region"] == "EMEA"
    assert job.get_arguments() == {"region": "EMEA"}


def test_get_task_result_errors_are_clear(embedded):
    job = tasks.Job(name="results")

    @job.task(task_id="only")
    def only(task, job):
        return 1

    job.use_backend(embedded())
    with pytest.raises(FunctionFlowError, match="no current run"):
        job.get_task_result("only")
    job.run(timeout=30)
    with pytest.raises(FunctionFlowError, match="has no task 'missing'"):
        job.get_task_result("missing")


# ------------------------------------------------------------------ futures

def test_future_subclasses_register_themselves():
    assert futures.BigQueryFuture in futures.Future.all_futures
    assert futures.GCSFuture in futures.Future.all_futures
    assert ApprovalFuture in futures.Future.all_futures

    class LocalFuture(futures.Future):
        @classmethod
        def handle_message(cls, message):
            return None

    try:
        assert futures.Future.all_futures[-1] is LocalFuture
    finally:
        futures.Future.all_futures.remove(LocalFuture)
    result = futures.Result(trigger_id="t", is_success=True, result=[1])
    assert (result.trigger_id, result.is_success, result.result, result.error) == \
        ("t", True, [1], None)


@pytest.mark.parametrize("approved", [True, False])
def test_user_defined_future_completes_through_listener(tmp_path, approved):
    job = tasks.Job(name="approvals")
    approval_id = f"approval-{uuid.uuid4().hex}"

    @job.task(task_id="ask")
    def ask(task, job):
        return ApprovalFuture(approval_id)

    @job.task(task_id="after", deps=["ask"])
    def after(task, job):
        return job.get_task_result("ask")

    backend = recording_backend(tmp_path)
    job.use_backend(backend)
    scheduler, listener = job.make_scheduler(), job.make_external_event_listener()
    run_id = job.start()
    for message, _ in list(backend.bus.published):
        scheduler(scheduling_event(message.to_json()), None)
    assert records_of(job, run_id)["ask"].status is TaskStatus.RUNNING

    listener(pubsub_event(json.dumps(
        {"approval_id": approval_id, "approved": approved, "by": "ana"}).encode()), None)
    for message, _ in backend.bus.published[1:]:
        scheduler(scheduling_event(message.to_json()), None)

    run = job.engine.run_status(run_id)
    if approved:
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert job.get_task_result("after") == {"approved_by": "ana"}
    else:
        assert run.status is RunStatus.FAILED
        assert "rejected by ana" in run.error


# ------------------------------------------------------------------ cleanup

def test_cleanup_expired_jobs_deletes_only_old_runs(tmp_path):
    job = tasks.Job(name="cleanup")

    @job.task(task_id="a")
    def a(task, job):
        return 1

    backend = recording_backend(tmp_path)
    job.use_backend(backend)

    def start_days_ago(days: float) -> str:
        engine = Engine(job, backend.store, backend.bus,
                        clock=lambda: time.time() - days * 86400)
        run_id, created = engine.start({})
        assert created
        return run_id

    old, recent = start_days_ago(31), start_days_ago(29)
    today = job.start()

    assert tasks.cleanup_expired_jobs(job=job, max_expire_days=30) == 1
    assert backend.store.get_run(old) is None
    assert backend.store.get_tasks(old) == []
    for kept in (recent, today):
        assert backend.store.get_run(kept) is not None
        assert {r.task_id for r in backend.store.get_tasks(kept)} >= {"a"}
    assert tasks.cleanup_expired_jobs(job=job, max_expire_days=30) == 0


def test_cleanup_expired_jobs_fails_runs_running_too_long(tmp_path):
    """Function Flow's max_timeout_days: a run stuck RUNNING is ended, once."""
    job = tasks.Job(name="stuck")
    job.task(task_id="a")(lambda task, job: 1)
    backend = recording_backend(tmp_path)
    job.use_backend(backend)
    stuck, _ = Engine(job, backend.store, backend.bus,
                      clock=lambda: time.time() - 3 * 86400).start({})
    fresh = job.start()
    # Off unless asked for: a run may wait days for an approval.
    assert tasks.cleanup_expired_jobs(job=job, max_expire_days=30) == 0
    assert backend.store.get_run(stuck).status is RunStatus.RUNNING

    assert tasks.cleanup_expired_jobs(job=job, max_expire_days=30, max_timeout_days=2) == 0

    run = backend.store.get_run(stuck)
    assert run.status is RunStatus.FAILED and "timed out" in run.error
    assert backend.store.get_run(fresh).status is RunStatus.RUNNING
    # The stuck run's queued root never starts now.
    message, _ = backend.bus.published[0]
    assert job.engine.handle(message) == "run_failed"
    assert records_of(job, stuck)["a"].status is TaskStatus.CANCELLED


# ---------------------------------------------------------------- retries

def flaky_job(retries: int, attempts_seen: list[int]) -> tasks.Job:
    job = tasks.Job(name=f"flaky{retries}")

    @job.task(task_id="flaky", retries=retries, retry_backoff=0.01)
    def flaky(task, job):
        attempts_seen.append(task.attempt)
        if task.attempt < 3:
            raise RuntimeError(f"boom on attempt {task.attempt}")
        return f"ok on attempt {task.attempt}"

    @job.task(task_id="after", deps=["flaky"])
    def after(task, job):
        return job.get_task_result("flaky")

    return job


def test_task_failing_twice_succeeds_on_third_attempt_with_two_retries(embedded):
    seen: list[int] = []
    job = flaky_job(2, seen).use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    record = records_of(job, run.run_id)["flaky"]
    assert record.attempt == 3 and record.status is TaskStatus.SUCCEEDED
    assert seen == [1, 2, 3]
    assert job.get_task_result("after") == "ok on attempt 3"


def test_task_failing_twice_fails_run_with_one_retry(embedded):
    seen: list[int] = []
    job = flaky_job(1, seen).use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    assert "task 'flaky' failed" in run.error and "boom on attempt 2" in run.error
    records = records_of(job, run.run_id)
    assert records["flaky"].status is TaskStatus.FAILED and records["flaky"].attempt == 2
    assert records["after"].status is TaskStatus.UPSTREAM_FAILED
    assert seen == [1, 2]


@pytest.mark.parametrize("seed", range(5))
def test_backoff_delays_are_jittered_within_bounds_and_capped(seed):
    backoff = Backoff(initial=1.0, maximum=10.0, multiplier=2.0)
    rng = random.Random(seed)
    for retry in range(1, 12):
        ceiling = min(10.0, 2.0 ** (retry - 1))
        delays = [backoff.delay(retry, rng) for _ in range(200)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays), retry
        assert max(delays) - min(delays) > 0  # jittered, not lock-step
    assert all(5.0 <= backoff.delay(60, rng) <= 10.0 for _ in range(100))


def test_backoff_is_reproducible_with_a_seed_and_validated():
    assert Backoff().delay(3, random.Random(7)) == Backoff().delay(3, random.Random(7))
    with pytest.raises(DefinitionError):
        Backoff(initial=10.0, maximum=1.0)
    with pytest.raises(DefinitionError):
        Backoff(multiplier=0.5)


# ---------------------------------------------------------------- timeouts

def hanging_job(retries: int, release: threading.Event) -> tasks.Job:
    job = tasks.Job(name=f"hanging{retries}")

    @job.task(task_id="slow", timeout=0.5, retries=retries, retry_backoff=0.01)
    def slow(task, job):
        if task.attempt == 1:
            release.wait(60)  # hangs until the test lets it go
        return f"attempt {task.attempt}"

    return job


def test_task_over_its_timeout_fails_with_timeout_error(embedded):
    release = threading.Event()
    job = hanging_job(0, release).use_backend(embedded())
    try:
        run = job.run(timeout=30)
    finally:
        release.set()
    assert run.status is RunStatus.FAILED
    assert "TimeoutError" in run.error and "'slow'" in run.error
    assert job.backend.bus.wait_idle(timeout=30)
    record = records_of(job, run.run_id)["slow"]
    # The hung attempt finished after all; its late result is ignored.
    assert record.status is TaskStatus.FAILED and record.result is None
    assert "TimeoutError" in record.error


def test_timed_out_task_is_retried(embedded):
    release = threading.Event()
    job = hanging_job(1, release).use_backend(embedded())
    try:
        run = job.run(timeout=30)
    finally:
        release.set()
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.backend.bus.wait_idle(timeout=30)
    record = records_of(job, run.run_id)["slow"]
    assert record.attempt == 2 and record.result == "attempt 2"


# ------------------------------------------------------- no cloud at import

def test_defining_a_job_needs_no_credentials_or_network(monkeypatch):
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT",
                 "GCP_PROJECT", "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST",
                 "FUNCTION_FLOW_BACKEND", "K_SERVICE", "FUNCTION_TARGET"):
        monkeypatch.delenv(name, raising=False)
    attempts: list[Any] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access during job definition")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    job = tasks.Job(name="offline", schedule_topic="SCHEDULE", max_parallel_tasks=3)

    @job.task(task_id="first")
    def first(task, job):
        return 1

    @job.task(task_id="second", deps=["first"], retries=1, timeout=5)
    def second(job, **context):
        return 2

    job.validate()
    entry_points = [job.make_scheduler(), job.make_external_event_listener(),
                    job.make_poller(), job.make_start()]
    module = load_readme_workflow()  # a whole workflow module, imported offline
    monkeypatch.undo()

    assert attempts == []
    assert all(callable(f) for f in entry_points)
    assert [t.id for t in job.tasks] == ["first", "second"]
    assert callable(module.scheduler)


# ------------------------------------------- the module-level job, sys.exit

def test_task_body_may_use_the_module_level_job_when_deployed(tmp_path):
    """Function Flow's scheduler set `id` on the global job, so bodies could
    call `example_job.get_task_result(...)` instead of the job they get."""
    example_job = tasks.Job(name="global_job")

    @example_job.task(task_id="a")
    def a(task, job):
        return example_job.get_arguments()["n"] + 1

    @example_job.task(task_id="b", deps=["a"])
    def b(task, job):
        return {"a": example_job.get_task_result("a"), "run": example_job.id}

    backend = recording_backend(tmp_path)
    example_job.use_backend(backend)
    scheduler = example_job.make_scheduler()
    # Started through the engine, as the `start` function does: the global
    # job's own id stays unset, as in a fresh Cloud Functions instance.
    run_id, _ = example_job.engine.start({"n": 41})
    other_run, _ = example_job.engine.start({"n": 1})
    assert example_job.id is None
    while backend.bus.published:
        message, _ = backend.bus.published.pop(0)
        scheduler(scheduling_event(message.to_json()), None)

    for run, a_result in ((run_id, 42), (other_run, 2)):
        assert example_job.engine.run_status(run).status is RunStatus.SUCCEEDED
        assert records_of(example_job, run)["b"].result == {"a": a_result, "run": run}
    assert example_job.id is None  # outside a task body, nothing leaked


def test_task_calling_sys_exit_fails_the_run_instead_of_hanging(embedded):
    job = tasks.Job(name="exits")

    @job.task(task_id="quits")
    def quits(task, job):
        raise SystemExit("giving up")

    run = job.use_backend(embedded()).run(timeout=30)

    assert run.status is RunStatus.FAILED
    record = records_of(job, run.run_id)["quits"]
    assert record.status is TaskStatus.FAILED and "SystemExit: giving up" in record.error


def test_bare_task_decorator_is_a_definition_error_naming_the_function():
    job = tasks.Job(name="bare")
    with pytest.raises(DefinitionError, match=r"load_rows\(\).*task_id='load_rows'"):
        @job.task
        def load_rows(task, job):
            return 1


class FailingBus(Bus):
    """Pub/Sub refusing every publish after `allowed` of them."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.published = allowed, []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        if len(self.published) >= self.allowed:
            raise FunctionFlowError("Pub/Sub unavailable")
        self.published.append(message)


@pytest.mark.parametrize("allowed", [0, 1])
def test_a_start_that_fails_leaves_no_run_behind(tmp_path, allowed):
    job = tasks.Job(name="two_roots")
    for root in ("r1", "r2"):
        job.task(task_id=root)(lambda task, job: None)
    store = SqliteStore(str(tmp_path / "runs.db"))
    job.use_backend(Backend(kind="embedded", store=store, bus=FailingBus(allowed),
                            lease_check_messages=False))

    with pytest.raises(FunctionFlowError, match="unavailable"):
        job.start({"x": 1}, run_id="chosen-id")

    assert store.get_run("chosen-id") is None
    assert store.get_tasks("chosen-id") == []
    assert store.list_runs() == []
    # The caller's retry with the same id creates the run afresh.
    bus = job.backend.bus
    bus.allowed = len(bus.published) + 2
    assert job.start({"x": 1}, run_id="chosen-id") == "chosen-id"
    assert store.get_run("chosen-id").status is RunStatus.RUNNING
