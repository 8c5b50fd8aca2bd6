"""Trigger rules, branches, and what happens downstream of a failure, on every store.

Each run is driven message by message through the real engine (the bus
only collects what the engine sends), on SQLite and on the Firestore
emulator. The rules follow Airflow's documented meanings; the oracle below
restates them independently of the engine's code.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from function_flow.core.definition import TRIGGER_RULES
from function_flow.core.engine import Engine
from function_flow.core.records import JoinProgress, RunStatus, TaskStatus, Verdict
from function_flow.errors import DefinitionError
from function_flow.tasks import Job

from test_run_graph import Outbox, drain

W = TaskStatus.WAITING


def airflow_outcome(rule: str, succeeded: int, failed: int, skipped: int) -> str:
    """What Airflow's docs say a task becomes once all its upstream tasks are done."""
    n = succeeded + failed + skipped
    runs = {
        "all_success": succeeded == n,
        "all_failed": failed == n,
        "all_done": True,
        "one_success": succeeded >= 1,
        "one_failed": failed >= 1,
        "none_failed": failed == 0,
        "none_failed_min_one_success": failed == 0 and succeeded >= 1,
        "always": True,
    }[rule]
    if runs:
        return "run"
    # Airflow: a rule that cannot be met because something failed upstream
    # ends the task upstream_failed; one that cannot be met otherwise, skipped.
    if rule in ("all_success", "none_failed", "none_failed_min_one_success") and failed:
        return "upstream_failed"
    if rule == "one_success" and skipped < n:
        return "upstream_failed"
    return "skip"


@settings(max_examples=400)
@given(st.sampled_from(TRIGGER_RULES), st.integers(0, 4), st.integers(0, 4),
       st.integers(0, 4), st.integers(0, 3))
def test_each_rule_decides_as_airflow_documents(rule: str, succeeded: int, failed: int,
                                                skipped: int, missing: int) -> None:
    deps = succeeded + failed + skipped + missing
    if deps == 0:
        return
    progress = JoinProgress(W, succeeded, failed, skipped)
    verdict = progress.verdict(deps, rule)
    if missing == 0:
        assert verdict.value == airflow_outcome(rule, succeeded, failed, skipped)
    elif rule == "one_success" and succeeded or rule == "one_failed" and failed \
            or rule == "always":
        assert verdict is Verdict.RUN  # Airflow fires these as soon as one is in
    else:
        assert verdict is Verdict.WAIT  # the others decide once every dependency is done
    assert JoinProgress(TaskStatus.QUEUED, succeeded, failed, skipped).verdict(
        deps, rule) is Verdict.WAIT  # a task already decided is never decided again


def run(job: Job, store, limit: int = 10_000) -> tuple[str, dict[str, TaskStatus], Engine]:
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    drain(engine, bus, limit)
    return run_id, {t.task_id: t.status for t in engine.task_records(run_id)}, engine


def boom(**_):
    raise RuntimeError("boom")


def test_downstream_of_a_failure_ends_upstream_failed_never_waiting(store) -> None:
    """Function Flow's behaviour (the run fails at the first failure), with the
    tasks that can no longer run saying why, and the others cancelled."""
    job = Job("chain")
    job.task(task_id="a")(boom)
    job.task(task_id="b", deps=["a"])(lambda **_: 1)
    job.task(task_id="c", deps=["b"])(lambda **_: 1)
    job.task(task_id="x")(lambda **_: 1)
    job.task(task_id="y", deps=["x"])(lambda **_: 1)
    job.task(task_id="z", deps=["c", "y"])(lambda **_: 1)
    run_id, status, engine = run(job, store)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    assert status["a"] is TaskStatus.FAILED
    assert status["b"] is status["c"] is status["z"] is TaskStatus.UPSTREAM_FAILED
    # a was delivered first: x, queued beside it, and y never ran.
    assert status["x"] is status["y"] is TaskStatus.CANCELLED
    assert not any(s is W for s in status.values())
    assert engine.run_status(run_id).error.startswith("task 'a' failed")


def test_a_branch_skips_the_paths_not_taken_and_the_skip_cascades(store) -> None:
    ran: list[str] = []
    job = Job("branchy")
    job.task(task_id="decide", branch=True)(lambda **_: "left")
    for name, deps in (("left", ["decide"]), ("right", ["decide"]),
                       ("right_more", ["right"])):
        job.task(task_id=name, deps=deps)(lambda name=name, **_: ran.append(name) or name)
    job.task(task_id="join", deps=["left", "right_more"],
             trigger_rule="none_failed_min_one_success")(lambda **_: ran.append("join"))
    run_id, status, engine = run(job, store)
    assert ran == ["left", "join"]
    assert status == {"decide": TaskStatus.SUCCEEDED, "left": TaskStatus.SUCCEEDED,
                      "right": TaskStatus.SKIPPED, "right_more": TaskStatus.SKIPPED,
                      "join": TaskStatus.SUCCEEDED}
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    # Under the default rule the skip reaches the join too.
    strict = Job("strict")
    strict.task(task_id="decide", branch=True)(lambda **_: ["left"])
    strict.task(task_id="left", deps=["decide"])(lambda **_: 1)
    strict.task(task_id="right", deps=["decide"])(lambda **_: 1)
    strict.task(task_id="join", deps=["left", "right"])(lambda **_: 1)
    run_id, status, engine = run(strict, store)
    assert status["join"] is TaskStatus.SKIPPED
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_a_branch_may_take_several_paths_or_none(store) -> None:
    job = Job("fan")
    job.task(task_id="decide", branch=True)(lambda **_: ["a", "b"])
    for name in "abc":
        job.task(task_id=name, deps=["decide"])(lambda **_: 1)
    _, status, _ = run(job, store)
    assert (status["a"], status["b"], status["c"]) == (
        TaskStatus.SUCCEEDED, TaskStatus.SUCCEEDED, TaskStatus.SKIPPED)
    none = Job("none")
    none.task(task_id="decide", branch=True)(lambda **_: [])
    none.task(task_id="a", deps=["decide"])(lambda **_: 1)
    run_id, status, engine = run(none, store)
    assert status["a"] is TaskStatus.SKIPPED
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_a_branch_naming_no_dependent_fails_its_task_with_the_names(store) -> None:
    job = Job("typo")
    job.task(task_id="decide", branch=True)(lambda **_: "lefft")
    job.task(task_id="left", deps=["decide"])(lambda **_: 1)
    job.task(task_id="right", deps=["decide"])(lambda **_: 1)
    run_id, status, engine = run(job, store)
    decide = engine.task_records(run_id)[0]
    assert decide.status is TaskStatus.FAILED
    assert "branch task 'decide' chose 'lefft', which is not among its dependents " \
           "(left, right)" in decide.error
    assert status["left"] is status["right"] is TaskStatus.UPSTREAM_FAILED
    wrong = Job("wrong")
    wrong.task(task_id="decide", branch=True)(lambda **_: {"left": True})
    wrong.task(task_id="left", deps=["decide"])(lambda **_: 1)
    run_id, _, engine = run(wrong, store)
    assert "must return the id of the dependent to follow" in \
        engine.task_records(run_id)[0].error


def test_failure_handlers_run_and_the_run_still_fails(store) -> None:
    """With a rule that reacts to failures, the run goes on until every task ended."""
    ran: list[str] = []
    job = Job("handled")
    job.task(task_id="load")(boom)
    job.task(task_id="other")(lambda **_: ran.append("other"))
    job.task(task_id="report", deps=["load"])(lambda **_: ran.append("report"))
    job.task(task_id="alert", deps=["load"], trigger_rule="one_failed")(
        lambda **_: ran.append("alert"))
    job.task(task_id="cleanup", deps=["report", "other"], trigger_rule="all_done")(
        lambda **_: ran.append("cleanup"))
    job.task(task_id="on_all_failed", deps=["load", "other"],
             trigger_rule="all_failed")(lambda **_: ran.append("never"))
    run_id, status, engine = run(job, store)
    assert sorted(ran) == ["alert", "cleanup", "other"]
    assert status["report"] is TaskStatus.UPSTREAM_FAILED
    assert status["on_all_failed"] is TaskStatus.SKIPPED  # "other" succeeded
    assert status["alert"] is status["cleanup"] is TaskStatus.SUCCEEDED
    run_record = engine.run_status(run_id)
    assert run_record.status is RunStatus.FAILED
    assert run_record.error.startswith("task 'load' failed")


def test_one_success_runs_early_but_the_run_waits_for_every_task(store) -> None:
    job = Job("early")
    job.task(task_id="fast")(lambda **_: "fast")
    job.task(task_id="slow")(lambda **_: "slow")
    job.task(task_id="first", deps=["fast", "slow"], trigger_rule="one_success")(
        lambda **_: "first")
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    fast = next(m for m in bus.sent if m.task_id == "fast")
    bus.sent.remove(fast)
    assert engine.handle(fast) == "succeeded"
    first = next(m for m in bus.sent if m.task_id == "first")  # queued before slow ran
    bus.sent.remove(first)
    assert engine.handle(first) == "succeeded"
    assert engine.run_status(run_id).status is RunStatus.RUNNING  # slow has not ended
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert {t.task_id: t.status for t in engine.task_records(run_id)}["slow"] \
        is TaskStatus.SUCCEEDED


def test_always_runs_from_the_start_and_none_failed_accepts_skips(store) -> None:
    order: list[str] = []
    job = Job("rules")
    job.task(task_id="decide", branch=True)(lambda **_: order.append("decide") or [])
    job.task(task_id="skipped", deps=["decide"])(lambda **_: order.append("skipped"))
    job.task(task_id="tolerant", deps=["skipped"], trigger_rule="none_failed")(
        lambda **_: order.append("tolerant"))
    job.task(task_id="anyway", deps=["tolerant"], trigger_rule="always")(
        lambda **_: order.append("anyway"))
    run_id, status, engine = run(job, store)
    assert order[0] in ("decide", "anyway") and "anyway" in order[:2]
    assert status["skipped"] is TaskStatus.SKIPPED
    assert status["tolerant"] is status["anyway"] is TaskStatus.SUCCEEDED
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_a_skip_cascades_down_a_long_chain_without_recursion(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    sqlite_store = SqliteStore(str(tmp_path / "state.db"))
    job = Job("long")
    job.task(task_id="decide", branch=True)(lambda **_: [])
    previous = "decide"
    for i in range(1500):
        job.task(task_id=f"t{i}", deps=[previous])(lambda **_: 1)
        previous = f"t{i}"
    run_id, status, engine = run(job, sqlite_store)
    assert all(s is TaskStatus.SKIPPED for t, s in status.items() if t != "decide")
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED


def test_max_parallel_tasks_holds_with_skips_and_failures(store) -> None:
    job = Job("slots", max_parallel_tasks=1)
    job.task(task_id="decide", branch=True)(lambda **_: "a")
    job.task(task_id="a", deps=["decide"])(boom)
    job.task(task_id="b", deps=["decide"])(lambda **_: 1)
    job.task(task_id="c")(lambda **_: 1)
    job.task(task_id="after", deps=["a", "b", "c"], trigger_rule="all_done")(lambda **_: 1)
    run_id, status, engine = run(job, store)
    assert engine.slots == 1
    assert status["b"] is TaskStatus.SKIPPED and status["after"] is TaskStatus.SUCCEEDED
    assert engine.run_status(run_id).status is RunStatus.FAILED
    free = engine.store.find_free_slots(run_id, 1, 1)
    assert free == [0]  # nothing holds the slot at the end


@pytest.mark.parametrize("rule, message", [
    ("all_sucess", "unknown trigger_rule 'all_sucess' (did you mean 'all_success'?)"),
    (None, "unknown trigger_rule None"),
])
def test_an_unknown_trigger_rule_is_a_definition_error_naming_the_task(
        rule, message) -> None:
    job = Job("bad")
    with pytest.raises(DefinitionError) as raised:
        job.task(task_id="t", trigger_rule=rule)(lambda **_: 1)
    assert message in str(raised.value) and "task 't'" in str(raised.value)
    with pytest.raises(DefinitionError, match="task 't': branch must be True or False"):
        job.task(task_id="t", branch="yes")(lambda **_: 1)
