"""The engine invariants on the Firestore emulator: the properties of
test_engine_properties.py, over FirestoreStore instead of SQLite.

Every example gets a collection prefix of its own (stores.FirestoreStores),
so examples never see each other's documents. Firestore commits
compare-and-set transactions optimistically (a batch with "unchanged since
read" preconditions) and runs the function again when one loses; here
another writer sometimes changes a record between a transaction's reads
and its commit (Scenario.conflict_rate), so those reruns happen, and the
oracle checks that only the run that committed was recorded. (The
recording store holds one lock over each transaction and its log entry, so
the harness's own transactions never overlap: contention on the store comes
from these injected writers, not from the four threaded instances.)

An emulator round trip costs milliseconds, not microseconds: DAGs are
smaller than on SQLite and there are fewer examples. For a bug hunt:
FF_PROPERTY_EXAMPLES_FIRESTORE=100 FF_PROPERTY_MAX_TASKS_FIRESTORE=60, with
--timeout=0 (pytest.ini stops any test after 300 s).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from invariants import FirestoreStores, Scenario, build_dag, properties, run_scenario
from invariants.fakes import Crasher, RecordingStore, SimulatedCrash
from invariants.oracle import Recorder
from invariants.strategies import scenarios

EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES_FIRESTORE", "15"))
#: Tasks per generated DAG (60 on SQLite).
MAX_TASKS = int(os.environ.get("FF_PROPERTY_MAX_TASKS_FIRESTORE", "30"))
PROPERTY = settings(max_examples=EXAMPLES, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
THREADED = settings(PROPERTY, max_examples=max(1, EXAMPLES * 2 // 3))


@pytest.fixture
def stores(firestore_stores: FirestoreStores) -> FirestoreStores:
    """A fresh FirestoreStore per example (emulators.firestore_stores)."""
    return firestore_stores


@PROPERTY
@given(scenario=scenarios(max_tasks=MAX_TASKS, conflicts=True))
def test_every_invariant_holds_whatever_the_delivery_order(scenario: Scenario,
                                                           stores: FirestoreStores) -> None:
    properties.holds_without_crashes(scenario, stores)


@PROPERTY
@given(scenario=scenarios(max_tasks=MAX_TASKS, conflicts=True, flow_control=True))
def test_trigger_rules_and_branches_hold_every_invariant(scenario: Scenario,
                                                         stores: FirestoreStores) -> None:
    properties.holds_without_crashes(scenario, stores)


@PROPERTY
@given(scenario=scenarios(crashes=True, max_tasks=MAX_TASKS, conflicts=True))
def test_every_invariant_holds_when_executors_crash(scenario: Scenario,
                                                    stores: FirestoreStores) -> None:
    """Crashes inside transactions (which must roll back on Firestore too),
    after commits, before publishes and in bodies."""
    properties.holds_with_crashes(scenario, stores)


@THREADED
@given(scenario=scenarios(threads=4, max_tasks=MAX_TASKS, conflicts=True))
def test_every_invariant_holds_with_four_instances_at_once(scenario: Scenario,
                                                           stores: FirestoreStores) -> None:
    properties.holds_with_instances_at_once(scenario, stores)


@THREADED
@given(scenario=scenarios(crashes=True, threads=4, max_tasks=MAX_TASKS, conflicts=True))
def test_every_invariant_holds_with_four_instances_and_crashes(
        scenario: Scenario, stores: FirestoreStores) -> None:
    properties.holds_with_instances_at_once(scenario, stores)


@PROPERTY
@given(scenario=scenarios(crashes=True, max_tasks=MAX_TASKS, conflicts=True, controls=True))
def test_every_invariant_holds_when_the_run_is_paused_resumed_and_cancelled(
        scenario: Scenario, stores: FirestoreStores) -> None:
    """Pauses, resumes and cancels at random steps, with crashes and lost commits."""
    properties.holds_when_controlled(scenario, stores)


@THREADED
@given(scenario=scenarios(threads=4, max_tasks=MAX_TASKS, conflicts=True, controls=True))
def test_every_invariant_holds_when_four_instances_are_paused_and_cancelled(
        scenario: Scenario, stores: FirestoreStores) -> None:
    properties.holds_when_controlled(scenario, stores)


@PROPERTY
@given(data=st.data())
def test_a_permanently_failing_task_fails_the_run_once(data: st.DataObject,
                                                       stores: FirestoreStores) -> None:
    base = data.draw(scenarios(failures=False, max_tasks=MAX_TASKS, conflicts=True))
    doomed = data.draw(st.sets(st.integers(0, base.n - 1), min_size=1, max_size=3))
    properties.failing_tasks_fail_the_run_once(base, doomed, stores)


def test_a_lost_compare_and_set_commit_is_run_again_and_recorded_once(
        stores: FirestoreStores) -> None:
    """Every compare-and-set transaction loses its first commit to another
    writer: the store must run it again, and the oracle see one commit."""
    scenario = Scenario(deps=[[]] * 4 + [[0, 1], [2, 3], [4, 5]], max_parallel=2,
                        retries=[1] * 7, fail_attempts={1: frozenset({1})}, seed=11,
                        duplicate_rate=0.4, interleave_rate=0.5, conflict_rate=1.0)
    harness, problems = run_scenario(scenario, store_factory=stores)
    assert not problems, harness.report(problems)
    assert harness.store.conflicts > 10
    assert harness.store.reruns >= harness.store.conflicts
    # The other writer changed existing records (the "unchanged since read"
    # precondition's race), not only created missing ones.
    assert stores.conflicts["existing"] > 10


def test_a_task_another_writer_creates_before_the_commit_is_decided_again(
        stores: FirestoreStores) -> None:
    """A task the store has not written yet (no document: store/firestore_absent.py)
    that a compare-and-set transaction read is created by another writer before its
    commit (here: t03, ended UPSTREAM_FAILED after t00 failed): the commit's create
    must fail and the transaction run again on what is there now."""
    scenario = Scenario(deps=[[], [], [0, 1], [2]], max_parallel=1, retries=[0] * 4,
                        fail_attempts={0: frozenset({1})}, seed=3, conflict_rate=1.0)
    harness, problems = run_scenario(scenario, store_factory=stores)
    assert not problems, harness.report(problems)
    assert stores.conflicts["absent"] >= 1
    assert harness.store.reruns >= harness.store.conflicts


@pytest.mark.parametrize("compare_and_set", [False, True])
def test_a_crash_inside_a_transaction_rolls_back(stores: FirestoreStores,
                                                 compare_and_set: bool) -> None:
    """What the crash plan's "in_tx" relies on: nothing of the crashed
    transaction lands, and the next one on the same records does not wait."""
    scenario = Scenario(deps=[[]], max_parallel=1, retries=[0])
    with stores() as under:
        store = under.store
        crasher = Crasher({0: "in_tx"})
        recording = RecordingStore(store, Recorder(scenario, build_dag(scenario), 0), crasher)
        run = RunRecord(run_id="run-1", job_name="prop", dag_hash="", args={})
        assert recording.create_run(run, [TaskRecord(task_id="t00", status=TaskStatus.QUEUED,
                                                     attempt=1)], {})

        def claim(tx) -> None:
            tx.get_run_and_tasks("run-1", ["t00"])
            tx.update_task("run-1", "t00", {"status": "RUNNING"})
            tx.update_run("run-1", {"status": "FAILED"})

        crasher.local.armed = True
        with pytest.raises(SimulatedCrash):
            recording.transact(claim, compare_and_set=compare_and_set)
        assert store.get_tasks("run-1", ["t00"])[0].status is TaskStatus.QUEUED
        assert store.get_run("run-1").status is RunStatus.RUNNING
        # No lock left behind: the next transaction on the same records commits
        # at its first attempt. (A lock the crashed one kept would make the
        # emulator abort it, however fast or slow the machine: one attempt
        # allowed, that is TransientBackendError, not a wait that times out.)
        store.max_attempts = 1
        recording.transact(claim, compare_and_set=compare_and_set)
        assert store.get_tasks("run-1", ["t00"])[0].status is TaskStatus.RUNNING
        assert recording.recorder.status["t00"] is TaskStatus.RUNNING
        assert not recording.recorder.violations


@pytest.mark.parametrize("planted_bug", properties.PLANTED_BUGS,
                         ids=lambda bug: bug.__name__)
def test_the_harness_catches_an_engine_with_a_planted_bug(planted_bug,
                                                          stores: FirestoreStores) -> None:
    planted_bug(stores)
