"""Step Functions definitions: the CLI, the engine's durable waits and tokens, and
properties of the language core (the corpus is in test_asl_corpus.py)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings, strategies as st

from function_flow import approvals
from function_flow.asl import choice, jsonpath, paths, tokens
from function_flow.asl.errors import AslDefinitionError, AslError, PathError
from function_flow.asl.job import StateMachine
from function_flow.backends import embedded
from tests.test_cli import assert_one_error_line, flow

MACHINES = Path(__file__).parent / "workflows" / "asl"


def _job(definition: dict[str, Any], tmp_path: Path, **resources: Any) -> StateMachine:
    job = StateMachine(definition, resources=resources)
    backend = embedded(str(tmp_path / "ff.db"), workers=4)
    job.use_backend(backend)
    return job


# ---------------------------------------------------------------------- CLI


def test_cli_runs_graphs_and_validates_a_machine_file(tmp_path: Path) -> None:
    for name in ("greet.json", "greet.py", "bad.json"):
        shutil.copy(MACHINES / name, tmp_path / name)
    env = {"FUNCTION_FLOW_DB": str(tmp_path / "ff.db")}
    ran = flow(tmp_path, "run", "greet.json", "--input", '{"name": "ada", "loud": true}',
               env=env)
    assert ran.returncode == 0, ran.stderr
    assert 'output: {"greeting": "hello ada!"}' in ran.stdout
    assert "0003.Shout" in ran.stdout  # each state visit is a task of the run
    drawn = flow(tmp_path, "graph", "greet.json", env=env)
    assert "Loud? -> Shout  (Choices[0].Next)" in drawn.stdout, drawn.stdout
    checked = flow(tmp_path, "validate", "bad.json", env=env)
    assert checked.returncode == 1
    lines = checked.stderr.strip().splitlines()
    assert any("state 'A': Next names 'Nowhere'" in line for line in lines), lines
    assert any("state 'B': InputPath" in line for line in lines)
    assert any("state 'C': no rule can match" in line for line in lines)
    assert any("state 'B' is unreachable" in line for line in lines)
    assert flow(tmp_path, "validate", "greet.json", env=env).returncode == 0
    # A Resource nothing provides: `validate` says so, as `run` does.
    (tmp_path / "alone.json").write_text(json.dumps({"StartAt": "B", "States": {
        "B": {"Type": "Task", "Resource": "unknown", "End": True}}}))
    alone = flow(tmp_path, "validate", "alone.json", env=env)
    assert alone.returncode == 1 and "nothing provides the Resource 'unknown'" in alone.stderr
    (tmp_path / "odd.json").write_text((tmp_path / "alone.json").read_text())
    (tmp_path / "odd.py").write_text("RESOURCES = 5\n")
    assert_one_error_line(flow(tmp_path, "validate", "odd.json", env=env),
                          "odd.py: RESOURCES must be a dict", "of odd.json, got int")
    # A machine.py of remote functions only needs no RESOURCES.
    (tmp_path / "only.json").write_text(json.dumps({"StartAt": "S", "States": {
        "S": {"Type": "Task", "Resource": "pubsub:ONLY_SCORE", "End": True}}}))
    (tmp_path / "only.py").write_text(
        "from function_flow import remote\n"
        "@remote.function(topic='ONLY_SCORE')\n"
        "def score(payload, context):\n"
        "    return {'letters': 3}\n")
    only = flow(tmp_path, "run", "only.json", "--input", "{}", env=env)
    assert only.returncode == 0, only.stderr
    assert only.stdout.rstrip().endswith('output: {"letters": 3}'), only.stdout
    assert_one_error_line(flow(tmp_path, "run", "greet.json", "--input", "{x", env=env),
                          "--input is not JSON")
    refused = flow(tmp_path, "run", "bad.json", env=env)
    assert_one_error_line(refused, "state 'A'")
    assert "-v" not in refused.stderr  # the message says all: no traceback to see
    (tmp_path / "broken.json").write_text('{"StartAt": ')
    assert_one_error_line(flow(tmp_path, "run", "broken.json", env=env), "is not JSON")
    # machine.py's @remote.function answers the pubsub: Task, hosted by `run` itself.
    for name in ("scored.json", "scored.py"):
        shutil.copy(MACHINES / name, tmp_path / name)
    scored = flow(tmp_path, "run", "scored.json", "--input", '{"name": "ada"}', env=env)
    assert scored.returncode == 0, scored.stderr
    assert 'output: {"name": "ada", "greeting": "hello ada", "score": {"letters": 3}}' \
        in scored.stdout, scored.stdout


def test_a_definition_error_names_the_state_before_anything_runs() -> None:
    with pytest.raises(AslDefinitionError) as raised:
        StateMachine({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "r",
                                                        "End": True}}}, resources={})
    assert raised.value.state == "A" and "nothing provides the Resource 'r'" in str(
        raised.value)
    with pytest.raises(AslDefinitionError, match="no StartAt"):
        StateMachine({"States": {"A": {"Type": "Pass", "End": True}}})


def _pass_state(**fields: Any) -> dict[str, Any]:
    return {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True, **fields}}}


def _task_state(**fields: Any) -> dict[str, Any]:
    return {"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "r", "End": True,
                                             **fields}}}


@pytest.mark.parametrize("definition, said", [
    (_task_state(Retry={"ErrorEquals": ["States.ALL"]}), "Retry must be a list of objects"),
    (_task_state(Retry=[{"MaxAttempts": 2}]), "Retry[0] needs ErrorEquals"),
    (_task_state(Catch=[{"ErrorEquals": ["States.ALL"]}]), "Catch[0] needs a Next"),
    (_task_state(Retry=[{"ErrorEquals": ["States.ALL"]}, {"ErrorEquals": ["E"]}]),
     "Retry[0]: States.ALL must be the only error of the last Retry"),
    (_task_state(Retry=[{"ErrorEquals": ["E"], "MaxAttempts": -1}]),
     "Retry[0]: MaxAttempts must be a whole number of at least 0, got -1"),
    (_task_state(Retry=[{"ErrorEquals": ["E"], "BackoffRate": 0.5}]),
     "BackoffRate must be a number of at least 1.0"),
    (_pass_state(Retry=[{"ErrorEquals": ["E"]}]), "Retry is only for Task, Parallel and Map"),
    (_task_state(TimeoutSeconds=0), "TimeoutSeconds must be a whole number of at least 1"),
    ({"StartAt": "A", "States": {"A": {"Type": "Task", "Resource": "r.waitForTaskToken",
                                       "End": True}}},
     "a .waitForTaskToken Task passes its token on in Parameters"),
    (_task_state(TimeoutSeconds=5, TimeoutSecondsPath="$.t"),
     "takes TimeoutSeconds or TimeoutSecondsPath, not both"),
    (_task_state(TimeoutSeconds=60, HeartbeatSeconds=60),
     "HeartbeatSeconds (60) must be smaller than TimeoutSeconds (60)"),
    ({"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": "5", "End": True}}},
     "Seconds must be a whole number of at least 0, got '5'"),
    ({"StartAt": "W", "States": {"W": {"Type": "Wait", "Timestamp": "yesterday",
                                       "End": True}}}, "Timestamp must be an ISO 8601 time"),
    ({"StartAt": "F", "States": {"F": {"Type": "Fail", "Next": "F"}}},
     "a Fail state ends the machine: it takes no Next"),
    (_pass_state(Parameters={"x.$": 5}), "Parameters: x.$ must be a JSONPath or an "
                                         "intrinsic function (a string), got int"),
    ({"StartAt": "M", "States": {"M": {"Type": "Map", "End": True, "MaxConcurrency": "x",
                                       "ItemProcessor": _pass_state()}}},
     "MaxConcurrency must be a whole number of at least 0, got 'x'"),
    ({"StartAt": "M", "States": {"M": {"Type": "Map", "End": True,
                                       "ToleratedFailurePercentage": 150,
                                       "ItemProcessor": _pass_state()}}},
     "ToleratedFailurePercentage must be a number from 0 to 100, got 150"),
])
def test_fields_step_functions_would_refuse_are_definition_errors(definition, said) -> None:
    """Before: ignored (a Retry without ErrorEquals), taken as given (a Wait of
    "5"), or failing at run time (a Retry that is an object raised a traceback)."""
    from function_flow.asl import validate

    with pytest.raises(AslDefinitionError):
        StateMachine(definition, resources={"r": lambda payload: payload})
    found = validate.problems(definition, {"r": lambda payload: payload})
    assert any(said in message and state in ("A", "W", "F", "M")
               for state, message in found), found


def test_the_fields_step_functions_takes_pass() -> None:
    StateMachine(_task_state(
        Retry=[{"ErrorEquals": ["E1", "E2"], "MaxAttempts": 0, "IntervalSeconds": 0,
                "BackoffRate": 1.5, "MaxDelaySeconds": 10}, {"ErrorEquals": ["States.ALL"]}],
        Catch=[{"ErrorEquals": ["States.ALL"], "Next": "A"}], TimeoutSeconds=60,
        HeartbeatSeconds=10), resources={"r": lambda payload: payload})
    StateMachine({"StartAt": "W", "States": {"W": {
        "Type": "Wait", "Timestamp": "2026-01-01T00:00:00Z", "End": True}}})


# ------------------------------------------------------------------- engine


def test_a_wait_is_a_durable_timer_and_a_choice_loop_adds_a_record_per_visit(
        tmp_path: Path) -> None:
    definition = {"StartAt": "Count", "States": {
        "Count": {"Type": "Pass", "Parameters": {"n.$": "States.MathAdd($.n, -1)"},
                  "Next": "Again?"},
        "Again?": {"Type": "Choice", "Choices": [
            {"Variable": "$.n", "NumericGreaterThan": 0, "Next": "Nap"}], "Default": "End"},
        "Nap": {"Type": "Wait", "Seconds": 1, "Next": "Count"},
        "End": {"Type": "Succeed"}}}
    job = _job(definition, tmp_path)
    started = time.time()
    outcome = job.execute({"n": 2}, timeout=60)
    assert outcome.status == "SUCCEEDED" and outcome.output == {"n": 0}
    assert time.time() - started >= 1.0  # the Wait waited (once: n 2 -> 1 -> 0)
    records = {r.task_id: r for r in job.engine.store.get_tasks(job.id)}
    assert [t for t in records if t.endswith(".Count")] == ["0001.Count", "0005.Count"]
    # The Wait's continuation started at its time: a timer (nothing slept in a body).
    assert records["0004.Nap"].started_at >= records["0003.Nap"].finished_at + 0.99
    assert records["0003.Nap"].duration < 0.5


def test_a_task_token_resumes_once_and_forged_or_used_tokens_change_nothing(
        tmp_path: Path) -> None:
    sent: list[dict[str, Any]] = []
    definition = {"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "ask.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token", "q.$": "$.q"},
                "ResultPath": "$.answer", "End": True}}}

    def ask(payload: dict[str, Any]) -> Any:
        sent.append(payload)
        raise SystemExit  # this worker never answers: the test does

    job = _job(definition, tmp_path, **{"ask.waitForTaskToken": ask})
    job.resources.worker = lambda engine, resource, token, payload: sent.append(
        {"token": token, **payload})
    run_id = job.start_execution({"q": "ok?"})
    deadline = time.monotonic() + 30
    while not sent and time.monotonic() < deadline:
        time.sleep(0.02)
    token = sent[0]["token"]
    with pytest.raises(approvals.ApprovalError):
        tokens.send_success(job.engine, "A" * 43, "forged")
    tokens.send_heartbeat(job.engine, token)
    tokens.send_success(job.engine, token, "yes")
    with pytest.raises(approvals.ApprovalError):
        tokens.send_success(job.engine, token, "again")
    job.wait(run_id, timeout=30)
    assert job.outcome(run_id).output == {"q": "ok?", "answer": "yes"}


def test_send_task_failure_is_caught_by_the_catch(tmp_path: Path) -> None:
    definition = {"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "ask.waitForTaskToken",
                "Parameters": {"t.$": "$$.Task.Token"}, "Next": "Done",
                "Catch": [{"ErrorEquals": ["No"], "ResultPath": "$.why", "Next": "Done"}]},
        "Done": {"Type": "Pass", "End": True}}}
    from function_flow.asl.resources import TaskFailed

    def ask(payload: dict[str, Any]) -> Any:
        raise TaskFailed("No", "not today")

    job = _job(definition, tmp_path, **{"ask.waitForTaskToken": ask})
    outcome = job.execute({}, timeout=30)
    assert outcome.output == {"why": {"Error": "No", "Cause": "not today"}}


def test_an_uncaught_failure_fails_the_run_with_error_and_cause(tmp_path: Path) -> None:
    definition = {"StartAt": "Map", "States": {"Map": {
        "Type": "Map", "ItemsPath": "$.xs", "MaxConcurrency": 2, "End": True,
        "ItemProcessor": {"StartAt": "F", "States": {"F": {
            "Type": "Choice", "Choices": [{"Variable": "$", "NumericEquals": 3,
                                           "Next": "Bad"}], "Default": "Ok"},
            "Bad": {"Type": "Fail", "Error": "Three", "Cause": "3 is bad"},
            "Ok": {"Type": "Pass", "End": True}}}}}}
    job = _job(definition, tmp_path)
    assert job.execute({"xs": [1, 2, 4]}, timeout=30).output == [1, 2, 4]
    failed = job.execute({"xs": [1, 2, 3, 4]}, timeout=30)
    assert (failed.status, failed.error, failed.cause) == ("FAILED", "Three", "3 is bad")
    assert job.engine.run_status(job.id).status.value == "FAILED"


# --------------------------------------------------------------- properties

_json = st.recursive(st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=3),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.sampled_from("abc"), inner, max_size=3),
                     max_leaves=8)


@settings(max_examples=80, deadline=None)
@given(data=st.dictionaries(st.sampled_from("abc"), _json, max_size=3),
       keys=st.lists(st.sampled_from("abc"), min_size=1, max_size=3), value=_json)
def test_result_path_places_the_value_where_the_path_then_finds_it(
        data: dict[str, Any], keys: list[str], value: Any) -> None:
    path = "$." + ".".join(keys)
    before = json.dumps(data, sort_keys=True)
    try:
        placed = jsonpath.assign(path, data, value)
    except PathError:
        return
    assert jsonpath.select(path, placed) == value
    assert json.dumps(data, sort_keys=True) == before  # the input is never changed


@settings(max_examples=150, deadline=None)
@given(variable=_json, operand=_json,
       operator=st.sampled_from(sorted(choice.OPERATORS)))
def test_choice_comparisons_never_raise_and_mismatched_types_are_false(
        variable: Any, operand: Any, operator: str) -> None:
    rule = {"Variable": "$.v", operator: operand, "Next": "X"}
    result = choice.matches(rule, {"v": variable})
    assert isinstance(result, bool)
    numeric = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if operator.startswith("Numeric") and not (numeric(variable) and numeric(operand)):
        assert result is False
    assert choice.matches({"Not": rule}, {"v": variable}) is (not result)


def test_output_path_runtime_errors_are_not_catchable() -> None:
    with pytest.raises(AslError) as raised:
        paths.output_path("S", {"OutputPath": "$.nope"}, {}, {})
    assert raised.value.error == "States.Runtime" and not raised.value.catchable


def test_a_choice_whose_variable_selects_nothing_fails_as_on_step_functions(
        tmp_path: Path) -> None:
    """States.Runtime, not its Default; IsPresent is how a rule asks."""
    definition = {"StartAt": "C", "States": {
        "C": {"Type": "Choice", "Default": "B", "Choices": [
            {"Variable": "$.x", "IsPresent": False, "Next": "Absent"},
            {"Variable": "$.x", "NumericGreaterThan": 1, "Next": "A"}]},
        "Absent": {"Type": "Pass", "Result": "absent", "End": True},
        "A": {"Type": "Pass", "Result": "a", "End": True},
        "B": {"Type": "Pass", "Result": "b", "End": True}}}
    job = _job(definition, tmp_path)
    assert job.execute({}, timeout=60).output == "absent"
    assert job.execute({"x": 5}, timeout=60).output == "a"
    definition["States"]["C"]["Choices"][0] = {"Variable": "$.y", "IsPresent": True,
                                               "Next": "Absent"}
    failed = _job(definition, tmp_path).execute({}, timeout=60)
    assert (failed.status, failed.error) == ("FAILED", "States.Runtime")
    assert "Invalid path '$.x': The choice state's condition path references an invalid " \
        "value." in failed.cause


def test_a_result_path_that_cannot_be_applied_is_a_result_path_match_failure(
        tmp_path: Path) -> None:
    """Step Functions' error for it, which States.ALL catches (States.Runtime is not)."""
    definition = {"StartAt": "P", "States": {
        "P": {"Type": "Task", "Resource": "five", "ResultPath": "$.x", "End": True,
              "Catch": [{"ErrorEquals": ["States.ALL"], "ResultPath": "$", "Next": "C"}]},
        "C": {"Type": "Pass", "End": True}}}
    caught = _job(definition, tmp_path, five=lambda payload: 5).execute([1, 2], timeout=60)
    assert caught.status == "SUCCEEDED"
    assert caught.output["Error"] == "States.ResultPathMatchFailure"
    assert "Unable to apply ResultPath '$.x' to the input of state 'P'" in caught.output["Cause"]


def test_graph_links_a_parallel_to_each_of_its_branches() -> None:
    from function_flow.asl import files

    branch = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}
    drawn = files.render({"StartAt": "P", "States": {"P": {
        "Type": "Parallel", "Branches": [branch, branch], "End": True}}})
    assert "P -> P/0  (Branches[0])" in drawn and "P -> P/1  (Branches[1])" in drawn
    assert "P/1 -> P/1/A" in drawn


def test_a_machines_own_fail_and_retries_are_not_logged_as_tracebacks(tmp_path: Path,
                                                                      caplog) -> None:
    """A Fail state (or a retrier taking an error) is the machine's outcome: one
    INFO line, not a WARNING with an engine traceback on a Python caller's stderr."""
    caplog.set_level("INFO", logger="function_flow")
    failed = _job({"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "E",
                                                    "Cause": "c"}}}, tmp_path).execute(
        {}, timeout=60)
    assert (failed.status, failed.error, failed.cause) == ("FAILED", "E", "c")
    assert not [r for r in caplog.records if r.levelname == "WARNING"
                and "StateFailed" in r.getMessage()], caplog.text
    assert "attempt 1 ended: " in caplog.text
