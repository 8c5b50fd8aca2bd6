"""The periodic poller reads what it needs, not every record of every live run.

On each store: a run of 115 waiting foreach items costs the poller two
bounded queries per call, and still gets its lost messages sent again; a
join nobody queued is found by reading the whole run, when nothing in the
run moves (nothing queued or running, or all of it stalled), or in the
calls chosen at random.
"""

from __future__ import annotations

import random

from function_flow.core import completion, recovery
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.tasks import Job

from test_run_graph import Outbox, drain


class FixedRandom(random.Random):
    """An rng whose draws are all `value` (the poller's full-scan lottery)."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


class ReadCounter:
    """Wraps a store: counts reads of a whole run (`get_tasks` without ids)."""

    def __init__(self, store) -> None:
        self.store, self.whole_runs = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def get_tasks(self, run_id, task_ids=None):
        if task_ids is None:
            self.whole_runs += 1
        return self.store.get_tasks(run_id, task_ids)


def engine_on(job: Job, store, lottery: float, now: list[float]) -> tuple[Engine, Outbox]:
    bus = Outbox()
    return Engine(job, ReadCounter(store), bus, clock=lambda: now[0],
                  rng=FixedRandom(lottery), lease_check_messages=False), bus


def items_job() -> Job:
    job = Job("many_waiting")
    job.task(task_id="list")(lambda **_: list(range(120)))
    job.foreach(task_id="work", over="list", max_concurrency=5)(lambda item, **_: item)
    return job


def test_a_busy_run_costs_two_bounded_queries_and_lost_messages_are_sent_again(store):
    now = [1_000_000.0]
    engine, bus = engine_on(items_job(), store, lottery=0.5, now=now)
    run_id, _ = engine.start({})
    drain(engine, bus, limit=2)  # list, then the foreach: 5 items queued
    assert [m.task_id for m in bus.sent] == [f"work[{i}]" for i in range(5)]
    bus.sent.clear()  # lost
    engine.claim(run_id, "work[0]", 1)  # its executor runs it (an hour's lease)
    now[0] += recovery.POLLER_STALE_AFTER_SECONDS + 1
    engine.store.whole_runs = 0
    engine.poll()
    assert engine.store.whole_runs == 0  # 115 waiting items not read
    assert sorted(m.task_id for m in bus.sent) == [f"work[{i}]" for i in range(1, 5)]


def join_job(name: str, busy: bool) -> Job:
    """a and a2 -> b: b is a join (its record is read after a commit)."""
    job = Job(name)
    job.task(task_id="a")(lambda **_: 1)
    job.task(task_id="a2")(lambda **_: 1)
    job.task(task_id="b", deps=["a", "a2"])(lambda **_: 2)
    if busy:
        job.task(task_id="slow")(lambda **_: 3)
    return job


def lose_the_follow_up_of_a(engine: Engine, bus: Outbox, monkeypatch) -> None:
    """Deliver a2, then a in a process that dies right after a's commit."""
    by_id = {m.task_id: m for m in bus.sent}
    bus.sent.clear()
    engine.handle(by_id["a2"])
    with monkeypatch.context() as patch:
        patch.setattr(completion, "follow_up", lambda *args, **kwargs: None)
        engine.handle(by_id["a"])
    records = {t.task_id: t for t in engine.task_records(by_id["a"].run_id)}
    assert records["a"].status is TaskStatus.SUCCEEDED
    assert records["b"].status is TaskStatus.WAITING and len(records["b"].deps_done) == 2
    bus.sent[:] = [m for m in by_id.values() if m.task_id == "slow"]


def test_a_join_nobody_queued_is_found_when_the_run_has_nothing_else_to_do(store,
                                                                        monkeypatch):
    now = [1_000_000.0]
    engine, bus = engine_on(join_job("lost_join", busy=False), store, lottery=0.5, now=now)
    run_id, _ = engine.start({})
    lose_the_follow_up_of_a(engine, bus, monkeypatch)
    engine.poll()  # nothing queued or running: the whole run is read
    assert [m.task_id for m in bus.sent] == ["b"]
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_a_busy_runs_lost_join_is_found_by_a_full_scan_call(store, monkeypatch):
    now = [1_000_000.0]
    engine, bus = engine_on(join_job("busy_lost_join", busy=True), store, lottery=0.5,
                            now=now)
    run_id, _ = engine.start({})
    lose_the_follow_up_of_a(engine, bus, monkeypatch)
    engine.store.whole_runs = 0
    engine.poll()  # `slow` is queued (in flight): a bounded call, b not seen
    assert [m.task_id for m in bus.sent] == ["slow"] and engine.store.whole_runs == 0
    engine.rng = FixedRandom(0.0)  # this call draws the full scan
    engine.poll()
    assert "b" in [m.task_id for m in bus.sent] and engine.store.whole_runs == 1
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_a_stalled_runs_lost_message_and_lost_join_are_repaired_in_one_call(store,
                                                                          monkeypatch):
    """One crash can lose a message and a join's check at once: when nothing
    else moves, one call sends both (not the message now, the join a minute later)."""
    now = [1_000_000.0]
    engine, bus = engine_on(join_job("stalled_lost_join", busy=True), store, lottery=0.5,
                            now=now)
    run_id, _ = engine.start({})
    lose_the_follow_up_of_a(engine, bus, monkeypatch)
    bus.sent.clear()  # slow's message is lost too
    now[0] += recovery.POLLER_STALE_AFTER_SECONDS + 1
    engine.store.whole_runs = 0
    engine.poll()
    assert sorted(m.task_id for m in bus.sent) == ["b", "slow"]
    assert engine.store.whole_runs == 1
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
