"""What only the Firestore store does: its billed operations, its collection prefix, and
the engine running a DAG on it (the emulator).
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.tasks import Job

from store_conformance import make_run


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


def test_a_document_a_counting_merge_made_is_known_exactly(firestore_store) -> None:
    """The content the store remembers of a task document its merge made is the
    stored one (so a claim can start from it), and only then (firestore_joins.py)."""
    from google.cloud import firestore

    from function_flow.store import firestore_schema

    store = firestore_store
    make_run(store, task_ids=["a", "b", "c", "d", "e"])
    path = {t: store._task_ref("run-1", t).path for t in "bcde"}

    def write(task_id: str, fields: dict[str, Any]) -> None:
        store.transact(lambda tx: tx.update_task("run-1", task_id, fields),
                       compare_and_set=True)

    write("b", {"deps_done.a": "SUCCEEDED", "status": "QUEUED", "attempts": [{"n": 1}]})
    snapshot = store._task_ref("run-1", "b").get()
    assert store.known.get(path["b"]) == (snapshot.to_dict(), snapshot.update_time)
    store.reset_counts()
    claimed = store.transact(lambda tx: (tx.get_tasks("run-1", ["b"])["b"], tx.update_task(
        "run-1", "b", {"status": "RUNNING"}))[0], compare_and_set=True)
    assert store.reads == 0 and claimed.status is TaskStatus.QUEUED
    assert claimed.deps_done == {"a": "SUCCEEDED"} and claimed.attempts == [{"n": 1}]
    # Another kind of write came first: the merge did not make the document.
    write("c", {"status": "CANCELLED"})
    write("c", {"deps_done.a": "SUCCEEDED"})
    assert store.known.get(path["c"]) is None
    # A second entry: the counts are not this write's own.
    write("d", {"deps_done.a": "SUCCEEDED"})
    assert store.known.get(path["d"]) is not None
    write("d", {"deps_done.b": "SUCCEEDED"})
    assert store.known.get(path["d"]) is None
    # A run whose writes do not all mark documents (version 2, as code before
    # marked writes made it, with only its `counted_joins` marker): nothing is known.
    store._run_ref("run-1").update({firestore_schema.FIELD: firestore.DELETE_FIELD,
                                    "counted_joins": True})
    store.absent.forget("run-1")
    write("e", {"deps_done.a": "SUCCEEDED"})
    assert store.known.get(path["e"]) is None
