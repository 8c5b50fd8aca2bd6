"""Approvals over HTTP (cloud/approval_routes.py), and on Google Cloud end to end.

In-process first: the callback behind Flask (what functions-framework
serves a function with), on the embedded store, for every kind of bad
request. Then the deployed topology on the emulators: `start`, `scheduler`
behind a Pub/Sub push subscription and the approval callback, each a
functions-framework process, approved over HTTP and with
`function-flow approve --file` (which publishes the follow-up to the
schedule topic, so the deployed scheduler runs the next task).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from typing import Any

import flask
import pytest

from emulators import PROJECT
from function_flow import approvals, backends
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import TransientBackendError
from function_flow.local.callback_server import LocalCallbackServer
from function_flow.store.sqlite import SqliteStore
from functions_stack import Stack, http_client, post, wait_for
from signatures import KEYS, TEST_HMAC_KEY, signed_headers
from test_approvals import approval_job, dump_store, records, started

pytestmark = pytest.mark.timeout(240)

WORKFLOW = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "approval.py"


# ------------------------------------------------------------ in-process


class SignedClient:
    """A Flask test client whose requests are signed with the test key."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def open(self, path: str, method: str = "POST", data: bytes = b"",
             json_body: Any = None, headers: dict[str, str] | None = None,
             **options: Any) -> Any:
        body = json.dumps(json_body).encode() if json_body is not None else data
        return self.client.open(path, method=method, data=body,
                                content_type="application/json",
                                headers=signed_headers(body) if headers is None else headers,
                                **options)

    def post(self, path: str, json: Any = None, **options: Any) -> Any:
        return self.open(path, json_body=json, **options)


def signed_post(url: str, body: Any) -> tuple[int, Any]:
    """POST `body` as JSON to a deployed callback, signed with the test key."""
    raw = (body if isinstance(body, str) else json.dumps(body)).encode()
    return post(url, raw, headers=signed_headers(raw))


@pytest.fixture
def served(tmp_path):
    """(job, tokens, client, run_id): a run waiting for approval, its callback served."""
    store = SqliteStore(str(tmp_path / "state.db"))
    bus = LocalBus(2)
    tokens: list[str] = []
    job = approval_job("http", tokens, timeout=3600)
    job.use_backend(Backend("embedded", store, bus, keys=KEYS))
    client = SignedClient(http_client(job.make_callback(), "approval-callback-test"))
    run_id = started(job, tokens)
    yield job, tokens, client, run_id
    bus.close()
    store.close()


def test_post_approve_completes_the_task_with_the_data(served) -> None:
    job, tokens, client, run_id = served

    answer = client.post("/approve", json={"token": tokens[0], "data": {"ok": True}})

    assert answer.status_code == 200, answer.json
    assert {k: v for k, v in answer.json.items() if k != "run_status"} == \
        {"outcome": "approved", "run_id": run_id, "task_id": "ask"}
    assert answer.json["run_status"] in ("RUNNING", "SUCCEEDED")  # use may be done already
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    assert records(job, run_id)["use"].result == {"got": {"ok": True}}
    again = client.post("/approve", json={"token": tokens[0], "data": "again"})
    assert again.status_code == 404 and "already used" in again.json["error"]
    assert records(job, run_id)["ask"].result == {"ok": True}


def test_post_reject_fails_the_task_with_the_reason(served) -> None:
    job, tokens, client, run_id = served

    answer = client.post("/reject/", json={"token": tokens[0], "reason": "no budget"})

    assert answer.status_code == 200, answer.json
    assert answer.json["outcome"] == "rejected" and answer.json["run_status"] == "FAILED"
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.FAILED and "ApprovalRejected: no budget" in run.error


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/approve", b"{not json", 400, "not JSON"),
    ("POST", "/approve", b"", 400, "not JSON"),
    ("POST", "/approve", b'["TOKEN"]', 400, "JSON object"),
    ("POST", "/approve", b'{"data": 1}', 400, "needs \\\"token\\\""),
    ("POST", "/approve", b'{"token": 12}', 400, "needs \\\"token\\\""),
    ("POST", "/approve", b'{"token": "no good!"}', 400, "not an approval token"),
    ("POST", "/approve", b'{"token": "TOKEN", "data": NaN}', 400, "NaN"),
    ("POST", "/reject", b'{"token": "TOKEN", "reason": ["x"]}', 400, "text"),
    ("POST", "/approve", b'{"token": "TOKEN", "data": "' + b"x" * 950_000 + b'"}', 400,
     "more than the 900,000"),  # under the 1 MiB body limit, over what a record holds
    ("POST", "/approve", b'{"token": "' + b"x" * 43 + b'"}', 404, "unknown approval token"),
    ("POST", "/approve", b'{"token": "TOKEN", "data": "' + b"x" * 2_000_000 + b'"}', 413,
     "more than the 1,048,576 bytes an approval or a rejection may take"),
    ("POST", "/elsewhere", b'{"token": "TOKEN"}', 404, "no callback route '/elsewhere'; this "
     "function serves POSTs to /approve, /heartbeat, /openfaas, /reject"),
    ("GET", "/approve", b"", 405, "POST"),
    ("PUT", "/approve", b'{"token": "TOKEN"}', 405, "POST"),
])
def test_bad_requests_get_a_4xx_json_error_and_change_nothing(served, method, path, body,
                                                              status, fragment) -> None:
    job, tokens, client, run_id = served
    before = records(job, run_id)

    answer = client.open(path, method=method, data=body.replace(b"TOKEN", tokens[0].encode()))

    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert fragment in json.dumps(answer.json["error"]), answer.json
    assert records(job, run_id) == before
    assert client.post("/approve", json={"token": tokens[0]}).status_code == 200


def test_an_approval_not_signed_with_our_key_gets_401_and_changes_nothing(served) -> None:
    job, tokens, client, run_id = served
    before = records(job, run_id)
    body = json.dumps({"token": tokens[0], "data": "forged"}).encode()
    now = int(time.time())
    refusals = {
        "not signed": {},
        "does not match": signed_headers(body, key="another-key-0123456789abcdef012345"),
        "replay": signed_headers(body, timestamp=now - 301),
        "malformed": {**signed_headers(body), "X-Function-Flow-Timestamp": "soon"},
    }
    for fragment, headers in refusals.items():
        answer = client.open("/approve", data=body, headers=headers)
        assert answer.status_code == 401, (fragment, answer.json)
        assert fragment in answer.json["error"] and "nothing was changed" in answer.json["error"]
        assert records(job, run_id) == before
    other = json.dumps({"token": tokens[0], "data": "other"}).encode()
    answer = client.open("/approve", data=other, headers=signed_headers(body))
    assert answer.status_code == 401 and records(job, run_id) == before  # a changed body
    assert client.post("/approve", json={"token": tokens[0]}).status_code == 200


def test_a_token_of_a_run_that_just_ended_gets_409_and_changes_nothing(served) -> None:
    """The moment between a run's end committing and its end forgetting the
    tokens (leftovers.retire): the token is still there, the run is not."""
    job, tokens, client, run_id = served
    job.engine.store.transact(lambda tx: tx.update_run(run_id, {"status": "FAILED"}))
    before = records(job, run_id)

    answer = client.post("/approve", json={"token": tokens[0], "data": "late"})

    assert answer.status_code == 409, answer.json
    assert "already ended (FAILED)" in answer.json["error"]
    assert "nothing was changed" in answer.json["error"]
    assert records(job, run_id) == before
    assert records(job, run_id)["ask"].status is TaskStatus.RUNNING


def test_a_store_that_fails_for_a_moment_gets_503_and_the_same_request_then_works(
        served, monkeypatch) -> None:
    job, tokens, client, run_id = served
    store = job.engine.store
    before = records(job, run_id)

    def unavailable(trigger_id: str) -> Any:
        raise TransientBackendError("the store did not answer in time")

    monkeypatch.setattr(store, "get_trigger", unavailable)
    answer = client.post("/approve", json={"token": tokens[0], "data": "first try"})

    assert answer.status_code == 503, answer.json
    assert "retry later" in answer.json["error"]
    assert records(job, run_id) == before
    monkeypatch.undo()
    again = client.post("/approve", json={"token": tokens[0], "data": "second try"})
    assert again.status_code == 200, again.json
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    assert records(job, run_id)["ask"].result == "second try"


def test_an_expired_token_gets_410(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "state.db"))
    bus = LocalBus(2)
    tokens: list[str] = []
    job = approval_job("http_expired", tokens, timeout=0.3)
    job.use_backend(Backend("embedded", store, bus, lease_check_messages=False, keys=KEYS))
    callback = job.make_callback()
    app = flask.Flask("approval-callback-expired")
    app.add_url_rule("/approve", view_func=lambda: callback(flask.request), methods=["POST"])
    run_id = started(job, tokens)
    wait_for(lambda: records(job, run_id)["ask"].lease_until < job.engine.clock(),
             "the timeout to pass")

    answer = SignedClient(app.test_client()).post("/approve", json={"token": tokens[0]})

    assert answer.status_code == 410 and "expired" in answer.json["error"]
    assert records(job, run_id)["ask"].status is TaskStatus.RUNNING
    bus.close()
    store.close()


# ------------------------------------------------- deployed, on the emulators


@pytest.fixture
def stack(gcp_env, tmp_path) -> Any:
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(tmp_path / "ran.jsonl")),
                  PROJECT)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def deployed(stack, firestore_store):
    """start, scheduler (pushed from the schedule topic) and callback."""
    scheduler = stack.function(WORKFLOW, "scheduler", "http")
    start = stack.function(WORKFLOW, "start", "http")
    callback = stack.function(WORKFLOW, "callback", "http")
    stack.ensure_topic()
    stack.push(scheduler)
    return start, callback


def start_waiting(start, store, token_file: pathlib.Path) -> tuple[str, str]:
    status, body = post(start.url, {"token_file": str(token_file)})
    assert status == 200, body
    run_id = body["run_id"]
    wait_for(token_file.exists, "the approval token")
    wait_for(lambda: store.get_tasks(run_id, ["ask"])[0].trigger_id, "the wait to be recorded")
    return run_id, token_file.read_text()


def final_run(store, run_id: str):
    return wait_for(lambda: (run := store.get_run(run_id)) is not None
                    and run.status.is_final and run, f"run {run_id} to end")


def test_deployed_http_approve_and_reject(deployed, firestore_store, tmp_path) -> None:
    start, callback = deployed
    run_id, token = start_waiting(start, firestore_store, tmp_path / "one.txt")

    status, body = post(callback.url + "/approve", {"token": token, "data": "unsigned"})
    assert status == 401 and "not signed" in body["error"], body
    status, body = signed_post(callback.url + "/approve", {"token": token, "data": {"by": "ana"}})

    assert status == 200, body
    assert final_run(firestore_store, run_id).status is RunStatus.SUCCEEDED
    use = firestore_store.get_tasks(run_id, ["use"])[0]
    assert use.result == {"got": {"by": "ana"}}
    status, body = signed_post(callback.url + "/approve", {"token": token, "data": "again"})
    assert status == 404 and "already used" in body["error"]
    status, body = signed_post(callback.url + "/approve", {"token": "x" * 43})
    assert status == 404
    status, body = signed_post(callback.url + "/approve", "{not json")
    assert status == 400

    other, token2 = start_waiting(start, firestore_store, tmp_path / "two.txt")
    status, body = signed_post(callback.url + "/reject", {"token": token2, "reason": "nope"})
    assert status == 200 and body["outcome"] == "rejected", body
    run = final_run(firestore_store, other)
    assert run.status is RunStatus.FAILED and "ApprovalRejected: nope" in run.error

    stored = dump_store(firestore_store)
    assert token not in stored and token2 not in stored
    assert approvals.token_hash(token) in stored  # the scan reads the trigger ids


def cli(env: dict[str, str], cwd: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "function_flow.cli", *args], cwd=cwd,
                          env=full, capture_output=True, text=True, timeout=120)


def test_deployed_run_approved_with_the_cli(deployed, stack, firestore_store,
                                            tmp_path) -> None:
    start, _ = deployed
    run_id, token = start_waiting(start, firestore_store, tmp_path / "mail.txt")
    before = {t.task_id: t for t in firestore_store.get_tasks(run_id)}

    no_file = cli(stack.env, tmp_path, "approve", token)
    assert no_file.returncode == 2 and "--file" in no_file.stderr, no_file.stderr
    assert "POST the token to the deployed callback's /approve" in no_file.stderr
    assert len(no_file.stderr.strip().splitlines()) == 1
    assert {t.task_id: t for t in firestore_store.get_tasks(run_id)} == before

    approved = cli(stack.env, tmp_path, "approve", token, "--file", str(WORKFLOW),
                   "--data", '{"n": 5}')

    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.splitlines() == [
        f"approved: task ask of run {run_id} succeeded",
        f"the deployed functions continue the run; follow it with function-flow status "
        f"{run_id}"]
    assert final_run(firestore_store, run_id).status is RunStatus.SUCCEEDED
    assert firestore_store.get_tasks(run_id, ["use"])[0].result == {"got": {"n": 5}}

    reused = cli(stack.env, tmp_path, "approve", token, "--file", str(WORKFLOW))
    assert reused.returncode == 2 and "already used" in reused.stderr
    assert len(reused.stderr.strip().splitlines()) == 1
    assert firestore_store.get_tasks(run_id, ["ask"])[0].result == {"n": 5}
    assert token not in dump_store(firestore_store)


@pytest.mark.parametrize("hmac_key", [None, "set"])
def test_the_local_callback_server_serves_approvals_signed_with_the_set_key(
        tmp_path, monkeypatch, caplog, hmac_key) -> None:
    """A `function-flow run`'s own callback server: without FUNCTION_FLOW_HMAC_KEY
    only that process can sign, and the 401 says to set it."""
    for name in [k for k in os.environ if k.startswith("FUNCTION_FLOW_")]:
        monkeypatch.delenv(name)
    if hmac_key:
        monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
    backend = backends.embedded(str(tmp_path / "state.db"), workers=2)
    tokens: list[str] = []
    job = approval_job("local_server", tokens, timeout=3600)
    job.use_backend(backend)
    server = LocalCallbackServer(backend)
    caplog.set_level("INFO", logger="werkzeug")
    try:
        run_id = started(job, tokens)
        status, answer = signed_post(server.url() + "approve", {"token": tokens[0]})
        if hmac_key:
            assert status == 200 and answer["outcome"] == "approved", answer
        else:
            assert status == 401 and "set FUNCTION_FLOW_HMAC_KEY" in answer["error"], answer
            assert records(job, run_id)["ask"].status is TaskStatus.RUNNING
    finally:
        server.close()
        backend.close()
    # No access line (werkzeug writes them to the command's stderr, signed URL and all).
    assert "POST /approve" not in caplog.text
