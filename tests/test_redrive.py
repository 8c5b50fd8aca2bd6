"""Redrive: a FAILED or CANCELLED run starts again from what did not succeed, on every store."""

from __future__ import annotations

import time

import pytest

from function_flow.core import foreach
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.core.redrive import RedriveRefusedError
from function_flow.errors import RunNotFoundError
from function_flow.tasks import Job

from test_run_graph import Outbox, drain


class Flaky:
    """Bodies that fail until told to work (the fix a user deploys before redriving)."""

    def __init__(self) -> None:
        self.broken: set[str] = set()
        self.ran: list[str] = []

    def body(self, name: str, value=None):
        def run(**_):
            self.ran.append(name)
            if name in self.broken:
                raise RuntimeError(f"{name} is broken")
            return value if value is not None else name
        return run


def engine_for(job: Job, store) -> tuple[Engine, Outbox]:
    bus = Outbox()
    return Engine(job, store, bus, lease_check_messages=False), bus


def statuses(engine: Engine, run_id: str) -> dict[str, TaskStatus]:
    return {t.task_id: t.status for t in engine.task_records(run_id)}


def test_a_failed_run_runs_again_from_the_failed_task_keeping_results(store) -> None:
    flaky = Flaky()
    job = Job("etl")
    job.task(task_id="extract")(flaky.body("extract", {"rows": 3}))
    job.task(task_id="transform", deps=["extract"])(flaky.body("transform"))
    job.task(task_id="load", deps=["transform"])(flaky.body("load"))
    job.task(task_id="side")(flaky.body("side"))
    flaky.broken = {"transform"}
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    assert statuses(engine, run_id)["load"] is TaskStatus.UPSTREAM_FAILED

    flaky.broken, flaky.ran = set(), []
    run = engine.redrive(run_id)
    assert run.run_id == run_id and run.status is RunStatus.RUNNING and run.redrives == 1
    drain(engine, bus)
    final = engine.run_status(run_id)
    assert final.status is RunStatus.SUCCEEDED and final.error is None and final.redrives == 1
    assert flaky.ran == ["transform", "load"]  # extract's and side's results were kept
    assert all(s is TaskStatus.SUCCEEDED for s in statuses(engine, run_id).values())


def test_redrive_again_counts_and_a_branch_not_taken_stays_skipped(store) -> None:
    flaky = Flaky()
    job = Job("branchy")
    job.task(task_id="decide", branch=True)(flaky.body("decide", ["left"]))
    job.task(task_id="left", deps=["decide"])(flaky.body("left"))
    job.task(task_id="right", deps=["decide"])(flaky.body("right"))
    flaky.broken = {"left"}
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    engine.redrive(run_id)
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.FAILED  # still broken
    flaky.broken = set()
    assert engine.redrive(run_id).redrives == 2
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert statuses(engine, run_id)["right"] is TaskStatus.SKIPPED
    assert flaky.ran.count("decide") == 1 and "right" not in flaky.ran


def test_inside_a_foreach_only_the_failed_items_run_again(store) -> None:
    ran: list[int] = []
    broken = {3, 7, 11}
    job = Job("items")
    job.task(task_id="list")(lambda **_: list(range(15)))

    @job.foreach(task_id="work", over="list", max_concurrency=4)
    def work(item, **_):
        ran.append(item)
        if item in broken:
            raise ValueError(f"item {item}")
        return item * 2

    job.task(task_id="total", deps=["work"])(
        lambda job, **_: sum(job.get_task_result("work")))
    engine, bus = engine_for(job, store)
    job.use_backend(_backend_of(store, bus))
    run_id, _ = engine.start({})
    drain(engine, bus, 10_000)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    assert sorted(ran) == list(range(15))
    broken.clear()
    ran.clear()
    engine.redrive(run_id)
    drain(engine, bus, 10_000)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert sorted(ran) == [3, 7, 11]
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    assert records["total"].result == sum(i * 2 for i in range(15))
    assert records[foreach.item_id("work", 7)].status is TaskStatus.SUCCEEDED


def test_a_changed_foreach_whose_items_partly_succeeded_is_refused_naming_them(
        store) -> None:
    """Its items that succeeded keep the old body's results."""
    def listed(**_):
        return [1, 2]

    job = Job("items")
    job.task(task_id="list")(listed)
    job.foreach(task_id="work", over="list")(lambda item, **_: 1 / (item - 2))
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    fixed = Job("items")
    fixed.task(task_id="list")(listed)
    fixed.foreach(task_id="work", over="list")(lambda item, **_: item)
    with pytest.raises(RedriveRefusedError) as refused:
        Engine(fixed, store, bus).redrive(run_id)
    assert f"run {run_id} cannot be redriven on this definition: task 'work' changed " \
        "(body), and its items that succeeded are kept; its results" in str(refused.value)
    assert engine.run_status(run_id).status is RunStatus.FAILED


def _backend_of(store, bus):
    from function_flow.backends import Backend

    return Backend("embedded", store, bus)


def test_a_cancelled_run_can_be_redriven(store) -> None:
    flaky = Flaky()
    job = Job("cancelled")
    job.task(task_id="a")(flaky.body("a"))
    job.task(task_id="b", deps=["a"])(flaky.body("b"))
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    bus.sent.clear()  # a's message is lost; the run is cancelled from outside
    store.transact(lambda tx: tx.update_run(run_id, {"status": "CANCELLED"}))
    engine.retire_leftovers(run_id)
    engine.redrive(run_id)
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert flaky.ran == ["a", "b"]


@pytest.mark.parametrize("ended", ["FAILED", "CANCELLED"])
def test_a_run_paused_before_it_ended_is_redriven_unpaused(store, ended) -> None:
    """Its pause held every task the redrive queued: the redrive never ended."""
    from function_flow.core import control

    broken, pausing = ([True] if ended == "FAILED" else []), [True]
    job = Job("paused")

    @job.task(task_id="a")
    def a(task, job):
        if pausing:  # paused while its first attempt runs
            pausing.clear()
            control.pause(store, task.run_id, time.time())
        if broken:
            raise RuntimeError("a is broken")
        return 1

    job.task(task_id="b", deps=["a"])(lambda **_: 2)
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)  # a ends it FAILED, or b waits, held
    if ended == "CANCELLED":
        with pytest.raises(RedriveRefusedError, match=r"is PAUSED: only FAILED or CANCELLED "
                                                      r"runs can be redriven; cancel it first$"):
            engine.redrive(run_id)
        control.cancel(store, run_id, engine.clock())
    assert engine.run_status(run_id).status.value == ended
    broken.clear()
    engine.redrive(run_id)
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.paused_at is None


def test_redrive_refuses_running_succeeded_and_unknown_runs(store) -> None:
    job = Job("fine")
    job.task(task_id="a")(lambda **_: 1)
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    with pytest.raises(RedriveRefusedError, match="is RUNNING: only FAILED or CANCELLED"):
        engine.redrive(run_id)
    drain(engine, bus)
    with pytest.raises(RedriveRefusedError, match="is SUCCEEDED"):
        engine.redrive(run_id)
    assert engine.run_status(run_id).redrives == 0
    with pytest.raises(RunNotFoundError):
        engine.redrive("no-such-run")


def test_redrive_on_a_definition_that_changed_a_succeeded_task_is_refused(store) -> None:
    flaky = Flaky()
    job = Job("changed")
    job.task(task_id="a")(flaky.body("a"))
    job.task(task_id="b", deps=["a"])(flaky.body("b"))
    flaky.broken = {"b"}
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    changed = Job("changed")
    changed.task(task_id="a", retries=3)(flaky.body("a"))  # a finished task changed
    changed.task(task_id="b", deps=["a"])(flaky.body("b"))
    with pytest.raises(RedriveRefusedError) as refused:
        Engine(changed, store, bus).redrive(run_id)
    assert str(refused.value).startswith(
        f"run {run_id} cannot be redriven on this definition: task 'a' succeeded but "
        "changed (settings); its results would not be")
    assert str(refused.value).count("cannot be redriven") == 1
    assert engine.run_status(run_id).status is RunStatus.FAILED
    # A fix in the failed task itself is what redrive is for.
    fixed = Job("changed")
    fixed.task(task_id="a")(flaky.body("a"))
    fixed.task(task_id="b", deps=["a"])(lambda **_: "fixed")
    fixed_engine = Engine(fixed, store, bus, lease_check_messages=False)
    fixed_engine.redrive(run_id)
    drain(fixed_engine, bus)
    assert fixed_engine.run_status(run_id).status is RunStatus.SUCCEEDED


def failed_chain(store, ids: list[str]) -> tuple[Flaky, Engine, Outbox, str]:
    """A run of the chain ids[0] -> ids[1] -> ... that FAILED at ids[1]."""
    flaky = Flaky()
    job = Job("chain")
    for before, task_id in zip([None, *ids], ids):
        job.task(task_id=task_id, deps=[before] if before else None)(flaky.body(task_id))
    flaky.broken = {ids[1]}
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    return flaky, engine, bus, run_id


def test_the_ends_leftovers_retired_late_leave_a_redrives_reset_tasks_alone(
        store, monkeypatch) -> None:
    """The run's end retires its leftovers after its commit (leftovers.retire):
    a redrive that comes quickly may reset the tasks meanwhile. Retired
    late, the end must not cancel what the redrive reset (WAITING, attempt
    0, just like the unstarted tasks it left), else the reopened run never
    ends."""
    from function_flow.core import leftovers

    flaky, engine, bus, run_id = failed_chain(store, ["extract", "transform", "load"])
    flaky.broken, flaky.ran = set(), []
    transact, late = store.transact, []

    def retiring_late(fn, **kwargs):
        if fn.__name__ == "reopen" and not late:  # every task is reset by now
            late.append(statuses(engine, run_id))
            leftovers.retire(engine, run_id, RunStatus.FAILED)
        return transact(fn, **kwargs)

    monkeypatch.setattr(store, "transact", retiring_late)
    engine.redrive(run_id)
    monkeypatch.undo()
    assert late == [{"extract": TaskStatus.SUCCEEDED, "transform": TaskStatus.WAITING,
                     "load": TaskStatus.WAITING}]
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert engine.run_status(run_id).redriving is False
    assert flaky.ran == ["transform", "load"]


@pytest.mark.parametrize("change", ["a task added", "a task removed"])
def test_redrive_on_a_definition_with_other_tasks_is_refused_changing_nothing(
        store, change) -> None:
    """A task the definition adds had no record, one it removes kept its own
    waiting: the redriven run hung RUNNING for good."""
    flaky, engine, bus, run_id = failed_chain(store, ["a", "b", "c"])
    other = Job("chain")
    other.task(task_id="a")(flaky.body("a"))
    if change == "a task added":
        other.task(task_id="b", deps=["a"])(lambda **_: "fixed")
        other.task(task_id="c", deps=["b"])(flaky.body("c"))
        other.task(task_id="d", deps=["c"])(flaky.body("d"))
        named = "task 'd' is new"
    else:
        other.task(task_id="c", deps=["a"])(flaky.body("c"))
        named = "task 'b' was removed"
    before = statuses(engine, run_id)
    with pytest.raises(RedriveRefusedError) as refused:
        Engine(other, store, bus).redrive(run_id)
    assert str(refused.value) == (
        f"run {run_id} cannot be redriven on this definition: {named}; a redrive runs the "
        "run's own tasks again. Redrive it with the definition it started with (changing "
        "only tasks that did not succeed), or start a new run")
    assert engine.run_status(run_id).status is RunStatus.FAILED
    assert engine.run_status(run_id).redrives == 0 and statuses(engine, run_id) == before


def test_a_redrive_while_the_previous_ends_hooks_run_is_refused_naming_them(store) -> None:
    flaky = Flaky()
    job = Job("hooked")
    job.task(task_id="a")(flaky.body("a"))
    job.on_end(lambda run: None)
    flaky.broken = {"a"}
    engine, bus = engine_for(job, store)
    run_id, _ = engine.start({})
    while bus.sent and not bus.sent[0].task_id.startswith("__"):
        engine.handle(bus.sent.pop(0))  # the run ends; its on_end is queued, not run
    assert engine.run_status(run_id).status is RunStatus.FAILED
    assert engine.run_status(run_id).hooks_pending
    with pytest.raises(RedriveRefusedError) as refused:
        engine.redrive(run_id)
    assert str(refused.value) == (
        f"run {run_id} ended, but its hooks (on_end) are still running; redrive it once "
        "they are done (function-flow status shows them)")
    drain(engine, bus)
    flaky.broken = set()
    assert engine.redrive(run_id).redrives == 1
