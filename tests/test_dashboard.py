"""The dashboard through Flask's test client: its pages and actions, on each store.

Runs are written straight into the store (dashboard_runs.add_run), so each
test sees exactly the state it names; the live behaviour in a real browser
is test_dashboard_browser.py. What is checked is what a user gets: status
codes, the messages, what a page shows (and does not), and that a refused
action changed nothing. Also: test_dashboard_safety.py (cross-site posts,
escaping, stores that fail), test_dashboard_graph.py (the graph and the
attempts), test_dashboard_scale.py (big runs, what a live poll reads).
"""

from __future__ import annotations

import html
import os
import re
import time
from typing import Any

from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job

from dashboard_runs import add_run, client_for, token_of


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
    assert 'data-interval="1.0"' in page.text  # a small run's page asks every second
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
    add_run(store, "r", [TaskRecord("a"), TaskRecord("b", status=TaskStatus.SUCCEEDED,
                                                     attempt=1, result=3)])
    client = client_for(store)
    assert client.get("/api/runs/r/items/b").json["error"] == \
        "task 'b' of run r is not a foreach: it has no items"
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



def test_pages_of_50_runs_up_to_500_and_a_long_result_cut_at_4000_characters(
        tmp_path) -> None:
    """README: 50 runs a page (`?limit=` up to 500); a task's result as JSON, cut at
    4,000 characters, on its page and in /api/runs/RUN/tasks/TASK alike."""
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    for number in range(51):
        add_run(store, f"run-{number:02}", [TaskRecord("a")], created_at=100.0 + number)
    add_run(store, "long", [TaskRecord("a", status=TaskStatus.SUCCEEDED, attempt=1,
                                       result={"text": "x" * 10_000})],
            created_at=10.0, status="SUCCEEDED")
    client = client_for(store)
    first = client.get("/").text
    assert len(re.findall(r'<tr data-run="', first)) == 50 and 'rel="next"' in first
    assert len(client.get("/api/runs?limit=500").json["runs"]) == 52
    refused = client.get("/api/runs?limit=501")
    assert refused.status_code == 400
    assert refused.json["error"] == "the 'limit' parameter must be from 1 to 500, got 501"

    shown = client.get("/api/runs/long/tasks/a").json["result"]
    assert shown.startswith('{"text": "xxx') and shown.endswith("... (10012 chars)")
    assert len(shown) == 4000 + len("... (10012 chars)")
    page = client.get("/runs/long/tasks/a").text
    assert "x" * 3990 in page and "x" * 4000 not in page and "(10012 chars)" in page
    add_run(store, "fanned", [TaskRecord("each", status=TaskStatus.SUCCEEDED, attempt=1,
                                         result={"__foreach__": "each", "items": 1200,
                                                 "mapping": False})],
            created_at=11.0, status="SUCCEEDED")
    assert client.get("/api/runs/fanned/tasks/each").json["result"] == \
        "the results of its 1,200 items, in item order"



def test_a_running_run_whose_process_died_says_process_gone(tmp_path) -> None:
    import socket
    import subprocess

    from function_flow.store.sqlite import SqliteStore

    ended = subprocess.Popen(["true"])
    ended.wait()  # a pid no process has now
    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "orphan", [TaskRecord("a", status=TaskStatus.RUNNING, attempt=1)],
            owner=f"{socket.gethostname()}:{ended.pid}")
    add_run(store, "here", [TaskRecord("a")], created_at=50.0,
            owner=f"{socket.gethostname()}:{os.getpid()}")
    client = client_for(store)
    notes = {r["run_id"]: r["note"] for r in client.get("/api/runs").json["runs"]}
    assert notes == {"orphan": "process gone", "here": None}
    assert '<span class="note">(process gone)</span>' in client.get("/").text



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



def test_a_redrive_without_the_workflow_is_a_409_saying_so(tmp_path) -> None:
    """README: redrive needs the workflow (the file the run recorded, or --file)."""
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    failed = [TaskRecord("a", status=TaskStatus.FAILED, attempt=1, error="ValueError: x")]
    add_run(store, "deployed", failed, status="FAILED", finished_at=150.0)
    add_run(store, "moved", failed, status="FAILED", finished_at=150.0,
            source=str(tmp_path / "gone.py"))
    client = client_for(store)
    for run_id, why in (("deployed", "records no workflow file: start the dashboard with "
                                     "--file FILE.py"),
                        ("moved", "gone.py (the workflow file) does not exist")):
        before = store.get_run(run_id)
        answer = client.post(f"/runs/{run_id}/actions/redrive",
                             data={"csrf_token": token_of(client, run_id)},
                             headers={"Accept": "application/json"})
        assert answer.status_code == 409
        assert answer.json["error"].startswith(f"redriving run {run_id} needs its workflow: ")
        assert why in answer.json["error"] and answer.json["error"].endswith(
            "nothing was changed")
        assert store.get_run(run_id) == before



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



def test_resume_on_google_cloud_sends_the_queued_tasks_on_the_schedule_topic(
        gcp_env: dict, firestore_store: Any, monkeypatch) -> None:
    """On the emulators: the deployed scheduler's topic gets the held task again."""
    import uuid

    from google.cloud import pubsub_v1

    from function_flow.config import Settings
    from function_flow.core.messages import Message

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
    again = client.post("/runs/held/actions/resume", data={"csrf_token": token}, headers=json)
    assert (again.status_code, again.json["message"]) == (
        200, "run held is not paused: there is nothing to resume; nothing was changed")
    pulled = subscriber.pull(request={"subscription": subscription, "max_messages": 10},
                             timeout=30).received_messages
    assert [Message.from_json(m.message.data) for m in pulled] == [Message("held", "a", 1)]
    subscriber.close()
