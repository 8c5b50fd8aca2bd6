"""The run context (`job.context`): small key/values the tasks of one run share.

On each store (SQLite, then the Firestore emulator) with the in-process bus;
on the embedded backend, whose bodies with a timeout run in child processes
that reach the store through their parent; and on the deployed topology
(functions-framework behind Pub/Sub push, on the emulators).
"""

from __future__ import annotations

import os
import pathlib
import threading
from typing import Any

import pytest

from emulators import PROJECT
from function_flow import FunctionFlowError, backends
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.cleanup import cleanup_expired_jobs
from function_flow.context import MAX_KEY_LENGTH, MAX_VALUE_BYTES
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ContextError
from function_flow.tasks import Job
from functions_stack import Stack, post, wait_for

WORKFLOWS = pathlib.Path(__file__).resolve().parent / "workflows_gcp"


@pytest.fixture
def on_store(store):
    buses = []

    def use(job: Job, workers: int = 2) -> Job:
        bus = LocalBus(workers)
        buses.append(bus)
        return job.use_backend(Backend("embedded", store, bus))

    yield use
    for bus in buses:
        bus.close()


def hand_over(job: Job) -> None:
    """extract sets, report (after it) reads and deletes, final lists what is left."""

    @job.task(task_id="extract")
    def extract(task, job):
        job.context.set("rows", 1200)
        job.context.set("scratch", {"pairs": [(1, 2)]})
        job.context.set("note", None)

    @job.task(task_id="report", deps=["extract"])
    def report(task, job):
        seen = {"rows": job.context.get("rows"), "scratch": job.context["scratch"],
                "note": "note" in job.context, "missing": job.context.get("missing", "-")}
        job.context.delete("scratch")
        job.context.delete("scratch")  # a retried body may delete twice
        job.context.set("rows", seen["rows"] + 1)
        return seen

    @job.task(task_id="final", deps=["report"])
    def final(task, job):
        return dict(job.context.items())


def test_a_later_task_reads_and_deletes_what_an_earlier_one_set(on_store):
    job = on_store(Job("hand_over"))
    hand_over(job)
    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("report") == {
        "rows": 1200, "scratch": {"pairs": [[1, 2]]}, "note": True, "missing": "-"}
    assert job.get_task_result("final") == {"note": None, "rows": 1201}
    # After the run, job.context is that of the run job.start() started.
    assert job.context.items() == [("note", None), ("rows", 1201)]
    assert dict(job.context) == {"note": None, "rows": 1201} and len(job.context) == 2


def test_each_run_has_a_context_of_its_own(on_store):
    job = on_store(Job("own"))

    @job.task(task_id="count")
    def count(task, job):
        job.context.set("seen", job.context.get("seen", 0) + 1)
        return job.context.get("seen")

    first, second = job.run(timeout=60), job.run(timeout=60)
    assert [job.engine.store.get_tasks(r.run_id, ["count"])[0].result
            for r in (first, second)] == [1, 1]


def test_values_survive_a_task_retry(on_store):
    job = on_store(Job("retried"))

    @job.task(task_id="flaky", retries=2, retry_backoff=0.01)
    def flaky(task, job):
        job.context.set("attempts", job.context.get("attempts", []) + [task.attempt])
        if task.attempt == 1:
            raise ConnectionError("lost the connection after setting a value")
        return job.context.get("attempts")

    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("flaky") == [1, 2]


def test_parallel_tasks_setting_different_keys_lose_nothing(on_store):
    width = 6
    job = on_store(Job("parallel", max_parallel_tasks=width), workers=width)
    together = threading.Barrier(width, timeout=120)

    @job.task(task_id="start")
    def start(task, job):
        job.context.set("shared", "from start")

    for i in range(width):
        @job.task(task_id=f"p{i}", deps=["start"])
        def branch(task, job, i=i):
            together.wait()  # every branch is inside its body at once
            for n in range(3):
                job.context.set(f"p{i}/{n}", [i, n])
            return job.context.get("shared")

    @job.task(task_id="join", deps=[f"p{i}" for i in range(width)])
    def join(task, job):
        return dict(job.context.items())

    run = job.run(timeout=180)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("join") == dict(
        {f"p{i}/{n}": [i, n] for i in range(width) for n in range(3)}, shared="from start")


def test_the_context_is_deleted_with_the_run(on_store):
    job = on_store(Job("expiring"))
    hand_over(job)
    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.engine.store.list_context(run.run_id) != {}
    assert cleanup_expired_jobs(job=job, max_expire_days=0) == 1
    assert job.engine.store.list_context(run.run_id) == {}
    assert job.context.items() == [] and job.context.get("rows") is None
    with pytest.raises(ContextError, match=f"run '{run.run_id}' was deleted"):
        job.context.set("late", 1)
    assert job.engine.store.list_context(run.run_id) == {}


BAD = [
    (lambda c: c.set(3, "v"), "run context key 3 is of type int; keys are strings"),
    (lambda c: c.set(None, "v"), "run context key None is of type NoneType"),
    (lambda c: c.get(b"k"), "run context key b'k' is of type bytes"),
    (lambda c: c.set("", "v"), "key '' has 0 characters; keys have 1 to 256"),
    (lambda c: c.delete("k" * (MAX_KEY_LENGTH + 1)), "has 257 characters"),
    (lambda c: c.set("\ud800", 1), "not valid Unicode text"),
    (lambda c: c.set("when", object()),
     "run context value of key 'when' is an object that cannot be stored"),
    (lambda c: c.set("ids", {1, 2}), "value of key 'ids' is a set that cannot be stored"),
    (lambda c: c.set("big", "x" * MAX_VALUE_BYTES),
     "value of key 'big' is 65,538 bytes of JSON, more than the 65,536 a context value "
     "may hold; store large data elsewhere"),
]


@pytest.mark.parametrize("operation, message", BAD)
def test_bad_keys_and_values_are_refused_naming_the_key(on_store, operation, message):
    job = on_store(Job("bad_input"))

    @job.task(task_id="bad")
    def bad(task, job):
        operation(job.context)

    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    record, = job.engine.store.get_tasks(run.run_id, ["bad"])
    assert record.status is TaskStatus.FAILED
    last_line = record.error.strip().splitlines()[-1]
    assert last_line.startswith("function_flow.errors.ContextError: run context ")
    assert message in last_line
    with pytest.raises(ContextError) as raised:  # the same outside a body, for the run
        operation(job.context)
    assert message in str(raised.value)
    assert job.engine.store.list_context(run.run_id) == {}


def test_a_value_of_the_largest_size_fits(on_store):
    job = on_store(Job("fits"))
    largest = "x" * (MAX_VALUE_BYTES - 2)  # and its two quotes

    @job.task(task_id="t")
    def t(task, job):
        job.context.set("big", largest)

    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.context.get("big") == largest


def test_without_a_current_run_the_error_says_what_to_do(tmp_path):
    job = Job("no_run", backend=backends.embedded(db_path=str(tmp_path / "runs.db")))

    @job.task(task_id="t")
    def t(task, job):
        return None

    try:
        for operation in (lambda: job.context.get("k"), lambda: job.context.set("k", 1),
                          lambda: job.context.items()):
            with pytest.raises(FunctionFlowError, match=(
                    "job 'no_run' has no current run, and a context belongs to a run: use "
                    r"job.context inside a task body, or after job.start\(\)")):
                operation()
    finally:
        job.backend.close()


def test_bodies_in_child_processes_use_the_context_through_their_parent(tmp_path):
    """On the embedded backend a body with a timeout runs in a forked child."""
    job = Job("children", max_parallel_tasks=3)
    hand_over(job)

    @job.task(task_id="child", deps=["report"], timeout=60)
    def child(task, job):
        job.context.set("child", job.context.get("rows"))
        job.context.delete("note")
        return [sorted(job.context), os.getpid()]

    job.use_backend(backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2))
    store = job.backend.store
    served: list[tuple[str, str, int]] = []  # what this process wrote, for whom

    def recording(name: str) -> Any:
        write = getattr(store, name)

        def recorded(run_id: str, key: str, *value: str) -> Any:
            served.append((name, key, os.getpid()))
            return write(run_id, key, *value)
        return recorded

    for name in ("set_context", "delete_context"):
        setattr(store, name, recording(name))
    try:
        run = job.run(timeout=120)
        assert run.status is RunStatus.SUCCEEDED, run.error
        keys, pid = job.get_task_result("child")
        assert keys == ["child", "rows"] and pid != os.getpid()
        assert dict(job.context.items()) == {"child": 1201, "rows": 1201}
    finally:
        job.backend.close()
    # The child's writes were made here, by its parent: a child never uses SQLite.
    assert {("set_context", "child", os.getpid()),
            ("delete_context", "note", os.getpid())} <= set(served)


def test_the_context_on_the_deployed_topology(gcp_env, firestore_store):
    """start (HTTP) and scheduler (Pub/Sub push) in functions-framework, on Firestore."""
    stack = Stack(gcp_env, PROJECT)
    try:
        source = WORKFLOWS / "context.py"
        scheduler = stack.function(source, "scheduler", "cloudevent", workers=2, threads=2)
        start = stack.function(source, "start", "http")
        stack.push(scheduler)
        status, body = post(start.url, {"source": "gs://bucket/in.csv"})
        assert status == 200, body
        run_id = body["run_id"]

        def ended():
            run = firestore_store.get_run(run_id)
            return run if run is not None and run.status.is_final else None

        run = wait_for(ended, f"run {run_id} to end", timeout=120)
    finally:
        stack.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    expected = {"b": {"from": "gs://bucket/in.csv"}, "c/part": [1, 2, 3],
                "source": "gs://bucket/in.csv"}
    d, = firestore_store.get_tasks(run_id, ["d"])
    assert d.result == expected
    assert {k: v for k, v in firestore_store.list_context(run_id).items()} == {
        "b": '{"from":"gs://bucket/in.csv"}', "c/part": "[1,2,3]",
        "source": '"gs://bucket/in.csv"'}
    firestore_store.delete_run(run_id)
    assert firestore_store.list_context(run_id) == {}
