"""Asynchronous OpenFaaS tasks on the embedded backend, against a local gateway.

The gateway's queue worker (tests/openfaas_gateway.py) answers through the
callback server the backend starts on 127.0.0.1, as OpenFaaS's documented
contract says; the answers that never come, come late, come three times or
are forged change nothing they should not.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest
from functions_stack import wait_for
from openfaas_gateway import Reply, post_callback
from openfaas_jobs import (doubler, gateway, new_job, records, remote_job,  # noqa: F401
                           settings_env)

from function_flow import futures, remote
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import openfaas

pytestmark = pytest.mark.timeout(120)


# --------------------------------------------------------------- asynchronous


def test_async_answer_arrives_through_the_callback(new_job, gateway, caplog):
    gateway.register("render", doubler)
    job = remote_job(new_job, remote.OpenFaaS("render", asynchronous=True), timeout=60)

    with caplog.at_level("INFO", logger="function_flow"):
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
    # The gateway's X-Call-Id is logged when the call is sent and when its answer comes.
    call_id = callback.headers["X-Call-Id"]
    assert f"OpenFaaS accepted job {result['job_id']} for render as call id {call_id};" \
        in caplog.text
    assert f"callback /openfaas/{result['job_id']}: OpenFaaS call id {call_id}, status 200" \
        in caplog.text


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
        (f"{base}/nowhere/{job_id}", {"X_Function_Status": "200"}, 404, "/openfaas,"),
        # The job id alone does not do: the URL the gateway was given is signed.
        (f"{base}/openfaas/{job_id}", {"X_Function_Status": "200"}, 200, "not signed: "),
    ]
    assert url.startswith(f"{base}/openfaas/{job_id}?function_flow_timestamp=")
    assert "&function_flow_signature=" in url
    for target, headers, status, said in forged:
        got, answer = post_callback(target, '{"forged": true}', **headers)
        assert got == status, (target, headers, answer)
        assert said in str(answer), (target, headers, answer)
    for method in ("GET", "PUT", "PATCH", "PROPFIND"):  # a wrong method: 405, a JSON error
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(
                url, data=None if method == "GET" else b"{}", method=method,
                headers={"X-Function-Status": "200"}), timeout=30)
        assert refused.value.code == 405
        assert "POSTed" in json.loads(refused.value.read())["error"]
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
