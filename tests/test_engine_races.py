"""Races and store failures the property tests reach only by luck, replayed exactly.

Each test drives the engine over the real SQLite store and a bus that keeps
messages, and forces one interleaving or failure at a precise point.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from function_flow import tasks
from function_flow.core import completion
from function_flow.core.engine import Engine
from function_flow.core.waiting import Pending
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import TransientBackendError
from function_flow.store.sqlite import SqliteStore


class Outbox(Bus):
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        self.sent.append(message)


class WaitsForEvent(Pending):
    trigger_id = "event-of-b"


class Workflow:
    """Independent tasks a, b, c, d; b waits for an external event."""

    def __init__(self, max_parallel: int) -> None:
        job = tasks.Job(name="races", max_parallel_tasks=max_parallel)
        for task_id in "abcd":
            job.task(task_id=task_id)(lambda task, job: 1)
        self.name, self.dag, self.max_parallel_tasks = job.name, job.dag, max_parallel

    def invoke(self, spec: Any, run_id: str, attempt: int) -> Any:
        return WaitsForEvent() if spec.task_id == "b" else 1


def slots_and_statuses(store: SqliteStore, run_id: str) -> tuple[list[int], dict[str, str]]:
    return (store.find_free_slots(run_id, 2, 2),
            {t.task_id: t.status.value for t in store.get_tasks(run_id)
             if t.task_id != "__end__"})


def test_a_filler_that_loses_its_candidate_to_a_slot_hand_over_fills_its_slot(tmp_path):
    """a and b hold the 2 slots, c and d are READY. b completes by an event and
    frees its slot; while its fill_slots picks c, a finishes and hands its slot
    to c. b's take fails, and b must still give its free slot to d."""
    store = SqliteStore(str(tmp_path / "runs.db"))
    engine = Engine(Workflow(max_parallel=2), store, Outbox(), lease_check_messages=False)
    run_id, _ = engine.start({})
    assert engine.execute(run_id, "b", 1) == "waiting"

    find_ready = store.find_tasks
    def find_tasks_while_a_finishes(run: str, status: TaskStatus, limit: int) -> list:
        found = find_ready(run, status, limit)
        if status is TaskStatus.READY and engine.store.find_tasks is not find_ready:
            store.find_tasks = find_ready  # once
            assert engine.execute(run_id, "a", 1) == "succeeded"  # hands slot 0 to c
        return found
    store.find_tasks = find_tasks_while_a_finishes  # type: ignore[method-assign]

    assert engine.complete(run_id, "b", 1, ok=True) == "succeeded"

    free, statuses = slots_and_statuses(store, run_id)
    assert free == [] and statuses == {"a": "SUCCEEDED", "b": "SUCCEEDED",
                                       "c": "QUEUED", "d": "QUEUED"}


def test_slots_a_new_definition_allows_are_taken_in_order_when_a_take_fails(tmp_path):
    """A run made under max_parallel_tasks=1 (one slot record), continued
    under 5: slots 1-4 have no record yet. While a filler pairs t2 and t3
    with slots 2 and 3, t0 finishes and hands its slot to t2: the take of 2
    fails, and 3 must not be taken before 2 (the records stay a prefix, or
    slot 2 would never be found again and only 4 tasks could run)."""
    def job(parallel: int) -> tasks.Job:
        made = tasks.Job(name="grown", max_parallel_tasks=parallel)
        for n in range(6):
            made.task(task_id=f"t{n}")(lambda task, job: 1)
        return made

    store = SqliteStore(str(tmp_path / "runs.db"))
    before = Engine(job(1), store, Outbox(), lease_check_messages=False)
    run_id, _ = before.start({})
    after = Engine(job(5), store, Outbox(), lease_check_messages=False)
    assert (before.slots, after.slots) == (1, 5)

    find_ready = store.find_tasks
    def find_tasks_while_t0_finishes(run: str, status: TaskStatus, limit: int) -> list:
        found = find_ready(run, status, limit)
        if status is TaskStatus.READY and limit == 2 and store.find_tasks is not find_ready:
            store.find_tasks = find_ready  # once
            assert [t.task_id for t in found] == ["t2", "t3"]
            assert before.execute(run_id, "t0", 1) == "succeeded"  # hands slot 0 to t2
        return found
    store.find_tasks = find_tasks_while_t0_finishes  # type: ignore[method-assign]

    after.fill_slots(run_id)
    assert store.find_tasks is find_ready
    records = {t.task_id: t for t in store.get_tasks(run_id) if t.task_id.startswith("t")}
    assert {t: r.status.value for t, r in records.items()} == {
        "t0": "SUCCEEDED", **{f"t{n}": "QUEUED" for n in range(1, 6)}}
    assert sorted(r.slot for r in records.values() if r.slot is not None) == [0, 1, 2, 3, 4]
    assert store.find_free_slots(run_id, 5, 5) == []


class FailingCommits:
    """The SQLite store, except that chosen commits raise a transient error,
    either before writing (nothing landed) or after (the outcome is unknown
    to the caller, but the commit landed)."""

    def __init__(self, inner: SqliteStore) -> None:
        self.inner = inner
        self.failures: list[str] = []  # "before" or "after", one per transact

    def transact(self, fn: Any, **options: Any) -> Any:
        failure = self.failures.pop(0) if self.failures else None
        if failure == "before":
            raise TransientBackendError("Firestore: 503 unavailable (nothing written)")
        result = self.inner.transact(fn, **options)
        if failure == "after":
            raise TransientBackendError("Firestore: deadline exceeded (it did land)")
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("failure", ["before", "after"])
def test_a_completion_whose_commit_fails_is_recorded_once_without_waiting_for_the_lease(
        tmp_path, monkeypatch, failure):
    monkeypatch.setattr(completion, "COMPLETION_RETRY_DELAYS", (0.0, 0.0))
    job = tasks.Job(name="chain", max_parallel_tasks=1)
    ran: list[str] = []
    job.task(task_id="first")(lambda task, job: ran.append("first") or 1)
    job.task(task_id="second", deps=["first"])(lambda task, job: ran.append("second") or 2)
    store = FailingCommits(SqliteStore(str(tmp_path / "runs.db")))
    outbox = Outbox()
    engine = Engine(job, store, outbox, lease_check_messages=False)
    run_id, _ = engine.start({})
    store.failures = [None, failure]  # the claim commits, the completion fails

    assert engine.execute(run_id, "first", 1) == "succeeded"

    first = store.get_tasks(run_id, ["first"])[0]
    assert first.status is TaskStatus.SUCCEEDED and first.attempt == 1
    # The follow-up message arrives (sent again if the first try landed), and
    # the run goes on; the body did not run twice.
    second = [m for m in outbox.sent if m.task_id == "second"]
    assert second and engine.execute(run_id, "second", second[-1].attempt) == "succeeded"
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert ran == ["first", "second"]


class FailingCompletion(FailingCommits):
    """FailingCommits whose `failures` go to completions' transactions only."""

    def transact(self, fn: Any, **options: Any) -> Any:
        if getattr(fn, "__qualname__", "") != "complete.<locals>.finish":
            return self.inner.transact(fn, **options)
        return super().transact(fn, **options)


@pytest.mark.parametrize("fan_out", [True, False])
def test_a_claim_ahead_in_a_commit_that_landed_unknown_still_runs(tmp_path, monkeypatch,
                                                                  fan_out):
    """core/chaining.py: m0's success also claims the attempt its worker runs next
    (a sibling's queued message, or a chain's next task), and its commit lands
    but raises. _complete_again finds the success recorded: the claim landed
    with it, so that attempt runs too, instead of staying RUNNING, unrun, until
    its lease ends (its message, put back, finds it claimed)."""
    from function_flow import backends
    from function_flow.bus.local import LocalBus

    monkeypatch.setattr(completion, "COMPLETION_RETRY_DELAYS", (0.0, 0.0))
    job = tasks.Job(name="ahead", max_parallel_tasks=10)
    ran: list[str] = []
    job.task("root")(lambda task, job: ran.append("root"))
    members = ["m0", "m1", "m2"] if fan_out else ["m0"]
    for member in members:
        job.task(member, deps=["root"])(lambda task, job: ran.append(task.id))
    if not fan_out:
        job.task("m1", deps=["m0"])(lambda task, job: ran.append("m1"))
    store = FailingCompletion(SqliteStore(str(tmp_path / "runs.db")))
    store.failures = [None, "after"]  # root's success, then m0's, which claims m1
    bus = LocalBus(workers=1)  # the members' messages wait in its queue, in order
    backend = backends.Backend("embedded", store, bus)  # type: ignore[arg-type]
    try:
        job.use_backend(backend)
        run_id = job.start()
        assert bus.wait_idle(timeout=60)
        assert not store.failures
        assert job.engine.run_status(run_id).status is RunStatus.SUCCEEDED, \
            {t.task_id: t.status.value for t in job.engine.task_records(run_id)}
    finally:
        backend.close()
    assert sorted(ran) == sorted(["root", *members, *([] if fan_out else ["m1"])]), ran


def test_a_completion_that_keeps_failing_is_left_to_redelivery(tmp_path, monkeypatch):
    monkeypatch.setattr(completion, "COMPLETION_RETRY_DELAYS", (0.0, 0.0))
    job = tasks.Job(name="one")
    job.task(task_id="only")(lambda task, job: 1)
    store = FailingCommits(SqliteStore(str(tmp_path / "runs.db")))
    engine = Engine(job, store, Outbox(), lease_check_messages=False)
    run_id, _ = engine.start({})
    store.failures = [None, "before", "before", "before"]

    with pytest.raises(TransientBackendError):
        engine.execute(run_id, "only", 1)
    assert store.get_tasks(run_id, ["only"])[0].status is TaskStatus.RUNNING


def test_results_that_json_writes_but_sqlite_json_refuses_are_stored(tmp_path):
    """NaN and infinities: Python's json writes them, SQLite's json() does not."""
    job = tasks.Job(name="floats")
    job.task(task_id="loss")(lambda task, job: {"loss": math.nan, "best": math.inf,
                                                "worst": -math.inf})
    store = SqliteStore(str(tmp_path / "runs.db"))
    engine = Engine(job, store, Outbox(), lease_check_messages=False)
    run_id, _ = engine.start({})

    assert engine.execute(run_id, "loss", 1) == "succeeded"
    result = store.get_tasks(run_id, ["loss"])[0].result
    assert math.isnan(result["loss"]) and result["best"] == math.inf
    assert result["worst"] == -math.inf
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_deps_done_written_for_a_missing_task_leaves_nothing(tmp_path):
    store = SqliteStore(str(tmp_path / "runs.db"))
    engine = Engine(Workflow(max_parallel=4), store, Outbox(), lease_check_messages=False)
    run_id, _ = engine.start({})
    store.transact(lambda tx: tx.update_task(run_id, "ghost", {"deps_done.a": "SUCCEEDED"}))
    assert store.join_progress(run_id, "ghost") is None
    assert store._connection().execute(
        "SELECT count(*) FROM deps_done WHERE task_id = 'ghost'").fetchone()[0] == 0
