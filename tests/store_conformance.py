"""What the store conformance tests share (tests/test_store_*.py).

Each of those tests runs on the SQLite store (a fresh file) and on the
Firestore store (the real emulator, a collection prefix of its own): the
`store` fixture. The engine relies on exactly these behaviours, so an
adapter that passes them runs the engine.
"""

from __future__ import annotations

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
