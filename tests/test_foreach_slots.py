"""Foreach items and concurrency slots, on SQLite and on the Firestore emulator.

A run whose graph may be wider than max_parallel_tasks has slot records.
A foreach's items take turns in them, unless the graph, with the foreach at
the number of items it really has, can never be wider than that: then they
are queued at once, as in a run without slots (foreach.item_slots).
"""

from __future__ import annotations

import threading
import time

from function_flow.core.records import RunStatus
from function_flow.tasks import Job

from test_foreach import on, squares_job


class SlotHolders:
    """The store, noting every task that a transaction gives a slot to."""

    def __init__(self, store) -> None:
        self._store = store
        self.holders: set[str] = set()

    def __getattr__(self, name):
        return getattr(self._store, name)

    def transact(self, fn, **kwargs):
        holders = self.holders

        class Noting:
            def __init__(self, tx) -> None:
                self._tx = tx

            def __getattr__(self, name):
                return getattr(self._tx, name)

            def set_slot(self, run_id, slot, holder) -> None:
                if holder is not None:
                    holders.add(holder)
                self._tx.set_slot(run_id, slot, holder)

        return self._store.transact(lambda tx: fn(Noting(tx)), **kwargs)


class Inside:
    """How many bodies are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = self.most = 0
        self.lock = threading.Lock()

    def stay(self, seconds: float, entered: threading.Event | None = None) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        if entered is not None:
            entered.set()
        time.sleep(seconds)
        with self.lock:
            self.now -= 1


def test_a_foreach_as_wide_as_max_parallel_tasks_queues_its_items_without_slots(
        store) -> None:
    """root -> foreach of P items -> report, max_parallel_tasks P: the run has
    slots (the definition allows more items), but these P items fit."""
    count = 40
    store = SlotHolders(store)
    job = squares_job("fits", list(range(count)))
    job.max_parallel_tasks = count
    on(store, job)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert job.engine.slots == count
    assert not {h for h in store.holders if h.startswith("square[")}, sorted(store.holders)
    assert len(job.get_task_result("report")) == count


def test_items_take_slots_when_another_task_may_run_beside_them(store) -> None:
    """The same foreach beside another root: P items and that task could run
    at once, one more than P, so the items take turns in slots."""
    count = 8
    inside, item_started, side_in = Inside(), threading.Event(), threading.Event()
    store = SlotHolders(store)
    job = Job("beside", max_parallel_tasks=count)
    job.task(task_id="list")(lambda **_: list(range(count)))

    @job.task(task_id="side")
    def side(**_):
        # Inside while the items run: with slots, at most P - 1 of them can.
        assert item_started.wait(60)
        inside.stay(0.5, entered=side_in)

    @job.foreach(task_id="work", over="list")
    def work(item, **_):
        item_started.set()
        side_in.wait(10)
        inside.stay(0.02)
        return item

    on(store, job, workers=count + 4)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert job.engine.slots == count
    assert {h for h in store.holders if h.startswith("work[")}
    assert inside.most <= count, inside.most
    assert job.get_task_result("work") == list(range(count))


def test_the_width_bound_with_a_foreachs_real_item_count() -> None:
    """The definition bounds a foreach by max_items, or max_concurrency; its
    items by how many there are, when that is fewer."""
    job = squares_job("bounded", [])
    assert job.dag.width_bound_with("square", 40) == 40
    assert job.dag.width_bound > 40
    job.task(task_id="side")(lambda **_: None)
    assert job.dag.width_bound_with("square", 40) == 41
    throttled = squares_job("throttled", [], max_concurrency=10)
    assert throttled.dag.width_bound_with("square", 40) == throttled.dag.width_bound == 10
    assert throttled.dag.width_bound_with("square", 4) == 4
