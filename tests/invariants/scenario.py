"""What one example is: a generated workflow and a way of delivering it, as plain data.

A `Scenario` holds everything an example needs (the DAG, retries, which
attempts fail or crash, the delivery seed and rates), so hypothesis can
shrink it and a failing example prints in full. `build_dag` turns it into
the engine's `Dag`: task i is named `task_name(i)`, depends on the tasks
listed in `deps[i]`, and has a lease (timeout) of `LEASE` fake seconds.
"""

from __future__ import annotations

import dataclasses

from typing import Iterable

from function_flow.core.graph import Backoff, Dag, TaskSpec, make_spec

#: Lease of every attempt (the task timeout), in fake seconds.
LEASE = 50.0
#: Results are kept small: the value of a task is 1 + the sum of its deps'.
MODULUS = 1_000_003


def task_name(index: int) -> str:
    return f"t{index:02d}"


@dataclasses.dataclass
class Scenario:
    """Everything one example needs; all of it is plain data, so it prints well."""

    deps: list[list[int]]                 # deps[i] = indices < i
    max_parallel: int
    retries: list[int]
    #: task index -> attempts on which its body raises
    fail_attempts: dict[int, frozenset[int]] = dataclasses.field(default_factory=dict)
    #: (task index, attempt) whose body dies half way
    body_crashes: frozenset[tuple[int, int]] = frozenset()
    #: (task index, attempt) whose body runs about as long as its lease, or
    #: longer, while other deliveries go on (sequential mode only)
    slow_bodies: frozenset[tuple[int, int]] = frozenset()
    #: operation number -> "in_tx" | "after_commit" (publishes crash before sending)
    crash_ops: dict[int, str] = dataclasses.field(default_factory=dict)
    seed: int = 0
    duplicate_rate: float = 0.0
    reinject_rate: float = 0.0
    recover_rate: float = 0.0             # the poller running in the middle of things
    threads: int = 0                      # 0: deliver one message at a time
    #: sequential mode: chance that a running body lets other deliveries
    #: happen (nested, in the same thread) before it returns, as other
    #: instances would while it runs; this is what makes bodies overlap
    interleave_rate: float = 0.0
    lease_check_messages: bool = True
    #: when the run stalls, call engine.resume() instead of engine.recover()
    resume_on_stall: bool = False
    #: chance that a compare-and-set transaction loses its commit to another
    #: writer, so the store runs its function again (only on stores that
    #: commit optimistically: Firestore; see stores.py)
    conflict_rate: float = 0.0
    #: trigger rule of each task (empty: all all_success)
    rules: list[str] = dataclasses.field(default_factory=list)
    #: branch task index -> the dependents (indices) its body chooses
    branches: dict[int, frozenset[int]] = dataclasses.field(default_factory=dict)
    #: the job has on_failure and on_end hooks (core/hooks.py): each must run
    #: once, after the run ended (hook_checks.py); hook_fails: on_failure's
    #: first attempt raises (it has one retry)
    hooks: bool = False
    hook_fails: bool = False
    #: (delivery step, "pause" | "resume" | "cancel"): control actions
    #: (core/control.py) taken when the run reaches that many deliveries; a
    #: run left paused when nothing is left to deliver is resumed.
    controls: tuple[tuple[int, str], ...] = ()

    @property
    def n(self) -> int:
        return len(self.deps)

    def permanently_failing(self) -> set[int]:
        return {i for i, attempts in self.fail_attempts.items()
                if set(range(1, self.retries[i] + 2)) <= set(attempts)}

    def rule(self, index: int) -> str:
        return self.rules[index] if self.rules else "all_success"


def build_dag(scenario: Scenario, hook_specs: Iterable[TaskSpec] = ()) -> Dag:
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0)
    specs = [make_spec(task_name(i), [task_name(d) for d in deps], None,
                       retries=scenario.retries[i], retry_backoff=backoff, timeout=LEASE,
                       trigger_rule=scenario.rule(i), branch=i in scenario.branches)
             for i, deps in enumerate(scenario.deps)]
    return Dag("prop", specs, hooks=hook_specs)


#: What Airflow's documentation says each rule needs, once every upstream
#: task is done (restated here, apart from the engine's own code).
RUNS_WHEN = {
    "all_success": lambda s, f, k: f == 0 and k == 0,
    "all_failed": lambda s, f, k: s == 0 and k == 0,
    "all_done": lambda s, f, k: True,
    "one_success": lambda s, f, k: s >= 1,
    "one_failed": lambda s, f, k: f >= 1,
    "none_failed": lambda s, f, k: f == 0,
    "none_failed_min_one_success": lambda s, f, k: f == 0 and s >= 1,
    "always": lambda s, f, k: True,
}


def model_outcomes(scenario: Scenario) -> dict[int, str]:
    """Every task's final status when the run goes on to the end ("S", "F",
    "SKIPPED", "UPSTREAM_FAILED"): what the scenario says must happen."""
    doomed = scenario.permanently_failing()
    outcome: dict[int, str] = {}
    for i, deps in enumerate(scenario.deps):
        seen = []
        for d in deps:
            if outcome[d] == "S" and d in scenario.branches and i not in scenario.branches[d]:
                seen.append("SKIPPED")
            else:
                seen.append(outcome[d])
        s = seen.count("S")
        f = seen.count("F") + seen.count("UPSTREAM_FAILED")
        k = seen.count("SKIPPED")
        rule = scenario.rule(i)
        if not deps or RUNS_WHEN[rule](s, f, k):
            outcome[i] = "F" if i in doomed else "S"
        elif rule in ("all_success", "none_failed", "none_failed_min_one_success") and f:
            outcome[i] = "UPSTREAM_FAILED"
        elif rule == "one_success" and k < len(deps):
            outcome[i] = "UPSTREAM_FAILED"
        else:
            outcome[i] = "SKIPPED"
    return outcome


def descendants(dag: Dag, task_id: str) -> set[str]:
    """Every task that depends on `task_id`, directly or not."""
    seen: set[str] = set()
    stack = list(dag.dependents[task_id])
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            stack.extend(dag.dependents[t])
    return seen
