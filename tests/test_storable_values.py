"""Awkward values through both stores: kept exactly, or refused at the boundary.

A task's result and a run-context value may be any JSON Python's json module
writes, NaN and the infinities included (a model's loss can be NaN): -0.0,
integers past 64 bits, deep lists, text outside the Basic Multilingual Plane
or holding a lone surrogate. Each comes back from the store exactly as it
went in (NaN as NaN, -0.0 with its sign, an int as an int), through a second
task that reads both, or the task fails with the project's "cannot be stored"
error: never a raw sqlite3 or Firestore error, never a changed value. On the
SQLite store (whose JSON functions refuse NaN) and on the Firestore emulator.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from function_flow.backends import Backend
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.core.values import MAX_DEPTH, json_text, nesting
from function_flow.tasks import Job
from test_run_graph import Outbox, drain

#: The errors a value refused at the boundary gives (values.json_text, storable,
#: context.value_text): each says it cannot be stored and what to do instead.
REFUSED = re.compile(r"cannot be stored|more than the [\d,]+ ")


def nested(depth: int, leaf: Any) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


LEAVES = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 2 ** 63, -2 ** 63 - 1,
                     10 ** 30, 1.0000000000000002, 5e-324, "\ud800", "a\udfffb", "😀𝄞",
                     "", None, True]),
    st.floats(), st.integers(min_value=-2 ** 130, max_value=2 ** 130),
    st.text(max_size=8))
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(max_size=6), inner, max_size=4), max_leaves=12)
#: How deep the value is put in lists of one item (at most MAX_DEPTH is kept).
DEPTHS = st.one_of(st.just(0), st.integers(min_value=1, max_value=1500))
EXAMPLES = settings(max_examples=8, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def same(a: Any, b: Any) -> bool:
    """Equal as stored values: NaN is NaN, -0.0 keeps its sign, 1 is not 1.0 or True."""
    while isinstance(a, list) and len(a) == 1 and isinstance(b, list) and len(b) == 1:
        a, b = a[0], b[0]  # a deep list without recursion
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or (
            a == b and math.copysign(1.0, a) == math.copysign(1.0, b))
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


def job_keeping(value: Any) -> Job:
    """a keeps `value` as its result and in the run context; two foreach run over
    [value] (its item is written into records); b reads all of them back."""
    job = Job(name="values")

    @job.task(task_id="a")
    def keep(task, job):
        job.context.set("kept", value)
        return value

    job.task(task_id="pair", deps=["a"])(lambda task, job: [job.get_task_result("a")])

    @job.foreach(task_id="echo", over="pair")
    def echo(item, task, job):
        return item

    copy = Job("copy")  # an item's copy of a sub-DAG: each member holds the item
    copy.task(task_id="first")(lambda task, job: None)
    copy.task(task_id="second", deps=["first"])(lambda task, job: task.item)
    job.foreach(task_id="copies", over="pair", dag=copy)

    @job.task(task_id="b", deps=["echo", "copies"])
    def read(task, job):
        return [job.get_task_result("a"), job.context.get("kept"),
                dict(job.context.items())["kept"], *job.get_task_result("echo"),
                *job.get_task_result("copies")]

    return job


@EXAMPLES
@given(value=VALUES, depth=DEPTHS)
@example(value=[math.nan, -math.inf, {"x": math.inf}, -0.0], depth=0)  # SQLite refuses NaN
@example(value=[[1, 2], [10 ** 30, "😀"]], depth=0)  # a foreach item that is a list
@example(value=math.nan, depth=900)
@example(value=1, depth=1500)  # deeper than json can write: refused
@example(value=1, depth=MAX_DEPTH - 1)  # kept, also in the lists that wrap it
@example(value=1, depth=MAX_DEPTH)  # kept, but not in a list
@example(value=1, depth=MAX_DEPTH + 1)  # refused
@example(value=1, depth=980)  # json wrote it for the check, not in the record: a loop
def test_a_value_comes_back_exactly_or_is_refused_with_a_clear_error(store, value: Any,
                                                                     depth: int) -> None:
    value = nested(depth, value)
    bus = Outbox()
    job = job_keeping(value).use_backend(Backend("embedded", store, bus,
                                                 lease_check_messages=False))
    engine = job.engine
    run_id, _ = engine.start({})
    drain(engine, bus)

    a, b = store.get_tasks(run_id, ["a", "b"])
    run = store.get_run(run_id)
    if a.status is TaskStatus.FAILED:
        assert REFUSED.search(a.error or ""), a.error
        assert "sqlite3" not in a.error and "google" not in a.error, a.error
        assert run.status is RunStatus.FAILED
        return
    if nesting(value) >= MAX_DEPTH:  # a keeps it; the tasks that wrap it in a list cannot
        failed = [t for t in store.get_tasks(run_id) if t.status is TaskStatus.FAILED]
        assert failed and all("levels deep" in t.error for t in failed), failed
        assert same(a.result, value) and run.status is RunStatus.FAILED
        return
    assert (run.status, a.status, b.status) == (RunStatus.SUCCEEDED,) + (
        TaskStatus.SUCCEEDED,) * 2, (run.error, a.error, b.error)
    assert same(a.result, value), (a.result, value)
    assert same(b.result, [value] * 5), (b.result, value)
    every = {r.task_id: r for r in store.get_tasks(run_id)}  # the whole run's read
    assert same(every["a"].result, value)
    assert run_id in [r.run_id for r in store.list_runs(limit=100)]


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 980, 1500])
def test_a_value_nested_too_deeply_says_it_cannot_be_stored_and_what_to_return(depth) -> None:
    """The README's promise: the error says it "cannot be stored" and what to return."""
    assert nesting(nested(MAX_DEPTH - 1, [{"a": 1}])) == MAX_DEPTH + 1
    json_text("the result", nested(MAX_DEPTH - 1, 1))
    with pytest.raises(ValueError) as refused:
        json_text("the result of task 'deep'", nested(depth, 1))
    message = str(refused.value)
    assert message.startswith("the result of task 'deep' is nested more than 256 levels")
    assert "cannot be stored" in message and "return a flatter value" in message, message


def test_a_body_with_a_timeout_returning_a_value_nested_too_deeply_is_told_so(
        tmp_path) -> None:
    """Its result crosses a pipe first, whose pickle gives up sooner (about 500
    levels): the error says the same as without a timeout."""
    from function_flow import backends

    job = Job(name="deep")
    for depth in (MAX_DEPTH + 1, 600, 2000):
        job.task(task_id=f"d{depth}", timeout=30)(
            lambda task, job: nested(int(task.id[1:]), 1))
    job.use_backend(backends.embedded(db_path=str(tmp_path / "runs.db")))
    try:
        run = job.run(timeout=60)
        assert run.status is RunStatus.FAILED
        for record in job.engine.task_records(run.run_id):
            assert record.status is TaskStatus.FAILED, record
            assert f"task '{record.task_id}' is nested more than 256 levels" \
                in record.error, record.error
            assert "cannot be stored; return a flatter value" in record.error
    finally:
        job.backend.close()


def test_dict_keys_that_are_not_strings_come_back_as_strings(store) -> None:
    """The README's one exception, as with json itself."""
    bus = Outbox()
    value = {1: "a", "1": "b", None: True}
    job = job_keeping(value).use_backend(Backend("embedded", store, bus,
                                                 lease_check_messages=False))
    run_id, _ = job.engine.start({})
    drain(job.engine, bus)
    assert store.get_tasks(run_id, ["a"])[0].result == {"1": "b", "null": True}
