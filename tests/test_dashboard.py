"""The dashboard through Flask's test client: bad input, escaping, scale, on each store.

Runs are written straight into the store (records as the engine writes
them), so each test sees exactly the state it names, in milliseconds; the
live behaviour in a real browser is test_dashboard_browser.py. What is
checked is what a user gets: status codes, the messages, what a page shows
(and does not), and that a refused action changed nothing.
"""

from __future__ import annotations

import html
import re
import time
from typing import Any

from function_flow.core import versions
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.dashboard import create_app
from function_flow.dashboard.details import task_detail
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


def test_list_run_page_and_actions_on_each_store(store: Any) -> None:
    """Filtered, newest first, paged; a run's page; pause through a button."""
    for number, (job_name, status) in enumerate([("alpha", "FAILED"), ("beta", "FAILED"),
                                                 ("alpha", "SUCCEEDED"), ("alpha", "RUNNING")]):
        add_run(store, f"run-{number}", [TaskRecord("a", status=TaskStatus.SUCCEEDED),
                                         TaskRecord("b", deps_done={"a": "SUCCEEDED"})],
                job_name=job_name, created_at=100.0 + number, status=status)
    client = client_for(store)

    def listed(query: str) -> list[str]:
        return re.findall(r'<tr data-run="([^"]+)"', client.get("/" + query).text)

    assert listed("") == ["run-3", "run-2", "run-1", "run-0"]
    assert listed("?job=alpha&status=FAILED") == ["run-0"]
    assert listed("?job=nobody") == []
    first = client.get("/?job=alpha&limit=2").text
    assert re.findall(r'<tr data-run="([^"]+)"', first) == ["run-3", "run-2"]
    older = html.unescape(re.search(r'rel="next" href="([^"]+)"', first).group(1))
    assert re.findall(r'<tr data-run="([^"]+)"', client.get(older).text) == ["run-0"]
    assert [r["run_id"] for r in client.get("/api/runs?status=FAILED").json["runs"]] == \
        ["run-1", "run-0"]

    page = client.get("/runs/run-3")
    assert page.status_code == 200
    assert 'data-node="a"' in page.text and 'class="node task st-SUCCEEDED"' in page.text
    assert client.get("/api/runs/run-3").json["summary"] == "1/2 done, 0 running, 0 failed"
    answer = client.post("/runs/run-3/actions/pause", data={"csrf_token": token_of(
        client, "run-3")}, headers={"Accept": "application/json"})
    assert answer.status_code == 200, answer.text
    assert answer.json["message"].startswith("paused run run-3")
    assert store.get_run("run-3").paused_at is not None
    assert client.get("/api/runs/run-3").json["status"] == "PAUSED"


def test_unknown_runs_tasks_and_bad_parameters(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "r", [TaskRecord("a")])
    client = client_for(store)
    page = client.get("/runs/nope")
    assert page.status_code == 404 and "no run with id &#39;nope&#39;" in page.text
    assert client.get("/api/runs/nope").json == {
        "error": "no run with id 'nope' in the embedded store", "run_id": "nope"}
    assert client.get("/runs/r/tasks/zzz").status_code == 404
    assert client.get("/api/runs/r/tasks/zzz").status_code == 404
    assert client.get("/runs/r/items/zzz").status_code == 404
    token = token_of(client, "r")
    answer = client.post("/runs/nope/actions/cancel", data={"csrf_token": token},
                         headers={"Accept": "application/json"})
    assert answer.status_code == 404 and "no run with id 'nope'" in answer.json["error"]
    assert client.post("/runs/r/actions/explode", data={"csrf_token": token}).status_code == 404
    for query, words in (("?status=DONE", "status must be one of"),
                         ("?limit=0", "'limit' parameter must be from 1"),
                         ("?before=yesterday", "'before' parameter must be")):
        answer = client.get("/api/runs" + query)
        assert answer.status_code == 400 and words in answer.json["error"], query
    assert client.get("/runs/r/items/a?page=x").status_code == 400
    # A name that is not this dashboard's (DNS rebinding) reads nothing.
    assert client.get("/", headers={"Host": "evil.example:8765"}).status_code == 400


def test_actions_on_an_ended_run_are_refused_and_change_nothing(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "done", [TaskRecord("a", status=TaskStatus.SUCCEEDED)],
            status="SUCCEEDED", finished_at=150.0)
    client = client_for(store)
    token = token_of(client, "done")
    before = store.get_run("done")
    for action in ("pause", "resume", "cancel"):
        answer = client.post(f"/runs/done/actions/{action}", data={"csrf_token": token},
                             headers={"Accept": "application/json"})
        assert answer.status_code == 409, action
        assert answer.json["error"].startswith("run done already ended (SUCCEEDED): it "
                                               "cannot be ")
        assert answer.json["error"].endswith("nothing was changed")
    answer = client.post("/runs/done/actions/redrive", data={"csrf_token": token})
    assert answer.status_code == 409
    assert "only FAILED or CANCELLED runs can be redriven" in answer.text
    assert store.get_run("done") == before
    assert [t.status for t in store.get_tasks("done")] == [TaskStatus.SUCCEEDED]


def test_cross_site_posts_are_refused_and_change_nothing(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "live", [TaskRecord("a", status=TaskStatus.RUNNING, attempt=1)])
    client = client_for(store)
    token = token_of(client, "live")
    refusals = [({"csrf_token": token}, {"Origin": "http://evil.example"}, "from 'http://"),
                ({"csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}, "cross-site"),
                ({"csrf_token": token}, {"Sec-Fetch-Site": "same-site"}, "same-site"),
                ({}, {}, "lacks this dashboard's token"),
                ({"csrf_token": "guess"}, {"Origin": "http://localhost"}, "lacks")]
    for form, headers, words in refusals:
        for action in ("pause", "cancel"):
            answer = client.post(f"/runs/live/actions/{action}", data=form,
                                 headers={"Accept": "application/json", **headers})
            assert answer.status_code == 403, (form, headers)
            assert words in answer.json["error"] and "nothing was changed" in answer.json["error"]
    answer = client.post("/runs/live/approvals", data={"decision": "approve", "token": "x" * 43})
    assert answer.status_code == 403
    run = store.get_run("live")
    assert run.status is RunStatus.RUNNING and run.paused_at is None
    assert store.get_tasks("live")[0].status is TaskStatus.RUNNING
    # The dashboard's own page, as a browser sends it, acts.
    answer = client.post("/runs/live/actions/cancel", data={"csrf_token": token},
                         headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert answer.status_code == 303
    assert store.get_run("live").status is RunStatus.CANCELLED
    assert "cancelled run live" in client.get("/runs/live").text  # the flashed message


def test_html_in_results_errors_and_ids_is_shown_as_text(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "x", [
        TaskRecord("shown", status=TaskStatus.SUCCEEDED, attempt=1, result={"html": SCRIPT}),
        TaskRecord("broken", status=TaskStatus.FAILED, attempt=2,
                   error=f"Traceback...\nValueError: {SCRIPT}<img src=x onerror=alert(2)>"),
        TaskRecord("fan", status=TaskStatus.RUNNING, attempt=1,
                   result={"__foreach__": "fan", "items": 1, "mapping": True}),
        TaskRecord("fan[0]", status=TaskStatus.FAILED, attempt=1, role="item", template="fan",
                   item=SCRIPT, item_key=SCRIPT, error=SCRIPT, deps=[]),
        TaskRecord("__on_failure__", status=TaskStatus.FAILED, attempt=1, error=SCRIPT)],
        status="FAILED", error=f"failed: {SCRIPT}")
    client = client_for(store)
    pages = [client.get(path).text for path in (
        "/", "/runs/x", "/runs/x?open=fan", "/runs/x/tasks/shown", "/runs/x/tasks/broken",
        "/runs/x/tasks/fan%5B0%5D", "/runs/x/items/fan", "/runs/x/items/fan?status=FAILED")]
    for page in pages:
        assert "<script>alert" not in page and "<img src=x" not in page
        assert not re.search(r"<script(?! src=\"/static/live\.js\")", page)
    assert "&lt;script&gt;alert(&#39;pwned&#39;)&lt;/script&gt;" in pages[3]  # the result
    assert re.search(r">on_failure</a>.*?st-FAILED.*?&lt;script&gt;", pages[1], re.S)  # a hook
    assert "&lt;img src=x onerror=alert(2)&gt;" in pages[4]  # the traceback
    assert pages[6].count("&lt;script&gt;") >= 2  # the item's key and error
    assert client.get("/api/runs/x/tasks/broken").json["error"].endswith(
        "<img src=x onerror=alert(2)>")  # JSON keeps the text; the page escapes it
    assert "script-src 'self'" in client.get("/runs/x").headers["Content-Security-Policy"]


def big_job() -> Job:
    """1,000 tasks in 10 levels of 100 (each waits for one of the level above),
    plus a foreach over the first task's result."""
    job = Job("big")
    for level in range(10):
        for index in range(100):
            deps = [f"t{level - 1}_{index}"] if level else None
            job.task(f"t{level}_{index}", deps)(lambda task, job: None)
    job.foreach("fan", over="t0_0")(lambda task, job: None)
    return job


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
    assert page.count('marker-end="url(#arrow)"') == 901  # every edge of the definition
    assert 'data-cell="' not in page
    assert "10,000/10,000 items done, 10 failed" in page
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



def test_approve_and_redrive_a_run_of_this_process(tmp_path) -> None:
    """A Job given to create_app: its own engine records the decision and runs
    the redriven tasks, as `function-flow approve` and `redrive` would."""
    from function_flow import futures
    from function_flow.backends import Backend
    from function_flow.bus.local import LocalBus
    from function_flow.store.sqlite import SqliteStore
    from functions_stack import wait_for

    store = SqliteStore(str(tmp_path / "state.db"))
    tokens: list[str] = []
    fixed: list[bool] = []
    job = Job("decided")

    @job.task("ask")
    def ask(task: Any, job: Any) -> Any:
        approval = futures.Approval(timeout=3600)
        tokens.append(approval.token)
        return approval

    @job.task("load", ["ask"])
    def load(task: Any, job: Any) -> Any:
        if not fixed:
            raise RuntimeError("the warehouse is down")
        return job.get_task_result("ask")

    bus = LocalBus(2)
    job.use_backend(Backend("embedded", store, bus))
    client = client_for(store, jobs={job.name: job})
    try:
        run_id = job.start()
        wait_for(lambda: tokens and store.get_tasks(run_id, ["ask"])[0].trigger_id,
                 "ask to wait for its approval")
        assert "Approve" in client.get(f"/runs/{run_id}/tasks/ask").text
        token = token_of(client, run_id)
        json = {"Accept": "application/json"}
        wrong = client.post(f"/runs/{run_id}/approvals", headers=json, data={
            "csrf_token": token, "decision": "approve", "token": "A" * 43})
        assert wrong.status_code == 404 and "unknown approval token" in wrong.json["error"]
        bad = client.post(f"/runs/{run_id}/approvals", headers=json, data={
            "csrf_token": token, "decision": "approve", "token": tokens[0], "data": "{nope"})
        assert bad.status_code == 400 and bad.json["error"].endswith("nothing was changed")
        assert store.get_tasks(run_id, ["ask"])[0].status is TaskStatus.RUNNING
        approved = client.post(f"/runs/{run_id}/approvals", headers=json, data={
            "csrf_token": token, "decision": "approve", "token": tokens[0],
            "data": '{"ok": true}'})
        assert approved.status_code == 200, approved.text
        assert approved.json["message"].startswith("approved: task ask succeeded")
        wait_for(lambda: store.get_run(run_id).status is RunStatus.FAILED, "load to fail")

        fixed.append(True)
        redriven = client.post(f"/runs/{run_id}/actions/redrive", headers=json,
                               data={"csrf_token": token})
        assert redriven.status_code == 200, redriven.text
        assert redriven.json["message"] == f"redriving run {run_id} (redrive 1) in this process"
        wait_for(lambda: store.get_run(run_id).status is RunStatus.SUCCEEDED, "the redrive")
        assert store.get_tasks(run_id, ["load"])[0].result == {"ok": True}
        again = client.post(f"/runs/{run_id}/actions/redrive", headers=json,
                            data={"csrf_token": token})
        assert again.status_code == 409 and "is SUCCEEDED" in again.json["error"]
    finally:
        assert bus.wait_idle(30)
        bus.close()
        store.close()


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


def test_a_store_that_cannot_be_read_is_a_503_saying_why(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    garbage = tmp_path / "not.db"
    garbage.write_bytes(b"this is not a database" * 100)
    client = create_app(lambda: SqliteStore(str(garbage))).test_client()
    answer = client.get("/api/runs")
    assert answer.status_code == 503
    assert answer.json["error"].startswith(f"cannot open the database {garbage}: it is not a "
                                           "SQLite database")


def test_resume_on_google_cloud_sends_the_queued_tasks_on_the_schedule_topic(
        gcp_env: dict, firestore_store: Any, monkeypatch) -> None:
    """On the emulators: the deployed scheduler's topic gets the held task again."""
    import uuid

    from google.cloud import pubsub_v1

    from function_flow.config import Settings
    from function_flow.core.records import Message

    topic = f"dash-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FUNCTION_FLOW_SCHEDULE_TOPIC", topic)
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path("function-flow-local", topic)
    subscription = subscriber.subscription_path("function-flow-local", topic + "-pull")
    publisher.create_topic(request={"name": topic_path})
    subscriber.create_subscription(request={"name": subscription, "topic": topic_path})
    add_run(firestore_store, "held", [TaskRecord("a", status=TaskStatus.QUEUED, attempt=1)],
            paused_at=time.time())
    client = client_for(firestore_store, kind="gcp", settings=Settings.from_env())
    token = token_of(client, "held")
    json = {"Accept": "application/json"}
    redrive = client.post("/runs/held/actions/redrive", data={"csrf_token": token},
                          headers=json)
    assert redrive.status_code == 409 and "only FAILED or CANCELLED" in redrive.json["error"]
    answer = client.post("/runs/held/actions/resume", data={"csrf_token": token}, headers=json)
    assert answer.status_code == 200, answer.json
    assert answer.json["message"] == ("resumed run held: sent its 1 queued task(s) again; "
                                      "the deployed functions continue it")
    assert firestore_store.get_run("held").paused_at is None
    pulled = subscriber.pull(request={"subscription": subscription, "max_messages": 10},
                             timeout=30).received_messages
    assert [Message.from_json(m.message.data) for m in pulled] == [Message("held", "a", 1)]
    subscriber.close()


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


def test_a_filtered_list_without_its_composite_index_is_a_503_naming_it(tmp_path) -> None:
    """Production Firestore refuses a filtered list newest first until its index
    exists (the emulator never does): the page names the index, the rest works."""
    from function_flow.store.indexes import MissingIndexError
    from function_flow.store.sqlite import SqliteStore

    class Unindexed(SqliteStore):
        def list_runs(self, *args: Any, newest_first: bool = False, **kwargs: Any) -> Any:
            if newest_first and (kwargs.get("job_name") or kwargs.get("status")):
                raise MissingIndexError("listing runs by job_name newest first needs a "
                                        "composite index on runs: job_name, created_at "
                                        "descending")
            return super().list_runs(*args, newest_first=newest_first, **kwargs)

    store = Unindexed(str(tmp_path / "state.db"))
    add_run(store, "etl-1", [TaskRecord("a")], job_name="etl")
    client = create_app(lambda: store).test_client()
    assert client.get("/").status_code == 200
    refused = client.get("/?job=etl")
    assert refused.status_code == 503
    assert "composite index on runs: job_name, created_at descending" in refused.text
