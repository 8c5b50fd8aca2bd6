"""Property tests for foreach, on SQLite and on the Firestore emulator.

Hypothesis draws the items, the concurrency limit, the tolerance, which
items fail (on which attempts) and a delivery: messages in random order,
duplicated, with the poller's recovery running in between. Whatever the
delivery, each item's body succeeds at most once, no more than
max_concurrency items are ever queued or running, every item ends, and the
foreach ends as its tolerance says, with the results in item order. Half
the plans run a sub-DAG per item (`dag=`: a -> b, a failing as drawn).

Delivery goes through the bus the chaining tests use (invariants.fakes's
KeepingBus): as the in-process bus does, it reserves for a completing item
the next RUN_TASK message of the pool, whose attempt the completion may
claim in its own commit (core/chaining.py). That happens on SQLite only
(its single writer); on Firestore the bus is never asked, and messages go
as usual. Where claims ahead happen, each body also counts the items busy
when it starts: a claim ahead must not exceed max_concurrency either.
"""

from __future__ import annotations

import dataclasses
import os
import random
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_flow.core import chaining, foreach
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job

from invariants import properties
from invariants.fakes import Crasher, FakeClock, KeepingBus, PoolBus
from invariants.stores import sqlite_store

EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60"))


@st.composite
def plans(draw: st.DrawFn, max_items: int = 250) -> dict:
    count = draw(st.integers(0, max_items))
    return {
        "count": count,
        "mapping": draw(st.booleans()),
        "concurrency": draw(st.one_of(st.none(), st.integers(1, 12))),
        "tolerated": draw(st.integers(0, 3)),
        "retries": draw(st.integers(0, 2)),
        # item -> attempts on which it fails
        "fails": draw(st.dictionaries(st.integers(0, max(0, count - 1)),
                                      st.frozensets(st.integers(1, 3), min_size=1),
                                      max_size=min(count, 6))) if count else {},
        "branch": draw(st.sampled_from(["list", "other"])),
        "seed": draw(st.integers(0, 2**32 - 1)),
        "duplicates": draw(st.sampled_from([0.0, 0.2, 0.5])),
        "recover": draw(st.sampled_from([0.0, 0.02])),
        "copies": draw(st.booleans()),
        # A task beside the foreach fails: the run fails fast at a random
        # moment of the foreach (leftovers.py ends what it leaves).
        "outside_fails": draw(st.sampled_from([False, False, False, True])),
    }


def check_plan(plan: dict, store) -> KeepingBus:
    """Run `plan` on `store`, delivering at random, and assert what must hold.
    Returns the bus, whose `claimed` lists the claims ahead."""
    count, rng = plan["count"], random.Random(plan["seed"])
    limit = plan["concurrency"]
    claims_ahead = store.locks_for_writes()  # chaining.together: a single writer only

    #: Too many items busy when a body started (the engine would catch an
    #: assertion raised there as the body's failure).
    crowded: list[str] = []

    def too_busy() -> str | None:
        if limit is None or not count or plan["branch"] != "list":
            return None
        busy = {t.task_id.partition("/")[0] for s in (TaskStatus.QUEUED, TaskStatus.RUNNING)
                for t in store.find_tasks(run_id, s, 1000)
                if t.role == "member" or (t.role == "item" and not plan["copies"])}
        return f"{len(busy)} items busy, max_concurrency {limit}" if len(busy) > limit else None

    items = {f"k{i}": i for i in range(count)} if plan["mapping"] else list(range(count))
    ran: dict[tuple[int, int], str] = {}
    job = Job("prop_foreach")
    job.task(task_id="decide", branch=True)(lambda **_: plan["branch"])
    job.task(task_id="list", deps=["decide"])(lambda **_: items)
    job.task(task_id="other", deps=["decide"])(lambda **_: "other")

    def work(task, **_):
        item = task.item
        key = (item, task.attempt)
        if claims_ahead and (problem := too_busy()):
            crowded.append(f"item {item} started with {problem}")
        assert key not in ran, f"item {item} attempt {task.attempt} ran twice"
        if task.attempt in plan["fails"].get(item, ()):
            ran[key] = "raised"
            raise ValueError(f"item {item} fails attempt {task.attempt}")
        ran[key] = "ok"
        return item * 10

    throttle = dict(max_concurrency=plan["concurrency"], tolerated_failures=plan["tolerated"])
    if plan["copies"]:
        copy = Job("copy")
        copy.task(task_id="a", retries=plan["retries"], retry_backoff=0)(work)
        copy.task(task_id="b", deps=["a"])(lambda task, **_: task.item * 10)
        job.foreach(task_id="work", over="list", dag=copy, **throttle)
    else:
        job.foreach(task_id="work", over="list", retries=plan["retries"], retry_backoff=0,
                    **throttle)(work)

    job.task(task_id="after", deps=["work", "other"],
             trigger_rule="none_failed_min_one_success")(lambda **_: "after")
    if plan.get("outside_fails"):
        job.task(task_id="beside")(boom)
    bus = KeepingBus(PoolBus(FakeClock(), Crasher({})), seed=plan["seed"])
    pool = bus.inner
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    steps = 0
    while pool.pool and steps < 20_000:
        steps += 1
        message = pool.pool.pop(rng.randrange(len(pool.pool))).message
        engine.handle(message)
        if rng.random() < plan["duplicates"]:
            pool.put(message, pool.clock.now())
        if rng.random() < plan["recover"]:
            engine.recover(run_id)
        problem = crowded[0] if crowded else too_busy()
        assert problem is None, problem
    run = store.get_run(run_id)
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    # The end task of a run that failed fast is left as it is (run_end.py).
    unended = {t: r.status.value for t, r in records.items() if not r.status.is_final
               and not (t == "__end__" and plan.get("outside_fails"))}
    assert run.status.is_final and not unended, f"not every task ended: {unended}"
    if plan.get("outside_fails"):
        assert run.status is RunStatus.FAILED and records["beside"].status is TaskStatus.FAILED
        return bus
    if plan["branch"] == "other":
        assert records["list"].status is TaskStatus.SKIPPED
        assert records["work"].status is TaskStatus.SKIPPED and not ran
        assert run.status is RunStatus.SUCCEEDED
        return bus
    doomed = {i for i, attempts in plan["fails"].items()
              if set(range(1, plan["retries"] + 2)) <= attempts}
    for i in range(count):
        wins = [a for (item, a), outcome in ran.items() if item == i and outcome == "ok"]
        assert len(wins) == (0 if i in doomed else 1)
        status = records[foreach.item_id("work", i)].status
        failed = TaskStatus.UPSTREAM_FAILED if plan["copies"] else TaskStatus.FAILED
        assert status is (failed if i in doomed else TaskStatus.SUCCEEDED)
        if plan["copies"]:
            assert records[f"work[{i}]/a"].status is (
                TaskStatus.FAILED if i in doomed else TaskStatus.SUCCEEDED)
    if len(doomed) <= plan["tolerated"]:
        assert records["work"].status is TaskStatus.SUCCEEDED
        assert records["after"].status is TaskStatus.SUCCEEDED
        assert run.status is RunStatus.SUCCEEDED
        results = foreach.results(engine, run_id, "work", records["work"].result) \
            if count else records["work"].result
        values = [None if i in doomed else i * 10 for i in range(count)]
        assert results == (dict(zip(items, values)) if plan["mapping"] else values)
    else:
        assert records["work"].status is TaskStatus.FAILED
        assert records["after"].status is TaskStatus.UPSTREAM_FAILED
        assert run.status is RunStatus.FAILED
    return bus


def boom(**_):
    raise RuntimeError("beside the foreach")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=plans())
def test_foreach_holds_whatever_the_delivery_on_sqlite(plan: dict) -> None:
    with sqlite_store() as under_test:
        check_plan(plan, under_test.store)


@settings(max_examples=max(1, EXAMPLES // 6), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(plan=plans(max_items=80))
def test_foreach_holds_whatever_the_delivery_on_firestore(plan: dict, firestore_stores) -> None:
    with firestore_stores() as under_test:
        check_plan(plan, under_test.store)


#: A fixed plan for the tests below: 30 items, 3 at once, no failures.
FIXED = dict(count=30, mapping=False, concurrency=3, tolerated=0, retries=0, fails={},
             branch="list", seed=1, duplicates=0.2, recover=0.0, copies=False)


def test_items_claim_ahead_under_the_harness() -> None:
    """The harness really takes the path of claims ahead (else the properties above
    would hold without it): completions claim reserved items in their commits,
    with and without max_concurrency, with and without a sub-DAG per item."""
    for concurrency, copies in ((3, False), (None, False), (3, True)):
        with sqlite_store() as under_test:
            bus = check_plan({**FIXED, "concurrency": concurrency, "copies": copies},
                             under_test.store)
        assert bus.claimed, f"no claim ahead (max_concurrency {concurrency}, dag {copies})"


def test_the_harness_catches_a_claim_ahead_beyond_max_concurrency() -> None:
    """A claim ahead that takes the reserved attempt whatever its task's record says,
    as if its lane had room (an item is QUEUED only once the item
    max_concurrency places before it ended; transitions.claim, which
    _Ahead._claimed asks, takes QUEUED attempts only): a stale copy of a done
    item's message starts it again, beside the next item of its lane."""
    original = chaining._Ahead._claimed

    def claimed(self: Any, task: TaskRecord, run_id: str, attempt: int,
                now: float) -> Any:
        if self.reserved is not None:
            task = dataclasses.replace(task, status=TaskStatus.QUEUED, attempt=attempt,
                                       not_before=None)
        return original(self, task, run_id, attempt, now)

    with mock.patch.object(chaining._Ahead, "_claimed", claimed), sqlite_store() as under:
        with pytest.raises(AssertionError, match="items busy, max_concurrency 3"):
            check_plan({**FIXED, "duplicates": 0.5}, under.store)


def test_the_harness_catches_a_reserved_message_spent_without_its_claim() -> None:
    """A completion that spends the message it reserved without claiming its attempt:
    the item is never delivered and stays QUEUED (the harness has no poller)."""
    with properties.reservations_spent_unclaimed(), sqlite_store() as under:
        with pytest.raises(AssertionError, match=r"'work\[\d+\]': 'QUEUED'"):
            check_plan(FIXED, under.store)
