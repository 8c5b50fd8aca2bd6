"""What stops when a branch or an item fails, as AWS aborts them: a Parallel's
sibling branches and a stopped Map's running items start no further state
(asl/stopping.py, the engine's; the in-memory oracle of the language,
asl/local.py, runs them one after another and has none to stop, with the
same outcome); and a remote Task's TimeoutSecondsPath, against a local
server that is slow."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from openfaas_gateway import Gateway

from function_flow.asl import local
from function_flow.asl.job import StateMachine
from function_flow.backends import embedded
from function_flow.core.records import TaskStatus

pytestmark = pytest.mark.timeout(90)


class Harness:
    """Task functions that count their calls, and one that keeps executing
    until the fan-out it is in has been stopped (so a state is running then)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.job: StateMachine | None = None
        self.run_id: str | None = None
        self.executing = threading.Event()
        #: Records that must exist before the failure (Waits' timers, say).
        self.await_records: list[str] = []

    def counted(self, name: str) -> Any:
        def function(payload: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return payload
        return function

    def fail(self, payload: Any) -> Any:
        assert self.executing.wait(30), "the slow state never started"
        deadline = time.monotonic() + 30
        while not all(self._exists(task_id) for task_id in self.await_records):
            assert time.monotonic() < deadline, f"{self.await_records} never came"
            time.sleep(0.02)
        raise RuntimeError("branch A broke")  # (or item 1)

    def _exists(self, task_id: str) -> bool:
        return bool(self.job and self.run_id
                    and self.job.engine.store.get_tasks(self.run_id, [task_id]))

    def until_stopped(self, payload: Any) -> Any:
        self.executing.set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.job is not None and self.run_id is not None and any(
                    isinstance(r.item, dict) and r.item.get("stopped")
                    for r in self.job.engine.store.get_tasks(self.run_id)):
                return "finished after the stop"
            time.sleep(0.05)
        raise AssertionError("the fan-out was never stopped")

    def run(self, job: StateMachine, value: Any, tmp_path: Any) -> tuple[Any, dict[str, Any]]:
        backend = embedded(str(tmp_path / "ff.db"), workers=4)
        job.use_backend(backend)
        self.job = job
        try:
            self.run_id = job.start_execution(value)
            job.wait(self.run_id, timeout=30)
            outcome = job.outcome(self.run_id)
            records = {r.task_id: r for r in job.engine.store.get_tasks(self.run_id)}
        finally:
            backend.bus.close()
            backend.close()
        return outcome, records


def _chain(*names: str, start: dict[str, Any] | None = None) -> dict[str, Any]:
    states = {name: {"Type": "Task", "Resource": name, "Next": after}
              for name, after in zip(names, names[1:])}
    states[names[-1]] = {"Type": "Task", "Resource": names[-1], "End": True}
    return {"StartAt": names[0], "States": states}


def test_a_failing_branch_stops_its_siblings_and_the_parallels_catch_sees_its_error(
        tmp_path: Any) -> None:
    harness = Harness()
    # Branch C waits for an hour; so does the item of branch D's Map (nested).
    harness.await_records = ["0001.Both.b2.0002.Nap",
                             "0001.Both.b3.0001.Inner.i0.0002.Nap"]
    waiting = {"StartAt": "Nap", "States": {
        "Nap": {"Type": "Wait", "Seconds": 3600, "Next": "AfterNap"},
        "AfterNap": {"Type": "Task", "Resource": "AfterNap", "End": True}}}
    nested = {"StartAt": "Inner", "States": {"Inner": {
        "Type": "Map", "ItemsPath": "$.xs", "ItemProcessor": waiting, "End": True}}}
    definition = {"StartAt": "Both", "States": {
        "Both": {"Type": "Parallel", "Next": "Done",
                 "Branches": [_chain("Fails"), _chain("Slow", "Later1", "Later2", "Later3"),
                              waiting, nested],
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": True},
        "Done": {"Type": "Pass", "End": True}}}
    resources = {"Fails": harness.fail, "Slow": harness.until_stopped,
                 **{name: harness.counted(name) for name in ("Later1", "Later2", "Later3",
                                                             "AfterNap")}}
    outcome, records = harness.run(StateMachine(definition, resources=resources),
                                   {"xs": [1]}, tmp_path)
    # The Catch took branch A's failure (not an hour later: the Waits were skipped).
    assert outcome.status == "SUCCEEDED", outcome
    assert outcome.output == {"Error": "RuntimeError", "Cause": "branch A broke"}
    assert harness.calls == {}  # no later state of B, C or D ran
    slow = records["0001.Both.b1.0001.Slow"]
    assert slow.status is TaskStatus.SUCCEEDED  # it was executing: it finished
    assert records["0001.Both.b1.0002.Later1"].status is TaskStatus.SKIPPED
    assert not [t for t in records if t.endswith(("Later2", "Later3", "AfterNap"))]
    assert records["0003.Caught"].status is TaskStatus.SUCCEEDED
    assert "0003.Done" not in records
    # The language's oracle (asl/local.py) gives the same outcome. It runs the
    # branches one after another: after branch A failed no other starts, so it
    # has nothing to stop (asl/stopping.py is the engine's, checked above).
    in_memory = Harness()

    def broke(payload: Any) -> Any:
        raise RuntimeError("branch A broke")

    oracle = local.run(definition, {"xs": [1]}, {
        "Fails": broke, **{name: in_memory.counted(name) for name in resources
                           if name != "Fails"}}, test_clock=True)
    assert (oracle.status, oracle.output) == (outcome.status, outcome.output)
    assert in_memory.calls == {}


def test_a_stopped_maps_running_item_starts_no_further_state(tmp_path: Any) -> None:
    harness = Harness()
    processor = {"StartAt": "Check", "States": {
        "Check": {"Type": "Choice", "Choices": [
            {"Variable": "$", "NumericEquals": 0, "Next": "Bad"}], "Default": "Slow"},
        "Bad": {"Type": "Task", "Resource": "Fails", "End": True},
        "Slow": {"Type": "Task", "Resource": "Slow", "Next": "Next"},
        "Next": {"Type": "Task", "Resource": "Next", "End": True}}}
    definition = {"StartAt": "Each", "States": {
        "Each": {"Type": "Map", "ItemsPath": "$.xs", "MaxConcurrency": 2,
                 "ItemProcessor": processor, "Next": "Done",
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": True},
        "Done": {"Type": "Pass", "End": True}}}
    job = StateMachine(definition, resources={"Slow": harness.until_stopped,
                                              "Fails": harness.fail,
                                              "Next": harness.counted("Next")})
    outcome, records = harness.run(job, {"xs": [1, 0, 2]}, tmp_path)
    assert (outcome.status, outcome.output) == (
        "SUCCEEDED", {"Error": "RuntimeError", "Cause": "branch A broke"})
    assert harness.calls == {}  # item 0's Next never ran
    assert records["0001.Each.i0.0002.Slow"].status is TaskStatus.SUCCEEDED
    assert records["0001.Each.i0.0003.Next"].status is TaskStatus.SKIPPED
    assert records["0001.Each.i2.0001.Check"].status is TaskStatus.SKIPPED  # not begun


def test_timeout_seconds_path_limits_a_remote_call_and_a_bad_path_is_a_runtime_error(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    for name in ("FUNCTION_FLOW_CALLBACK_URL", "FUNCTION_FLOW_BACKEND"):
        monkeypatch.delenv(name, raising=False)
    with Gateway() as gateway:
        gateway.register("slow", lambda call: release.wait(20) and {"late": True})
        definition = {"StartAt": "Call", "States": {
            "Call": {"Type": "Task", "Resource": f"{gateway.url}/function/slow",
                     "InputPath": "$.limits", "TimeoutSecondsPath": "$.seconds",
                     "End": True,
                     "Catch": [{"ErrorEquals": ["States.Timeout"], "Next": "TimedOut"},
                               {"ErrorEquals": ["States.Runtime"], "Next": "Bad"}]},
            "TimedOut": {"Type": "Pass", "Result": "timed out", "End": True},
            "Bad": {"Type": "Pass", "End": True}}}
        job = StateMachine(definition)
        backend = embedded(str(tmp_path / "ff.db"), workers=4)
        job.use_backend(backend)
        try:
            timed = job.execute({"limits": {"seconds": 1}}, timeout=40)
            bad = [job.execute({"limits": {"seconds": value}}, timeout=40)
                   for value in ("soon", 0, 1.5)]
            missing = job.execute({"limits": {}}, timeout=40)
        finally:
            release.set()
            backend.bus.close()
            backend.close()
    assert (timed.status, timed.output) == ("SUCCEEDED", "timed out"), timed
    assert len(gateway.invocations("slow")) == 1  # the bad paths called nothing
    for outcome in bad + [missing]:
        assert outcome.status == "SUCCEEDED", outcome
        assert outcome.output["Error"] == "States.Runtime"
        assert "'Call'" in outcome.output["Cause"]
        assert "TimeoutSecondsPath" in outcome.output["Cause"]
