"""The dashboard refuses what it must and says why: cross-site posts change nothing,
HTML in results, errors and ids is shown as text, a store that cannot be read or
a list that lacks its Firestore index is a 503 naming the cause.
"""

from __future__ import annotations

import re
from typing import Any

from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.dashboard import create_app

from dashboard_runs import SCRIPT, add_run, client_for, token_of


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



def test_flasks_own_refusals_are_the_dashboards_errors_too(tmp_path) -> None:
    """An unknown path, a wrong method, a body over the limit and a Host that is not
    the dashboard's are answered like every other error: JSON under /api/ (or when
    asked for), else the error page; never Flask's bare HTML."""
    from function_flow.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "state.db"))
    add_run(store, "live", [TaskRecord("a", status=TaskStatus.RUNNING, attempt=1)])
    client = client_for(store)
    token = token_of(client, "live")
    as_json = {"Accept": "application/json"}
    answers = [
        (client.get("/api/nope"), 404, "no page at '/api/nope'"),
        (client.get("/api/runs/live/tasks"), 404, "no page at"),
        (client.get("/runs/live/actions/pause", headers=as_json), 405,
         "get is not allowed on '/runs/live/actions/pause'"),
        # Without the dashboard's token too: the route takes no such method.
        (client.delete("/api/runs"), 405, "delete is not allowed on '/api/runs'"),
        (client.post("/api/nope"), 404, "no page at '/api/nope'"),
        (client.post("/runs/live/actions/pause", data={"csrf_token": token,
                                                        "pad": "x" * 3 * 1024 * 1024},
                     headers=as_json), 413, "over the dashboard's 2,097,152 bytes"),
        (client.get("/api/runs", headers={"Host": "evil.example:8765"}), 400,
         "evil.example:8765"),
    ]
    for answer, status, words in answers:
        assert answer.status_code == status, (status, answer.text[:200])
        assert answer.is_json and words in answer.json["error"].lower(), answer.text[:200]
    page = client.get("/runs/live/nothing-here")
    assert page.status_code == 404 and 'id="error"' in page.text
    # A page for a Host it does not trust could link nowhere: JSON for a browser too.
    refused = client.get("/", headers={"Host": "evil.example:8765"})
    assert refused.status_code == 400 and refused.json["error"].startswith(
        "Host 'evil.example:8765' is not trusted. This dashboard answers only its loopback")
    assert store.get_run("live").paused_at is None


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



def test_a_store_that_cannot_be_read_is_a_503_saying_why(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    garbage = tmp_path / "not.db"
    garbage.write_bytes(b"this is not a database" * 100)
    client = create_app(lambda: SqliteStore(str(garbage))).test_client()
    answer = client.get("/api/runs")
    assert answer.status_code == 503
    assert answer.json["error"].startswith(f"cannot open the database {garbage}: it is not a "
                                           "SQLite database")



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
