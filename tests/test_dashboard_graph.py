"""The dashboard's graph and task details: edges from the definition or, without it,
from the records; a changed workflow; every attempt with its error and output.
"""

from __future__ import annotations

import re
from typing import Any

from function_flow.core import versions
from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.dashboard.details import task_detail
from function_flow.tasks import Job

from dashboard_runs import add_run, client_for


def test_without_the_definition_the_graph_comes_from_the_records(tmp_path) -> None:
    """A deployed run records no workflow file: finished dependencies still draw
    their edges, sub-DAG tasks sit in their group, and the page says what is missing."""
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "r", [
        TaskRecord("extract", status=TaskStatus.SUCCEEDED, attempt=1, queued_at=1.0),
        TaskRecord("left/clean", status=TaskStatus.RUNNING, attempt=1, queued_at=2.0,
                   deps_done={"extract": "SUCCEEDED"}),
        TaskRecord("left/split", status=TaskStatus.WAITING),
        TaskRecord("left", status=TaskStatus.WAITING),
        TaskRecord("__end__", status=TaskStatus.WAITING)])
    client = client_for(store)
    page = client.get("/runs/r").text
    assert "records no workflow file: start the dashboard with --file FILE.py" in page
    assert re.findall(r'data-node="([^"]+)"', page) == ["extract", "left"]
    assert 'class="node subdag st-RUNNING"' in page  # a task inside it runs
    opened = client.get("/runs/r?open=left").text
    assert sorted(re.findall(r'data-node="([^"]+)"', opened)) == [
        "extract", "left", "left/clean", "left/split"]
    assert opened.count('marker-end=') == 1  # extract -> left; left/split's deps unknown



def test_every_attempt_with_its_error_and_output(tmp_path) -> None:
    """The task page shows each attempt the record keeps (history.py): its
    outcome, its error and what its body printed, as text."""
    from function_flow.backends import Backend
    from function_flow.bus.local import LocalBus
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    job = Job("flaky")

    @job.task("load", retries=2, retry_backoff=0.01)
    def load(task: Any, job: Any) -> Any:
        print(f"attempt {task.attempt}: <b>loading</b>")
        if task.attempt < 3:
            raise ConnectionError(f"<i>warehouse</i> down at attempt {task.attempt}")
        return "loaded"

    bus = LocalBus(2)
    job.use_backend(Backend("embedded", store, bus))
    try:
        run_id = job.start()
        assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    finally:
        bus.close()
    detail = task_detail(store, run_id, "load")
    assert [(a["number"], a["outcome"]) for a in detail["attempts"]] == [
        (1, "failed"), (2, "failed"), (3, "succeeded")]
    assert detail["attempts"][0]["error_line"] == \
        "ConnectionError: <i>warehouse</i> down at attempt 1"
    assert detail["attempts"][0]["retry_at"] is not None
    assert [a["output"] for a in detail["attempts"]] == [
        f"attempt {n}: <b>loading</b>\n" for n in (1, 2, 3)]
    assert task_detail(store, run_id, "missing") is None
    page = client_for(store).get(f"/runs/{run_id}/tasks/load").text
    assert page.count('<div class="attempt ') == 3
    assert "attempt 2: &lt;b&gt;loading&lt;/b&gt;" in page and "<b>loading" not in page
    assert "ConnectionError: &lt;i&gt;warehouse&lt;/i&gt; down at attempt 2" in page



def test_a_changed_workflow_draws_the_edges_only_if_they_are_the_same(tmp_path) -> None:
    """A body or a setting that changed since the run started draws the same
    graph; changed dependencies would not, so the records draw it, saying why."""
    import json

    from function_flow.store.sqlite import SqliteStore

    job = Job("changing")
    job.task("a")(lambda task, job: 1)
    job.task("b", ["a"])(lambda task, job: 2)
    definition = versions.of(job.dag)
    store = SqliteStore(str(tmp_path / "state.db"))
    for run_id, part in (("settings-changed", 1), ("deps-changed", 0)):
        recorded = {}
        for task_id, fingerprint in definition.fingerprints.items():
            parts = fingerprint.split(".")
            if task_id == "b" and len(parts) == 3:
                parts[part] = "00000000"
            recorded[task_id] = ".".join(parts)
        add_run(store, run_id, [TaskRecord("a"), TaskRecord("b")], job_name="changing",
                task_versions=json.dumps(recorded))
    client = client_for(store, jobs={"changing": job})
    same = client.get("/runs/settings-changed").text
    assert same.count("marker-end=") == 1 and "Drawn from the run's records" not in same
    other = client.get("/runs/deps-changed").text
    assert other.count("marker-end=") == 0
    assert "the tasks or dependencies of job &#39;changing&#39; changed since this run " \
           "started" in other


def test_a_level_wider_than_8_wraps_onto_rows_below_its_dependencies() -> None:
    """README: a task sits a level below the deepest of its dependencies; a level
    wider than 8 wraps onto several rows (20 roots: rows of 8, 8 and 4)."""
    from function_flow.dashboard import layout

    job = Job("wide")
    for index in range(20):
        job.task(f"r{index:02}")(lambda task, job: None)
    job.task("mid", deps=["r00"])(lambda task, job: None)
    job.task("last", deps=["mid", "r19"])(lambda task, job: None)
    drawing = layout.layout(job.dag, foreach=set(), expanded=set(), item_counts={})
    rows: dict[float, list[str]] = {}
    for box in drawing.boxes:
        rows.setdefault(box.y, []).append(box.id)
    assert [len(ids) for _, ids in sorted(rows.items())] == [8, 8, 4, 1, 1]
    assert [ids for _, ids in sorted(rows.items())][3:] == [["mid"], ["last"]]
