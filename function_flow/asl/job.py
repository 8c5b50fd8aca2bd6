"""A state machine as a Job: deployable, runnable and inspectable like any workflow.

`StateMachine(definition, resources=...)` is a `tasks.Job` whose graph has
one declared task, the first visit of StartAt, and a template per state
(Dag.templates) that the visits the run adds run as (engine_states.py).
A run's arguments are `{"input": <execution input>, "started": <epoch>}`;
`execute(input)` runs one and returns its `local.Execution`.
"""

from __future__ import annotations

import json
import time
from typing import Any, Mapping

from function_flow.asl import context as ctx, engine_states, map_state, stopping, validate
from function_flow.asl.local import Execution
from function_flow.asl.machine import compile_machine, record_id
from function_flow.asl.resources import Resources
from function_flow.core import foreach
from function_flow.core.definition import Backoff, make_spec
from function_flow.core.graph import Dag
from function_flow.core.growth import Grow
from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job

#: Engine attempts a Task visit may make: its retriers' attempts, and one.
_NO_BACKOFF = Backoff(initial=0.0, maximum=0.0, multiplier=1.0)


class StateMachine(Job):
    """An Amazon States Language definition run by the engine.

    resources: Resource string -> a Python function (called with the
    effective input), or a remote target (`remote.PubSub`, `OpenFaaS`,
    `Http`); a Resource it does not name may name a remote function itself
    (`pubsub:T`, `openfaas:F`, `openfaas-async:F`, `https://...`, see
    asl/resources.py). Raises AslDefinitionError (naming the state) for a
    definition that cannot run, before anything runs.
    """

    def __init__(self, definition: Mapping[str, Any], name: str = "state_machine", *,
                 resources: Mapping[str, Any] | None = None, max_parallel_tasks: int = 1000,
                 **job_options: Any) -> None:
        definition = json.loads(json.dumps(definition))
        validate.check(definition, resources)
        super().__init__(name, max_parallel_tasks=max_parallel_tasks, **job_options)
        self.definition = definition
        self.compiled = compile_machine(definition)
        self.resources = Resources(resources or {})

    @property
    def dag(self) -> Dag:
        if self._dag is None:
            start = self.definition["StartAt"]
            first = self.compiled.template_of[(0, start)]
            dag = Dag(self.name, [self._spec(record_id("", 1, start), first)])
            dag.templates.update({t: self._spec(t, t) for t in self.compiled.templates})
            dag.templates.update(self._call_specs())
            self._dag = dag
            self._engine = None
        return self._dag

    def _spec(self, task_id: str, template: str) -> Any:
        _, _, state = self.compiled.spec(template)
        attempts = sum(int(r.get("MaxAttempts", 3)) for r in state.get("Retry") or [])

        def body(task: Any, job: Any) -> Any:
            return self._visit(task, job, template)

        body.__name__ = f"state_{template}"
        return make_spec(task_id, (), body, retries=attempts, retry_backoff=_NO_BACKOFF)

    def _call_specs(self) -> dict[str, Any]:
        """A spec per Task state whose Resource is remote: its record's body hands
        the effective input to the engine, which calls the target (a remote task)."""
        specs = {}
        for template in self.compiled.templates:
            _, _, state = self.compiled.spec(template)
            target = self.resources.remote(state["Resource"]) \
                if state.get("Type") == "Task" else None
            if target is None:
                continue
            name = engine_states.remote_template(template)

            def payload(task: Any, job: Any) -> Any:
                if stopping.skip_if_stopped(job.engine, job.id, task):
                    raise stopping.Stopped(f"{task.id}: its Parallel or Map stopped")
                return task.item.get("payload")

            payload.__name__ = f"call_{template}"
            timeout = state.get("TimeoutSeconds")
            specs[name] = make_spec(name, (), payload, call=target,
                                    timeout=None if timeout is None else float(timeout))
        return specs

    def _visit(self, task: Any, job: Any, template: str) -> Any:
        engine, run_id = job.engine, job.id
        if stopping.skip_if_stopped(engine, run_id, task):
            return None  # its Parallel or Map stopped: it does not run
        args = job.get_arguments()
        envelope = task.item if isinstance(task.item, dict) else {
            "in": args.get("input"), "exits": [], "scope": "", "seq": 1}
        previous = None
        if task.attempt > 1:
            found = engine.store.get_tasks(run_id, [task.id])
            previous = found[0].error if found else None
        base = ctx.execution(self.name, run_id, args.get("input"),
                             float(args.get("started") or time.time()))
        visit = engine_states.Visit(
            self.compiled, template, task.id, envelope, base, task.attempt, previous,
            call=lambda call, context: self.resources.call(call, context),
            clock=engine.clock)
        visit.ended_records = lambda: _ended(engine, run_id, task.id)
        visit.add_records = lambda records: foreach.add_missing(engine, run_id, records)
        visit.stop_scope = lambda info: stopping.stop(engine, run_id, info, task.id)
        visit.load = lambda value: engine.payloads.load(value, f"a result in run {run_id}")
        visit.waited = lambda: next(iter(engine.store.get_tasks(
            run_id, list(engine.store.get_tasks(run_id, [task.id])[0].deps or [])[:1])), None)

        def suspend(answer: TaskRecord, call: Any, token: str) -> None:
            # The wait's continuation, and the visit's edges to it, before the
            # wait is recorded: whatever answers the token finds them there.
            def write(tx: Any) -> None:
                if not tx.get_tasks(run_id, [answer.task_id]):
                    tx.add_task(run_id, answer)
                tx.update_task(run_id, task.id, {"dependents": [answer.task_id],
                                                 "role": "member"})
            engine.store.transact(write)
            self.resources.worker(engine, call.resource, token, call.payload)

        visit.suspend = suspend
        visit.remote = self.resources.remote
        outcome = visit.run()
        if isinstance(outcome, Grow):  # inside a fan-out: what it adds (stopping.py)
            return stopping.grow_unless_stopped(engine, run_id, task, outcome)
        return outcome

    # ---------------------------------------------------------------- runs

    def start_execution(self, value: Any = None, run_id: str | None = None,
                        source: str | None = None) -> str:
        """Start an execution with input `value` (any JSON value); returns the run id."""
        return self.start({"input": value, "started": time.time()}, run_id=run_id,
                          source=source)

    def execute(self, value: Any = None, timeout: float | None = None) -> Execution:
        """Run an execution to its end on this job's backend and say how it ended."""
        run_id = self.start_execution(value)
        self.wait(run_id, timeout=timeout)
        return self.outcome(run_id)

    def outcome(self, run_id: str) -> Execution:
        """How run `run_id` ended, as Step Functions reports an execution."""
        engine = self.engine
        return outcome_of(engine.run_status(run_id), engine.store.get_tasks(run_id),
                          lambda value: engine.payloads.load(value, "the output"))

    def describe_end(self, run: Any, records: list[TaskRecord]) -> str:
        """The line `run` and `dev` print once a run ended: its output, or its error
        (a value stored as a blob is shown by its reference)."""
        outcome = outcome_of(run, records, lambda value: value)
        if outcome.status == "SUCCEEDED":
            return "output: " + json.dumps(outcome.output)
        return f"error: {outcome.error}; cause: {outcome.cause}"


def outcome_of(run: Any, records: list[TaskRecord], load: Any) -> Execution:
    """An ended run's Execution, from its records: the output is the result of the
    last top-level visit that ended the machine; the error, its last failure's."""
    top = [r for r in records if not (r.item or {}).get("scope")
           and not r.task_id.startswith("__")]
    if run.status is RunStatus.SUCCEEDED:
        last = [r for r in top if r.status is TaskStatus.SUCCEEDED and r.dependents == []]
        return Execution("SUCCEEDED", output=load(last[-1].result) if last else None)
    failed = [r for r in top if r.status is TaskStatus.FAILED]
    failure = engine_states.failure_of(failed[-1].error if failed else run.error)
    status = "ABORTED" if run.status is RunStatus.CANCELLED else "FAILED"
    return Execution(status, error=failure.error, cause=failure.cause)


def _ended(engine: Any, run_id: str, join_id: str) -> list[TaskRecord]:
    """The records that ended the branches or items a join waits for."""
    own = engine.store.get_tasks(run_id, [join_id])
    return map_state.ended(engine, run_id, own[0]) if own else []


