"""Foreach: one item task per item of a result, on SQLite and on the Firestore emulator.

Runs go through the public API (`job.run`) with the in-process bus over
each store, except where delivery itself is the point (duplicates), which
is driven message by message.
"""

from __future__ import annotations

import threading
import time

import pytest

from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core import foreach
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import DefinitionError
from function_flow.store.sqlite import SqliteStore
from function_flow.tasks import Job

from store_conformance import work_of
from test_run_graph import Outbox

_BUSES: list[LocalBus] = []


@pytest.fixture(autouse=True)
def _close_buses():
    yield
    while _BUSES:
        _BUSES.pop().close()


def on(store, job: Job, workers: int = 4) -> Job:
    bus = LocalBus(workers)
    _BUSES.append(bus)
    return job.use_backend(Backend("embedded", store, bus))


def records(job: Job, run_id: str) -> dict:
    """Every record of the run, once its follow-ups are done (a run that fails
    fast ends before the cascade below the failure has been written)."""
    assert job.backend.bus.wait_idle(timeout=60)
    return {t.task_id: t for t in job.engine.store.get_tasks(run_id)}


def squares_job(name: str, items, **options) -> Job:
    job = Job(name)
    job.task(task_id="list")(lambda **_: items)

    @job.foreach(task_id="square", over="list", **options)
    def square(item, task, job):
        assert task.item == item and task.id.startswith("square[")
        return {"key": task.item_key, "square": item * item}

    @job.task(task_id="report", deps=["square"])
    def report(task, job):
        return job.get_task_result("square")

    return job


def test_a_list_fans_out_and_the_aggregator_gets_every_result_in_item_order(store) -> None:
    items = list(range(250))[::-1]  # three groups of items, in reverse order
    job = on(store, squares_job("squares", items))
    run = job.run(timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("report") == [{"key": i, "square": v * v}
                                             for i, v in enumerate(items)]
    done = records(job, run.run_id)
    assert done["square"].status is TaskStatus.SUCCEEDED
    assert all(done[foreach.item_id("square", i)].status is TaskStatus.SUCCEEDED
               for i in range(250))


def test_a_mapping_fans_out_by_key_and_results_come_back_keyed(store) -> None:
    prices = {"EMEA": 3, "APAC": 4, "AMER": 5, "weird/key.with~chars": 6}
    job = on(store, squares_job("regions", prices))
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED
    result = job.get_task_result("report")
    assert list(result) == list(prices)
    assert result == {k: {"key": k, "square": v * v} for k, v in prices.items()}


class Peak:
    """The most bodies that ran at once (each stays in for 20 ms)."""

    def __init__(self) -> None:
        self.running = self.most = 0
        self.lock = threading.Lock()

    def count(self, item):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return item


def test_at_most_max_concurrency_items_run_at_once(store) -> None:
    peak = Peak()
    job = Job("throttled")
    job.task(task_id="list")(lambda **_: list(range(24)))

    @job.foreach(task_id="work", over="list", max_concurrency=3)
    def work(item, **_):
        return peak.count(item)

    on(store, job, workers=8)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert peak.most == 3  # the limit is reached, and never passed
    assert job.get_task_result("work") == list(range(24))


@pytest.mark.parametrize("parallel", [1, 2])
def test_max_parallel_tasks_holds_for_the_items_too(store, parallel) -> None:
    """The foreach hands its own slot to its items (with one slot they would
    otherwise wait for it forever)."""
    peak = Peak()
    job = Job(f"parallel{parallel}", max_parallel_tasks=parallel)
    job.task(task_id="list")(lambda **_: list(range(12)))

    @job.foreach(task_id="work", over="list")
    def work(item, **_):
        return peak.count(item)

    on(store, job, workers=8)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert job.engine.slots == parallel and peak.most == parallel
    assert job.get_task_result("work") == list(range(12))


def failing_job(name: str, bad: set[int], count: int = 20, **options) -> Job:
    job = Job(name)
    job.task(task_id="list")(lambda **_: list(range(count)))

    @job.foreach(task_id="work", over="list", **options)
    def work(item, **_):
        if item in bad:
            raise ValueError(f"item {item} is bad")
        return item

    job.task(task_id="after", deps=["work"])(lambda job, **_: job.get_task_result("work"))
    return job


def test_failures_within_tolerance_leave_none_for_the_failed_items(store) -> None:
    job = on(store, failing_job("tolerant", {3, 7}, tolerated_failures=2))
    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    expected = [None if i in (3, 7) else i for i in range(20)]
    assert job.get_task_result("after") == expected
    item = records(job, run.run_id)[foreach.item_id("work", 3)]
    assert item.status is TaskStatus.FAILED and "item 3 is bad" in item.error


def test_a_tolerated_percentage_counts_too(store) -> None:
    job = on(store, failing_job("percent", {1, 2}, tolerated_failure_percentage=10))
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED  # 2 of 20 is 10%


def test_too_many_failures_fail_the_foreach_and_its_downstream(store) -> None:
    job = on(store, failing_job("intolerant", {1, 2, 3}, tolerated_failures=2))
    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    assert "3 of 20 items of foreach task 'work' failed, more than the 2 it tolerates" \
        in run.error
    done = records(job, run.run_id)
    assert done["work"].status is TaskStatus.FAILED
    assert done["after"].status is TaskStatus.UPSTREAM_FAILED
    # Every item ran (the run ends after all of them): none is left waiting.
    assert all(done[foreach.item_id("work", i)].status.is_final for i in range(20))


def test_a_run_failing_beside_a_foreach_ends_it_and_its_unstarted_items(store) -> None:
    """The foreach waits for its items, runs no body: it ends CANCELLED with
    the run, as its unstarted items do; items already running finish."""
    job = Job("fails_beside")
    job.task(task_id="list")(lambda **_: list(range(10)))
    job.foreach(task_id="work", over="list", max_concurrency=2)(
        lambda item, **_: time.sleep(0.2) or item)

    @job.task(task_id="boom")
    def boom(**_):
        time.sleep(0.3)
        raise ValueError("boom")

    run = on(store, job).run(timeout=60)
    assert run.status is RunStatus.FAILED
    every = records(job, run.run_id)
    assert every["work"].status is TaskStatus.CANCELLED
    left = {t: r.status.value for t, r in every.items()
            if not r.status.is_final and t != "__end__"}
    assert left == {}
    items = [every[foreach.item_id("work", i)].status for i in range(10)]
    assert TaskStatus.CANCELLED in items and set(items) <= {TaskStatus.SUCCEEDED,
                                                            TaskStatus.CANCELLED}


def test_items_added_while_the_run_failed_are_ended_too(store, monkeypatch) -> None:
    """The run fails (and its leftovers are ended) after the foreach's claim,
    just before it adds its items: what it adds is ended as well."""
    from function_flow.core import leftovers, transitions

    job = Job("failed_meanwhile")
    job.task(task_id="list")(lambda **_: list(range(250)))
    job.foreach(task_id="work", over="list", max_concurrency=3)(lambda item, **_: item)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    add_missing = foreach.add_missing

    def then_the_run_fails(*args):
        store.transact(lambda tx: transitions.end_run(
            tx.get_run(run_id), RunStatus.FAILED, "failed meanwhile", engine.clock()
        ).write_to(tx, run_id))
        leftovers.retire(engine, run_id, RunStatus.FAILED)  # before the items exist
        return add_missing(*args)

    monkeypatch.setattr(foreach, "add_missing", then_the_run_fails)
    for _ in range(20):
        if not bus.sent:
            break
        engine.handle(bus.sent.pop(0))
    every = {t.task_id: t for t in store.get_tasks(run_id)}
    assert len(every) > 250  # the items were added
    left = {t: r.status.value for t, r in every.items()
            if not r.status.is_final and t != "__end__"}
    assert left == {} and every["work"].status is TaskStatus.CANCELLED


def test_each_item_is_retried_on_its_own(store) -> None:
    tries: dict[int, int] = {}
    job = Job("flaky")
    job.task(task_id="list")(lambda **_: [10, 20, 30])

    @job.foreach(task_id="work", over="list", retries=2, retry_backoff=0)
    def work(item, task, **_):
        tries[item] = task.attempt
        if item == 20 and task.attempt < 3:
            raise ConnectionError("try again")
        return item + 1

    on(store, job)
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED
    assert tries == {10: 1, 20: 3, 30: 1}
    assert job.get_task_result("work") == [11, 21, 31]


def test_an_empty_result_runs_nothing_and_succeeds(store) -> None:
    job = on(store, squares_job("empty", []))
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED
    assert job.get_task_result("report") == []


@pytest.mark.parametrize("value, message", [
    ("not a list", "must be a list or a mapping, but it is str"),
    (list(range(6)), "has 6 items, more than its max_items (5)"),
])
def test_a_result_it_cannot_run_over_fails_the_foreach_saying_why(
        store, value, message) -> None:
    job = on(store, squares_job("unfit", value, max_items=5))
    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    failed = records(job, run.run_id)["square"]
    assert failed.status is TaskStatus.FAILED
    assert "foreach task 'square' runs over the result of 'list'" in failed.error \
        or "foreach task 'square'" in failed.error
    assert message in failed.error


def test_a_foreach_whose_rule_lets_it_run_over_a_skipped_source_says_so(store) -> None:
    job = Job("skipped_source")
    job.task(task_id="pick", branch=True)(lambda **_: [])  # chooses no branch
    job.task(task_id="list", deps=["pick"])(lambda **_: [1, 2])
    job.foreach(task_id="square", over="list", deps=["list"],
                trigger_rule="all_done")(lambda item, **_: item * item)
    run = on(store, job).run(timeout=60)
    assert run.status is RunStatus.FAILED
    failed = records(job, run.run_id)["square"]
    assert (failed.status, records(job, run.run_id)["list"].status) == \
        (TaskStatus.FAILED, TaskStatus.SKIPPED)
    assert "foreach task 'square' runs over the result of 'list', which has none: it " \
        "ended SKIPPED" in failed.error


@pytest.mark.parametrize("options, message", [
    ({"max_concurrency": 0}, "max_concurrency must be an integer >= 1"),
    ({"tolerated_failures": -1}, "tolerated_failures must be an integer >= 0"),
    ({"tolerated_failure_percentage": 150}, "must be between 0 and 100"),
    ({"max_items": 0}, "max_items must be an integer >= 1"),
])
def test_bad_foreach_settings_are_definition_errors_naming_the_task(options, message):
    job = Job("bad")
    job.task(task_id="list")(lambda **_: [])
    with pytest.raises(DefinitionError, match=message) as raised:
        job.foreach(task_id="work", over="list", **options)(lambda item, **_: item)
    assert "task 'work'" in str(raised.value)


def test_a_foreach_over_an_unknown_task_names_both():
    job = Job("typo")
    job.task(task_id="list")(lambda **_: [])
    job.foreach(task_id="work", over="lsit")(lambda item, **_: item)
    with pytest.raises(DefinitionError, match="task 'work' depends on unknown task 'lsit'"):
        job.validate()


def test_duplicated_delivery_runs_each_item_once(store) -> None:
    ran: list[int] = []
    job = Job("dupes")
    job.task(task_id="list")(lambda **_: list(range(12)))
    job.foreach(task_id="work", over="list", max_concurrency=4)(
        lambda item, **_: ran.append(item) or item)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    delivered = 0
    while bus.sent and delivered < 2000:
        message = bus.sent.pop(0)
        engine.handle(message)
        engine.handle(message)  # every message arrives twice
        delivered += 1
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert sorted(ran) == list(range(12))


class CountingStore:
    """Counts the writes each task record receives (a hot record would show)."""

    def __init__(self, store) -> None:
        self._store = store
        self.writes: dict[str, int] = {}

    def __getattr__(self, name):
        return getattr(self._store, name)

    def transact(self, fn, **kwargs):
        counting = self

        class Counted:
            def __init__(self, tx) -> None:
                self._tx = tx

            def __getattr__(self, name):
                return getattr(self._tx, name)

            def update_task(self, run_id, task_id, fields) -> None:
                counting.writes[task_id] = counting.writes.get(task_id, 0) + 1
                self._tx.update_task(run_id, task_id, fields)

        return self._store.transact(lambda tx: fn(Counted(tx)), **kwargs)


def test_no_record_is_written_by_every_item(tmp_path) -> None:
    store = CountingStore(SqliteStore(str(tmp_path / "state.db")))
    count = 1000
    job = on(store, squares_job("cold", list(range(count))))
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    hottest = max(store.writes.values())
    assert hottest <= foreach.GROUP_SIZE + 5, \
        sorted(store.writes.items(), key=lambda kv: -kv[1])[:5]


def test_ten_thousand_items_on_the_embedded_backend(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "state.db"))
    job = on(store, squares_job("wide", list(range(10_000)), max_concurrency=200), workers=8)
    run = job.run(timeout=600)
    assert run.status is RunStatus.SUCCEEDED, run.error
    result = job.get_task_result("report")
    assert len(result) == 10_000 and result[9_999] == {"key": 9_999, "square": 9_999 ** 2}


def test_an_expansion_cut_short_is_finished_by_the_next_one(store) -> None:
    """An earlier expansion (its process died) added the first chunk of
    records: the next adds the rest, and every item runs once."""
    ran: list[int] = []
    count = foreach.CHUNK + 50  # the records fill two chunks
    job = Job("cut")
    job.task(task_id="list")(lambda **_: list(range(count)))
    job.foreach(task_id="work", over="list", max_concurrency=10)(
        lambda item, **_: ran.append(item) or item)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    planned = foreach.plan(engine, run_id, engine.graph.spec("work"), 1,
                           list(range(count)), list(range(count)))
    store.transact(lambda tx: [tx.add_task(run_id, r) for r in planned[:foreach.CHUNK]])
    delivered = 0
    while bus.sent and delivered < 10 * count:
        engine.handle(bus.sent.pop(0))
        delivered += 1
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert sorted(ran) == list(range(count))
    have = {t.task_id for t in store.get_tasks(run_id)}
    assert {r.task_id for r in planned} <= have


class SlotReadsStore(CountingStore):
    """Counts the work of each find_free_slots, below the adapter (store_conformance.work_of)."""

    def __init__(self, store) -> None:
        super().__init__(store)
        self.slot_work: list[int] = []

    def find_free_slots(self, run_id, count, limit):
        free, work = work_of(self._store, lambda: self._store.find_free_slots(run_id, count,
                                                                               limit))
        self.slot_work.append(work)
        return free


def test_items_under_many_slots_do_not_read_every_held_slot(tmp_path) -> None:
    """A foreach as wide as max_parallel_tasks: every item holds a slot at
    once, and no task waits for one. Finding free slots at each completion
    reads the free ones only, never the held ones (that was O(items) each,
    so O(items²) in all: 6-7.5 ms per item at 10,000 against 1.85 at 1,000)."""
    count = 300
    store = SlotReadsStore(SqliteStore(str(tmp_path / "state.db")))
    job = squares_job("saturated", list(range(count)))
    # A task that may run beside the items: without it they would fit in
    # max_parallel_tasks and take no slot (test_foreach_slots.py).
    job.task(task_id="side")(lambda **_: None)
    job.max_parallel_tasks = count
    on(store, job)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert len(job.get_task_result("report")) == count
    # About 30 steps a look, a few per free slot read: reading the held
    # ones as well cost 1,500 a look here (5+ steps per row).
    looks = len(store.slot_work)
    assert count <= looks < 10 * count and sum(store.slot_work) < 100 * looks, \
        (looks, sum(store.slot_work))
