"""OpenFaaS tasks on the embedded backend, end to end, against a local gateway.

The gateway and its queue worker (tests/openfaas_gateway.py) follow
OpenFaaS's documented contract; everything else is real: job.run on the
embedded backend (SQLite, worker threads, forked children for timeouts),
requests over HTTP, and the callback server the backend starts on
127.0.0.1 for asynchronous answers.
"""

from __future__ import annotations

import re
import threading
import time
import uuid

import pytest
from functions_stack import wait_for
from openfaas_gateway import Gateway, Reply, post_callback

from function_flow import DefinitionError, backends, futures, remote, tasks
from function_flow.config import Settings
from function_flow.core.ports import Request
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ConfigurationError
from function_flow.remote import openfaas
from function_flow.remote.openfaas import OpenFaaSCaller
from signatures import KEYS

pytestmark = pytest.mark.timeout(120)

PASSWORD = "s3cret-" + uuid.uuid4().hex[:6]


@pytest.fixture
def gateway():
    with Gateway(user="admin", password=PASSWORD) as gateway:
        yield gateway


@pytest.fixture
def settings_env(monkeypatch, gateway):
    for name in ("FUNCTION_FLOW_CALLBACK_URL", "FUNCTION_FLOW_OPENFAAS_USER",
                 "FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE", "FUNCTION_FLOW_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUNCTION_FLOW_OPENFAAS_GATEWAY", gateway.url)
    monkeypatch.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD", PASSWORD)
    return monkeypatch


@pytest.fixture
def new_job(tmp_path, settings_env):
    """A factory of jobs, each on its own embedded backend (built after the env is set)."""
    made = []

    def make(name: str = "openfaas") -> tasks.Job:
        backend = backends.embedded(db_path=str(tmp_path / f"{name}.db"), workers=4)
        made.append(backend)
        return tasks.Job(name=name, backend=backend)

    yield make
    for backend in made:
        backend.close()


def records(job: tasks.Job, run_id: str) -> dict:
    return {r.task_id: r for r in job.engine.task_records(run_id)}


def remote_job(new_job, call, *, timeout=None, retries=0, send=None):
    """prepare -> remote (sends `send` or {"x": 21} to `call`) -> after (reads its result)."""
    job = new_job()

    @job.task(task_id="prepare")
    def prepare(task, job):
        return {"x": 21}

    @job.task(task_id="remote", deps=["prepare"], call=call, timeout=timeout,
              retries=retries, retry_backoff=0, task_args={"region": "EMEA"})
    def remote_task(task, job):
        return job.get_task_result("prepare") if send is None else send

    @job.task(task_id="after", deps=["remote"])
    def after(task, job):
        return {"seen": job.get_task_result("remote")}

    return job


def doubler(call):
    payload = call.json()
    return {"double": payload["result"]["x"] * 2, "job_args": payload["job_args"],
            "task_args": payload["task_args"], "job_id": payload["job_id"]}


# ---------------------------------------------------------------- synchronous


def test_sync_answer_is_the_task_result_and_the_request_is_function_flows(new_job, gateway):
    gateway.register("double", doubler)
    job = remote_job(new_job, remote.OpenFaaS("double"))

    run = job.run({"day": "2024-01-01"}, timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    result = records(job, run.run_id)["remote"].result
    assert result["double"] == 42
    assert result["job_args"] == {"day": "2024-01-01"}
    assert result["task_args"] == {"region": "EMEA"}
    assert re.fullmatch(r"[0-9a-f]{32}", result["job_id"])
    assert records(job, run.run_id)["after"].result == {"seen": result}
    [call] = gateway.invocations("double")
    assert call.headers["Content-Type"] == "application/json"
    assert call.headers["X-Function-Flow-Run-Id"] == run.run_id
    assert call.headers["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("reply, expected", [
    (Reply(200, "hello world\n"), "hello world\n"),
    (Reply(200, "[1, 2, 3]", "text/plain"), [1, 2, 3]),  # OpenFaaS templates answer text/plain
    (Reply(201, '{"a": null}', "application/json"), {"a": None}),
    (Reply(204, b""), None),
])
def test_a_2xx_body_is_json_when_it_parses_else_text(new_job, gateway, reply, expected):
    gateway.register("answer", lambda call: reply)
    job = remote_job(new_job, remote.OpenFaaS("answer"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    assert records(job, run.run_id)["remote"].result == expected


def test_a_500_fails_the_attempt_with_the_status_and_the_start_of_the_body(new_job, gateway):
    gateway.register("broken", lambda call: Reply(500, "boom: " + "x" * 2000))
    job = remote_job(new_job, remote.OpenFaaS("broken"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "OpenFaaS function 'broken'" in error and "answered HTTP 500: boom: xxx" in error
    assert "x" * 600 not in error, "only the start of the body is quoted"
    assert records(job, run.run_id)["after"].status is not TaskStatus.SUCCEEDED


def test_retries_apply_and_a_recovered_function_succeeds(new_job, gateway):
    calls = []

    def flaky(call):
        calls.append(call)
        if len(calls) == 1:
            return Reply(500, "warming up")
        return doubler(call)

    gateway.register("flaky", flaky)
    job = remote_job(new_job, remote.OpenFaaS("flaky"), retries=2)

    run = job.run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    record = records(job, run.run_id)["remote"]
    assert record.attempt == 2 and record.result["double"] == 42
    first, second = (c.json()["job_id"] for c in calls)
    assert first != second, "each attempt has its own job id"


def test_a_missing_function_fails_with_404_inside_a_timeout_child(new_job, gateway):
    # timeout= runs the body and its call in a forked child on this backend.
    job = remote_job(new_job, remote.OpenFaaS("not-deployed"), timeout=30)

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "answered HTTP 404" in error and "faas-cli list" in error


def test_bad_credentials_fail_the_attempt_with_a_clear_error(new_job, gateway, settings_env):
    settings_env.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD", "wrong")
    gateway.register("double", doubler)
    job = remote_job(new_job, remote.OpenFaaS("double"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "answered HTTP 401" in error and "FUNCTION_FLOW_OPENFAAS_PASSWORD" in error
    assert not gateway.invocations("double")


def test_the_password_can_come_from_a_secret_file(new_job, gateway, settings_env, tmp_path):
    secret = tmp_path / "basic-auth-password"
    secret.write_text(PASSWORD + "\n")
    settings_env.delenv("FUNCTION_FLOW_OPENFAAS_PASSWORD")
    settings_env.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE", str(secret))
    gateway.register("double", doubler)

    run = remote_job(new_job, remote.OpenFaaS("double")).run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error


def test_an_unreadable_password_file_names_the_setting(new_job, gateway, settings_env,
                                                       tmp_path):
    settings_env.delenv("FUNCTION_FLOW_OPENFAAS_PASSWORD")
    settings_env.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE", str(tmp_path / "missing"))
    job = remote_job(new_job, remote.OpenFaaS("double"))

    run = job.run(timeout=60)

    error = records(job, run.run_id)["remote"].error
    assert run.status is RunStatus.FAILED
    assert "task 'remote'" in error and "FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE" in error


def test_no_gateway_configured_names_the_task_and_the_setting(new_job, settings_env):
    settings_env.delenv("FUNCTION_FLOW_OPENFAAS_GATEWAY")
    job = remote_job(new_job, remote.OpenFaaS("double"))

    run = job.run(timeout=60)

    error = records(job, run.run_id)["remote"].error
    assert run.status is RunStatus.FAILED
    assert "task 'remote' calls OpenFaaS function 'double'" in error
    assert "FUNCTION_FLOW_OPENFAAS_GATEWAY" in error


# --------------------------------------------------------------- asynchronous


def test_async_answer_arrives_through_the_callback(new_job, gateway):
    gateway.register("render", doubler)
    job = remote_job(new_job, remote.OpenFaaS("render", asynchronous=True), timeout=60)

    run = job.run({"day": 1}, timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    result = records(job, run.run_id)["remote"].result
    assert result["double"] == 42 and result["job_args"] == {"day": 1}
    [sent] = [r for r in gateway.requests if r.path == "/async-function/render"]
    assert sent.headers["X-Function-Flow-Run-Id"] == run.run_id
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/openfaas/" + result["job_id"]
                        + r"\?function_flow_timestamp=\d+&function_flow_signature=sha256%3D"
                        r"[0-9a-f]{64}", sent.headers["X-Callback-Url"])
    # The gateway records its callback after the POST answers, which can be
    # just after the run ends.
    [callback] = wait_for(lambda: gateway.callbacks, "the gateway's callback")
    assert callback.status == 200 and callback.answer["outcome"] == "succeeded"
    assert records(job, run.run_id)["after"].result == {"seen": result}


def test_async_error_status_fails_the_attempt_with_status_and_body(new_job, gateway):
    gateway.register("render", lambda call: Reply(502, "upstream went away"))
    job = remote_job(new_job, remote.OpenFaaS("render", asynchronous=True), timeout=60)

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "'render' (async, call id " in error
    assert "answered HTTP 502: upstream went away" in error


def test_async_call_of_a_missing_function_is_failed_by_the_timeout(new_job, gateway):
    job = remote_job(new_job, remote.OpenFaaS("not-deployed", asynchronous=True), timeout=2)

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    [accepted] = [r for r in gateway.requests if r.path == "/async-function/not-deployed"]
    assert "TimeoutError" in records(job, run.run_id)["remote"].error
    assert not gateway.callbacks


def test_a_callback_that_never_comes_times_out_and_a_late_one_changes_nothing(
        new_job, gateway):
    gateway.register("render", doubler)
    gateway.lose_callbacks.add("render")
    job = remote_job(new_job, remote.OpenFaaS("render", asynchronous=True), timeout=2)

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    before = records(job, run.run_id)["remote"]
    assert "TimeoutError" in before.error
    # The queue worker's thread calls the function; under load, maybe only now.
    wait_for(lambda: gateway.invocations("render"), "the queue worker to call the function")
    [sent] = [r for r in gateway.requests if r.path == "/async-function/render"]
    status, answer = post_callback(sent.headers["X-Callback-Url"], '{"late": true}',
                                   X_Function_Status="200", X_Function_Name="render")
    assert status == 200 and answer["outcome"] == "ignored", answer
    # The timeout deleted the trigger with the attempt's failure.
    assert "no attempt waits for" in answer["reason"], answer
    assert job.engine.store.get_trigger(before.trigger_id) is None
    after = records(job, run.run_id)["remote"]
    assert (after.status, after.error, after.result) == (before.status, before.error, None)
    assert job.engine.run_status(run.run_id).status is RunStatus.FAILED


def test_a_duplicated_callback_completes_the_attempt_once(new_job, gateway):
    gateway.register("render", doubler)
    gateway.callback_copies = 3
    ran = []
    job = new_job()

    @job.task(task_id="remote", call=remote.OpenFaaS("render", asynchronous=True),
              timeout=60)
    def remote_task(task, job):
        return {"x": 1}

    @job.task(task_id="after", deps=["remote"])
    def after(task, job):
        ran.append(task.attempt)

    run = job.run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    wait_for(lambda: len(gateway.callbacks) == 3, "three copies of the callback", 30)
    outcomes = sorted(c.answer["outcome"] for c in gateway.callbacks)
    assert outcomes == ["ignored", "ignored", "succeeded"]
    assert all(c.status == 200 for c in gateway.callbacks)
    assert ran == [1] and records(job, run.run_id)["remote"].attempt == 1


def test_forged_and_malformed_callbacks_change_nothing(new_job, gateway):
    release = threading.Event()

    def slow(call):
        release.wait(60)
        return doubler(call)

    gateway.register("slow", slow)
    job = remote_job(new_job, remote.OpenFaaS("slow", asynchronous=True))  # no timeout
    run_id = job.start()
    wait_for(lambda: gateway.invocations("slow"), "the queue worker to call the function")
    [sent] = [r for r in gateway.requests if r.path == "/async-function/slow"]
    url = sent.headers["X-Callback-Url"]
    base = url.rsplit("/openfaas/", 1)[0]
    job_id = sent.json()["job_id"]

    forged = [
        (f"{base}/openfaas/{uuid.uuid4().hex}", {"X_Function_Status": "200"}, 200, "ignored"),
        (url, {}, 400, "X-Function-Status"),
        (url, {"X_Function_Status": "two hundred"}, 400, "X-Function-Status"),
        (url, {"X_Function_Status": "200", "X_Function_Name": "other"}, 200, "ignored"),
        (f"{base}/openfaas/", {"X_Function_Status": "200"}, 400, "/openfaas/<job id>"),
        (f"{base}/openfaas/{'x' * 300}", {"X_Function_Status": "200"}, 400, "job id"),
        (f"{base}/nowhere/{job_id}", {"X_Function_Status": "200"}, 404, "/openfaas/"),
    ]
    for target, headers, status, said in forged:
        got, answer = post_callback(target, '{"forged": true}', **headers)
        assert got == status, (target, headers, answer)
        assert said in str(answer), (target, headers, answer)
    assert job.engine.run_status(run_id).status is RunStatus.RUNNING
    record = records(job, run_id)["remote"]
    assert (record.status, record.attempt, record.result) == (TaskStatus.RUNNING, 1, None)
    # No timeout given: an asynchronous OpenFaaS attempt waits an hour, not a week.
    assert 3000 < record.lease_until - time.time() <= 3600

    release.set()
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert records(job, run_id)["remote"].result["double"] == 42


class ManualFuture(futures.Future):
    @classmethod
    def handle_message(cls, message):
        return None


def test_an_openfaas_callback_cannot_complete_another_kind_of_wait(new_job, gateway):
    gateway.register("render", doubler)
    job = new_job()
    trigger = uuid.uuid4().hex

    @job.task(task_id="render", call=remote.OpenFaaS("render", asynchronous=True),
              timeout=60)
    def render(task, job):
        return {"x": 1}

    @job.task(task_id="waits")
    def waits(task, job):
        return ManualFuture(trigger)

    run_id = job.start()
    wait_for(lambda: records(job, run_id)["render"].status is TaskStatus.SUCCEEDED,
             "the OpenFaaS task (it starts the callback server)")
    wait_for(lambda: records(job, run_id)["waits"].trigger_id == trigger, "the future's wait")
    # The gateway notes a callback once its POST returned: after the task succeeded.
    base = wait_for(lambda: gateway.callbacks, "the callback")[0].url.rsplit("/openfaas/", 1)[0]

    # Signed as this process signs its callback URLs: what it names is checked next.
    status, answer = post_callback(openfaas.callback_url(base, trigger, job.backend.keys),
                                   '"done"', X_Function_Status="200")

    assert status == 200 and answer["outcome"] == "ignored"
    assert "not an asynchronous OpenFaaS call" in answer["reason"]
    assert records(job, run_id)["waits"].status is TaskStatus.RUNNING
    job.engine.complete_trigger(trigger, ok=True, value="by its own event")
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error


def test_the_callback_server_stops_with_its_backend(new_job, gateway):
    gateway.register("render", doubler)
    job = remote_job(new_job, remote.OpenFaaS("render", asynchronous=True), timeout=60)
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED
    # The gateway notes its callback once our server has answered it, which
    # may be just after the run ended.
    url = wait_for(lambda: gateway.callbacks, "the gateway's callback", timeout=30)[0].url

    job.backend.close()

    with pytest.raises(OSError):
        post_callback(url, "{}", X_Function_Status="200")


# ------------------------------------------------------------ configuration


def request_for(task_id: str = "render") -> Request:
    return Request(job_id=uuid.uuid4().hex, run_id="run-1", task_id=task_id, attempt=1,
                   job_args={}, task_args={}, result=None)


def test_async_on_google_cloud_without_a_callback_url_names_the_setting(gateway):
    caller = OpenFaaSCaller(Settings(openfaas_gateway=gateway.url))
    with pytest.raises(ConfigurationError) as caught:
        caller.send(remote.OpenFaaS("render", asynchronous=True), request_for())
    assert "task 'render'" in str(caught.value)
    assert "FUNCTION_FLOW_CALLBACK_URL" in str(caught.value)
    assert not gateway.requests, "nothing is sent without somewhere for the answer to go"


def test_a_gateway_that_refuses_an_async_call_fails_the_send(gateway):
    caller = OpenFaaSCaller(Settings(openfaas_gateway=gateway.url, openfaas_password="wrong"),
                            lambda: "https://example.invalid/callback", callback_keys=KEYS)
    with pytest.raises(Exception, match="answered HTTP 401"):
        caller.send(remote.OpenFaaS("render", asynchronous=True), request_for())


def test_settings_never_show_the_password():
    settings = Settings.from_env({"FUNCTION_FLOW_OPENFAAS_PASSWORD": PASSWORD,
                                  "FUNCTION_FLOW_OPENFAAS_GATEWAY": "http://gw:8080"})
    assert settings.openfaas_password == PASSWORD and PASSWORD not in repr(settings)


@pytest.mark.parametrize("name", ["", "has space", "slash/name", "q?x", "ünïcode"])
def test_an_openfaas_name_outside_the_gateways_rule_is_a_definition_error(name):
    job = tasks.Job(name="defs")
    with pytest.raises(DefinitionError) as caught:
        job.task(task_id="score", call=remote.OpenFaaS(name))(lambda: None)
    assert "task 'score'" in str(caught.value) and "[-a-zA-Z_0-9.]+" in str(caught.value)
    assert caught.value.task_id == "score"


def test_a_callback_being_handled_counts_as_the_buses_work(monkeypatch):
    """An asynchronous answer completes its attempt on the callback server's
    thread: the bus counts it as busy meanwhile, so job.wait (which waits for
    the bus to be idle) sees all of a run's end that the answer caused."""
    from types import SimpleNamespace

    from function_flow.bus.local import LocalBus
    from function_flow.cloud import callback
    from function_flow.local.callback_server import LocalCallbackServer
    from test_remote_tasks import assert_busy_until_released

    bus = LocalBus(1)
    started, release = threading.Event(), threading.Event()

    def slow_handle(site, request):
        started.set()
        release.wait(30)
        return {"outcome": "ignored"}, 200

    monkeypatch.setattr(callback, "handle", slow_handle)
    server = LocalCallbackServer(SimpleNamespace(bus=bus, store=None, engines={}))
    poster = threading.Thread(target=post_callback, args=(server.url() + "openfaas/x", b"{}"))
    try:
        poster.start()
        assert_busy_until_released(bus, started, release)
    finally:
        release.set()
        poster.join(30)
        server.close()
        bus.close()
