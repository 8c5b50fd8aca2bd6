"""What the store conformance tests share (tests/test_store_*.py).

Each of those tests runs on the SQLite store (a fresh file) and on the
Firestore store (the real emulator, a collection prefix of its own): the
`store` fixture. The engine relies on exactly these behaviours, so an
adapter that passes them runs the engine.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Callable

from function_flow.core.ports import Store
from function_flow.core.records import RunRecord, TaskRecord


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


def work_of(store: Store, fn: Callable[[], Any]) -> tuple[Any, int]:
    """fn()'s result and the work the store did for it, counted below the adapter.

    Firestore: documents read, as the client's RPC layer sees them (counted
    as Firestore bills them, bench/instrument.py). SQLite: virtual-machine
    instructions of this thread's connection, which grow with every row or
    index entry a statement visits, also those its WHERE clause drops.
    """
    from function_flow.store.sqlite import SqliteStore

    if isinstance(store, SqliteStore):
        steps = [0]

        def step() -> int:
            steps[0] += 1
            return 0

        connection = store._connection()
        connection.set_progress_handler(step, 1)
        try:
            return fn(), steps[0]
        finally:
            connection.set_progress_handler(None, 1)
    bench = os.path.join(os.path.dirname(os.path.dirname(__file__)), "bench")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    import instrument

    counters = instrument.install()
    before = counters.snapshot()["reads"]
    result = fn()
    return result, counters.snapshot()["reads"] - before


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
