"""Property tests for redrive, on SQLite and on the Firestore emulator.

Hypothesis draws a DAG, which tasks are broken, which of them the first
fix mends, whether the run is cancelled part way, and a delivery (random
order, duplicates, the poller's recovery in between). Whatever it draws:
a redriven run keeps the id and every result that succeeded before (those
bodies never run again), runs each task that did not succeed again, counts
its redrives, and, once everything is mended, succeeds.
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import RunEndedError
from function_flow.tasks import Job

from invariants.stores import sqlite_store
from invariants.strategies import dags
from test_run_graph import Outbox

EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60"))


@st.composite
def plans(draw: st.DrawFn, max_tasks: int = 20) -> dict:
    deps = draw(dags(max_tasks))
    n = len(deps)
    broken = draw(st.frozensets(st.integers(0, n - 1), max_size=max(1, n // 4)))
    return {"deps": deps, "broken": broken,
            "mended_first": draw(st.frozensets(st.sampled_from(sorted(broken))))
            if broken else frozenset(),
            "cancel_after": draw(st.one_of(st.none(), st.integers(0, 2 * n))),
            "seed": draw(st.integers(0, 2**32 - 1)),
            "duplicates": draw(st.sampled_from([0.0, 0.2])),
            "recover": draw(st.sampled_from([0.0, 0.05]))}


class Bodies:
    """Task bodies that fail while broken and return a value unique to each call."""

    def __init__(self, broken: set[int]) -> None:
        self.broken, self.calls = set(broken), 0
        self.ran: dict[int, int] = {}

    def body(self, i: int):
        def run(**_):
            self.calls += 1
            self.ran[i] = self.ran.get(i, 0) + 1
            if i in self.broken:
                raise RuntimeError(f"t{i} is broken")
            return f"t{i}#{self.calls}"
        return run


def deliver(engine: Engine, bus: Outbox, run_id: str, rng: random.Random, plan: dict,
            cancel_after: int | None = None) -> None:
    steps = 0
    while bus.sent and steps < 5000:
        if cancel_after is not None and steps == cancel_after:
            try:
                engine.cancel(run_id)
            except RunEndedError:  # it failed first: nothing to cancel
                pass
        steps += 1
        message = bus.sent.pop(rng.randrange(len(bus.sent)))
        engine.handle(message)
        if rng.random() < plan["duplicates"]:
            bus.sent.append(message)
        if rng.random() < plan["recover"]:
            engine.recover(run_id)
    if not bus.sent:
        engine.recover(run_id)  # what the poller would find, then deliver it
        while bus.sent:
            engine.handle(bus.sent.pop(0))


def check_plan(plan: dict, store) -> None:
    deps, rng = plan["deps"], random.Random(plan["seed"])
    bodies = Bodies(plan["broken"])
    job = Job("prop_redrive")
    for i, ds in enumerate(deps):
        job.task(task_id=f"t{i}", deps=[f"t{d}" for d in ds])(bodies.body(i))
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    deliver(engine, bus, run_id, rng, plan, plan["cancel_after"])
    run = engine.run_status(run_id)
    assert run.status.is_final
    mends = [plan["mended_first"], set(range(len(deps)))]
    for redrive_number, mended in enumerate(mends, start=1):
        if run.status is RunStatus.SUCCEEDED:
            break
        before = {t.task_id: t for t in engine.task_records(run_id)}
        kept = {t: r.result for t, r in before.items() if r.status is TaskStatus.SUCCEEDED}
        bodies.broken -= set(mended)
        bodies.ran.clear()
        again = engine.redrive(run_id)
        assert again.run_id == run_id and again.redrives == redrive_number
        deliver(engine, bus, run_id, rng, plan)
        run = engine.run_status(run_id)
        after = {t.task_id: t for t in engine.task_records(run_id)}
        assert run.status.is_final and all(t.status.is_final for t in after.values())
        for task_id, result in kept.items():  # never run again, result kept
            assert int(task_id[1:]) not in bodies.ran, f"{task_id} ran again"
            assert after[task_id].status is TaskStatus.SUCCEEDED
            assert after[task_id].result == result
        for task_id, record in after.items():
            if record.status is TaskStatus.SUCCEEDED and task_id not in kept:
                assert bodies.ran.get(int(task_id[1:])) == 1, f"{task_id} ran twice"
        if not bodies.broken:
            assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.status is RunStatus.SUCCEEDED, run.error


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_redrive_holds_whatever_the_delivery_on_sqlite(plan: dict) -> None:
    with sqlite_store() as under_test:
        check_plan(plan, under_test.store)


@settings(max_examples=max(1, EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=plans(max_tasks=12))
def test_redrive_holds_whatever_the_delivery_on_firestore(plan: dict, firestore_stores) -> None:
    with firestore_stores() as under_test:
        check_plan(plan, under_test.store)
