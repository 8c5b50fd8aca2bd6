"""The dashboard on big runs: 1,000 tasks and a foreach of 10,000 items on one page,
and a live poll that reads only the records that can have changed
(bench/dashboard_poll.py measures the same run).
"""

from __future__ import annotations

import types
from typing import Any

from function_flow.core import versions
from function_flow.core.records import TaskRecord, TaskStatus
from function_flow.dashboard import create_app
from function_flow.tasks import Job

from dashboard_runs import add_run, big_job, client_for


def test_a_run_of_1000_tasks_and_a_foreach_of_10000_items(tmp_path) -> None:
    """Every task is a box; the 10,000 items are one box and one table row, 100
    cells once opened, and pages of 100 on the items page."""
    from function_flow.store.sqlite import SqliteStore

    job = big_job()
    store = SqliteStore(str(tmp_path / "state.db"))
    tasks = [TaskRecord(t, status=TaskStatus.SUCCEEDED, attempt=1) for t in job.dag.tasks]
    tasks[-1] = TaskRecord("fan", status=TaskStatus.RUNNING, attempt=1,
                           result={"__foreach__": "fan", "items": 10_000, "mapping": False})
    items = [TaskRecord(f"fan[{i}]", role="item", template="fan", item_key=i, deps=[],
                        status=TaskStatus.FAILED if i % 1000 == 7 else TaskStatus.SUCCEEDED,
                        attempt=1, error="ValueError: bad item" if i % 1000 == 7 else None)
             for i in range(10_000)]
    add_run(store, "big-run", tasks + items, job_name="big",
            dag_hash=versions.of(job.dag).hash)
    client = client_for(store, jobs={"big": job})

    page = client.get("/runs/big-run").text
    assert page.count('data-node="') == 1001
    assert 'data-interval="10.0"' in page  # 11,102 records: the page asks every 10 s
    assert page.count('marker-end="url(#arrow)"') == 901  # every edge of the definition
    assert 'data-cell="' not in page
    assert "9,990/10,000 items done, 10 failed" in page  # as the README shows it
    assert page.count("<tr data-row=") == 1001 + 1 + 5  # tasks, the items' row, 5 failures
    state = client.get("/api/runs/big-run").json
    assert len(state["nodes"]) == 1001 and state["summary"] == \
        "1000/1001 done, 1 running, 0 failed"
    assert state["nodes"]["fan"][2] == [["SUCCEEDED", 0.999], ["FAILED", 0.001]]

    opened = client.get("/runs/big-run?open=fan").text
    assert opened.count('data-cell="fan"') == 100
    assert "first 100 shown · all 10,000 items" in opened
    last = client.get("/runs/big-run/items/fan?page=100").text
    assert "page 100 of 100" in last and last.count("<tr data-row=") == 100
    assert "fan[9999]" in last and "fan[9899]" not in last
    failed = client.get("/api/runs/big-run/items/fan?status=FAILED").json
    assert failed["total"] == 10 and failed["items"][0]["task_id"] == "fan[7]"



def test_live_updates_read_only_what_can_have_changed(tmp_path) -> None:
    """A poll reads the records that can have moved (not final, or waiting for
    finished ones), cascading to the dependents of what just finished; what it
    shows is what a full read shows; a change of the run or a graph that grew
    makes it read everything again."""
    from function_flow.core import foreach
    from function_flow.dashboard.app import EXTENSION
    from function_flow.store.sqlite import SqliteStore

    count, lanes = 2_000, 100
    job = Job("fans")
    job.task("src")(lambda task, job: list(range(count)))
    job.foreach("fan", over="src")(lambda task, job: None)
    tasks = [TaskRecord("src", status=TaskStatus.SUCCEEDED, attempt=1),
             TaskRecord("fan", status=TaskStatus.RUNNING, attempt=1,
                        result=foreach.summary("fan", list(range(count)), False))]
    items = [TaskRecord(
        foreach.item_id("fan", i), role="item", template="fan", item_key=i,
        trigger_rule="all_done", attempt=1 if i < 1000 else 0,
        status=TaskStatus.SUCCEEDED if i < 900 else TaskStatus.RUNNING if i < 1000
        else TaskStatus.WAITING,
        deps=[foreach.item_id("fan", i - lanes)] if i >= lanes else [],
        dependents=([foreach.item_id("fan", i + lanes)] if i + lanes < count else [])
        + [foreach.group_id("fan", i // 100)]) for i in range(count)]
    groups = [TaskRecord(foreach.group_id("fan", g), template="fan", role="group",
                         trigger_rule="all_done", dependents=[foreach.collector_id("fan")],
                         deps=[foreach.item_id("fan", i) for i in range(g * 100, g * 100 + 100)])
              for g in range(count // 100)]
    collector = TaskRecord(foreach.collector_id("fan"), template="fan", role="collect",
                           trigger_rule="all_done", dependents=[],
                           deps=[foreach.group_id("fan", g) for g in range(count // 100)])
    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "fans-1", tasks + groups + [collector] + items, job_name="fans",
            dag_hash=versions.of(job.dag).hash)
    app = create_app(lambda: store, jobs={"fans": job})
    live, client = app.extensions[EXTENSION].live, app.test_client()

    def polled() -> dict:
        state = client.get("/api/runs/fans-1").json
        state.pop("duration")  # a running run's duration grows between two reads
        return state

    def fully_read() -> dict:
        state = create_app(lambda: store, jobs={"fans": job}).test_client().get(
            "/api/runs/fans-1").json
        state.pop("duration")
        return state

    assert client.get("/runs/fans-1").status_code == 200
    assert live.last.full and live.last.records == len(tasks + groups + items) + 1
    first = polled()
    # The 100 running items, the foreach, and the 9 groups whose items all finished.
    assert not live.last.full and live.last.records == 100 + 1 + 9
    assert first == fully_read()

    def update(task_id: str, **fields: Any) -> None:
        store.transact(lambda tx: tx.update_task("fans-1", task_id, fields))

    update("fan[900]", status="SUCCEEDED", finished_at=200.0)
    update("fan[1000]", status="QUEUED", attempt=1)
    second = polled()
    # and fan[900]'s waiting dependents: fan[1000] and its group
    assert not live.last.full and live.last.records == 110 + 2
    assert second == fully_read() and second != first
    assert ["QUEUED", 0.0005] in second["nodes"]["fan"][2]

    store.transact(lambda tx: tx.update_run("fans-1", {"redrives": 1}))
    update("fan[0]", status="FAILED")  # final records change only with the run (a redrive)
    assert polled() == fully_read() and live.last.full

    store.transact(lambda tx: tx.add_task("fans-1", TaskRecord("later", template="src")))
    update("fan[950]", dependents=["later"])  # a body that grew the graph (core/growth.py)
    assert polled() == fully_read() and live.last.full

    # Every other change of the run itself, and the clock, make the next poll a full read.
    for fields in ({"paused_at": 300.0}, {"resumed_at": 301.0}, {"dag_hash": "v2"},
                   {"status": "CANCELLED", "finished_at": 302.0}):
        polled()
        assert not live.last.full
        store.transact(lambda tx: tx.update_run("fans-1", fields))
        polled()
        assert live.last.full, fields
    real_clock = live.clock
    live.clock = lambda: real_clock() + 301  # past FULL_READ_SECONDS (5 minutes)
    polled()
    assert live.last.full

    # A foreach that has just fanned out: its summary names items the cache never saw.
    add_run(store, "fans-2", [TaskRecord("src", status=TaskStatus.SUCCEEDED, attempt=1),
                              TaskRecord("fan", status=TaskStatus.RUNNING, attempt=1)],
            job_name="fans", dag_hash=versions.of(job.dag).hash)
    live.clock = real_clock
    client.get("/runs/fans-2")
    client.get("/api/runs/fans-2")
    assert not live.last.full and live.last.records == 1
    store.transact(lambda tx: [tx.add_task("fans-2", record) for record in (
        TaskRecord(foreach.item_id("fan", 0), role="item", template="fan", item_key=0,
                   dependents=[foreach.group_id("fan", 0)]),
        TaskRecord(foreach.group_id("fan", 0), template="fan", role="group",
                   deps=[foreach.item_id("fan", 0)], dependents=[foreach.collector_id("fan")]),
        TaskRecord(foreach.collector_id("fan"), template="fan", role="collect",
                   deps=[foreach.group_id("fan", 0)]))])
    store.transact(lambda tx: tx.update_task("fans-2", "fan", {
        "result": foreach.summary("fan", [0], False)}))
    client.get("/api/runs/fans-2")
    assert live.last.full and live.last.records == 5


def test_an_hour_of_an_open_page_reads_about_170000_records(tmp_path) -> None:
    """README: one open page of the big run (a poll every 10 s, a full read every
    5 minutes) reads about 170,000 records an hour, instead of 4 million for a
    full read at each poll. The clock is the test's: an hour passes at once."""
    from function_flow.core.graph import RunGraph
    from function_flow.core.records import RunRecord
    from function_flow.dashboard import live as live_records
    from function_flow.dashboard.views import poll_seconds
    from function_flow.store.sqlite import SqliteStore
    from dashboard_runs import poll_records

    job = big_job()
    found = poll_records(job)
    store = SqliteStore(str(tmp_path / "state.db"))
    store.create_run(RunRecord(run_id="big", job_name="big", dag_hash=versions.of(job.dag).hash,
                               args={}, created_at=1.0), found, {})
    run = store.get_run("big")
    interval = poll_seconds(types.SimpleNamespace(records=len(found)))
    assert (len(found), interval) == (11_102, 10.0)
    now = [0.0]
    live = live_records.LiveRecords(clock=lambda: now[0])
    read, fulls = 0, 0
    while now[0] < 3600:
        live.read(store, run, lambda records: RunGraph(job.dag), full=now[0] == 0)
        read += live.last.records
        fulls += live.last.full
        now[0] += interval
    assert fulls == 12  # the page load, then one every 5 minutes (310 s, 620 s...)
    assert read == 12 * 11_102 + 348 * 110 == 171_504
