"""The invariants with a chain's next task claimed in its predecessor's commit
(core/chaining.py), under the property harness (tests/invariants/).

The harness's bus hands messages to whichever instance it picks, so the
engine never chains there; here it is told that the bus keeps a published
message for the publishing thread (as the embedded LocalBus does), so every
completion that queues one task claims it in the same commit: with crashes
inside and after those transactions, duplicates, and four instances at once.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any
from unittest import mock

from hypothesis import HealthCheck, given, settings

from function_flow.core import chaining
from function_flow.core.engine import Engine
from invariants import Scenario, properties, sqlite_store
from invariants.fakes import KeepingBus
from invariants.runner import run_scenario
from invariants.strategies import scenarios

EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60")) // 3
CHAINED = settings(max_examples=max(1, EXAMPLES), deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def chaining_engine(workflow: Any, store: Any, bus: Any, **options: Any) -> Engine:
    return Engine(workflow, store, KeepingBus(bus), **options)


@CHAINED
@given(scenarios(crashes=True))
def test_every_invariant_holds_when_chained_claims_crash(scenario: Scenario) -> None:
    properties.judge(scenario, sqlite_store, chaining_engine)


@settings(CHAINED, max_examples=max(1, EXAMPLES // 2))
@given(scenarios(crashes=True, threads=4, max_tasks=40))
def test_every_invariant_holds_with_chained_claims_on_four_instances(
        scenario: Scenario) -> None:
    properties.judge(scenario, sqlite_store, chaining_engine)


def test_the_harness_catches_a_chained_claim_that_drops_its_queuing() -> None:
    """A chain's step whose write of the next task keeps only the claim's fields
    (replaced, not merged): no deps_done entry, no attempt 1. The oracle must
    refuse that WAITING -> RUNNING."""
    original = chaining._Ahead.claim_in

    def claim_in(self: Any, step: Any, tx: Any, run_id: str, dependent: Any,
                 now: float) -> None:
        original(self, step, tx, run_id, dependent, now)
        if self.pending is not None:
            step.writes[:] = [dataclasses.replace(w, value=self.pending.step.writes[0].value)
                              if w.key == self.pending.task_id else w for w in step.writes]

    chain = Scenario(deps=[[], [0], [1]], max_parallel=1, retries=[0] * 3, seed=5)
    with mock.patch.object(chaining._Ahead, "claim_in", claim_in):
        _, problems = run_scenario(chain, chaining_engine)
    assert any("went WAITING -> RUNNING, which only the success of its only dependency"
               in p for p in problems), problems


@settings(CHAINED, max_examples=max(1, EXAMPLES // 2))
@given(scenarios(crashes=True, controls=True))
def test_every_invariant_holds_when_a_chained_run_is_paused_resumed_and_cancelled(
        scenario: Scenario) -> None:
    """A chain's next claim reads the run in its predecessor's transaction: a pause
    or cancel committed before it still stops its body."""
    properties.judge(scenario, sqlite_store, chaining_engine)


def test_the_harness_catches_a_chained_claim_that_ignores_a_pause() -> None:
    original = chaining._Ahead.claim_in

    def claim_in(self: Any, step: Any, tx: Any, run_id: str, dependent: Any,
                 now: float) -> None:
        original(self, step, tx, run_id, dependent, now)
        if self.pending is not None and self.pending.run is not None:
            self.pending = self.pending._replace(
                run=dataclasses.replace(self.pending.run, paused_at=None))

    # The pause commits inside t0's body (while other roots' messages are
    # delivered there): t0's success then claims t1 in a paused run.
    paused_chain = Scenario(deps=[[], [0], [1], [], [], []], max_parallel=6,
                            retries=[0] * 6, seed=2, controls=((3, "pause"),),
                            interleave_rate=1.0)
    with mock.patch.object(chaining._Ahead, "claim_in", claim_in):
        _, problems = run_scenario(paused_chain, chaining_engine)
    assert any("started while the run is paused" in p for p in problems), problems


#: root -> four tasks -> join: each member's success may claim a sibling ahead.
FAN_OUT = dict(deps=[[], [0], [0], [0], [0], [1, 2, 3, 4]], retries=[0] * 6)


def test_a_fan_out_claims_its_members_ahead_and_every_invariant_holds() -> None:
    """Sequentially, with the pool holding the members' messages: successes claim
    the reserved ones in their own commits (the oracle allows exactly that)."""
    buses: list[KeepingBus] = []

    def engine(workflow: Any, store: Any, bus: Any, **options: Any) -> Engine:
        made = chaining_engine(workflow, store, bus, **options)
        buses.append(made.bus)
        return made

    for seed, max_parallel in ((3, 6), (4, 2)):  # without slots, and with two
        _, problems = run_scenario(Scenario(max_parallel=max_parallel, seed=seed, **FAN_OUT),
                                   engine)
        assert not problems, problems
        assert buses[-1].claimed, "no completion claimed a reserved message"


def test_the_harness_catches_a_claim_riding_along_a_failure() -> None:
    """A failure (t00's first attempt, retried) that claims a reserved message:
    only a success's commit may carry another task's claim."""
    original = chaining.together

    def together(engine: Any, run_id: str, task_id: str, record: Any, ok: bool) -> Any:
        return original(engine, run_id, task_id, record, True)

    failing = Scenario(deps=[[], [], [], [], [0, 1, 2, 3]], max_parallel=5,
                       retries=[1, 0, 0, 0, 0], fail_attempts={0: frozenset({1})}, seed=2)
    with mock.patch.object(chaining, "together", together):
        _, problems = run_scenario(failing, chaining_engine)
    assert any("besides t00's own record" in p for p in problems), problems


def test_the_harness_catches_a_claim_ahead_that_writes_more_than_a_claim() -> None:
    """A ride-along claim that also restarts the attempt count: not a claim's fields,
    so the commit advances two tasks' records."""
    original = chaining._Ahead.claim_in

    def claim_in(self: Any, step: Any, tx: Any, run_id: str, record: Any,
                 now: float) -> None:
        original(self, step, tx, run_id, record, now)
        if self.pending is not None and self.reserved is not None:
            step.writes[-1] = dataclasses.replace(step.writes[-1],
                                                  value={**step.writes[-1].value, "attempt": 1})

    with mock.patch.object(chaining._Ahead, "claim_in", claim_in):
        _, problems = run_scenario(Scenario(max_parallel=6, seed=3, **FAN_OUT),
                                   chaining_engine)
    assert any("must advance exactly one task's own record" in p for p in problems), problems


def test_the_harness_catches_a_reserved_message_spent_without_its_claim() -> None:
    """A completion that spends the message it reserved although it claimed nothing:
    the attempt is never delivered, and the run needs the poller without a crash."""
    with properties.reservations_spent_unclaimed():
        _, problems = run_scenario(Scenario(max_parallel=6, seed=3, **FAN_OUT),
                                   chaining_engine)
    assert any(p.startswith("liveness") for p in problems), problems
