"""Property-based proof of the engine invariants (docs/design.md) on the real SQLite store.

Hypothesis generates a workflow (a random DAG of up to 60 tasks, retries,
max_parallel_tasks 1..8, bodies that fail on chosen attempts) and a way of
delivering its messages (random order, duplicates, late redeliveries,
crashes before and after commits, dead executors, four instances at once).
The harness in tests/invariants/ plays Pub/Sub and the machines against one
SQLite file per example and reports every invariant that did not hold, with
the delivery trace; see its package docstring for what it checks and how.
The same properties run on the Firestore emulator in
test_engine_properties_firestore.py.

Each property prints a minimal scenario when it fails: hypothesis shrinks the
DAG, the failure plan and the crash plan; the delivery order is a seed.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invariants import Scenario, properties, sqlite_store
from invariants.strategies import scenarios

#: FF_PROPERTY_EXAMPLES=1000 for a long bug hunt; the default keeps the file
#: well under a minute on two cores.
EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
THREADED = settings(PROPERTY, max_examples=max(1, EXAMPLES // 2))


@PROPERTY
@given(scenarios())
def test_every_invariant_holds_whatever_the_delivery_order(scenario: Scenario) -> None:
    """Random order, duplicates, late redeliveries, overlapping bodies, retries.

    Without crashes the run must also end without any help from the poller.
    """
    properties.holds_without_crashes(scenario, sqlite_store)


@PROPERTY
@given(scenarios(crashes=True))
def test_every_invariant_holds_when_executors_crash(scenario: Scenario) -> None:
    """Crashes inside transactions, after commits, before publishes and in bodies.

    A crashed delivery is redelivered; dead attempts are found by their lease
    (a CHECK_LEASE message, or the poller when the bus has none).
    """
    properties.holds_with_crashes(scenario, sqlite_store)


@THREADED
@given(scenarios(crashes=False, threads=4, max_tasks=40))
def test_every_invariant_holds_with_four_instances_at_once(scenario: Scenario) -> None:
    """Four threads deliver from one pool, with duplicates, on one SQLite file."""
    properties.holds_with_instances_at_once(scenario, sqlite_store)


@THREADED
@given(scenarios(crashes=True, threads=4, max_tasks=40))
def test_every_invariant_holds_with_four_instances_and_crashes(scenario: Scenario) -> None:
    properties.holds_with_instances_at_once(scenario, sqlite_store)


@PROPERTY
@given(scenarios(controls=True))
def test_every_invariant_holds_when_the_run_is_paused_resumed_and_cancelled(
        scenario: Scenario) -> None:
    """Pauses, resumes and cancels at random steps, also inside running bodies,
    with duplicated and reordered delivery."""
    properties.holds_when_controlled(scenario, sqlite_store)


@PROPERTY
@given(scenarios(flow_control=True, controls=True))
def test_trigger_rules_and_branches_hold_when_the_run_is_paused_and_cancelled(
        scenario: Scenario) -> None:
    """A paused run's tasks still end as their rules say; a cancelled one's end CANCELLED."""
    properties.holds_when_controlled(scenario, sqlite_store)


@THREADED
@given(scenarios(crashes=True, controls=True))
def test_every_invariant_holds_when_a_controlled_run_crashes(scenario: Scenario) -> None:
    """The same with crashes, control actions included (a crashed one is asked again)."""
    properties.holds_when_controlled(scenario, sqlite_store)


@THREADED
@given(scenarios(threads=4, max_tasks=40, controls=True))
def test_every_invariant_holds_when_four_instances_are_paused_and_cancelled(
        scenario: Scenario) -> None:
    """The same with four instances at once: a resume races the holds."""
    properties.holds_when_controlled(scenario, sqlite_store)


@PROPERTY
@given(scenarios(flow_control=True))
def test_trigger_rules_and_branches_hold_every_invariant(scenario: Scenario) -> None:
    """Every trigger rule, branch tasks choosing any of their dependents, failures,
    duplicates and overlapping bodies: each task ends as the rules say (skips
    and upstream failures cascading), and no body starts before its rule allows."""
    properties.holds_without_crashes(scenario, sqlite_store)


@PROPERTY
@given(scenarios(flow_control=True, crashes=True))
def test_trigger_rules_and_branches_hold_when_executors_crash(scenario: Scenario) -> None:
    properties.holds_with_crashes(scenario, sqlite_store)


@THREADED
@given(scenarios(flow_control=True, threads=4, max_tasks=40))
def test_trigger_rules_and_branches_hold_with_four_instances_at_once(
        scenario: Scenario) -> None:
    properties.holds_with_instances_at_once(scenario, sqlite_store)


@PROPERTY
@given(st.data())
def test_a_permanently_failing_task_fails_the_run_once(data: st.DataObject) -> None:
    """A random subset of tasks fails every attempt: the run ends FAILED, once,
    and nothing downstream of a failed task ever runs."""
    base = data.draw(scenarios(failures=False))
    doomed = data.draw(st.sets(st.integers(0, base.n - 1), min_size=1, max_size=3))
    properties.failing_tasks_fail_the_run_once(base, doomed, sqlite_store)


@pytest.mark.parametrize("planted_bug", properties.PLANTED_BUGS,
                         ids=lambda bug: bug.__name__)
def test_the_harness_catches_an_engine_with_a_planted_bug(planted_bug) -> None:
    """The harness must be able to fail (see properties.PLANTED_BUGS)."""
    planted_bug(sqlite_store)
