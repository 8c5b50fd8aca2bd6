"""The properties every store's tests assert, and engines with planted bugs.

Each test file (one per store) wraps these in @given with its own example
counts and scenario sizes; the assertions live here, once.

The planted bugs prove that the harness can fail: an engine that ignores
max_parallel_tasks, forgets a dependency, never refills slots or skips
retries must each be caught, on every store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
from typing import Any, Callable, Iterator
from unittest import mock

from hypothesis import event

from function_flow.core import chaining, completion, hooks
from function_flow.core.engine import Engine
from function_flow.core.graph import Dag, make_spec
from function_flow.core.records import RunStatus

from .runner import Harness, run_scenario
from .scenario import Scenario, task_name
from .stores import StoreFactory
from .strategies import reaches


def judge(scenario: Scenario, stores: StoreFactory,
          engine_factory: Callable[..., Engine] = Engine) -> Harness:
    """Run one example and fail it, with the oracle's report, on any violation."""
    harness, problems = run_scenario(scenario, engine_factory, stores)
    event(f"slots: {'yes' if harness.recorder.slots else 'no'}")
    event(f"run {harness.recorder.final_status.value if harness.recorder.final_status else '?'}")
    if scenario.conflict_rate:
        event(f"compare-and-set functions run again: {'yes' if harness.store.reruns else 'no'}")
    assert not problems, harness.report(problems)
    return harness


def holds_without_crashes(scenario: Scenario, stores: StoreFactory) -> None:
    """Without crashes the run must also end without any help from the poller."""
    harness = judge(scenario, stores)
    assert harness.recover_rounds == 0


def holds_with_crashes(scenario: Scenario, stores: StoreFactory) -> None:
    judge(scenario, stores)


def holds_with_instances_at_once(scenario: Scenario, stores: StoreFactory) -> None:
    harness = judge(scenario, stores)
    if not scenario.crash_ops and not scenario.body_crashes:
        assert harness.max_executing <= scenario.max_parallel


def holds_when_controlled(scenario: Scenario, stores: StoreFactory) -> None:
    """Paused, resumed and cancelled along the way: every invariant still holds,
    nothing starts while the run is paused, and a cancelled run ends with
    every task finished."""
    harness = judge(scenario, stores)
    event(f"controls: {[a for _, a in scenario.controls]}")
    if not scenario.crash_ops and not scenario.body_crashes and \
            harness.recorder.final_status is not RunStatus.CANCELLED:
        assert harness.recover_rounds == 0  # a resume alone sends every held task


def failing_tasks_fail_the_run_once(base: Scenario, doomed: set[int],
                                    stores: StoreFactory) -> None:
    """The tasks in `doomed` fail every attempt: the run ends FAILED, once,
    and nothing downstream of a failed task ever runs."""
    base.fail_attempts = {i: frozenset(range(1, base.retries[i] + 2)) for i in doomed}
    harness = judge(base, stores)
    rec = harness.recorder
    assert rec.final_status is RunStatus.FAILED
    assert sum(1 for u in rec.run_updates if u[2].get("status") == "FAILED") == 1
    ran = {task for task, _ in harness.bodies}
    downstream = {task_name(j) for j in range(base.n) if reaches(base.deps, j, doomed)}
    assert not ran & downstream


# ------------------------------------------------- the harness must be able to fail

WIDE = Scenario(deps=[[]] * 6 + [[0, 1, 2], [3, 4, 5], [6, 7]], max_parallel=2,
                retries=[1] * 9, seed=7, interleave_rate=1.0)


def _broken_engine(mutate: Callable[[Engine], None]) -> Callable[..., Engine]:
    def factory(workflow: Any, store: Any, bus: Any, **kwargs: Any) -> Engine:
        engine = Engine(workflow, store, bus, **kwargs)
        mutate(engine)
        return engine
    return factory


def catches_ignored_max_parallel_tasks(stores: StoreFactory) -> None:
    def no_slots(engine: Engine) -> None:
        engine.slots = 0
    harness, problems = run_scenario(WIDE, _broken_engine(no_slots), stores)
    assert any("max_parallel_tasks is 2" in p for p in problems), problems


def catches_a_forgotten_dependency(stores: StoreFactory) -> None:
    def factory(workflow: Any, store: Any, bus: Any, **kwargs: Any) -> Engine:
        specs = [make_spec(t, () if t == task_name(8) else s.deps, None, retries=s.retries,
                           timeout=s.timeout)
                 for t, s in workflow.dag.tasks.items()]
        forgetful = types.SimpleNamespace(name=workflow.name, dag=Dag("prop", specs),
                                          max_parallel_tasks=workflow.max_parallel_tasks,
                                          invoke=workflow.invoke)
        return Engine(forgetful, store, bus, **kwargs)
    harness, problems = run_scenario(WIDE, factory, stores)
    assert any("started under trigger rule all_success while its dependencies" in p
               for p in problems), problems


def catches_slots_never_refilled(stores: StoreFactory) -> None:
    # completion.fill_slots is what both completions and the poller call.
    with mock.patch.object(completion, "fill_slots", lambda engine, run_id: None):
        harness, problems = run_scenario(WIDE, Engine, stores)
    assert any(p.startswith("liveness: run still RUNNING") for p in problems), problems


def catches_skipped_retries(stores: StoreFactory) -> None:
    scenario = Scenario(deps=[[], [0]], max_parallel=1, retries=[2, 0],
                        fail_attempts={0: frozenset({1})}, seed=3)

    def no_retries(engine: Engine) -> None:
        for spec in engine.dag.tasks.values():
            spec.retries = 0
    harness, problems = run_scenario(scenario, _broken_engine(no_retries), stores)
    assert any("FAILED after 1 failed attempts, it has 2 retries" in p for p in problems), \
        problems


def catches_a_claim_that_ignores_a_pause(stores: StoreFactory) -> None:
    paused_chain = Scenario(deps=[[], [0], [1]], max_parallel=1, retries=[0] * 3, seed=5,
                            controls=((0, "pause"),))

    def blind(engine: Engine) -> None:
        store = engine.store

        def get_run(run_id: str) -> Any:
            run = store.inner.get_run(run_id)  # None before the start
            return run if run is None else dataclasses.replace(run, paused_at=None)

        store.get_run = get_run
    harness, problems = run_scenario(paused_chain, _broken_engine(blind), stores)
    assert any("started while the run is paused" in p for p in problems), problems


def catches_a_hook_never_queued(stores: StoreFactory) -> None:
    """An engine that forgets to queue on_end once on_failure has ended."""
    scenario = Scenario(deps=[[], [0]], max_parallel=1, retries=[0, 0],
                        fail_attempts={1: frozenset({1})}, seed=5, hooks=True)
    with mock.patch.object(hooks, "after_hook", lambda *args: None):
        harness, problems = run_scenario(scenario, Engine, stores)
    assert any("__on_end__ ended WAITING" in p for p in problems), problems


@contextlib.contextmanager
def reservations_spent_unclaimed() -> Iterator[None]:
    """A planted bug for the tests of claims ahead (core/chaining.py): a completion
    spends the message the bus reserved for it (settle_next(True)) although it
    wrote no claim of its attempt, which then is never delivered."""
    def settle(self: Any, *exc: object) -> None:
        if self.reserved is not None:
            self.engine.bus.settle_next(True)
            self.reserved = None

    with mock.patch.object(chaining._Ahead, "__exit__", settle), \
            mock.patch.object(chaining._Ahead, "claim_in", lambda *args: None):
        yield


PLANTED_BUGS = [catches_ignored_max_parallel_tasks, catches_a_forgotten_dependency,
                catches_slots_never_refilled, catches_skipped_retries,
                catches_a_claim_that_ignores_a_pause, catches_a_hook_never_queued]
