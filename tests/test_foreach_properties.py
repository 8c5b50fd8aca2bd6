"""Property tests for foreach, on SQLite and on the Firestore emulator.

Hypothesis draws the items, the concurrency limit, the tolerance, which
items fail (on which attempts) and a delivery: messages in random order,
duplicated, with the poller's recovery running in between. Whatever the
delivery, each item's body succeeds at most once, no more than
max_concurrency items are ever queued or running, every item ends, and the
foreach ends as its tolerance says, with the results in item order. Half
the plans run a sub-DAG per item (`dag=`: a -> b, a failing as drawn).
"""

from __future__ import annotations

import os
import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from function_flow.core import foreach
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.tasks import Job

from invariants.stores import sqlite_store
from test_run_graph import Outbox

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
    }


def check_plan(plan: dict, store) -> None:
    count, rng = plan["count"], random.Random(plan["seed"])
    items = {f"k{i}": i for i in range(count)} if plan["mapping"] else list(range(count))
    ran: dict[tuple[int, int], str] = {}
    job = Job("prop_foreach")
    job.task(task_id="decide", branch=True)(lambda **_: plan["branch"])
    job.task(task_id="list", deps=["decide"])(lambda **_: items)
    job.task(task_id="other", deps=["decide"])(lambda **_: "other")

    def work(task, **_):
        item = task.item
        key = (item, task.attempt)
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
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    limit = plan["concurrency"]
    steps = 0
    while bus.sent and steps < 20_000:
        steps += 1
        message = bus.sent.pop(rng.randrange(len(bus.sent)))
        engine.handle(message)
        if rng.random() < plan["duplicates"]:
            bus.sent.append(message)
        if rng.random() < plan["recover"]:
            engine.recover(run_id)
        if limit is not None and count and plan["branch"] == "list":
            busy = {t.task_id.partition("/")[0] for s in (TaskStatus.QUEUED, TaskStatus.RUNNING)
                    for t in store.find_tasks(run_id, s, 1000)
                    if t.role == "member" or (t.role == "item" and not plan["copies"])}
            assert len(busy) <= limit, f"{len(busy)} items busy, max_concurrency {limit}"
    run = store.get_run(run_id)
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    assert run.status.is_final and all(t.status.is_final for t in records.values()), \
        {t: r.status.value for t, r in records.items() if not r.status.is_final}
    if plan["branch"] == "other":
        assert records["list"].status is TaskStatus.SKIPPED
        assert records["work"].status is TaskStatus.SKIPPED and not ran
        assert run.status is RunStatus.SUCCEEDED
        return
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
