"""State visits as engine tasks: each visit's body runs the stepper and grows the run.

A visit's record carries its input and where it stands (`Envelope`): the
machine scope, its sequence number, the records its scope's end notifies
(`exits`) and its phase. Its body asks the stepper what the state does
and answers the engine with a `growth.Grow` (the next visit, added in
the transaction that records this one's success), or a failure:

- Goto: the next state's record, in the same scope;
- Succeed: the scope ends; its exits (a Parallel's or Map's join, the next
  item of a lane) learn it; at the top the run ends;
- Fail: the record fails (StateFailed); at the top that ends the run
  FAILED, inside a branch or an item the join decides;
- Wait: a continuation record not before the time (the engine's durable
  timer: a claim before then is sent again for later);
- Retry: the engine's next attempt, not before the backoff (a Task), or a
  new visit (a Parallel or Map);
- Parallel: the first record of each branch, and a join record that runs
  when they all ended and applies the state's result fields;
- Map: the same through group records, added before the visit succeeds,
  its items in lanes (map_state.py).

A branch or item that fails uncaught stops its fan-out (stopping.py): no
further state inside it starts, and the join fails with that failure.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable

from function_flow import futures
from function_flow.asl import context as ctx, map_state, stepper, stopping, tokens
from function_flow.asl.errors import AslError
from function_flow.asl.machine import Compiled, record_id
from function_flow.core.growth import Grow
from function_flow.core.records import TaskRecord, TaskStatus

_MARK = "StateFailed: "
#: How a SendTaskFailure reaches the record (approvals.reject's error).
_REJECTED = "ApprovalRejected: "


class _Suspended:
    """A Task visit that waits for its token (an Approval, for the engine)."""

    def __init__(self, approval: Any) -> None:
        self.approval = approval


class StateFailed(Exception):
    """A state failed for good (no retry of the engine): Error and Cause, as JSON."""

    no_retry = True
    expected = True  # the machine's own outcome: logged in one line (core/bodies.py)

    def __init__(self, error: str | None, cause: str | None) -> None:
        super().__init__(json.dumps({"Error": error, "Cause": cause}))
        self.error, self.cause = error, cause


class StateRetry(Exception):
    """A Task state's retrier matched: the engine's next attempt, after the delay."""

    expected = True

    def __init__(self, failure: AslError, retries: list[int], not_before: float) -> None:
        super().__init__(json.dumps({"Error": failure.error, "Cause": failure.cause,
                                     "retries": retries}))
        self.retry_not_before = not_before


def remote_template(template: str) -> str:
    """The template of the record that calls a Task state's remote resource."""
    return f"{template}.call"


def failure_of(error: str | None) -> AslError:
    """The ASL error a failed record stands for (its StateFailed line, else the text)."""
    text = (error or "").strip()
    for line in reversed(text.splitlines()):
        for mark in (_MARK, _REJECTED):
            if mark in line:
                try:
                    found = json.loads(line.split(mark, 1)[1])
                    return AslError(found.get("Error"), found.get("Cause"))
                except (ValueError, AttributeError):
                    return AslError("States.TaskFailed", line.split(mark, 1)[1])
    try:
        found = json.loads(text)
        if isinstance(found, dict) and "Error" in found:
            return AslError(found["Error"], found.get("Cause"))
    except ValueError:
        pass
    last = text.splitlines()[-1] if text else "failed"
    name = "States.Timeout" if "Timeout" in last else "States.TaskFailed"
    return AslError(name, last)


def retries_of(error: str | None, count: int) -> list[int]:
    """Per-retrier counts from the previous attempt's StateRetry line."""
    for line in reversed((error or "").splitlines()):
        if "StateRetry: " in line:
            found = json.loads(line.split("StateRetry: ", 1)[1]).get("retries") or []
            return (list(found) + [0] * count)[:count]
    return [0] * count


class Visit:
    """One attempt of one state visit: what the body of a record does."""

    def __init__(self, compiled: Compiled, template: str, record: str, envelope: dict[str, Any],
                 base: dict[str, Any], attempt: int, previous_error: str | None,
                 call: Callable[[stepper.Call, dict[str, Any]], Any],
                 clock: Callable[[], float] = time.time) -> None:
        self.compiled, self.template, self.record = compiled, template, record
        self.machine, self.name, self.spec = compiled.spec(template)
        self.env, self.base, self.attempt = envelope, base, attempt
        self.previous_error, self.call, self.clock = previous_error, call, clock
        self.value = envelope.get("in")
        self.retries: list[int] = list(envelope.get("retries") or [])

    # ------------------------------------------------------------- records

    def _record(self, machine: int, name: str, scope: str, seq: int, envelope: dict[str, Any],
                deps: list[str], **fields: Any) -> TaskRecord:
        # Until its success says where it goes, a record leads to its scope's
        # exits: a failure there is what the join (or, at the top, the run) sees.
        return TaskRecord(task_id=record_id(scope, seq, name),
                          template=self.compiled.template_of[(machine, name)],
                          deps=deps, dependents=list(envelope.get("exits") or []),
                          item={"scope": scope, "seq": seq, **envelope},
                          role="member" if scope else None, **fields)

    def _scoped(self) -> dict[str, Any]:
        """What every record of this scope carries: its exits, its fan-out's limits."""
        kept = {"exits": self.env.get("exits", [])}
        if "limits" in self.env:
            kept["limits"] = self.env["limits"]
        return kept

    def _next(self, name: str, value: Any, **fields: Any) -> Grow:
        scope, seq = self.env.get("scope", ""), int(self.env.get("seq", 1)) + 1
        record = self._record(self.machine, name, scope, seq,
                              {"in": value, **self._scoped()}, [self.record], **fields)
        return Grow(value, [record], [record.task_id])

    def _continue(self, output: Any, envelope: dict[str, Any], **fields: Any) -> Grow:
        """Another record of this same state (after a Wait, a join, a retry)."""
        scope, seq = self.env.get("scope", ""), int(self.env.get("seq", 1)) + 1
        record = self._record(self.machine, self.name, scope, seq,
                              {**self._scoped(), **envelope}, [self.record], **fields)
        return Grow(output, [record], [record.task_id])

    # ------------------------------------------------------------ outcomes

    def run(self) -> Any:
        phase = self.env.get("phase", "enter")
        if phase == "then":
            return self.settle(self._then(self.env["then"]))
        if phase == "join":
            return self.settle(self.join())
        if phase == "callback":
            return self.settle(self.answered())
        return self.settle(self.enter())

    def _then(self, then: dict[str, Any]) -> stepper.Outcome:
        if "next" in then:
            return stepper.Goto(then["next"], then["output"])
        return stepper.Succeed(then["output"])

    def context(self, retries: list[int] | None = None, token: str | None = None
                ) -> dict[str, Any]:
        return ctx.for_state(self.base, self.name, self.clock(), token=token,
                             retry_count=None if retries is None else sum(retries))

    def enter(self) -> stepper.Outcome:
        is_task = self.spec["Type"] == "Task"
        count = len(self.spec.get("Retry") or [])
        if self.attempt > 1:  # the engine's retry of this visit: the counts so far
            self.retries = retries_of(self.previous_error, count)
        retries = self.retries = (self.retries + [0] * count)[:count]
        approval = None
        if is_task and self.spec["Resource"].endswith(stepper.TOKEN_SUFFIX):
            approval = futures.Approval()  # its end: tokens.timed, below
        context = self.context(retries if is_task else None,
                               token=approval.token if approval else None)
        outcome = stepper.enter(self.spec, self.name, self.value, context, now=self.clock())
        if isinstance(outcome, stepper.Call) and approval is not None:
            tokens.timed(approval, self.name, self.clock(), outcome.timeout, outcome.heartbeat)
            answer = self._record(self.machine, self.name, self.env.get("scope", ""),
                                  int(self.env.get("seq", 1)) + 1,
                                  {"phase": "callback", "in": self.value, "retries": retries,
                                   **self._scoped()},
                                  [self.record], trigger_rule="all_done")
            self.suspend(answer, outcome, approval.token)
            return _Suspended(approval)
        if isinstance(outcome, stepper.Call) and self.remote(outcome.resource) is not None:
            return self._remote_call(outcome, retries)
        if isinstance(outcome, stepper.Call):
            try:
                result = self.call(outcome, context)
            except AslError as failure:
                return stepper.Raised(failure)
            return stepper.finish(self.spec, self.name, self.value, context, result)
        return outcome

    def _remote_call(self, outcome: stepper.Call, retries: list[int]) -> Grow:
        """A remote resource: a record the engine calls it for (template
        `<state template>.call`, job.py), and the answer's record after it,
        which applies the result fields, or Retry and Catch to its failure."""
        scope, seq = self.env.get("scope", ""), int(self.env.get("seq", 1))
        call = self._record(self.machine, self.name, scope, seq + 1,
                            {"phase": "call", "payload": outcome.payload, **self._scoped()},
                            [self.record])
        call.template = remote_template(self.template)
        call.timeout = outcome.timeout  # TimeoutSeconds(Path): the engine's limit
        answer = self._record(self.machine, self.name, scope, seq + 2,
                              {"phase": "callback", "in": self.value, "retries": retries,
                               **self._scoped()}, [call.task_id], trigger_rule="all_done")
        call.dependents, call.role = [answer.task_id], "member"
        return Grow(self.value, [call, answer], [call.task_id])

    def answered(self) -> stepper.Outcome:
        """A callback's answer: the waiting visit's result, or its failure."""
        waited = self.waited()
        context = self.context(self.retries)
        if waited is not None and waited.status is TaskStatus.SUCCEEDED:
            return stepper.finish(self.spec, self.name, self.value, context,
                                  self.load(waited.result))
        failure = failure_of(waited.error if waited else "the wait was lost")
        if waited is not None and waited.timeout and waited.duration is not None \
                and waited.duration >= waited.timeout:  # the call's own limit said so first
            failure = AslError("States.Timeout", failure.cause)
        return stepper.Raised(failure)

    def settle(self, outcome: Any) -> Any:
        """The engine's answer for an outcome: a Grow, a Pending, or an exception."""
        if isinstance(outcome, _Suspended):
            return outcome.approval
        if isinstance(outcome, Grow):  # a remote call's records
            return outcome
        if isinstance(outcome, stepper.Raised):
            failure = outcome.failure
            count = len(self.spec.get("Retry") or [])
            counts = (self.retries + [0] * count)[:count]
            outcome = stepper.recover(self.spec, self.name, self.value, failure, counts)
            if isinstance(outcome, stepper.Retry):
                counts[outcome.retrier] += 1
                not_before = self.clock() + outcome.delay
                if self.spec["Type"] == "Task" and self.env.get("phase", "enter") == "enter":
                    raise StateRetry(failure, counts, not_before)
                # A Parallel, a Map or a callback's answer: the state is visited again.
                return self._continue(failure.error, {"in": self.value, "retries": counts},
                                      not_before=not_before)
        if isinstance(outcome, stepper.Goto):
            return self._next(outcome.state, outcome.output)
        if isinstance(outcome, stepper.Succeed):
            return Grow(outcome.output, [], list(self.env.get("exits", [])))
        if isinstance(outcome, stepper.Fail):
            if "limits" in self.env:  # a branch or an item fails: stopping.py
                self.stop_scope(self.env["limits"])
            raise StateFailed(outcome.error, outcome.cause)
        if isinstance(outcome, stepper.Wait):
            then = {"output": outcome.then.output}
            if isinstance(outcome.then, stepper.Goto):
                then["next"] = outcome.then.state
            return self._continue(outcome.then.output, {"phase": "then", "then": then},
                                  not_before=outcome.until)
        if isinstance(outcome, (stepper.Branches, stepper.Items)):
            return self.fan_out(outcome)
        raise TypeError(f"unexpected outcome {outcome!r}")

    # ------------------------------------------------------- Parallel, Map

    def fan_out(self, outcome: stepper.Branches | stepper.Items) -> Any:
        children = self.compiled.children[(self.machine, self.name)]
        inputs = [outcome.input] * len(children) \
            if isinstance(outcome, stepper.Branches) else outcome.inputs
        if not inputs:
            return self.settle(stepper.finish(self.spec, self.name, self.value,
                                              self.context(), []))
        scope, seq = self.env.get("scope", ""), int(self.env.get("seq", 1)) + 1
        join_id = record_id(scope, seq, self.name)
        if isinstance(outcome, stepper.Items):  # any number of items: map_state.py
            records, firsts = map_state.plan(self, outcome, join_id, seq)
            self.add_records(records)
            return Grow(self.value, [], firsts)
        join = TaskRecord(
            task_id=join_id, template=self.template, trigger_rule="all_done",
            deps=[f"{self.record}.b{i}" for i in range(len(inputs))],
            dependents=list(self.env.get("exits") or []),  # its failure's: see _record
            role="member" if scope else None,
            item={"scope": scope, "seq": seq, "phase": "join", **self._scoped(),
                  "in": self.value, "fan": self.record, "kind": "b",
                  "retries": self.retries, "count": len(inputs)})
        limits = stopping.limits(join_id, self.record, "b", len(inputs),
                                 self.env.get("limits"))
        firsts = [self._record(machine, self.compiled.machines[machine]["StartAt"],
                               f"{self.record}.b{index}.", 1,
                               {"in": value, "exits": [join_id], "limits": limits},
                               [self.record], trigger_rule="all_done")
                  for index, (machine, value) in enumerate(zip(children, inputs))]
        return Grow(self.value, [join] + firsts, [r.task_id for r in firsts])

    def join(self) -> stepper.Outcome:
        """Every branch or item ended: their outputs in order, or the failure."""
        ended = self.ended_records()
        kind, count = self.env["kind"], int(self.env["count"])
        prefix = f"{self.env['fan']}.{kind}"
        by_index: dict[int, TaskRecord] = {}
        for record in ended:
            index = int(record.task_id[len(prefix):].split(".", 1)[0])
            by_index[index] = record
        outputs, failures = [], []
        items = stepper.Items({}, [None] * count, 0, self.env.get("tolerated_count"),
                              self.env.get("tolerated_percentage"))
        for index in range(count):
            record = by_index.get(index)
            if record is not None and record.status is TaskStatus.SKIPPED:
                continue  # not run: the fan-out stopped (stopping.py); a failure decides
            if record is not None and record.status is TaskStatus.SUCCEEDED:
                outputs.append(self.load(record.result))
                continue
            failure = failure_of(record.error if record is not None else "branch lost")
            failures.append(failure)
            outputs.append({"Error": failure.error, "Cause": failure.cause})
            if kind == "b" or not stepper.tolerates(items, len(failures), count):
                error = failure if kind == "b" else stepper.map_failure(
                    items, stepper.Fail(failure.error, failure.cause))
                return stepper.Raised(error)
        return stepper.finish(self.spec, self.name, self.value, self.context(), outputs)

    #: Set by the job: records the callback's continuation and sends the payload.
    suspend: Callable[[TaskRecord, stepper.Call, str], None]
    #: Set by the job: the record a callback continuation waited for.
    waited: Callable[[], TaskRecord | None]
    #: Set by the job: reads the records that ended a fan-out (deps_done keys).
    ended_records: Callable[[], list[TaskRecord]]
    #: Set by the job: adds a Map's records before its visit succeeds (chunked).
    add_records: Callable[[list[TaskRecord]], Any]
    #: Set by the job: a branch or an item fails uncaught (stopping.stop).
    stop_scope: Callable[[dict[str, Any]], Any] = staticmethod(lambda info: None)
    load: Callable[[Any], Any] = staticmethod(lambda value: value)
    #: Set by the job: the remote call a Resource names (resources.remote_of), or None.
    remote: Callable[[str], Any] = staticmethod(lambda resource: None)
