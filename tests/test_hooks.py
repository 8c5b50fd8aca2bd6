"""on_failure and on_end hooks: once per run, whatever the delivery, on every store.

Runs are driven message by message through the real engine (the bus only
collects what the engine sends), on SQLite and on the Firestore emulator:
each way a run ends (a sink's success, the end task's join, a failure that
ends it at once, a failure a trigger rule handles, a cancellation, the
clean-up of a stuck run), duplicated delivery, a process that dies right
after the commit that ended the run, and a hook whose own process died.
"""

from __future__ import annotations

import pytest

from function_flow.core import hooks, recovery, transitions
from function_flow.core.engine import Engine
from function_flow.core.messages import Message
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import DefinitionError
from function_flow.tasks import Job

from test_run_graph import Outbox, drain

S, F, SK = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED


def boom(**_):
    raise RuntimeError("boom")


@pytest.mark.parametrize("over, shown", [(["x", "y"], ["X", "Y"]),
                                          ({"k": "x", "j": "y"}, {"k": "X", "j": "Y"})])
def test_a_foreach_sink_is_seen_by_its_items_results(store, over, shown) -> None:
    """Not the summary the foreach's own record holds (what it stores to
    assemble them), and the same as job.get_task_result gives a task."""
    seen: list = []
    job = Job("foreach_sink")
    job.task(task_id="src")(lambda **_: over)
    job.foreach(task_id="each", over="src")(lambda task, job: task.item.upper())
    job.on_end(lambda run: seen.append(run.results))
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    assert seen == [{"each": shown}]


def hooked(calls: list, shape: str = "chain", *, on_failure: dict | None = None,
           failing_hook: int = 0) -> Job:
    """A job with both hooks; `shape` picks how its runs end.

    failing_hook: on_failure raises on its first n attempts.
    """
    job = Job(f"hooked-{shape}")
    job.task(task_id="a")(lambda **_: 1)
    if shape == "chain":          # one sink: its success ends the run
        job.task(task_id="b", deps=["a"])(lambda **_: 2)
    elif shape == "two_sinks":    # the end task's join ends the run
        job.task(task_id="b", deps=["a"])(lambda **_: 2)
        job.task(task_id="c", deps=["a"])(lambda **_: 3)
    elif shape == "fails":        # a failure ends the run at once
        job.task(task_id="b", deps=["a"])(boom)
    elif shape == "handled":      # a trigger rule runs on; the end is FAILED
        job.task(task_id="b", deps=["a"])(boom)
        job.task(task_id="c", deps=["b"], trigger_rule="all_done")(lambda **_: 3)

    @job.on_failure(**(on_failure or {}))
    def alert(run):
        calls.append(("on_failure", run.status.value))
        if sum(1 for c in calls if c[0] == "on_failure") <= failing_hook:
            raise RuntimeError("the pager is down")

    @job.on_end
    def clean_up(run):
        calls.append(("on_end", run.status.value, run.results, run.error))
        return "cleaned"

    return job


def start(job: Job, store, bus=None) -> tuple[Engine, str, Outbox]:
    bus = bus or Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({"day": "monday"})
    return engine, run_id, bus


def hook_status(store, run_id: str) -> dict[str, TaskStatus]:
    return {t.task_id: t.status for t in store.get_tasks(run_id) if hooks.is_hook(t.task_id)}


@pytest.mark.parametrize("shape,ended,ran", [
    ("chain", RunStatus.SUCCEEDED, ["on_end"]),
    ("two_sinks", RunStatus.SUCCEEDED, ["on_end"]),
    ("fails", RunStatus.FAILED, ["on_failure", "on_end"]),
    ("handled", RunStatus.FAILED, ["on_failure", "on_end"]),
])
def test_hooks_run_once_after_the_run_ends_however_it_ends(store, shape, ended, ran) -> None:
    calls: list = []
    engine, run_id, bus = start(hooked(calls, shape), store)
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.status is ended
    assert [c[0] for c in calls] == ran
    assert all(c[1] == ended.value for c in calls)
    assert not run.hooks_pending
    assert run.hooks == [hooks.ON_FAILURE, hooks.ON_END]
    expected = {hooks.ON_FAILURE: S if "on_failure" in ran else SK, hooks.ON_END: S}
    assert hook_status(store, run_id) == expected
    # People's views of the run's tasks leave the hooks out.
    assert not any(hooks.is_hook(t.task_id) for t in engine.task_records(run_id))


def test_on_end_sees_the_results_of_the_sinks_and_the_error(store) -> None:
    calls: list = []
    engine, run_id, bus = start(hooked(calls, "two_sinks"), store)
    drain(engine, bus)
    assert calls == [("on_end", "SUCCEEDED", {"b": 2, "c": 3}, None)]
    calls.clear()
    engine, run_id, bus = start(hooked(calls, "fails"), store)
    drain(engine, bus)
    assert calls[1] == ("on_end", "FAILED", {}, "task 'b' failed: RuntimeError: boom")
    assert store.get_tasks(run_id, [hooks.ON_END])[0].result == "cleaned"


def test_on_failure_is_told_which_tasks_failed_and_the_arguments(store) -> None:
    seen = []
    job = Job("told")
    job.task(task_id="a")(boom)
    job.on_failure(lambda run: seen.append((run.failed_tasks, run.args, run.job_name)))
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    assert seen == [(["a"], {"day": "monday"}, "told")]


def test_a_hook_that_failed_is_not_among_the_failed_tasks_the_next_hook_sees(store) -> None:
    """Its id (__on_failure__) is function_flow's, not a task of the run."""
    seen = []
    job = Job("told")
    job.task(task_id="a")(boom)
    job.on_failure(lambda run: boom())
    job.on_end(lambda run: seen.append(run.failed_tasks))
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    assert store.get_tasks(run_id, [hooks.ON_FAILURE])[0].status is F
    assert seen == [["a"]]


def test_a_cancelled_run_runs_on_end_but_not_on_failure(store) -> None:
    calls: list = []
    engine, run_id, bus = start(hooked(calls), store)
    now = engine.clock()

    def cancel(tx):
        step = transitions.end_run(tx.get_run(run_id), RunStatus.CANCELLED, "cancelled", now)
        step.write_to(tx, run_id)
        return step

    engine.follow_up(run_id, store.transact(cancel))
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.CANCELLED
    assert [c[:2] for c in calls] == [("on_end", "CANCELLED")]
    assert hook_status(store, run_id) == {hooks.ON_FAILURE: SK, hooks.ON_END: S}


def test_duplicated_delivery_runs_each_hook_once(store) -> None:
    calls: list = []
    engine, run_id, bus = start(hooked(calls, "fails"), store)
    delivered = []
    while bus.sent:
        message = bus.sent.pop(0)
        delivered.append(message)
        engine.handle(message)
        engine.handle(message)  # Pub/Sub delivers it again, at once
    for message in delivered:   # and every one of them again, late
        engine.handle(message)
    assert [c[0] for c in calls] == ["on_failure", "on_end"]
    assert not engine.run_status(run_id).hooks_pending


class DiesAfterCommit(BaseException):
    """The process died: nothing after the commit happens."""


class DyingBus(Outbox):
    """Publishes normally, but dies instead of sending the first hook's message."""

    def __init__(self) -> None:
        super().__init__()
        self.died = False

    def publish(self, message: Message, delay: float = 0.0) -> None:
        if hooks.is_hook(message.task_id) and not self.died:
            self.died = True
            raise DiesAfterCommit(message)
        super().publish(message, delay)


def crash_after_the_end(store, calls: list) -> tuple[Engine, str, Outbox]:
    engine, run_id, bus = start(hooked(calls, "fails"), store, DyingBus())
    with pytest.raises(DiesAfterCommit):
        drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.status is RunStatus.FAILED and run.hooks_pending
    assert calls == [] and not bus.sent  # the hook's message never left
    return engine, run_id, bus


def test_the_poller_runs_the_hooks_of_a_run_whose_process_died_after_it_ended(store) -> None:
    calls: list = []
    engine, run_id, bus = crash_after_the_end(store, calls)
    # Too soon: its message may still be on its way.
    engine.poll()
    assert not bus.sent
    # The poller lists ended runs with hooks pending, like live ones.
    report = engine.poll(stale_after=0)
    assert report.runs_checked == 1
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_failure", "on_end"]
    run = engine.run_status(run_id)
    assert not run.hooks_pending
    assert engine.poll(stale_after=0).runs_checked == 0  # nothing left to look at


def test_resume_runs_the_hooks_of_a_run_whose_process_died_after_it_ended(store) -> None:
    calls: list = []
    engine, run_id, bus = crash_after_the_end(store, calls)
    engine.resume(run_id)
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_failure", "on_end"]
    assert not engine.run_status(run_id).hooks_pending


def test_a_run_failed_from_outside_runs_its_hooks_through_the_poller(store) -> None:
    """The clean-up of stuck runs ends a run with no definition at hand: the run
    record's list of hooks is enough to queue them, and the poller sends them."""
    calls: list = []
    engine, run_id, bus = start(hooked(calls), store)
    assert recovery.fail_run(store, run_id, "stuck for too long", engine.clock())
    bus.sent.clear()  # the roots' messages: their claims would be cancelled
    engine.poll(stale_after=0)
    drain(engine, bus)
    assert [c[:2] for c in calls] == [("on_failure", "FAILED"), ("on_end", "FAILED")]


def test_a_failing_hook_is_retried_and_never_changes_the_run(store) -> None:
    calls: list = []
    job = hooked(calls, "fails", on_failure={"retries": 1, "retry_backoff": 0},
                 failing_hook=1)
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_failure", "on_failure", "on_end"]
    record = store.get_tasks(run_id, [hooks.ON_FAILURE])[0]
    assert (record.status, record.attempt) == (S, 2)
    # One that fails for good: on_end still runs, and the run is as it was.
    calls.clear()
    engine, run_id, bus = start(hooked(calls, "chain", failing_hook=5), store)
    now = engine.clock()
    store.transact(lambda tx: transitions.end_run(
        tx.get_run(run_id), RunStatus.FAILED, "stopped", now).write_to(tx, run_id))
    engine.poll(stale_after=0)
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_failure", "on_end"]
    assert hook_status(store, run_id) == {hooks.ON_FAILURE: F, hooks.ON_END: S}
    run = engine.run_status(run_id)
    assert (run.status, run.error, run.hooks_pending) == (RunStatus.FAILED, "stopped", False)
    assert "the pager is down" in store.get_tasks(run_id, [hooks.ON_FAILURE])[0].error


@pytest.mark.parametrize("returned", [object(), {1, 2}, float("nan")])
def test_a_hook_returning_what_cannot_be_stored_succeeds_once(store, caplog,
                                                             returned) -> None:
    """Its work is done: it is not failed and run again for a value nobody reads."""
    caplog.set_level("WARNING", logger="function_flow")
    ran: list = []
    job = Job("returns_junk")
    job.task(task_id="a")(lambda **_: 1)
    job.on_end(retries=2, retry_backoff=0)(lambda run: ran.append(1) or returned)
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    record = store.get_tasks(run_id, [hooks.ON_END])[0]
    if isinstance(returned, float):  # NaN is a value results may hold: kept
        assert (ran, record.status, record.result != record.result) == ([1], S, True)
        return
    assert (ran, record.status, record.attempt, record.result) == ([1], S, 1, None)
    assert "what the on_end hook returned is a" in caplog.text
    assert "cannot be stored" in caplog.text and "it is not kept" in caplog.text


@pytest.mark.parametrize("died_before", [0, transitions.MAX_INTERRUPTED_ATTEMPTS])
def test_a_hook_whose_process_died_is_run_again(store, died_before) -> None:
    """Resumed, it runs again; one that killed its process every time fails,
    and the hooks after it still run."""
    calls: list = []
    engine, run_id, bus = start(hooked(calls, "fails"), store)
    while bus.sent and bus.sent[0].task_id != hooks.ON_FAILURE:
        engine.handle(bus.sent.pop(0))
    # The hook is claimed, and its process dies before it ends (kill -9).
    message = bus.sent.pop(0)
    now = engine.clock()

    def claim(tx):
        record = tx.get_tasks(run_id, [message.task_id])[message.task_id]
        transitions.claim(record, run_id, 1, now, 3600).write_to(tx, run_id)
        # As after `died_before` earlier interruptions, each resumed.
        tx.update_task(run_id, message.task_id, {"interrupted": died_before,
                                                 "attempt": died_before + 1})

    store.transact(claim)
    engine.resume(run_id)
    drain(engine, bus)
    record = store.get_tasks(run_id, [hooks.ON_FAILURE])[0]
    if died_before:
        assert [c[0] for c in calls] == ["on_end"]
        assert record.status is F and "ProcessDied" in record.error
    else:
        assert [c[0] for c in calls] == ["on_failure", "on_end"]
        assert (record.status, record.attempt, record.interrupted) == (S, 2, 1)
    assert not engine.run_status(run_id).hooks_pending


def test_the_poller_never_runs_the_hooks_of_a_live_run(store) -> None:
    calls: list = []
    engine, run_id, bus = start(hooked(calls), store)
    engine.poll(stale_after=0)
    engine.resume(run_id)
    assert not any(hooks.is_hook(m.task_id) for m in bus.sent)
    assert hook_status(store, run_id) == {hooks.ON_FAILURE: TaskStatus.WAITING,
                                          hooks.ON_END: TaskStatus.WAITING}
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_end"]


def test_a_hook_whose_lease_expired_is_retried_by_the_poller(store) -> None:
    """Google Cloud: nobody resumes; the poller finds the hook's lease expired."""
    calls: list = []
    clock = [1_000_000.0]
    job = hooked(calls, "fails", on_failure={"retries": 1, "retry_backoff": 0,
                                             "timeout": 60})
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False, clock=lambda: clock[0])
    run_id, _ = engine.start({})
    while bus.sent and bus.sent[0].task_id != hooks.ON_FAILURE:
        engine.handle(bus.sent.pop(0))
    message = bus.sent.pop(0)
    store.transact(lambda tx: transitions.claim(
        tx.get_tasks(run_id, [message.task_id])[message.task_id], run_id, 1, clock[0],
        60).write_to(tx, run_id))
    engine.poll(stale_after=0)
    assert not bus.sent  # its lease is valid: it may still be running
    clock[0] += 61
    engine.poll(stale_after=0)
    drain(engine, bus)
    assert [c[0] for c in calls] == ["on_failure", "on_end"]
    record = store.get_tasks(run_id, [hooks.ON_FAILURE])[0]
    assert (record.status, record.attempt, record.interrupted) == (S, 2, 0)


def test_a_job_without_hooks_has_no_hook_records(store) -> None:
    job = Job("plain")
    job.task(task_id="a")(lambda **_: 1)
    engine, run_id, bus = start(job, store)
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.hooks is None and not run.hooks_pending
    assert [t.task_id for t in store.get_tasks(run_id)] == ["a"]


# ---------------------------------------------------------------- bad input


def test_hook_functions_with_the_wrong_signature_are_refused_at_definition() -> None:
    job = Job("bad_hooks")
    with pytest.raises(DefinitionError, match=r"the on_failure hook: two\(a, b\) must take "
                                              r"exactly one argument"):
        @job.on_failure
        def two(a, b):
            pass
    with pytest.raises(DefinitionError, match=r"none_args\(\) must take exactly one argument"):
        job.on_end(none_args)
    with pytest.raises(DefinitionError, match="the on_end hook must be a function"):
        job.on_end("cleanup")
    with pytest.raises(DefinitionError, match="on_failure hook: retries must be an integer"):
        job.on_failure(retries=-1)(lambda run: None)
    job.on_failure(lambda run, extra=1: None)  # a default is fine
    with pytest.raises(DefinitionError, match="already has an on_failure hook"):
        job.on_failure(lambda run: None)
    job.on_end(lambda *runs: None)
    with pytest.raises(DefinitionError, match=r"job 'bad_hooks': the on_failure hook: "
                                              r"page\(\) is an async function"):
        @Job("bad_hooks").on_failure
        async def page(run):
            pass


def none_args():
    pass


def test_a_redriven_run_runs_its_hooks_again_when_it_ends_again(store) -> None:
    calls: list = []
    attempts = []
    job = Job("redriven")
    job.task(task_id="a")(lambda **_: attempts.append(1) if len(attempts) else
                          attempts.append(1) or boom())
    job.on_failure(lambda run: calls.append(("on_failure", run.status.value)))
    job.on_end(lambda run: calls.append(("on_end", run.status.value)))
    engine, run_id, bus = start(job, store)
    while bus.sent and bus.sent[0].task_id != hooks.ON_FAILURE:
        engine.handle(bus.sent.pop(0))
    # Its hooks have not run yet: a redrive now is refused, and changes nothing.
    with pytest.raises(Exception, match="hooks .* are still running"):
        engine.redrive(run_id)
    drain(engine, bus)
    assert calls == [("on_failure", "FAILED"), ("on_end", "FAILED")]
    engine.redrive(run_id)
    # Reset to wait for the run's next end, as they were when it started.
    assert hook_status(store, run_id) == {hooks.ON_FAILURE: TaskStatus.WAITING,
                                          hooks.ON_END: TaskStatus.WAITING}
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert (run.status, run.redrives, run.hooks_pending) == (RunStatus.SUCCEEDED, 1, False)
    assert calls[2:] == [("on_end", "SUCCEEDED")]
    assert hook_status(store, run_id) == {hooks.ON_FAILURE: SK, hooks.ON_END: S}


def test_graph_lists_the_hooks_after_the_tasks_in_every_format() -> None:
    from function_flow.cli import graphs

    job = Job("hooked_graph")
    job.task(task_id="only")(lambda **_: 1)
    assert "after the run" not in graphs.render(job.dag, "text")

    @job.on_failure
    def page_someone(run):
        pass

    text = graphs.render(job.dag, "text")
    assert text.endswith("after the run ends\n  on_failure: page_someone()\n"
                         "  callback: POST to the start's callback_url, if it gave one")
    assert '{{"on_failure: page_someone()"}}' in graphs.render(job.dag, "mermaid")
    assert '"hook: on_failure: page_someone()" [shape=hexagon];' \
        in graphs.render(job.dag, "dot")


def test_status_shows_what_a_hook_returned() -> None:
    """The README: what a hook returns is kept in its record, shown by status."""
    from function_flow.cli.hook_lines import hook_lines
    from function_flow.core.records import RunRecord, TaskRecord

    run = RunRecord(run_id="r", job_name="j", dag_hash="h", args={},
                    status=RunStatus.FAILED, hooks=[hooks.ON_FAILURE, hooks.ON_END])
    records = [TaskRecord(task_id=hooks.ON_FAILURE, status=S, attempt=1,
                          result={"paged": "ops", "big": "x" * 500}),
               TaskRecord(task_id=hooks.ON_END, status=S, attempt=2)]
    failure, end = hook_lines(run, records)
    assert failure.startswith('on_failure: SUCCEEDED (attempt 1): {"big": "xxx')
    assert failure.endswith("... (527 chars)") and len(failure) < 260
    assert end == "on_end: SUCCEEDED (attempt 2)"  # it returned None
