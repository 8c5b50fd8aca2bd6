"""Property-based proof of the engine invariants (DESIGN.md) on the real SQLite store.

Hypothesis generates a workflow (a random DAG of up to 60 tasks, retries,
max_parallel_tasks 1..8, bodies that fail on chosen attempts) and a way of
delivering its messages (random order, duplicates, late redeliveries,
crashes before and after commits, dead executors, four instances at once).
`engine_harness.Harness` plays Pub/Sub and the machines against one SQLite
file per example and reports every invariant that did not hold, with the
delivery trace; see its docstring for what it checks and how.

Each property prints a minimal scenario when it fails: hypothesis shrinks the
DAG, the failure plan and the crash plan; the delivery order is a seed.
"""

from __future__ import annotations

import os
import types

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from engine_harness import Scenario, run_scenario, task_name
from function_flow.core.graph import Dag, make_spec
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus

#: FF_PROPERTY_EXAMPLES=1000 for a long bug hunt; the default keeps the file
#: well under a minute on two cores.
EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
THREADED = settings(PROPERTY, max_examples=max(1, EXAMPLES // 2))

CRASH_MODES = st.sampled_from(["in_tx", "after_commit"])


@st.composite
def dags(draw: st.DrawFn, max_tasks: int = 60) -> list[list[int]]:
    """deps[i]: up to 4 distinct earlier tasks, so every DAG is acyclic."""
    n = draw(st.integers(1, max_tasks))
    deps: list[list[int]] = [[]]
    for i in range(1, n):
        count = draw(st.integers(0, min(i, 4)))
        deps.append(sorted(draw(st.lists(st.integers(0, i - 1), min_size=count,
                                         max_size=count, unique=True))))
    return deps


@st.composite
def scenarios(draw: st.DrawFn, *, failures: bool = True, crashes: bool = False,
              threads: int = 0, max_tasks: int = 60) -> Scenario:
    deps = draw(dags(max_tasks))
    n = len(deps)
    retries = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
    fail_attempts = {}
    if failures:
        fail_attempts = draw(st.dictionaries(
            st.integers(0, n - 1), st.frozensets(st.integers(1, 3), min_size=1),
            max_size=max(1, n // 6)))
    crash_ops: dict[int, str] = {}
    body_crashes: frozenset[tuple[int, int]] = frozenset()
    slow_bodies: frozenset[tuple[int, int]] = frozenset()
    if crashes:
        crash_ops = draw(st.dictionaries(st.integers(0, 8 * n + 10), CRASH_MODES,
                                         min_size=1, max_size=4))
        body_crashes = draw(st.frozensets(st.tuples(st.integers(0, n - 1), st.integers(1, 2)),
                                          max_size=2))
        if not threads:
            slow_bodies = draw(st.frozensets(
                st.tuples(st.integers(0, n - 1), st.integers(1, 2)), max_size=2))
    scenario = Scenario(
        deps=deps, max_parallel=draw(st.integers(1, 8)), retries=retries,
        fail_attempts=fail_attempts, body_crashes=body_crashes, crash_ops=crash_ops,
        slow_bodies=slow_bodies,
        seed=draw(st.integers(0, 2**32 - 1)),
        duplicate_rate=draw(st.sampled_from([0.0, 0.15, 0.4])),
        reinject_rate=draw(st.sampled_from([0.0, 0.05])),
        recover_rate=draw(st.sampled_from([0.0, 0.0, 0.03])),
        threads=threads,
        interleave_rate=0.0 if threads else draw(st.sampled_from([0.0, 0.4, 0.8])),
        lease_check_messages=draw(st.booleans()) if crashes else True,
        resume_on_stall=draw(st.booleans()) if crashes else False)
    return scenario


def judge(scenario: Scenario, engine_factory=Engine):
    harness, problems = run_scenario(scenario, engine_factory)
    event(f"slots: {'yes' if harness.recorder.slots else 'no'}")
    event(f"run {harness.recorder.final_status.value if harness.recorder.final_status else '?'}")
    assert not problems, harness.report(problems)
    return harness


@PROPERTY
@given(scenarios())
def test_every_invariant_holds_whatever_the_delivery_order(scenario: Scenario) -> None:
    """Random order, duplicates, late redeliveries, overlapping bodies, retries.

    Without crashes the run must also end without any help from the poller.
    """
    harness = judge(scenario)
    assert harness.recover_rounds == 0


@PROPERTY
@given(scenarios(crashes=True))
def test_every_invariant_holds_when_executors_crash(scenario: Scenario) -> None:
    """Crashes inside transactions, after commits, before publishes and in bodies.

    A crashed delivery is redelivered; dead attempts are found by their lease
    (a CHECK_LEASE message, or the poller's recover() when the bus has none).
    """
    judge(scenario)


@THREADED
@given(scenarios(crashes=False, threads=4, max_tasks=40))
def test_every_invariant_holds_with_four_instances_at_once(scenario: Scenario) -> None:
    """Four threads deliver from one pool, with duplicates, on one SQLite file."""
    harness = judge(scenario)
    assert harness.max_executing <= scenario.max_parallel


@THREADED
@given(scenarios(crashes=True, threads=4, max_tasks=40))
def test_every_invariant_holds_with_four_instances_and_crashes(scenario: Scenario) -> None:
    judge(scenario)


@PROPERTY
@given(st.data())
def test_a_permanently_failing_task_fails_the_run_once(data: st.DataObject) -> None:
    """A random subset of tasks fails every attempt: the run ends FAILED, once,
    and nothing downstream of a failed task ever runs."""
    base = data.draw(scenarios(failures=False))
    doomed = data.draw(st.sets(st.integers(0, base.n - 1), min_size=1, max_size=3))
    base.fail_attempts = {i: frozenset(range(1, base.retries[i] + 2)) for i in doomed}
    harness = judge(base)
    rec = harness.recorder
    assert rec.final_status is RunStatus.FAILED
    assert sum(1 for u in rec.run_updates if u[2].get("status") == "FAILED") == 1
    ran = {task for task, _ in harness.bodies}
    downstream = {task_name(j) for j, deps in enumerate(base.deps)
                  if _reaches(base.deps, j, doomed)}
    assert not ran & downstream


def _reaches(deps: list[list[int]], j: int, sources: set[int]) -> bool:
    """Whether task j depends, directly or not, on one of `sources`."""
    stack, seen = list(deps[j]), set()
    while stack:
        d = stack.pop()
        if d in sources:
            return True
        if d not in seen:
            seen.add(d)
            stack.extend(deps[d])
    return False


# The harness must be able to fail: engines with a planted bug are caught.

WIDE = Scenario(deps=[[]] * 6 + [[0, 1, 2], [3, 4, 5], [6, 7]], max_parallel=2,
                retries=[1] * 9, seed=7, interleave_rate=1.0)


def _broken_engine(mutate):
    def factory(workflow, store, bus, **kwargs):
        engine = Engine(workflow, store, bus, **kwargs)
        mutate(engine)
        return engine
    return factory


def test_harness_catches_an_engine_that_ignores_max_parallel_tasks() -> None:
    def no_slots(engine: Engine) -> None:
        engine.slots = 0
    harness, problems = run_scenario(WIDE, _broken_engine(no_slots))
    assert any("max_parallel_tasks is 2" in p for p in problems), problems


def test_harness_catches_an_engine_that_forgets_a_dependency() -> None:
    def factory(workflow, store, bus, **kwargs):
        specs = [make_spec(t, () if t == task_name(8) else s.deps, None, retries=s.retries,
                           timeout=s.timeout)
                 for t, s in workflow.dag.tasks.items()]
        forgetful = types.SimpleNamespace(name=workflow.name, dag=Dag("prop", specs),
                                          max_parallel_tasks=workflow.max_parallel_tasks,
                                          invoke=workflow.invoke)
        return Engine(forgetful, store, bus, **kwargs)
    harness, problems = run_scenario(WIDE, factory)
    assert any("started while dependency" in p for p in problems), problems


def test_harness_catches_an_engine_that_never_refills_slots() -> None:
    def no_refill(engine: Engine) -> None:
        engine.fill_slots = lambda run_id: None
    harness, problems = run_scenario(WIDE, _broken_engine(no_refill))
    assert any(p.startswith("liveness: run still RUNNING") for p in problems), problems


def test_harness_catches_an_engine_that_skips_retries() -> None:
    scenario = Scenario(deps=[[], [0]], max_parallel=1, retries=[2, 0],
                        fail_attempts={0: frozenset({1})}, seed=3)

    def no_retries(engine: Engine) -> None:
        for spec in engine.dag.tasks.values():
            spec.retries = 0
    harness, problems = run_scenario(scenario, _broken_engine(no_retries))
    assert any("FAILED after 1 failed attempts, it has 2 retries" in p for p in problems), \
        problems
