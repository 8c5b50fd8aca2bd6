"""A run's graph grows while it runs, and outcomes that cannot be stored fail at once.

Both on SQLite and on the Firestore emulator, driven message by message
through the real engine (the bus only collects what the engine sends).
"""

from __future__ import annotations

import pytest

from function_flow.core.engine import Engine
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job


class Outbox(Bus):
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        self.sent.append(message)


def drain(engine: Engine, bus: Outbox, limit: int = 100) -> list[str]:
    """Deliver every message the engine sends, in order; returns the outcomes."""
    outcomes = []
    while bus.sent and limit:
        limit -= 1
        outcomes.append(engine.handle(bus.sent.pop(0)))
    return outcomes


def test_tasks_added_to_a_running_run_are_executed_as_its_graph_says(store) -> None:
    ran: list[str] = []
    job = Job("grows")
    job.task(task_id="a")(lambda task, job: ran.append("a") or 1)
    job.task(task_id="b", deps=["a"])(lambda task, job: ran.append("b") or 2)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})

    def grow(tx) -> None:
        # item-0 runs b's body after a; b now also waits for item-0.
        tx.get_tasks(run_id, ["a", "b"])
        tx.update_task(run_id, "a", {"dependents": ["b", "item-0"]})
        tx.update_task(run_id, "b", {"deps": ["a", "item-0"]})
        tx.add_task(run_id, TaskRecord(task_id="item-0", template="b", deps=["a"],
                                       dependents=["b"]))

    store.transact(grow)
    drain(engine, bus)

    assert ran == ["a", "b", "b"]  # item-0 (b's body), then b itself
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    assert records["item-0"].status is TaskStatus.SUCCEEDED
    assert records["b"].status is TaskStatus.SUCCEEDED
    assert records["b"].started_at >= records["item-0"].finished_at
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED


def test_a_result_too_large_for_a_record_fails_the_attempt_at_once(store) -> None:
    """A Firestore document holds 1 MiB: the same limit holds on every backend, with
    the real cause, instead of an attempt left RUNNING until its lease expires."""
    job = Job("big")
    job.task(task_id="big", retries=1, retry_backoff=0)(lambda task, job: "x" * 2_000_000)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    assert drain(engine, bus) == ["failed", "failed"]
    task = store.get_tasks(run_id, ["big"])[0]
    assert task.status is TaskStatus.FAILED and task.attempt == 2
    assert "more than the 900,000 a record can hold" in task.error
    assert store.get_run(run_id).status is RunStatus.FAILED


def test_a_huge_exception_message_is_stored_bounded(store) -> None:
    def explode(task, job):
        raise ValueError("y" * 3_000_000)

    job = Job("loud")
    job.task(task_id="loud")(explode)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    assert drain(engine, bus) == ["failed"]
    task = store.get_tasks(run_id, ["loud"])[0]
    assert task.status is TaskStatus.FAILED and len(task.error) < 40_000
    assert "characters cut" in task.error


def test_a_body_raising_keyboard_interrupt_fails_its_attempt(store) -> None:
    def interrupted(task, job):
        raise KeyboardInterrupt

    job = Job("ctrl_c")
    job.task(task_id="t")(interrupted)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    assert drain(engine, bus) == ["failed"]
    assert "KeyboardInterrupt" in store.get_tasks(run_id, ["t"])[0].error
    assert store.get_run(run_id).status is RunStatus.FAILED


def test_firestore_names_a_write_too_large_for_a_document(firestore_store) -> None:
    """The store's safety net under the engine's own limit: not a transient error."""
    from function_flow.errors import RecordTooLargeError, TransientBackendError

    job = Job("doc")
    job.task(task_id="t")(lambda task, job: None)
    run_id, _ = Engine(job, firestore_store, Outbox()).start({})
    with pytest.raises(RecordTooLargeError) as raised:
        firestore_store.transact(lambda tx: tx.update_task(run_id, "t", {"error": "z" * 2_000_000}))
    assert not isinstance(raised.value, TransientBackendError)
    assert "1 MiB" in str(raised.value)


def test_a_finishing_task_hands_its_slot_down_its_lane_of_ready_siblings(store) -> None:
    """With 2 slots, siblings b0..b5 (sorted by id) form lanes b0 -> b2 -> b4 and
    b1 -> b3 -> b5: a finishing sibling queues its own lane's next one (no READY
    query, which every finishing sibling would answer with the same task), and
    every sibling still runs once."""
    ran: list[str] = []
    job = Job("lanes", max_parallel_tasks=2)
    job.task(task_id="root")(lambda task, job: 1)
    for i in range(6):
        job.task(task_id=f"b{i}", deps=["root"])(
            lambda task, job, i=i: ran.append(f"b{i}") or i)
    job.task(task_id="join", deps=[f"b{i}" for i in range(6)])(lambda task, job: 0)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    drain(engine, bus, limit=1)  # the root: b0 takes its slot, fill_slots gives b1 the other
    assert sorted(m.task_id for m in bus.sent) == ["b0", "b1"]
    bus.sent.sort(key=lambda m: m.task_id, reverse=True)
    drain(engine, bus, limit=1)  # b1 finishes first: its heir is b3, not the first READY b2
    status = {t.task_id: t.status for t in engine.task_records(run_id)}
    assert status["b3"] is TaskStatus.QUEUED and status["b2"] is TaskStatus.READY
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert sorted(ran) == [f"b{i}" for i in range(6)]


def test_a_multi_line_error_is_summed_up_by_its_first_line(store) -> None:
    """An HTML page a gateway answered ended in `</html>`, which the run's
    error, the live view and status showed instead of what failed."""
    from function_flow.cli.progress import last_line

    def broken(**_):
        raise ValueError("price table missing for APAC\n(see the pricing runbook)")

    job = Job("lines")
    job.task(task_id="a")(broken)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.status is RunStatus.FAILED
    assert run.error == "task 'a' failed: ValueError: price table missing for APAC"
    record = store.get_tasks(run_id, ["a"])[0]
    assert record.error.rstrip().endswith("(see the pricing runbook)")  # all of it is kept
    assert last_line(record.error) == "ValueError: price table missing for APAC"
    assert last_line("RemoteCallError: answered HTTP 500: <html>\n<p>x</p>\n</html>") \
        == "RemoteCallError: answered HTTP 500: <html>"
