"""Task states whose Resource is a remote function: OpenFaaS (sync and async), an
HTTP endpoint and a Pub/Sub function, on the embedded backend against the local
OpenFaaS gateway (tests/openfaas_gateway.py), with Retry and Catch on their failures."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from openfaas_gateway import Gateway, Reply

from function_flow import remote
from function_flow.asl.errors import AslDefinitionError
from function_flow.asl.job import StateMachine
from function_flow.backends import embedded
from function_flow.core.records import TaskStatus

pytestmark = pytest.mark.timeout(120)
TOPIC = "ASL_SCORE_" + uuid.uuid4().hex[:6]


@remote.function(topic=TOPIC)
def score(payload: dict[str, Any], context: Any) -> Any:
    return {"score": len(payload["result"]["name"])}


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in ("FUNCTION_FLOW_CALLBACK_URL", "FUNCTION_FLOW_OPENFAAS_USER",
                 "FUNCTION_FLOW_OPENFAAS_PASSWORD", "FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE",
                 "FUNCTION_FLOW_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    with Gateway() as gateway:
        monkeypatch.setenv("FUNCTION_FLOW_OPENFAAS_GATEWAY", gateway.url)
        yield gateway


def test_remote_resources_answer_as_task_results_and_their_failures_retry_and_catch(
        gateway: Any, tmp_path: Any) -> None:
    gateway.register("double", lambda call: {"double": call.json()["result"]["n"] * 2})
    gateway.register("echo", lambda call: {"echoed": call.json()["result"]})
    gateway.register("broken", lambda call: Reply(500, "out of order"))
    definition = {"StartAt": "Double", "States": {
        "Double": {"Type": "Task", "Resource": "openfaas:double",
                   "ResultSelector": {"d.$": "$.double"}, "ResultPath": "$.a",
                   "Next": "Later"},
        "Later": {"Type": "Task", "Resource": "openfaas-async:double",
                  "ResultPath": "$.later", "Next": "Echo"},
        "Echo": {"Type": "Task", "Resource": f"{gateway.url}/function/echo",
                 "Parameters": {"x.$": "$.a.d"}, "ResultPath": "$.b", "Next": "Score"},
        "Score": {"Type": "Task", "Resource": "score", "ResultPath": "$.c",
                  "Next": "Broken"},
        "Broken": {"Type": "Task", "Resource": "openfaas:broken", "End": True,
                   "Retry": [{"ErrorEquals": ["States.TaskFailed"], "MaxAttempts": 1,
                              "IntervalSeconds": 1}],
                   "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$.err",
                              "Next": "Done"}]},
        "Done": {"Type": "Pass", "End": True}}}
    job = StateMachine(definition, resources={"score": remote.PubSub(TOPIC)})
    backend = embedded(str(tmp_path / "ff.db"), workers=4)
    job.use_backend(backend)
    try:
        outcome = job.execute({"n": 21, "name": "ada"}, timeout=60)
        records = {r.task_id: r for r in job.engine.store.get_tasks(job.id)}
    finally:
        backend.close()
    assert outcome.status == "SUCCEEDED", outcome
    output = outcome.output
    assert output["a"] == {"d": 42} and output["later"] == {"double": 42}
    assert output["b"] == {"echoed": {"x": 42}} and output["c"] == {"score": 3}
    assert output["err"]["Error"] == "States.TaskFailed"
    assert "500" in output["err"]["Cause"] and "out of order" in output["err"]["Cause"]
    assert len(gateway.invocations("broken")) == 2  # the Retry called it again
    # Each call is a record of the run, of the state it belongs to, and what the
    # function received is Function Flow's request with the effective input.
    assert records["0002.Double"].status is TaskStatus.SUCCEEDED
    assert gateway.invocations("echo")[0].json()["result"] == {"x": 42}


@pytest.mark.parametrize("resource, given, why", [
    ("pubsub:goog-topic", None, "not a Pub/Sub topic name"),
    ("openfaas:bad name", None, "must match"),
    ("https://", None, "needs an http:// or https:// URL"),
    ("pubsub:T.waitForTaskToken", None, "nothing provides"),
    ("ask.waitForTaskToken", remote.PubSub("ASK"), "give it a Python function")])
def test_a_remote_resource_that_cannot_be_called_is_a_definition_error_naming_the_state(
        resource: str, given: Any, why: str) -> None:
    with pytest.raises(AslDefinitionError, match=why) as raised:
        StateMachine({"StartAt": "Call", "States": {"Call": {
            "Type": "Task", "Resource": resource, "End": True,
            "Parameters": {"token.$": "$$.Task.Token"}}}},
            resources={} if given is None else {resource: given})
    assert raised.value.state == "Call"
