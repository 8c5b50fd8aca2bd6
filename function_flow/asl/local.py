"""A state machine run in memory: the stepper driven by a loop, the language's oracle.

The engine integration (asl/engine_states.py) is how state machines run for
real, durably; this interpreter is the smallest driver of the same rules
(stepper.py, where they live once). `function-flow validate` and the tests
use it to compare the engine's answer with the language's, and the corpus's
in-memory adapter uses it. Time is injectable (`clock`, `sleep`): a test
clock makes Wait and Retry delays cost nothing.

It is the oracle for the language only, not for how a run is carried out:
it runs a Parallel's branches and a Map's items one after another, so a
failure past what the state tolerates ends the state before a later sibling
starts, and there is nothing running to stop. The outcome (status, output,
error and cause) is the language's; which siblings' resources were called
before the failure is not (AWS runs them at once and aborts the others, as
the engine does with asl/stopping.py; tests/test_asl_stop.py checks that).
"""

from __future__ import annotations

import dataclasses
import random
import time
import uuid
from typing import Any, Callable

from function_flow.asl import context as ctx, stepper
from function_flow.asl.errors import AslError
from function_flow.asl.resources import task_failure


@dataclasses.dataclass
class Execution:
    """How a run ended: status SUCCEEDED or FAILED, its output or error and cause."""
    status: str
    output: Any = None
    error: str | None = None
    cause: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Clock:
    """A test clock: `sleep` moves time on instead of waiting."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


class Interpreter:
    """Runs one definition; `resources` maps a Resource string to fn(payload)."""

    def __init__(self, resources: dict[str, Callable[[Any], Any]], *,
                 clock: Callable[[], float] = time.time,
                 sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        self.resources = resources
        self.clock, self.sleep = clock, sleep
        self.rng = rng or random.Random()

    def run(self, definition: dict[str, Any], value: Any, name: str = "machine",
            execution: str | None = None) -> Execution:
        base = ctx.execution(name, execution or str(uuid.uuid4()), value, self.clock())
        outcome = self.machine(definition, value, base)
        if isinstance(outcome, stepper.Succeed):
            return Execution("SUCCEEDED", output=outcome.output)
        return Execution("FAILED", error=outcome.error, cause=outcome.cause)

    def machine(self, definition: dict[str, Any], value: Any,
                base: dict[str, Any]) -> stepper.Succeed | stepper.Fail:
        name = definition["StartAt"]
        while True:
            outcome = self.state(definition["States"][name], name, value, base)
            if not isinstance(outcome, stepper.Goto):
                return outcome
            name, value = outcome.state, outcome.output

    def state(self, spec: dict[str, Any], name: str, value: Any,
              base: dict[str, Any]) -> stepper.Outcome:
        retries = [0] * len(spec.get("Retry") or [])
        while True:
            entered = self.clock()
            is_task = spec["Type"] == "Task"
            token = str(uuid.uuid4()) if is_task and spec["Resource"].endswith(
                stepper.TOKEN_SUFFIX) else None
            context = ctx.for_state(base, name, entered, token=token,
                                    retry_count=sum(retries) if is_task else None)
            outcome = stepper.enter(spec, name, value, context, now=entered, rng=self.rng)
            outcome = self._run(outcome, spec, name, value, context, base)
            if isinstance(outcome, stepper.Raised):
                outcome = stepper.recover(spec, name, value, outcome.failure, retries,
                                          self.rng)
                if isinstance(outcome, stepper.Retry):
                    self.sleep(outcome.delay)
                    retries[outcome.retrier] += 1
                    continue
            return outcome

    def _run(self, outcome: stepper.Outcome, spec: dict[str, Any], name: str, value: Any,
             context: dict[str, Any], base: dict[str, Any]) -> stepper.Outcome:
        if isinstance(outcome, stepper.Wait):
            self.sleep(outcome.until - self.clock())
            return outcome.then
        if isinstance(outcome, stepper.Call):
            try:
                result = self.call(outcome)
            except AslError as failure:
                return stepper.Raised(failure)
            return stepper.finish(spec, name, value, context, result, self.rng)
        if isinstance(outcome, stepper.Branches):
            outputs = []
            for branch in outcome.branches:
                ended = self.machine(branch, outcome.input, base)
                if isinstance(ended, stepper.Fail):
                    return stepper.Raised(AslError(ended.error, ended.cause))
                outputs.append(ended.output)
            return stepper.finish(spec, name, value, context, outputs, self.rng)
        if isinstance(outcome, stepper.Items):
            return self._items(outcome, spec, name, value, context, base)
        return outcome

    def _items(self, outcome: stepper.Items, spec: dict[str, Any], name: str, value: Any,
               context: dict[str, Any], base: dict[str, Any]) -> stepper.Outcome:
        outputs, failures = [], []
        for item in outcome.inputs:
            ended = self.machine(outcome.processor, item, base)
            if isinstance(ended, stepper.Fail):
                failures.append(ended)
                outputs.append({"Error": ended.error, "Cause": ended.cause})
                if not stepper.tolerates(outcome, len(failures), len(outcome.inputs)):
                    return stepper.Raised(stepper.map_failure(outcome, ended))
            else:
                outputs.append(ended.output)
        return stepper.finish(spec, name, value, context, outputs, self.rng)

    def call(self, call: stepper.Call) -> Any:
        function = self.resources.get(call.resource)
        if function is None:
            raise AslError("States.Runtime", f"no function provides resource "
                                             f"{call.resource!r}")
        try:
            return function(call.payload)
        except Exception as exc:  # the task's own failure, as Retry/Catch see it
            raise task_failure(exc) from None


def run(definition: dict[str, Any], value: Any, resources: dict[str, Callable[[Any], Any]],
        *, test_clock: bool = False) -> Execution:
    """Run `definition` on `value` in memory (no durability: for checks and tests)."""
    if test_clock:
        clock = Clock()
        return Interpreter(resources, clock=clock, sleep=clock.sleep).run(definition, value)
    return Interpreter(resources).run(definition, value)
