"""Store conformance: queries (find_tasks, list_runs, runs_started_before) and delete_run,
on SQLite and the Firestore emulator.
"""

from __future__ import annotations

from typing import Any

from function_flow.core.ports import Store
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus, Trigger

from store_conformance import make_run


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
