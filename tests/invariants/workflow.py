"""The workflow the engine runs: a generated DAG whose task bodies watch the engine.

Every body logs (task, attempt) and its outcome, checks from inside that
each dependency is SUCCEEDED in the store (invariant 1, against the
scenario's own graph rather than the engine's), counts how many bodies are
live at once (max_parallel_tasks), and fails, crashes or overruns its lease
on the attempts the scenario plans. Its value is 1 + the sum of its
dependencies' values, so results must flow along the edges.

Violations go to the recorder instead of being raised: an assertion raised
inside a body would be caught by the engine and recorded as an ordinary
task failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from function_flow.core.graph import Dag, TaskSpec
from function_flow.core.records import TaskStatus

from .fakes import SimulatedCrash
from .scenario import LEASE, MODULUS, RUNS_WHEN, task_name

EARLY_RULES = ("one_success", "one_failed", "always")


def _rule_allows(rule: str, seen: list[TaskStatus | None]) -> bool:
    """Whether a body may run now, by Airflow's meaning of its rule."""
    s = sum(1 for x in seen if x is TaskStatus.SUCCEEDED)
    k = sum(1 for x in seen if x is TaskStatus.SKIPPED)
    f = sum(1 for x in seen if x is not None and x.is_final) - s - k
    if rule == "always" or not seen:
        return True
    if rule == "one_success":
        return s >= 1
    if rule == "one_failed":
        return f >= 1
    return s + f + k == len(seen) and RUNS_WHEN[rule](s, f, k)

if TYPE_CHECKING:
    from .runner import Harness


class PlannedFailure(Exception):
    """A task body failing on purpose (an ordinary, retryable task error)."""


class HarnessWorkflow:
    """engine.Workflow over a generated DAG, with instrumented bodies."""

    def __init__(self, harness: "Harness", dag: Dag, max_parallel: int) -> None:
        self.name = "prop"
        self.dag = dag
        self.max_parallel_tasks = max_parallel
        self.h = harness

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int) -> Any:
        h = self.h
        task_id = spec.task_id
        index = int(task_id[1:])
        rec = h.recorder
        with h.body_lock:
            key = (task_id, attempt)
            if key in h.bodies:
                rec.violation(f"body of {task_id} attempt {attempt} started twice")
            start = h.clock.now()
            h.bodies[key] = {"outcome": "started", "start": start}
            started = getattr(h.local, "bodies", None)
            if started is not None:  # dies with its delivery if that crashes
                started.append(key)
            h.executing[key] = start
            # A body whose lease has run out counts as dead (its function
            # timed out), whether or not it is still unwinding here.
            live = [k for k, began in h.executing.items() if start < began + LEASE]
            h.max_executing = max(h.max_executing, len(live))
            if len(live) > h.scenario.max_parallel:
                rec.violation(f"{len(live)} bodies executing at once while starting "
                              f"{task_id} attempt {attempt}: {live}; max_parallel_tasks is "
                              f"{h.scenario.max_parallel}")
        try:
            if rec.failed_seq is not None and h.scenario.threads == 0:
                rec.violation(f"body of {task_id} attempt {attempt} started after the "
                              f"run {rec.final_status.value} (commit {rec.failed_seq})")
            if rec.paused and h.scenario.threads == 0:
                # Sequentially, nothing can pause the run between a claim and
                # its look at the run: a body starting now ignored the pause.
                rec.violation(f"body of {task_id} attempt {attempt} started while the "
                              "run is paused")
            # Invariant 1, checked against the store, from inside the body.
            # The harness's own graph, not the engine's: a check that trusted
            # the engine's idea of the dependencies could not catch it forgetting one.
            wanted = h.dag.tasks[task_id].deps
            found = {d.task_id: d for d in h.raw_store.get_tasks(run_id, wanted)}
            rule = h.scenario.rule(index)
            total, seen = 1, []
            for dep in wanted:
                record = found.get(dep)
                status = record.status if record is not None else None
                chosen = h.scenario.branches.get(int(dep[1:]))
                if status is TaskStatus.SUCCEEDED and chosen is not None \
                        and index not in chosen:
                    status = TaskStatus.SKIPPED  # a branch not taken, as this task sees it
                seen.append(status)
                if status is TaskStatus.SUCCEEDED and isinstance(record.result, dict) \
                        and rule not in EARLY_RULES:
                    total += int(record.result["value"])  # like job.get_task_result(dep)
            if not _rule_allows(rule, seen):
                rec.violation(
                    f"body of {task_id} attempt {attempt} started under trigger rule {rule} "
                    f"while its dependencies are "
                    f"{[s.value if s else 'missing' for s in seen]}")
            if h.scenario.threads:
                h.yield_thread()
            else:
                h.interleave()
            if (index, attempt) in h.scenario.slow_bodies:
                h.overrun(task_id, attempt, start)
            if (index, attempt) in h.scenario.body_crashes:
                h.bodies[key]["outcome"] = "crashed"
                h.crasher.local.body_died = True
                raise SimulatedCrash(f"executor of {task_id} attempt {attempt} died")
            if attempt in h.scenario.fail_attempts.get(index, ()):
                h.bodies[key]["outcome"] = "raised"
                raise PlannedFailure(f"{task_id} fails attempt {attempt} on purpose")
            value: Any = {"task": task_id, "attempt": attempt, "value": total % MODULUS}
            if index in h.scenario.branches:
                value = sorted(task_name(j) for j in h.scenario.branches[index])
            h.bodies[key]["outcome"] = "ok"
            h.bodies[key]["value"] = value
            return value
        finally:
            with h.body_lock:
                del h.executing[key]
                h.bodies[key]["expired"] = h.clock.now() >= start + LEASE

