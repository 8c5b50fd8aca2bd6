"""OpenFaaS tasks on the embedded backend, end to end, against a local gateway.

The gateway and its queue worker (tests/openfaas_gateway.py) follow
OpenFaaS's documented contract; everything else is real: job.run on the
embedded backend (SQLite, worker threads, forked children for timeouts) and
requests over HTTP. Here: synchronous calls and the settings; asynchronous
answers through the callback server are in tests/test_openfaas_callbacks.py.
"""

from __future__ import annotations

import re
import uuid

import pytest
from openfaas_gateway import Reply
from openfaas_jobs import (PASSWORD, doubler, gateway, new_job, records,  # noqa: F401
                           remote_job, settings_env)

from function_flow import DefinitionError, remote, tasks
from function_flow.config import Settings
from function_flow.core.ports import Request
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ConfigurationError
from function_flow.remote.openfaas import OpenFaaSCaller
from signatures import KEYS

pytestmark = pytest.mark.timeout(120)


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


def test_a_2xx_body_that_is_not_utf8_text_fails_the_attempt(new_job, gateway):
    gateway.register("picture", lambda call: Reply(200, b"\x89PNG\r\n\xff\xfe", "image/png"))
    job = remote_job(new_job, remote.OpenFaaS("picture"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "OpenFaaS function 'picture'" in error
    assert "answered 8 bytes that are not UTF-8 text (Content-Type image/png)" in error


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


def test_a_403_names_the_credential_settings_too(new_job, gateway):
    """A gateway behind an authorizing proxy answers 403 where OpenFaaS's own
    basic auth answers 401: the README promises the same hint for both."""
    gateway.register("guarded", lambda invocation: Reply(403, "forbidden\n"))
    job = remote_job(new_job, remote.OpenFaaS("guarded"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["remote"].error
    assert "answered HTTP 403" in error and "FUNCTION_FLOW_OPENFAAS_PASSWORD" in error


def test_the_password_can_come_from_a_secret_file(new_job, gateway, settings_env, tmp_path):
    secret = tmp_path / "basic-auth-password"
    secret.write_text(PASSWORD + "\n")
    settings_env.delenv("FUNCTION_FLOW_OPENFAAS_PASSWORD")
    settings_env.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE", str(secret))
    gateway.register("double", doubler)

    run = remote_job(new_job, remote.OpenFaaS("double")).run(timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error


def test_a_password_and_a_password_file_together_fail_naming_both(new_job, gateway,
                                                                 settings_env, tmp_path):
    (tmp_path / "basic-auth-password").write_text(PASSWORD)
    settings_env.setenv("FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE",
                        str(tmp_path / "basic-auth-password"))
    gateway.register("double", doubler)
    job = remote_job(new_job, remote.OpenFaaS("double"))

    run = job.run(timeout=60)

    assert run.status is RunStatus.FAILED
    assert ("set FUNCTION_FLOW_OPENFAAS_PASSWORD or FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE, "
            "not both") in records(job, run.run_id)["remote"].error
    assert not gateway.invocations("double")


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
