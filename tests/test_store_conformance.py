"""One conformance suite for every store adapter (ports.Store / ports.Transaction).

Each test runs on the SQLite store (a fresh file) and on the Firestore store
(the real emulator, a collection prefix of its own). The engine relies on
exactly these behaviours, so an adapter that passes here runs the engine.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

import pytest

from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.ports import ReadAfterWriteError, RecordExistsError, Store
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus, Trigger)
from function_flow.tasks import Job

# Ids Firestore treats specially: dots and backticks in field paths, "__x__"
# and "." as document ids, non-ASCII, spaces.
ODD_IDS = ["plain", "with.dots", "dash-and space", "back`tick", "déjà", "~tilde", "."]


def make_run(store: Store, run_id: str = "run-1", task_ids: list[str] | None = None,
             slots: dict[int, str | None] | None = None, created_at: float = 100.0,
             args: dict[str, Any] | None = None, slot_count: int = 0) -> bool:
    run = RunRecord(run_id=run_id, job_name="job", dag_hash="h", args=args or {"n": 1},
                    slots=slot_count, created_at=created_at)
    tasks = [TaskRecord(task_id=t) for t in (task_ids or ["a", "b", "c"])]
    return store.create_run(run, tasks, slots or {})


def in_threads(count: int, fn: Callable[[int], Any]) -> list[Any]:
    """Run fn(0..count-1) on `count` threads that start together; return results."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


# ------------------------------------------------------------- create_run

def test_create_run_stores_run_and_tasks(store: Store) -> None:
    assert make_run(store, task_ids=["a", "b"], args={"nested": [[1, 2], {"k": None}]})
    run = store.get_run("run-1")
    assert run is not None and run.status is RunStatus.RUNNING
    assert run.args == {"nested": [[1, 2], {"k": None}]}
    assert sorted(t.task_id for t in store.get_tasks("run-1")) == ["a", "b"]
    assert store.get_run("other") is None


def test_create_run_is_idempotent(store: Store) -> None:
    assert make_run(store, task_ids=["a", "b"], args={"first": True})
    store.transact(lambda tx: tx.update_task("run-1", "a", {"status": "RUNNING"}))
    assert not make_run(store, task_ids=["a", "b", "z"], args={"second": True})
    assert store.get_run("run-1").args == {"first": True}
    tasks = {t.task_id: t for t in store.get_tasks("run-1")}
    assert sorted(tasks) == ["a", "b"]
    assert tasks["a"].status is TaskStatus.RUNNING


def test_concurrent_create_run_creates_once(store: Store) -> None:
    results = in_threads(4, lambda i: make_run(store, task_ids=["a", "b"],
                                               args={"caller": i}))
    assert sorted(results) == [False, False, False, True]
    winner = results.index(True)
    assert store.get_run("run-1").args == {"caller": winner}


def test_failed_create_run_leaves_nothing(store: Store) -> None:
    run = RunRecord(run_id="bad", job_name="job", dag_hash="h", args={})
    tasks = [TaskRecord(task_id="a"), TaskRecord(task_id="b", error=object())]  # unstorable
    with pytest.raises(Exception):
        store.create_run(run, tasks, {})
    assert store.get_run("bad") is None
    assert store.get_tasks("bad") == []


@pytest.mark.parametrize("size", [499, 700])
def test_large_run_is_created_whole_or_not_at_all(store: Store, size: int) -> None:
    """Past 500 documents Firestore needs several batches; the contract holds anyway."""
    ids = [f"t{i:04d}" for i in range(size)]
    run = RunRecord(run_id="big", job_name="job", dag_hash="h", args={})
    broken = [TaskRecord(task_id=t) for t in ids]
    broken[-1].error = object()  # the last document cannot be stored
    with pytest.raises(Exception):
        store.create_run(run, broken, {})
    assert store.get_run("big") is None
    assert store.get_tasks("big") == []

    assert store.create_run(run, [TaskRecord(task_id=t) for t in ids], {0: ids[0]})
    assert not store.create_run(run, [TaskRecord(task_id=t) for t in ids], {})
    assert len(store.get_tasks("big")) == size
    assert store.find_free_slots("big", 2, 5) == [1]


# ------------------------------------------------------------ records

def test_update_run_and_task_records(store: Store) -> None:
    make_run(store)

    def change(tx) -> None:
        tx.update_run("run-1", {"status": RunStatus.SUCCEEDED.value, "finished_at": 5.0})
        tx.update_task("run-1", "a", {"status": TaskStatus.SUCCEEDED.value, "attempt": 2,
                                      "result": {"rows": [[1, "x"], [2, "y"]], "__k__": 1}})

    store.transact(change)
    run = store.get_run("run-1")
    assert (run.status, run.finished_at) == (RunStatus.SUCCEEDED, 5.0)
    a = store.get_tasks("run-1", ["a"])[0]
    assert a.status is TaskStatus.SUCCEEDED and a.attempt == 2
    assert a.result == {"rows": [[1, "x"], [2, "y"]], "__k__": 1}
    b = store.get_tasks("run-1", ["b"])[0]
    assert b.status is TaskStatus.WAITING and b.result is None


ODD_RESULTS = [2 ** 70, -(2 ** 64), 1e308, 1.5e-300, -0.0, float("inf"), -float("inf"),
               "déjà \"q\" \\ \n\u0000",
               {"__x__": [[1, 2], []], "k": None, "": {"a.b": True}}, [], {}, None, False]


@pytest.mark.parametrize("read_first", [False, True])
def test_results_round_trip_exactly(store: Store, read_first: bool) -> None:
    """Written blind (as an executor completes its claim) or after a read."""
    make_run(store, task_ids=[f"t{i}" for i in range(len(ODD_RESULTS))])

    def complete(tx) -> None:
        if read_first:
            tx.get_tasks("run-1", [f"t{i}" for i in range(len(ODD_RESULTS))])
        for i, value in enumerate(ODD_RESULTS):
            tx.update_task("run-1", f"t{i}", {"status": TaskStatus.SUCCEEDED.value,
                                              "result": value, "lease_until": None})

    store.transact(complete)
    for i, value in enumerate(ODD_RESULTS):
        record = store.get_tasks("run-1", [f"t{i}"])[0]
        assert record.status is TaskStatus.SUCCEEDED
        assert record.result == value and type(record.result) is type(value), (i, value)


def test_get_tasks_by_id_keeps_order_and_skips_missing(store: Store) -> None:
    make_run(store)
    assert [t.task_id for t in store.get_tasks("run-1", ["c", "nope", "a"])] == ["c", "a"]
    found = store.transact(lambda tx: tx.get_tasks("run-1", ["b", "nope"]))
    assert list(found) == ["b"]


def test_odd_task_ids_round_trip(store: Store) -> None:
    ids = ODD_IDS + ["__end__"]
    make_run(store, run_id="run.odd", task_ids=ids)
    for task_id in ids:
        store.transact(lambda tx, t=task_id: tx.update_task(
            "run.odd", t, {"status": TaskStatus.READY.value}))
    tasks = {t.task_id: t for t in store.get_tasks("run.odd")}
    assert sorted(tasks) == sorted(ids)
    assert all(t.status is TaskStatus.READY for t in tasks.values())
    assert store.transact(lambda tx: sorted(tx.get_tasks("run.odd", ids))) == sorted(ids)


def test_concurrent_blind_deps_done_updates_all_land(store: Store) -> None:
    """Completers write deps_done.<dep> into one join without reading it."""
    deps = [f"{name}-{i}" for i, name in enumerate(ODD_IDS)] + ["x"]
    make_run(store, task_ids=deps + ["join"])

    def complete(i: int) -> None:
        dep = deps[i]

        def tx_fn(tx) -> None:
            mine = tx.get_tasks("run-1", [dep])[dep]
            tx.update_task("run-1", dep, {"status": TaskStatus.SUCCEEDED.value,
                                          "attempt": mine.attempt + 1})
            tx.update_task("run-1", "join", {f"deps_done.{dep}": TaskStatus.SUCCEEDED.value})

        store.transact(tx_fn)

    in_threads(len(deps), complete)
    join = store.get_tasks("run-1", ["join"])[0]
    assert join.deps_done == {dep: "SUCCEEDED" for dep in deps}
    assert join.status is TaskStatus.WAITING


# ------------------------------------------------------- transactions

def test_join_progress_counts_deps_done_entries_by_outcome(store: Store) -> None:
    make_run(store, task_ids=["a", "b", "c", "join"])
    assert store.join_progress("run-1", "join") == (TaskStatus.WAITING, 0, 0, 0, None)
    assert store.join_progress("run-1", "nope") is None

    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.a": "SUCCEEDED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.b": "FAILED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.c": "SKIPPED"}))
    progress = store.join_progress("run-1", "join")
    assert (progress.succeeded, progress.failed, progress.skipped) == (1, 1, 1)
    assert progress.done == 3 and progress.verdict(3, "all_success") == "upstream_failed"
    store.transact(lambda tx: tx.update_task("run-1", "join",
                                             {"deps_done.b": "UPSTREAM_FAILED"}))
    assert store.join_progress("run-1", "join").failed == 1  # counts as a failure

    # An entry written again counts once; its new status replaces the old one.
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.b": "SUCCEEDED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.c": "SUCCEEDED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.a": "SUCCEEDED"}))
    progress = store.join_progress("run-1", "join")
    assert progress == (TaskStatus.WAITING, 3, 0, 0, None) and progress.complete(3)
    store.transact(lambda tx: tx.update_task("run-1", "join", {"status": "QUEUED"}))
    assert not store.join_progress("run-1", "join").complete(3)


def test_join_progress_counts_what_a_record_read_counts(store: Store) -> None:
    """The store's counters and JoinProgress.of(record) agree, whatever the statuses."""
    statuses = ["SUCCEEDED", "FAILED", "SKIPPED", "CANCELLED", "SUCCEEDED"]
    make_run(store, task_ids=[f"d{i}" for i in range(len(statuses))] + ["join"])
    for i, status in enumerate(statuses):
        store.transact(lambda tx, i=i, s=status: tx.update_task(
            "run-1", "join", {f"deps_done.d{i}": s}))
    record = store.get_tasks("run-1", ["join"])[0]
    assert store.join_progress("run-1", "join") == JoinProgress.of(record) \
        == (TaskStatus.WAITING, 2, 2, 1, None)


def test_tasks_added_to_a_running_run(store: Store) -> None:
    """A run's graph grows: a transaction adds task records that carry their edges."""
    make_run(store, task_ids=["a", "b"])
    added = TaskRecord(task_id="item-0", template="b", deps=["a"], dependents=[],
                       deps_done={"a": "SUCCEEDED"})

    def grow(tx) -> None:
        tx.get_tasks("run-1", ["a"])
        tx.update_task("run-1", "a", {"dependents": ["item-0"]})
        tx.add_task("run-1", added)
        tx.add_task("run-1", TaskRecord(task_id="item-1", template="b", deps=["a"]))

    store.transact(grow)
    records = {t.task_id: t for t in store.get_tasks("run-1")}
    assert set(records) == {"a", "b", "item-0", "item-1"}
    assert records["a"].dependents == ["item-0"]
    item = records["item-0"]
    assert (item.template, item.deps, item.dependents) == ("b", ["a"], [])
    assert item.deps_done == {"a": "SUCCEEDED"}
    assert store.join_progress("run-1", "item-0") == (TaskStatus.WAITING, 1, 0, 0, 1)
    assert [t.task_id for t in store.find_tasks("run-1", TaskStatus.WAITING, 10)
            if t.task_id.startswith("item")] != []

    # Adding an id the run has fails the whole transaction: nothing is written.
    def clash(tx) -> None:
        tx.add_task("run-1", TaskRecord(task_id="item-2"))
        tx.add_task("run-1", TaskRecord(task_id="item-0"))

    with pytest.raises(RecordExistsError):
        store.transact(clash)
    assert "item-2" not in {t.task_id for t in store.get_tasks("run-1")}
    assert store.get_tasks("run-1", ["item-0"])[0].deps_done == {"a": "SUCCEEDED"}


def test_triggers_live_in_transactions(store: Store) -> None:
    make_run(store)
    store.transact(lambda tx: tx.put_trigger(Trigger("bq/job:1", "run-1", "a", 2)))
    assert store.get_trigger("bq/job:1") == Trigger("bq/job:1", "run-1", "a", 2)

    def complete_and_fail(tx) -> None:
        tx.update_task("run-1", "a", {"status": "SUCCEEDED"})
        tx.delete_trigger("bq/job:1")
        raise RuntimeError("the commit never happens")

    with pytest.raises(RuntimeError):
        store.transact(complete_and_fail)
    assert store.get_trigger("bq/job:1") == Trigger("bq/job:1", "run-1", "a", 2)

    def complete(tx) -> None:
        tx.get_tasks("run-1", ["a"])
        tx.update_task("run-1", "a", {"status": "SUCCEEDED"})
        tx.delete_trigger("bq/job:1")

    store.transact(complete, compare_and_set=True)
    assert store.get_trigger("bq/job:1") is None
    assert store.get_tasks("run-1", ["a"])[0].status is TaskStatus.SUCCEEDED


def test_triggers_keep_their_watch_and_timeout_outcome(store: Store) -> None:
    make_run(store)
    watching = Trigger("gs%3A%2F%2Fb%2Fin%2F", "run-1", "a", 1, watch="gs://b/in/")
    approval = Trigger("sha-1", "run-1", "b", 3, on_timeout={"result": {"ok": [1, None]}})
    store.transact(lambda tx: (tx.put_trigger(watching), tx.put_trigger(approval)))
    assert store.get_trigger("sha-1") == approval
    assert store.find_watches(10) == [watching]
    store.transact(lambda tx: tx.delete_trigger(watching.trigger_id))
    assert store.find_watches(10) == []


def test_first_delivery_is_true_once_per_key_until_the_run_is_deleted(store: Store) -> None:
    make_run(store)
    assert store.first_delivery("job/1", "run-1") is True
    assert store.first_delivery("job/1", "run-1") is False
    assert store.first_delivery("job-2", "run-1") is True
    store.forget_delivery("job-2")  # acting on it failed: a redelivery may try again
    assert store.first_delivery("job-2", "run-1") is True
    store.delete_run("run-1")
    assert store.first_delivery("job/1", "run-1") is True


def test_read_after_write_is_rejected_and_rolled_back(store: Store) -> None:
    make_run(store)

    def bad(tx) -> None:
        tx.update_task("run-1", "a", {"status": TaskStatus.FAILED.value})
        tx.get_run("run-1")

    with pytest.raises(ReadAfterWriteError):
        store.transact(bad)
    assert store.get_tasks("run-1", ["a"])[0].status is TaskStatus.WAITING


def test_exception_in_transaction_writes_nothing(store: Store) -> None:
    make_run(store)

    def failing(tx) -> None:
        tx.get_run("run-1")
        tx.update_task("run-1", "a", {"status": TaskStatus.FAILED.value})
        raise KeyError("boom")

    with pytest.raises(KeyError):
        store.transact(failing)
    assert store.get_tasks("run-1", ["a"])[0].status is TaskStatus.WAITING


@pytest.mark.parametrize("compare_and_set", [False, True])
def test_compare_and_set_from_many_threads_has_one_winner(store: Store,
                                                          compare_and_set: bool) -> None:
    make_run(store)
    store.transact(lambda tx: tx.update_task("run-1", "a", {"status": "QUEUED", "attempt": 1}))

    def claim(i: int) -> bool:
        def tx_fn(tx) -> bool:
            task = tx.get_tasks("run-1", ["a"])["a"]
            if task.status is not TaskStatus.QUEUED:
                return False
            tx.update_task("run-1", "a", {"status": "RUNNING", "error": f"claimed by {i}"})
            return True

        return store.transact(tx_fn, compare_and_set=compare_and_set)

    results = in_threads(8, claim)
    assert results.count(True) == 1
    task = store.get_tasks("run-1", ["a"])[0]
    assert task.status is TaskStatus.RUNNING
    assert task.error == f"claimed by {results.index(True)}"


def test_compare_and_set_loses_no_update(store: Store) -> None:
    """Read-modify-write from many threads at once: every increment lands."""
    make_run(store)

    def increment(i: int) -> None:
        for _ in range(3):
            def tx_fn(tx) -> None:
                task = tx.get_tasks("run-1", ["a"])["a"]
                tx.update_task("run-1", "a", {"attempt": task.attempt + 1})
            store.transact(tx_fn, compare_and_set=True)

    in_threads(6, increment)
    assert store.get_tasks("run-1", ["a"])[0].attempt == 18


def test_compare_and_set_slot_handover_gives_each_slot_once(store: Store) -> None:
    """Many takers race for two free slots: each slot gets exactly one task,
    and each task at most one slot (the engine's _take_slot, as a store sees it)."""
    tasks = [f"t{i}" for i in range(6)]
    make_run(store, task_ids=tasks, slot_count=2, slots={0: None, 1: None})

    def ready(tx) -> None:
        for task_id in tasks:
            tx.update_task("run-1", task_id, {"status": TaskStatus.READY.value})
    store.transact(ready)

    def take(i: int) -> bool:
        task_id, slot = tasks[i], i % 2

        def tx_fn(tx) -> bool:
            holder = tx.get_slot("run-1", slot)
            task = tx.get_tasks("run-1", [task_id])[task_id]
            if holder is not None or task.status is not TaskStatus.READY:
                return False
            tx.set_slot("run-1", slot, task_id)
            tx.update_task("run-1", task_id, {"status": TaskStatus.QUEUED.value,
                                              "slot": slot})
            return True

        return store.transact(tx_fn, compare_and_set=True)

    results = in_threads(6, take)
    assert results.count(True) == 2
    holders = {slot: store.transact(lambda tx, s=slot: tx.get_slot("run-1", s))
               for slot in (0, 1)}
    queued = {t.task_id: t.slot for t in store.find_tasks("run-1", TaskStatus.QUEUED, 10)}
    assert {holder: slot for slot, holder in holders.items()} == queued


def test_compare_and_set_that_reads_more_than_it_writes_still_isolates(store: Store) -> None:
    """A function that breaks the promise (reads the run, writes only a task)
    is still run correctly: the store falls back to a real transaction."""
    make_run(store)

    def tx_fn(tx) -> int:
        run = tx.get_run("run-1")
        task = tx.get_tasks("run-1", ["a"])["a"]
        tx.update_task("run-1", "a", {"attempt": task.attempt + 1,
                                      "error": run.status.value})
        return task.attempt + 1

    results = in_threads(4, lambda i: store.transact(tx_fn, compare_and_set=True))
    assert sorted(results) == [1, 2, 3, 4]
    assert store.get_tasks("run-1", ["a"])[0].error == "RUNNING"


# -------------------------------------------------------------- queries

def test_find_tasks_by_status_with_limit(store: Store) -> None:
    make_run(store, task_ids=["a", "b", "c", "d"])

    def ready(tx) -> None:
        for task_id in ("a", "c", "d"):
            tx.update_task("run-1", task_id, {"status": TaskStatus.READY.value})

    store.transact(ready)
    assert sorted(t.task_id for t in store.find_tasks("run-1", TaskStatus.READY, 10)) \
        == ["a", "c", "d"]
    limited = store.find_tasks("run-1", TaskStatus.READY, 2)
    assert len(limited) == 2 and {t.task_id for t in limited} <= {"a", "c", "d"}
    assert [t.task_id for t in store.find_tasks("run-1", TaskStatus.WAITING, 10)] == ["b"]
    assert store.find_tasks("run-1", TaskStatus.RUNNING, 10) == []


def test_slots(store: Store) -> None:
    make_run(store, slots={0: "a"}, slot_count=3)
    assert store.find_free_slots("run-1", 3, 10) == [1, 2]
    assert store.transact(lambda tx: (tx.get_slot("run-1", 0), tx.get_slot("run-1", 2))) \
        == ("a", None)
    store.transact(lambda tx: tx.set_slot("run-1", 1, "b"))
    assert store.find_free_slots("run-1", 3, 10) == [2]
    store.transact(lambda tx: tx.set_slot("run-1", 0, None))
    assert store.find_free_slots("run-1", 3, 10) == [0, 2]
    assert store.find_free_slots("run-1", 3, 1) == [0]
    assert store.transact(lambda tx: tx.get_slot("run-1", 1)) == "b"


def test_triggers(store: Store) -> None:
    store.transact(lambda tx: tx.put_trigger(Trigger("bq/job:1", "run-1", "a", 2)))
    assert store.get_trigger("bq/job:1") == Trigger("bq/job:1", "run-1", "a", 2)
    store.transact(lambda tx: tx.put_trigger(Trigger("bq/job:1", "run-1", "a", 3)))
    assert store.get_trigger("bq/job:1") == Trigger("bq/job:1", "run-1", "a", 3)
    store.transact(lambda tx: tx.delete_trigger("bq/job:1"))
    assert store.get_trigger("bq/job:1") is None
    assert store.get_trigger("never") is None

def test_list_runs_newest_first(store: Store) -> None:
    for run_id, created in (("r1", 10.0), ("r3", 30.0), ("r2", 20.0)):
        make_run(store, run_id=run_id, created_at=created)
    assert [r.run_id for r in store.list_runs()] == ["r3", "r2", "r1"]
    assert [r.run_id for r in store.list_runs(limit=2)] == ["r3", "r2"]


def test_list_runs_filtered_newest_first_in_pages(store: Store) -> None:
    """The dashboard's list: by job and status, newest first, a page after another.

    Two runs share a created_at: the run id decides between them, so paging
    by (created_at, run_id) neither skips nor repeats one.
    """
    runs = [("a1", "alpha", 10.0, "FAILED"), ("b1", "beta", 20.0, "FAILED"),
            ("a2", "alpha", 30.0, "SUCCEEDED"), ("a3", "alpha", 30.0, "FAILED"),
            ("a4", "alpha", 40.0, "RUNNING"), ("b2", "beta", 50.0, "RUNNING")]
    for run_id, job_name, created, status in runs:
        store.create_run(RunRecord(run_id=run_id, job_name=job_name, dag_hash="h", args={},
                                   created_at=created), [TaskRecord(task_id="t")], {})
        if status != "RUNNING":
            store.transact(lambda tx, r=run_id, s=status: tx.update_run(r, {"status": s}))

    def ids(**query: Any) -> list[str]:
        return [r.run_id for r in store.list_runs(newest_first=True, **query)]

    assert ids() == ["b2", "a4", "a3", "a2", "b1", "a1"]
    assert ids(job_name="alpha") == ["a4", "a3", "a2", "a1"]
    assert ids(status=RunStatus.FAILED) == ["a3", "b1", "a1"]
    assert ids(job_name="alpha", status=RunStatus.FAILED) == ["a3", "a1"]
    assert ids(job_name="gamma") == []
    first = store.list_runs(limit=2, job_name="alpha", newest_first=True)
    assert [r.run_id for r in first] == ["a4", "a3"]
    after = (first[-1].created_at, first[-1].run_id)
    assert ids(limit=2, job_name="alpha", before=after) == ["a2", "a1"]
    assert ids(limit=2, before=(30.0, "a3")) == ["a2", "b1"]
    assert ids(before=(10.0, "a1")) == []


def test_runs_started_before(store: Store) -> None:
    for run_id, created in (("r1", 10.0), ("r2", 20.0), ("r3", 30.0)):
        make_run(store, run_id=run_id, created_at=created)
    assert sorted(store.runs_started_before(25.0)) == ["r1", "r2"]
    assert store.runs_started_before(5.0) == []


def test_delete_run_removes_everything(store: Store) -> None:
    make_run(store, run_id="gone", slots={0: "a", 1: "b"}, slot_count=2)
    make_run(store, run_id="kept", slots={0: "a"}, slot_count=2)
    store.transact(lambda tx: tx.put_trigger(Trigger("t-gone", "gone", "a", 1)))
    store.transact(lambda tx: tx.put_trigger(Trigger("t-kept", "kept", "a", 1)))
    store.delete_run("gone")
    assert store.get_run("gone") is None
    assert store.get_tasks("gone") == []
    assert store.find_free_slots("gone", 2, 5) == [0, 1]
    assert store.get_trigger("t-gone") is None
    assert [r.run_id for r in store.list_runs()] == ["kept"]
    assert len(store.get_tasks("kept")) == 3
    assert store.find_free_slots("kept", 2, 5) == [1]
    assert store.get_trigger("t-kept") == Trigger("t-kept", "kept", "a", 1)
    assert make_run(store, run_id="gone")  # the id can be used again


# ----------------------------------------------------------- run context

#: Context keys Firestore cannot take as document ids as they are ('/', "__x__",
#: ".", ".."), and the longest key whose escaped id would pass 1500 bytes.
ODD_KEYS = ODD_IDS + ["a/b", "__end__", "..", "%2F", "~%2F", "/" + "\U0001d11e" * 255]


def test_context_values_round_trip_per_key(store: Store) -> None:
    make_run(store)
    assert store.get_context("run-1", "k") is None and store.list_context("run-1") == {}
    for number, key in enumerate(ODD_KEYS):
        assert store.set_context("run-1", key, f'{{"n":{number}}}') is True
    assert store.list_context("run-1") == {
        key: f'{{"n":{number}}}' for number, key in sorted(enumerate(ODD_KEYS),
                                                         key=lambda pair: pair[1])}
    assert list(store.list_context("run-1")) == sorted(ODD_KEYS)
    for number, key in enumerate(ODD_KEYS):
        assert store.get_context("run-1", key) == f'{{"n":{number}}}'
    assert store.set_context("run-1", "a/b", "[1,2]") is True  # replaces
    assert store.get_context("run-1", "a/b") == "[1,2]"
    store.delete_context("run-1", "a/b")
    store.delete_context("run-1", "a/b")  # deleting again changes nothing
    store.delete_context("run-1", "never-set")
    assert store.get_context("run-1", "a/b") is None
    assert set(store.list_context("run-1")) == set(ODD_KEYS) - {"a/b"}


def test_context_belongs_to_one_run_and_goes_with_it(store: Store) -> None:
    make_run(store, run_id="gone")
    make_run(store, run_id="kept")
    assert store.set_context("gone", "k", '"gone"') and store.set_context("kept", "k", '"kept"')
    assert store.get_context("gone", "k") == '"gone"'
    store.delete_run("gone")
    assert store.get_context("gone", "k") is None and store.list_context("gone") == {}
    assert store.list_context("kept") == {"k": '"kept"'}
    # A late body setting a key of the deleted run stores nothing.
    assert store.set_context("gone", "late", "1") is False
    assert store.list_context("gone") == {}
    assert make_run(store, run_id="gone")  # the id is used again: an empty context
    assert store.list_context("gone") == {}


def test_concurrent_context_sets_of_different_keys_all_land(store: Store) -> None:
    make_run(store)
    in_threads(8, lambda i: [store.set_context("run-1", f"k{i}-{n}", str(n))
                             for n in range(3)])
    assert store.list_context("run-1") == {f"k{i}-{n}": str(n)
                                           for i in range(8) for n in range(3)}


def test_concurrent_context_sets_of_one_key_keep_one_value(store: Store) -> None:
    make_run(store)
    assert in_threads(6, lambda i: store.set_context("run-1", "same", str(i))) == [True] * 6
    assert store.list_context("run-1") in [{"same": str(i)} for i in range(6)]


# ---------------------------------------------------- Firestore specifics

def test_firestore_counts_document_operations(firestore_store) -> None:
    store = firestore_store
    make_run(store, task_ids=["a", "b"], slots={0: "a"}, slot_count=1)
    # One batch: the run (create) and 1 slot; plain WAITING tasks get their
    # documents when first written (store/firestore_absent.py).
    assert (store.reads, store.writes) == (0, 2)
    store.reset_counts()
    store.get_run("run-1")
    store.get_tasks("run-1", ["a", "b"])
    store.find_tasks("run-1", TaskStatus.RUNNING, 5)  # no match still bills one read
    assert (store.reads, store.writes) == (4, 0)
    store.reset_counts()

    def claim(tx) -> None:
        tx.get_tasks("run-1", ["a"])
        tx.update_task("run-1", "a", {"status": "RUNNING"})
        tx.update_task("run-1", "b", {"deps_done.a": "SUCCEEDED"})
        tx.set_slot("run-1", 0, None)

    store.transact(claim)
    assert (store.reads, store.writes) == (1, 3)


def test_firestore_uses_prefixed_collections(firestore_store, firestore_emulator) -> None:
    """Two stores with different prefixes share a database without seeing each other."""
    from function_flow.store.firestore import FirestoreStore

    make_run(firestore_store)
    other = FirestoreStore(project=firestore_store.project, prefix="other_" +
                           firestore_store.prefix, client=firestore_store.client)
    assert other.get_run("run-1") is None
    assert firestore_store.client.collection(f"{firestore_store.prefix}runs") \
        .document("run-1").get().exists


def test_firestore_context_set_while_the_run_is_deleted_goes_with_it(firestore_store) -> None:
    """delete_run is not atomic: a late body's value lands after the context was
    listed, before the run document goes; the sweep after the run finds it."""
    store = firestore_store
    make_run(store)
    store.set_context("run-1", "early", "1")
    delete_refs = store._delete_refs
    landed = []

    def late_write_first(refs):
        if not landed:  # the first batch: the run document is still there
            landed.append(store.set_context("run-1", "late", "2"))
        delete_refs(refs)

    store._delete_refs = late_write_first
    try:
        store.delete_run("run-1")
    finally:
        store._delete_refs = delete_refs
    assert landed == [True]
    assert store.get_run("run-1") is None and store.list_context("run-1") == {}


# ------------------------------------------------- the engine on Firestore

def test_engine_runs_a_dag_on_firestore(firestore_store) -> None:
    """chain a -> b, fan-out b -> c1..c4, fan-in -> d, with max_parallel_tasks=2."""
    bus = LocalBus(4)
    job = Job("fs_dag", max_parallel_tasks=2,
              backend=Backend("firestore-test", firestore_store, bus))
    ran: list[str] = []
    lock = threading.Lock()

    def body(task_id: str, value: Callable[[Job], Any]):
        def run(task, job):
            with lock:
                ran.append(task_id)
            return value(job)
        return run

    job.task("a")(body("a", lambda j: j.get_arguments()["n"]))
    job.task("b", deps=["a"])(body("b", lambda j: j.get_task_result("a") + 1))
    for i in range(4):
        job.task(f"c{i}", deps=["b"])(
            body(f"c{i}", lambda j, i=i: [j.get_task_result("b"), i]))
    job.task("d", deps=[f"c{i}" for i in range(4)])(
        body("d", lambda j: sum(j.get_task_result(f"c{i}")[1] for i in range(4))))

    run_id = job.start({"n": 10})
    try:
        run = job.wait(run_id, timeout=240)
    finally:
        bus.wait_idle()
        bus.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    results = {t.task_id: t.result for t in job.engine.task_records(run_id)}
    assert results == {"a": 10, "b": 11, "c0": [11, 0], "c1": [11, 1], "c2": [11, 2],
                       "c3": [11, 3], "d": 6}
    assert sorted(ran) == sorted(results)  # each body ran exactly once
    assert ran[:2] == ["a", "b"] and ran[-1] == "d"


def test_list_runs_by_status_finds_old_live_runs(store: Store) -> None:
    """The poller asks for every RUNNING run, however many newer runs ended."""
    make_run(store, run_id="old-live", created_at=1.0)
    for number in range(5):
        make_run(store, run_id=f"done-{number}", created_at=10.0 + number)
        store.transact(lambda tx, n=number: tx.update_run(
            f"done-{n}", {"status": RunStatus.SUCCEEDED.value}))
    assert [r.run_id for r in store.list_runs(limit=3)] == ["done-4", "done-3", "done-2"]
    live = store.list_runs(limit=3, status=RunStatus.RUNNING)
    assert [r.run_id for r in live] == ["old-live"]


def test_list_runs_by_job_and_status(store: Store) -> None:
    """`function-flow status --job NAME --status FAILED`: both filters at once."""
    for number, job_name in enumerate(["etl", "report", "etl", "etl"]):
        store.create_run(RunRecord(run_id=f"{job_name}-{number}", job_name=job_name,
                                   dag_hash="h", args={}, created_at=10.0 + number), [], {})
    store.transact(lambda tx: tx.update_run("etl-2", {"status": RunStatus.FAILED.value}))
    by_job = store.list_runs(limit=10, job_name="etl")
    assert sorted(r.run_id for r in by_job) == ["etl-0", "etl-2", "etl-3"]
    failed = store.list_runs(limit=10, job_name="etl", status=RunStatus.FAILED)
    assert [r.run_id for r in failed] == ["etl-2"]
    assert store.list_runs(limit=10, job_name="report", status=RunStatus.FAILED) == []
    assert store.list_runs(limit=10, job_name="nope") == []


def test_list_runs_finds_ended_runs_whose_hooks_are_pending(store: Store) -> None:
    """The poller also asks for ended runs whose hooks have not all run (core/hooks.py)."""
    for number in range(4):
        make_run(store, run_id=f"ended-{number}", created_at=10.0 + number)
        pending = number == 1
        store.transact(lambda tx, n=number, p=pending: tx.update_run(
            f"ended-{n}", {"status": RunStatus.FAILED.value, "hooks_pending": p}))
    make_run(store, run_id="live", created_at=1.0)
    found = store.list_runs(limit=10, hooks_pending=True)
    assert [r.run_id for r in found] == ["ended-1"]
    assert found[0].hooks_pending is True
    assert store.list_runs(limit=10, status=RunStatus.RUNNING, hooks_pending=True) == []


def test_replace_task_writes_a_record_whole_deps_done_and_counts_included(store: Store) -> None:
    make_run(store, task_ids=["a", "b", "join"])
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.a": "SUCCEEDED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.b": "FAILED"}))
    store.transact(lambda tx: tx.update_task("run-1", "join", {"status": "UPSTREAM_FAILED",
                                                                "error": "x"}))
    fresh = TaskRecord(task_id="join", deps_done={"a": "SUCCEEDED"}, attempt=0)
    store.transact(lambda tx: tx.replace_task("run-1", fresh))
    join = store.get_tasks("run-1", ["join"])[0]
    assert join.status is TaskStatus.WAITING and join.error is None
    assert join.deps_done == {"a": "SUCCEEDED"}
    assert store.join_progress("run-1", "join") == (TaskStatus.WAITING, 1, 0, 0, None)
    # Entries written afterwards count as before.
    store.transact(lambda tx: tx.update_task("run-1", "join", {"deps_done.b": "SUCCEEDED"}))
    assert store.join_progress("run-1", "join") == (TaskStatus.WAITING, 2, 0, 0, None)
