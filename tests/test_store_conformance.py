"""One conformance suite for every store adapter (ports.Store / ports.Transaction): records.

Creating a run and its tasks, updating and reading records, joins, a run
that grows. Each test runs on SQLite and on the Firestore emulator (the
`store` fixture). The rest of the suite: test_store_transactions.py,
test_store_queries.py, test_store_context.py, test_store_firestore.py;
their shared helpers are tests/store_conformance.py.
"""

from __future__ import annotations

import pytest

from function_flow.core.ports import RecordExistsError, Store
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus)

from store_conformance import ODD_IDS, in_threads, make_run


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
