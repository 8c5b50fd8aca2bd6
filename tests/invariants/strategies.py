"""How hypothesis generates scenarios (see scenario.Scenario for what each field means).

Hypothesis shrinks what it draws here: the DAG, the failure plan and the
crash plan; the delivery order itself is a seed.
"""

from __future__ import annotations

from hypothesis import strategies as st

from function_flow.core.definition import TRIGGER_RULES

from .scenario import Scenario

CRASH_MODES = st.sampled_from(["in_tx", "after_commit"])
#: all_success most often, as in real workflows; every other rule too.
RULES = ["all_success"] * 4 + [r for r in TRIGGER_RULES if r != "all_success"]
#: Pauses twice as often as the rest: each needs a resume, planned or not.
CONTROL_ACTIONS = st.sampled_from(["pause", "pause", "resume", "cancel"])


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
              threads: int = 0, max_tasks: int = 60, conflicts: bool = False,
              flow_control: bool = False, controls: bool = False) -> Scenario:
    """conflicts: compare-and-set commits sometimes lose to another writer
    (only stores that commit optimistically can show it: stores.py).
    flow_control: trigger rules and branch tasks too.
    controls: the run is paused, resumed and cancelled along the way."""
    deps = draw(dags(max_tasks))
    n = len(deps)
    rules: list[str] = []
    branches: dict[int, frozenset[int]] = {}
    if flow_control:
        rules = draw(st.lists(st.sampled_from(RULES), min_size=n, max_size=n))
        dependents: dict[int, list[int]] = {i: [] for i in range(n)}
        for j, ds in enumerate(deps):
            for d in ds:
                dependents[d].append(j)
        for i in range(n):
            if dependents[i] and draw(st.integers(0, 3)) == 0:
                branches[i] = frozenset(draw(st.lists(st.sampled_from(dependents[i]),
                                                      unique=True)))
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
        resume_on_stall=draw(st.booleans()) if crashes else False,
        conflict_rate=draw(st.sampled_from([0.0, 0.1, 0.3])) if conflicts else 0.0,
        rules=rules, branches=branches,
        controls=tuple(sorted(draw(st.lists(
            st.tuples(st.integers(0, 4 * n + 10), CONTROL_ACTIONS), min_size=1,
            max_size=4)))) if controls else ())
    scenario.hooks = draw(st.booleans())
    scenario.hook_fails = scenario.hooks and draw(st.booleans())
    return scenario


def reaches(deps: list[list[int]], j: int, sources: set[int]) -> bool:
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
