"""What the dashboard tests share (tests/test_dashboard*.py), and bench/dashboard_poll.py.

Runs are written straight into the store (records as the engine writes
them), so each test sees exactly the state it names, in milliseconds.
"""

from __future__ import annotations

import re
from typing import Any

from function_flow.core import foreach
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus
from function_flow.dashboard import create_app
from function_flow.tasks import Job


SCRIPT = "<script>alert('pwned')</script>"



def add_run(store: Any, run_id: str, tasks: list[TaskRecord], *, job_name: str = "job",
            created_at: float = 100.0, status: str = "RUNNING", dag_hash: str = "h",
            **fields: Any) -> None:
    store.create_run(RunRecord(run_id=run_id, job_name=job_name, dag_hash=dag_hash, args={},
                               created_at=created_at), tasks, {})
    for task in tasks:  # as completers write them, one entry at a time
        for dep, done in task.deps_done.items():
            store.transact(lambda tx, t=task.task_id, d=dep, s=done: tx.update_task(
                run_id, t, {f"deps_done.{d}": s}))
    if status != "RUNNING" or fields:
        store.transact(lambda tx: tx.update_run(run_id, {"status": status, **fields}))



def client_for(store: Any, **options: Any) -> Any:
    app = create_app(lambda: store, **options)
    return app.test_client()



def token_of(client: Any, run_id: str) -> str:
    page = client.get(f"/runs/{run_id}").text
    return re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)



def big_job() -> Job:
    """1,000 tasks in 10 levels of 100 (each waits for one of the level above),
    plus a foreach over the first task's result (bench/dashboard_poll.py measures it)."""
    job = Job("big")
    for level in range(10):
        for index in range(100):
            deps = [f"t{level - 1}_{index}"] if level else None
            job.task(f"t{level}_{index}", deps)(lambda task, job: None)
    job.foreach("fan", over="t0_0")(lambda task, job: None)
    return job


LANES = 100
GROUP = 100


def poll_records(job: Job, items: int = 10_000, done: int = 900,
                 running: int = 100) -> list[TaskRecord]:
    """big_job's records as bench/dashboard_poll.py measures them: every task done
    but the foreach, whose items run in LANES lanes (item i waits for item
    i - LANES) and end into groups of GROUP."""
    tasks = [TaskRecord(t, status=TaskStatus.SUCCEEDED, attempt=1) for t in job.dag.tasks]
    tasks[-1] = TaskRecord("fan", status=TaskStatus.RUNNING, attempt=1,
                           result=foreach.summary("fan", list(range(items)), False))
    fan = []
    for i in range(items):
        status = (TaskStatus.SUCCEEDED if i < done else
                  TaskStatus.RUNNING if i < done + running else TaskStatus.WAITING)
        fan.append(TaskRecord(
            foreach.item_id("fan", i), role="item", template="fan", item_key=i,
            trigger_rule="all_done", status=status, attempt=1 if i < done + running else 0,
            deps=[foreach.item_id("fan", i - LANES)] if i >= LANES else [],
            dependents=([foreach.item_id("fan", i + LANES)] if i + LANES < items else [])
            + [foreach.group_id("fan", i // GROUP)]))
    groups = [TaskRecord(foreach.group_id("fan", g), template="fan", role="group",
                         trigger_rule="all_done",
                         deps=[foreach.item_id("fan", i)
                               for i in range(g * GROUP, min(items, g * GROUP + GROUP))],
                         dependents=[foreach.collector_id("fan")])
              for g in range((items + GROUP - 1) // GROUP)]
    collector = TaskRecord(foreach.collector_id("fan"), template="fan", role="collect",
                           trigger_rule="all_done", dependents=[],
                           deps=[g.task_id for g in groups])
    return tasks + groups + [collector] + fan
