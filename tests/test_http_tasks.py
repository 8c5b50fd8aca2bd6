"""HTTP and Cloud Run tasks on the embedded backend, against a local HTTP server.

Only Google's token service is replaced, at the client boundary
(google.oauth2.id_token.fetch_id_token); the requests, the server and the
backend are real.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid

import google.auth.exceptions
import google.auth.transport.requests
import google.oauth2.id_token
import pytest

from function_flow import DefinitionError, backends, remote, tasks
from function_flow.core.ports import Request
from function_flow.core.records import RunStatus
from function_flow.remote.http import HttpCaller
from function_flow.remote.web import RemoteCallError

pytestmark = pytest.mark.timeout(120)


class Service:
    """A small HTTP service: /echo, /status/N, /redirect, /hang, /private."""

    def __init__(self) -> None:
        self.seen: list[dict] = []
        self.release = threading.Event()
        service = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                service.seen.append({"path": self.path, "headers": dict(self.headers.items()),
                                     "body": json.loads(body)})
                if self.path == "/hang":
                    service.release.wait(60)
                    return self.answer(200, {"late": True})
                if self.path.startswith("/status/"):
                    return self.answer(int(self.path.rsplit("/", 1)[1]),
                                       "nope: " + "y" * 1000, "text/plain")
                if self.path == "/redirect":
                    return self.answer(302, "", "text/plain", Location="/echo")
                if self.path == "/private" and self.headers.get("Authorization") != \
                        "Bearer token-for-https://private.example/":
                    return self.answer(401, "missing or wrong token", "text/plain")
                return self.answer(200, {"payload": json.loads(body)})

            def answer(self, status, body, content_type="application/json", **headers):
                data = (json.dumps(body) if content_type == "application/json"
                        else body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def service():
    service = Service()
    yield service
    service.close()


@pytest.fixture
def tokens(monkeypatch):
    """Google's token service, replaced at the client boundary: records who asked."""
    asked = []

    def fetch_id_token(request, audience):
        assert isinstance(request, google.auth.transport.requests.Request)
        asked.append(audience)
        return f"token-for-{audience}"

    monkeypatch.setattr(google.oauth2.id_token, "fetch_id_token", fetch_id_token)
    return asked


@pytest.fixture
def new_job(tmp_path):
    made = []

    def make() -> tasks.Job:
        backend = backends.embedded(db_path=str(tmp_path / f"http-{len(made)}.db"), workers=2)
        made.append(backend)
        return tasks.Job(name="http", backend=backend)

    yield make
    for backend in made:
        backend.close()


def http_job(new_job, call, **options) -> tasks.Job:
    job = new_job()

    @job.task(task_id="enrich", call=call, task_args={"k": "v"}, **options)
    def enrich(task, job):
        return {"rows": 3}

    return job


def result_and_error(job, run):
    [record] = [r for r in job.engine.task_records(run.run_id) if r.task_id == "enrich"]
    return record.result, record.error


def test_an_http_task_posts_the_payload_and_its_answer_is_the_result(new_job, service,
                                                                     tokens):
    job = http_job(new_job, remote.Http(service.url + "/echo"))

    run = job.run({"day": 7}, timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    result, _ = result_and_error(job, run)
    payload = result["payload"]
    assert payload["job_args"] == {"day": 7} and payload["task_args"] == {"k": "v"}
    assert payload["result"] == {"rows": 3} and len(payload["job_id"]) == 32
    [seen] = service.seen
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["X-Function-Flow-Run-Id"] == run.run_id
    assert "Authorization" not in seen["headers"] and tokens == []


def test_with_an_audience_the_call_carries_a_google_id_token(new_job, service, tokens):
    job = http_job(new_job, remote.Http(service.url + "/private",
                                        audience="https://private.example/"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    assert tokens == ["https://private.example/"]
    assert service.seen[0]["headers"]["Authorization"] == \
        "Bearer token-for-https://private.example/"


def test_without_the_token_a_private_service_refuses_and_the_error_says_what_to_do(
        new_job, service, tokens):
    run = (job := http_job(new_job, remote.Http(service.url + "/private"))).run(timeout=60)

    assert run.status is RunStatus.FAILED
    _, error = result_and_error(job, run)
    assert "answered HTTP 401: missing or wrong token" in error and "audience=" in error


def test_no_credentials_for_a_token_fail_the_attempt_clearly(new_job, service, monkeypatch):
    def no_credentials(request, audience):
        raise google.auth.exceptions.DefaultCredentialsError("no default credentials")

    monkeypatch.setattr(google.oauth2.id_token, "fetch_id_token", no_credentials)
    job = http_job(new_job, remote.Http(service.url + "/private", audience="aud"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    _, error = result_and_error(job, run)
    assert "cannot get a Google ID token for audience 'aud'" in error
    assert "GOOGLE_APPLICATION_CREDENTIALS" in error
    assert not service.seen


@pytest.mark.parametrize("path, said", [
    ("/status/500", "answered HTTP 500: nope: yyy"),
    ("/status/404", "answered HTTP 404: nope: yyy"),
    ("/redirect", "answered HTTP 302 with an empty body"),
])
def test_a_non_2xx_answer_fails_the_attempt_with_status_and_body_start(new_job, service,
                                                                        path, said):
    job = http_job(new_job, remote.Http(service.url + path))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    _, error = result_and_error(job, run)
    assert f"HTTP endpoint {service.url}{path} {said}" in error
    assert "y" * 600 not in error
    assert [s["path"] for s in service.seen] == [path], "a redirect is not followed"


def test_a_hanging_service_fails_the_attempt_at_the_calls_timeout(new_job, service):
    # The call's timeout wins over the task's (which runs the body in a child here).
    job = http_job(new_job, remote.Http(service.url + "/hang", timeout=0.5), timeout=30)

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    _, error = result_and_error(job, run)
    assert "did not answer within 0.5 s" in error


def test_without_a_call_timeout_the_tasks_timeout_bounds_the_request(service):
    request = Request(job_id=uuid.uuid4().hex, run_id="r", task_id="enrich", attempt=1,
                      job_args={}, task_args={}, result=None)
    # The engine passes the task's timeout (here 0.5 s) to the caller.
    with pytest.raises(RemoteCallError, match="did not answer within 0.5 s"):
        HttpCaller().call(remote.Http(service.url + "/hang"), request, 0.5)


def test_an_unreachable_service_fails_the_attempt(new_job):
    job = http_job(new_job, remote.Http("http://127.0.0.1:9/nothing-listens"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    assert "cannot reach HTTP endpoint http://127.0.0.1:9/nothing-listens" in \
        result_and_error(job, run)[1]


@pytest.mark.parametrize("call, said", [
    (lambda: remote.Http(""), "needs an http:// or https:// URL"),
    (lambda: remote.Http(None), "needs an http:// or https:// URL"),
    (lambda: remote.Http("ftp://files.example/x"), "needs an http:// or https:// URL"),
    (lambda: remote.Http("enrich-service"), "needs an http:// or https:// URL"),
    (lambda: remote.Http("https://svc.example/", timeout=0), "positive number of seconds"),
    (lambda: remote.Http("https://svc.example/", timeout=True), "positive number of seconds"),
    (lambda: remote.Http("https://svc.example/", timeout=float("nan")),
     "positive number of seconds, got nan"),
    (lambda: remote.Http("https://svc.example/", timeout=float("inf")),  # failed at call time
     "positive number of seconds, got inf"),
    (lambda: remote.OpenFaaS("score", asynchronous="false"),  # it called asynchronously
     "OpenFaaS('score'): asynchronous must be True or False, got 'false'"),
])
def test_an_http_task_without_a_usable_url_or_timeout_is_a_definition_error(call, said):
    job = tasks.Job(name="defs")
    with pytest.raises(DefinitionError) as caught:
        job.task(task_id="enrich", call=call())(lambda: None)
    assert str(caught.value).startswith("task 'enrich': ") and said in str(caught.value)
    assert caught.value.task_id == "enrich"


@pytest.mark.parametrize("body, expected", [
    (b'{"loss": NaN, "best": -Infinity}', {"loss": "nan", "best": "-inf"}),
    (b"\xef\xbb\xbf{\"rows\": 3}", {"rows": "3"}),  # after a UTF-8 byte order mark
    (b"[1, 2", "[1, 2"),  # not JSON: the text
])
def test_an_answer_is_json_decoded_as_python_writes_it(body, expected) -> None:
    """NaN as Python's json.dumps writes it (an OpenFaaS Python template) comes
    back a float, as from a @remote.function; it stayed the answer's text."""
    from function_flow.remote.web import result_of

    value = result_of("the service", 200, body, "application/json")
    shown = {k: str(v) for k, v in value.items()} if isinstance(value, dict) else value
    assert shown == expected


@pytest.mark.parametrize("returned", [0, "", [], False, None])
def test_the_payload_leaves_result_out_when_the_body_returns_a_false_value(returned) -> None:
    """The README's OpenFaaS section: as Function Flow does (payload.get("result"))."""
    from function_flow.core.ports import Request

    sent = Request(job_id="j", run_id="r", task_id="t", attempt=1, job_args={"a": 1},
                   task_args={}, result=returned)
    assert sent.function_flow_payload() == {"job_id": "j", "job_args": {"a": 1},
                                            "task_args": {}}
    assert Request(job_id="j", run_id="r", task_id="t", attempt=1, job_args={},
                   task_args={}, result=3).function_flow_payload()["result"] == 3
