"""`.waitForTaskToken` Tasks: SendTaskSuccess/Failure/Heartbeat through the API, the
CLI and the callback endpoint; HeartbeatSeconds and TimeoutSeconds as durable
timers whose failures Retry and Catch see; refused tokens change nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from function_flow import approvals
from function_flow.asl import tokens
from function_flow.asl.job import StateMachine
from function_flow.asl.resources import ANSWER_LATER
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.records import TaskStatus
from function_flow.store.sqlite import SqliteStore
from functions_stack import http_client
from signatures import KEYS
from test_approvals_http import SignedClient
from cli_runs import assert_one_error_line, flow

pytestmark = pytest.mark.timeout(120)


def _ask(name: str, **fields: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": f"{name}.waitForTaskToken",
            "Parameters": {"token.$": "$$.Task.Token"}, **fields}


DEFINITION = {"StartAt": "Beat", "States": {
    # Heartbeats keep it waiting; when they stop, HeartbeatTimeout, caught.
    "Beat": _ask("beat", HeartbeatSeconds=300, TimeoutSeconds=3600, ResultPath="$.beat",
                 Next="Slow", Catch=[{"ErrorEquals": ["States.HeartbeatTimeout"],
                                      "ResultPath": "$.late", "Next": "Slow"}]),
    # A heartbeat never carries the wait past TimeoutSeconds: States.Timeout then,
    # which the Retry takes (a new token); the retry's HeartbeatTimeout is uncaught.
    "Slow": _ask("slow", TimeoutSeconds=120, HeartbeatSeconds=90, End=True,
                 Retry=[{"ErrorEquals": ["States.Timeout"], "MaxAttempts": 1,
                         "IntervalSeconds": 0}])}}


class Clock:
    """The engine's time, which moves only when the test moves it: a wait's
    HeartbeatSeconds pass when the test says, however slow the machine is.
    It starts at the real time, which the CLI's own process keeps."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _tokens_of(job: StateMachine) -> dict[str, list[str]]:
    sent: dict[str, list[str]] = {}
    job.resources.worker = lambda engine, resource, token, payload: sent.setdefault(
        resource.split(".")[0], []).append(token)
    return sent


def _wait(condition: Any, what: str) -> Any:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_heartbeats_and_timeouts_are_durable_timers_seen_by_retry_and_catch(
        tmp_path: Path) -> None:
    store, bus = SqliteStore(str(tmp_path / "ff.db")), LocalBus(4)
    job = StateMachine(DEFINITION, resources={"beat.waitForTaskToken": print,
                                              "slow.waitForTaskToken": print})
    job.use_backend(Backend("embedded", store, bus, keys=KEYS))
    clock = job.engine.clock = Clock()
    sent = _tokens_of(job)
    client = SignedClient(http_client(job.make_callback(), "asl-token-callback"))
    env = {"FUNCTION_FLOW_DB": str(tmp_path / "ff.db")}

    def poller_pass() -> None:  # what ends a wait whose time passed (as every minute)
        job.engine.poll(stale_after=3600, run_ids=[run_id])

    def task(task_id: str) -> Any:
        return store.get_tasks(run_id, [task_id])[0]

    try:
        run_id = job.start_execution({"q": 1})
        token = _wait(lambda: sent.get("beat"), "the Beat token")[0]
        begun = clock.now

        def lease() -> float:
            return _wait(lambda: [r for r in store.get_tasks(run_id, ["0001.Beat"])
                                  if r.trigger_id], "the wait")[0].lease_until

        first = lease()
        assert first == begun + 300
        # The CLI's process and the endpoint keep the real time (the engine's start).
        beat = flow(tmp_path, "heartbeat", token, env=env)          # the CLI
        assert beat.returncode == 0 and "0001.Beat of run" in beat.stdout, beat.stderr
        answer = client.post("/heartbeat", json={"token": token})   # the endpoint
        assert answer.status_code == 200 and answer.json["task_id"] == "0001.Beat"
        assert answer.json["until"] >= first and lease() == answer.json["until"]
        clock.now = begun + 200
        until = tokens.send_heartbeat(job.engine, token)            # the API
        assert until == begun + 500 and lease() == until
        # Past the wait's first end: the heartbeats keep it alive.
        clock.now = begun + 400
        poller_pass()
        assert task("0001.Beat").status is TaskStatus.RUNNING and "slow" not in sent
        # No more heartbeats: HeartbeatSeconds after the last, the wait ends, caught.
        clock.now = begun + 501
        poller_pass()
        slow = _wait(lambda: sent.get("slow"), "the Slow token")[0]
        # A token whose time passed, before the engine ended its wait, names its state.
        wait_end = _wait(lambda: store.get_trigger(approvals.token_hash(slow)),
                         "the Slow wait")
        slow_begun = clock.now
        clock.now = slow_begun + 3600
        try:
            with pytest.raises(approvals.TokenExpired, match="TaskTimedOut.*state 'Slow'"):
                tokens.send_success(job.engine, slow, "late")
        finally:
            clock.now = slow_begun
        # A heartbeat a minute later: its HeartbeatSeconds would pass TimeoutSeconds.
        clock.now = slow_begun + 60
        capped = tokens.send_heartbeat(job.engine, slow)
        assert capped == slow_begun + 120 == task(wait_end.task_id).lease_until
        before = store.get_tasks(run_id, ["0001.Beat", "0002.Beat"])
        refused = client.post("/heartbeat", json={"token": token})
        assert refused.status_code == 404, refused.json
        with pytest.raises(approvals.UnknownToken, match="TaskDoesNotExist"):
            tokens.send_success(job.engine, token, "too late")
        with pytest.raises(approvals.MalformedToken, match="InvalidToken"):
            tokens.send_failure(job.engine, "not a token!", "E", "C")
        with pytest.raises(approvals.UnknownToken, match="TaskDoesNotExist"):
            tokens.send_heartbeat(job.engine, "F" * 43)  # forged
        assert_one_error_line(flow(tmp_path, "heartbeat", "F" * 43, env=env),
                              "unknown approval token")
        assert [r.to_dict() for r in store.get_tasks(run_id, ["0001.Beat", "0002.Beat"])] \
            == [r.to_dict() for r in before]  # nothing changed
        # Past TimeoutSeconds (the heartbeat's HeartbeatSeconds not yet): States.Timeout,
        # and the Retry asks again, with a new token.
        clock.now = slow_begun + 121
        poller_pass()
        _wait(lambda: len(sent["slow"]) == 2, "the retry's token")
        # That wait is not heartbeated: HeartbeatSeconds after it began, it ends.
        retry_wait = _wait(lambda: store.get_trigger(approvals.token_hash(sent["slow"][1])),
                           "the retry's wait")
        assert task(retry_wait.task_id).lease_until == clock.now + 90
        clock.now += 91
        poller_pass()
        run = job.wait(run_id, timeout=60)
        outcome = job.outcome(run_id)
    finally:
        bus.close()
        store.close()
    records = {r.task_id: r for r in SqliteStore(str(tmp_path / "ff.db")).get_tasks(run_id)}
    assert run.status.value == "FAILED"
    assert (outcome.error, outcome.status) == ("States.HeartbeatTimeout", "FAILED")
    assert "HeartbeatSeconds (90)" in outcome.cause
    first_slow = records["0003.Slow"]  # the first wait: capped, so States.Timeout
    assert '"States.Timeout"' in first_slow.error and "TimeoutSeconds (120)" in first_slow.error
    late = json.loads(json.dumps(records["0003.Slow"].item))["in"]["late"]
    assert late["Error"] == "States.HeartbeatTimeout" and "HeartbeatSeconds (300)" in \
        late["Cause"]
    assert records["0001.Beat"].status is TaskStatus.FAILED
    assert len(sent["slow"]) == 2


def test_a_worker_that_answers_later_leaves_the_wait_to_function_flow_approve(
        tmp_path: Path) -> None:
    """SendTaskSuccess from the command line: the worker mails the token and
    returns ANSWER_LATER; `function-flow approve TOKEN --data` answers it."""
    (tmp_path / "ask.json").write_text(json.dumps({"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "mail.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token"}, "TimeoutSeconds": 300,
                "ResultPath": "$.answer", "End": True}}}))
    (tmp_path / "ask.py").write_text(
        "import pathlib\n"
        "from function_flow.asl.resources import ANSWER_LATER\n"
        "def mail(event):\n"
        "    pathlib.Path('token.txt').write_text(event['token'])\n"
        "    return ANSWER_LATER\n"
        "RESOURCES = {'mail.waitForTaskToken': mail}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    running = subprocess.Popen(
        [sys.executable, "-m", "function_flow.cli", "run", "ask.json", "--input", '{"q": 1}'],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        token_file = tmp_path / "token.txt"
        token = _wait(lambda: token_file.exists() and token_file.read_text(), "the token")
        assert running.poll() is None  # it waits for the answer

        answered = flow(tmp_path, "approve", token, "--data", '{"ok": true}')

        assert answered.returncode == 0, answered.stderr
        out, err = running.communicate(timeout=60)
        assert running.returncode == 0, err
        assert "Traceback" not in err  # the worker's thread sent nothing, and failed nothing
        assert 'output: {"q": 1, "answer": {"ok": true}}' in out
        assert_one_error_line(flow(tmp_path, "approve", token), "already used")
    finally:
        if running.poll() is None:
            running.kill()
            running.wait()


def test_a_rejected_token_fails_the_task_with_states_task_failed(tmp_path: Path) -> None:
    """SendTaskFailure as `function-flow reject` does it (approvals.reject)."""
    sent: list[str] = []

    def mail(event: dict[str, Any]) -> Any:
        sent.append(event["token"])
        return ANSWER_LATER

    definition = {"StartAt": "Ask", "States": {
        "Ask": {"Type": "Task", "Resource": "mail.waitForTaskToken",
                "Parameters": {"token.$": "$$.Task.Token"}, "Next": "Done",
                "Catch": [{"ErrorEquals": ["States.TaskFailed"], "ResultPath": "$.why",
                           "Next": "Done"}]},
        "Done": {"Type": "Pass", "End": True}}}
    job = StateMachine(definition, resources={"mail.waitForTaskToken": mail})
    job.use_backend(Backend("embedded", SqliteStore(str(tmp_path / "ff.db")), LocalBus(2),
                            keys=KEYS))
    run_id = job.start_execution({"q": 1})
    token = _wait(lambda: sent, "the token")[0]
    _wait(lambda: [r for r in job.engine.store.get_tasks(run_id, ["0001.Ask"])
                   if r.trigger_id], "the wait")

    approvals.reject(job.engine, token, "not today")

    job.wait(run_id, timeout=30)
    assert job.outcome(run_id).output == {
        "q": 1, "why": {"Error": "States.TaskFailed", "Cause": "not today"}}


def test_heartbeat_seconds_path_is_read_from_the_input_after_input_path(tmp_path) -> None:
    sent: list[str] = []

    def mail(event: dict[str, Any]) -> Any:
        sent.append(event["token"])
        return ANSWER_LATER

    definition = {"StartAt": "Ask", "States": {
        "Ask": _ask("mail", InputPath="$.limits", HeartbeatSecondsPath="$.beat", End=True,
                    Catch=[{"ErrorEquals": ["States.Runtime"], "Next": "Bad"}]),
        "Bad": {"Type": "Pass", "End": True}}}
    job = StateMachine(definition, resources={"mail.waitForTaskToken": mail})
    job.use_backend(Backend("embedded", SqliteStore(str(tmp_path / "ff.db")), LocalBus(2),
                            keys=KEYS))
    clock = job.engine.clock = Clock()
    run_id = job.start_execution({"limits": {"beat": 120}})
    token = _wait(lambda: sent, "the token")[0]
    wait = _wait(lambda: [r for r in job.engine.store.get_tasks(run_id, ["0001.Ask"])
                          if r.trigger_id], "the wait")[0]
    assert wait.lease_until == clock.now + 120
    tokens.send_success(job.engine, token, "ok")
    assert job.wait(run_id, timeout=30) and job.outcome(run_id).output == "ok"

    for beat in ("soon", 0, None):
        bad = job.start_execution({"limits": {"beat": beat}})
        job.wait(bad, timeout=30)
        cause = job.outcome(bad).output
        assert cause["Error"] == "States.Runtime", cause
        assert "'Ask'" in cause["Cause"] and "HeartbeatSecondsPath" in cause["Cause"]
    assert len(sent) == 1  # the bad paths sent no token
