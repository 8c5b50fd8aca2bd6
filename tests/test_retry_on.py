"""retry_on: only chosen exception types are retried, next to the backoff.

Runs on each store (SQLite, then the Firestore emulator) with the in-process
bus, and on the embedded backend whose child processes stop bodies at their
timeout.
"""

from __future__ import annotations

import pytest

from function_flow import DefinitionError, backends, remote
from function_flow.bus.local import LocalBus
from function_flow.backends import Backend
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ReportedFailure
from function_flow.remote import hosting
from function_flow.tasks import Job


@pytest.fixture
def on_store(store):
    buses = []

    def use(job: Job) -> Job:
        bus = LocalBus(2)
        buses.append(bus)
        return job.use_backend(Backend("embedded", store, bus))

    yield use
    for bus in buses:
        bus.close()


def flaky(job: Job, first: BaseException, retry_on) -> None:
    @job.task(task_id="flaky", retries=3, retry_backoff=0.01, retry_on=retry_on)
    def body(task, job):
        if task.attempt == 1:
            raise first
        return task.attempt


def test_a_chosen_exception_is_retried(on_store):
    job = on_store(Job("chosen"))
    flaky(job, ConnectionResetError("reset"), (ConnectionError, TimeoutError))
    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("flaky") == 2


def test_any_other_exception_fails_the_task_with_retries_left(on_store):
    job = on_store(Job("other"))
    flaky(job, ValueError("bad input"), ConnectionError)
    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    record, = job.engine.store.get_tasks(run.run_id, ["flaky"])
    assert record.attempt == 1 and record.status is TaskStatus.FAILED
    assert "ValueError: bad input" in record.error


def test_a_timeout_is_a_timeout_error_for_retry_on(tmp_path):
    job = Job("slow")

    @job.task(task_id="slow", timeout=1, retries=2, retry_backoff=0.01,
              retry_on=TimeoutError)
    def slow(task, job):
        if task.attempt == 1:
            import time
            time.sleep(30)  # stopped at its timeout, in its child process
        return task.attempt

    picky_job = Job("picky")

    @picky_job.task(task_id="picky", timeout=60, retries=2, retry_on=TimeoutError)
    def picky(task, job):
        raise KeyError("not a timeout")  # raised in the child, seen here as KeyError

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job.use_backend(backend)
    picky_job.use_backend(backend)
    try:
        run = job.run(timeout=60)
        picky_run = picky_job.run(timeout=60)
        slow_record, = job.engine.store.get_tasks(run.run_id, ["slow"])
        picky_record, = job.engine.store.get_tasks(picky_run.run_id, ["picky"])
    finally:
        backend.close()
    assert run.status is RunStatus.SUCCEEDED and slow_record.attempt == 2
    assert picky_run.status is RunStatus.FAILED and picky_record.attempt == 1


@pytest.mark.parametrize("retry_on, retried", [((ReportedFailure,), True), (ValueError, False)])
def test_a_failure_a_remote_function_reported_is_a_reported_failure(tmp_path, retry_on,
                                                                    retried):
    calls = []
    job = Job("reported")

    @job.task(task_id="r", remote_topic="REPORTS_FAIL", retries=1, retry_backoff=0.01,
              retry_on=retry_on)
    def r(task, job):
        return 1

    @remote.function(topic="REPORTS_FAIL")
    def answer(payload, context):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("the first answer is an error")
        return "fine"

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job.use_backend(backend)
    try:
        run = job.run(timeout=60)
    finally:
        hosting.unhost("REPORTS_FAIL")
        backend.close()
    assert (run.status is RunStatus.SUCCEEDED) is retried
    assert len(calls) == (2 if retried else 1)


@pytest.mark.parametrize("retry_on", [ValueError("an instance"), "ValueError", (), (int,),
                                      [ValueError]])
def test_retry_on_must_be_exception_types_naming_the_task(retry_on):
    job = Job("bad_retry_on")
    with pytest.raises(DefinitionError, match="task 'x': retry_on must be an exception type"):
        job.task(task_id="x", retries=1, retry_on=retry_on)(lambda task, job: 1)
