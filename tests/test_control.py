"""Pause, resume and cancel a run through the engine (core/control.py), on each store.

Runs execute on the in-process bus against each store adapter in turn (the
`store` fixture: SQLite, then the Firestore emulator). A body blocked on a
threading.Event is "a task that runs" while the test acts on its run; each
body records its executions, so "nothing new starts" is checked by what
ran, not by timing. The CLI and HTTP forms are in test_control_cli.py and
test_control_http.py.
"""

from __future__ import annotations

import concurrent.futures
import time
import threading
from typing import Any, Callable

import pytest

from function_flow import approvals, futures
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core import control, transitions
from function_flow.core.messages import Message
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import RunEndedError, RunNotFoundError
from function_flow.tasks import Job
from functions_stack import wait_for

pytestmark = pytest.mark.timeout(180)


class Flow:
    """A job whose bodies record what ran; `gate` blocks the tasks that wait on it."""

    def __init__(self, name: str, store: Any, *, max_parallel_tasks: int = 5) -> None:
        self.job = Job(name, max_parallel_tasks=max_parallel_tasks)
        self.ran: list[tuple[str, int]] = []
        self.gate = threading.Event()
        self.tokens: list[str] = []
        self.bus = LocalBus(4)
        self.job.use_backend(Backend("embedded", store, self.bus))
        self.store = store

    def task(self, task_id: str, deps: list[str] | None = None, *, blocks: bool = False,
             waits_for_approval: bool = False) -> None:
        def body(task, job):
            self.ran.append((task.id, task.attempt))
            if blocks:
                assert self.gate.wait(60), "the test never opened the gate"
            if waits_for_approval:
                approval = futures.Approval(timeout=3600)
                self.tokens.append(approval.token)
                return approval
            return task.id

        self.job.task(task_id, deps)(body)

    @property
    def engine(self):
        return self.job.engine

    def records(self, run_id: str) -> dict:
        return {t.task_id: t for t in self.store.get_tasks(run_id)}

    def status(self, run_id: str, task_id: str) -> TaskStatus:
        return self.records(run_id)[task_id].status

    def until(self, run_id: str, task_id: str, status: TaskStatus) -> None:
        wait_for(lambda: self.status(run_id, task_id) is status,
                 f"{task_id} to be {status.value}", timeout=60)

    def body_started(self, task_id: str) -> None:
        """Wait until the body of `task_id` runs. Its record says RUNNING a moment
        earlier, at the claim; a pause committed in between holds the attempt
        before its body starts (engine.execute), which is not what these tests try."""
        wait_for(lambda: (task_id, 1) in self.ran, f"the body of {task_id} to start",
                 timeout=60)

    def finished(self, run_id: str):
        """The run once it ended, read from the store (job.wait would repair it)."""
        return wait_for(lambda: (run := self.store.get_run(run_id)).status.is_final and run,
                        f"run {run_id} to end", timeout=60)

    def idle(self) -> None:
        """Wait until the bus has delivered everything (held tasks included)."""
        assert self.bus.wait_idle(60)

    def paused_while_a_runs(self) -> str:
        """Start a run, pause it while `a` runs, let `a` finish; the run's id."""
        run_id = self.job.start()
        self.body_started("a")
        assert self.engine.pause(run_id).outcome == "paused"
        self.gate.set()
        self.until(run_id, "a", TaskStatus.SUCCEEDED)
        self.idle()
        return run_id


@pytest.fixture
def flows(store):
    made: list[Flow] = []

    def make(name: str, **options: Any) -> Flow:
        made.append(Flow(name, store, **options))
        return made[-1]

    yield make
    for flow in made:
        flow.gate.set()
        flow.bus.close()


def chain(flows: Callable[..., Flow], name: str, **options: Any) -> Flow:
    """a (blocks on the gate) -> b -> c."""
    flow = flows(name, **options)
    flow.task("a", blocks=True)
    flow.task("b", ["a"])
    flow.task("c", ["b"])
    return flow


def test_pause_lets_the_running_task_finish_and_starts_nothing_new(flows) -> None:
    flow = chain(flows, "pause_chain")
    run_id = flow.job.start()
    flow.body_started("a")

    paused = flow.engine.pause(run_id)

    assert (paused.outcome, paused.run_status) == ("paused", "PAUSED")
    assert not paused.run.status.is_final
    flow.gate.set()
    flow.until(run_id, "a", TaskStatus.SUCCEEDED)
    flow.idle()
    # The poller (the embedded wait loop's repair) sends nothing of a paused run.
    sent = []
    publish = flow.bus.publish
    flow.bus.publish = lambda message, delay=0.0: (sent.append(message),
                                                   publish(message, delay))
    flow.engine.poll(stale_after=0, run_ids=[run_id])
    flow.bus.publish = publish
    flow.idle()
    assert sent == []
    records = flow.records(run_id)
    assert flow.ran == [("a", 1)]
    assert (records["b"].status, records["b"].attempt) == (TaskStatus.QUEUED, 1)
    assert records["c"].status is TaskStatus.WAITING
    run = flow.store.get_run(run_id)
    assert run.status is RunStatus.RUNNING and control.shown_status(run) == "PAUSED"

    resumed = flow.engine.unpause(run_id)

    assert resumed.outcome == "resumed" and resumed.run_status == "RUNNING"
    finished = flow.finished(run_id)
    assert finished.status is RunStatus.SUCCEEDED, finished.error
    assert flow.ran == [("a", 1), ("b", 1), ("c", 1)]  # b was held, not retried
    assert {t.attempt for t in flow.records(run_id).values() if t.task_id != "__end__"} == {1}


def test_pause_holds_tasks_waiting_for_a_slot_and_resume_runs_them(flows) -> None:
    """max_parallel_tasks=1: a READY task given the slot a finishing task frees is held."""
    flow = flows("pause_slots", max_parallel_tasks=1)
    flow.task("a", blocks=True)  # declared first: the root that gets the only slot
    for name in ("p", "q", "r"):
        flow.task(name)
    flow.task("z", ["a", "p", "q", "r"])

    run_id = flow.paused_while_a_runs()

    records = flow.records(run_id)
    assert flow.ran == [("a", 1)]
    held = [t for t, r in records.items() if r.status is TaskStatus.QUEUED]
    assert len(held) == 1 and records[held[0]].slot == 0  # it keeps the slot
    assert sorted(t for t, r in records.items() if r.status is TaskStatus.READY) == \
        sorted({"p", "q", "r"} - set(held))

    flow.engine.unpause(run_id)

    assert flow.finished(run_id).status is RunStatus.SUCCEEDED
    assert sorted(t for t, _ in flow.ran) == ["a", "p", "q", "r", "z"]
    assert all(attempt == 1 for _, attempt in flow.ran)
    assert flow.store.find_free_slots(run_id, 1, 1) == [0]


def test_a_paused_run_still_completes_a_waiting_attempt(flows) -> None:
    flow = flows("pause_wait")
    flow.task("ask", waits_for_approval=True)
    flow.task("use", ["ask"])
    run_id = flow.job.start()
    wait_for(lambda: flow.records(run_id)["ask"].trigger_id, "the wait")
    flow.engine.pause(run_id)

    approvals.approve(flow.engine, flow.tokens[0], "yes")

    flow.idle()
    assert flow.status(run_id, "ask") is TaskStatus.SUCCEEDED
    assert flow.status(run_id, "use") is TaskStatus.QUEUED and ("use", 1) not in flow.ran
    flow.engine.unpause(run_id)
    assert flow.finished(run_id).status is RunStatus.SUCCEEDED


def test_cancel_marks_every_unfinished_task_and_ends_the_run(flows) -> None:
    flow = flows("cancel_all", max_parallel_tasks=2)
    flow.task("a", blocks=True)
    flow.task("ask", waits_for_approval=True)
    flow.task("r1")
    flow.task("r2")
    flow.task("b", ["a"])
    flow.task("c", ["b", "ask"])
    run_id = flow.job.start()
    flow.body_started("a")
    wait_for(lambda: flow.records(run_id)["ask"].trigger_id, "the wait")
    trigger_id = approvals.token_hash(flow.tokens[0])
    before = flow.records(run_id)
    assert {before["r1"].status, before["r2"].status} <= {TaskStatus.READY,
                                                           TaskStatus.SUCCEEDED}

    outcome = flow.engine.cancel(run_id)

    assert outcome.outcome == "cancelled" and outcome.run.status is RunStatus.CANCELLED
    run = flow.store.get_run(run_id)
    assert run.status is RunStatus.CANCELLED and run.error == control.CANCELLED_ERROR
    records = flow.records(run_id)
    unfinished = [t for t, r in before.items() if not r.status.is_final and t != "__end__"]
    assert outcome.tasks == len(unfinished) >= 4
    assert all(records[t].status is TaskStatus.CANCELLED for t in unfinished), records
    assert not any(r.status in control.UNFINISHED for t, r in records.items() if t != "__end__")
    assert flow.store.get_trigger(trigger_id) is None
    assert flow.store.find_free_slots(run_id, 2, 2) == [0, 1]

    flow.gate.set()  # a's body returns now: its task stays CANCELLED
    flow.idle()
    assert flow.records(run_id) == records
    assert flow.engine.complete_trigger(trigger_id, ok=True, value=1) == "unknown_trigger"
    with pytest.raises(approvals.ApprovalError):
        approvals.approve(flow.engine, flow.tokens[0], "late")
    assert flow.records(run_id) == records
    assert [t for t, _ in flow.ran if t in ("b", "c")] == []


def test_a_body_returning_after_a_cancel_whose_sweep_died_changes_nothing(
        flows, monkeypatch) -> None:
    """The cancel's end committed, then its process died before the sweep
    (control.cancel_unfinished): the run's last task, still executing, returns.
    Its completion reads the run, sees the cancel and discards the result: the
    task ends CANCELLED, as the README promises, not SUCCEEDED in a CANCELLED run."""
    flow = flows("cancel_then_return")
    flow.task("a", blocks=True)
    run_id = flow.job.start()
    flow.body_started("a")
    monkeypatch.setattr(control, "cancel_unfinished", lambda *args: 0)

    assert flow.engine.cancel(run_id).run.status is RunStatus.CANCELLED
    assert flow.status(run_id, "a") is TaskStatus.RUNNING  # nobody swept it

    flow.gate.set()
    flow.idle()
    record = flow.records(run_id)["a"]
    assert (record.status, record.result) == (TaskStatus.CANCELLED, None)
    assert flow.store.get_run(run_id).status is RunStatus.CANCELLED


def test_cancel_of_a_paused_run_cancels_its_held_tasks(flows) -> None:
    flow = chain(flows, "cancel_paused")
    run_id = flow.paused_while_a_runs()
    assert flow.status(run_id, "b") is TaskStatus.QUEUED

    flow.engine.cancel(run_id)

    records = flow.records(run_id)
    assert [records[t].status for t in "abc"] == [TaskStatus.SUCCEEDED, TaskStatus.CANCELLED,
                                                   TaskStatus.CANCELLED]
    assert control.shown_status(flow.store.get_run(run_id)) == "CANCELLED"
    with pytest.raises(RunEndedError):
        flow.engine.unpause(run_id)
    flow.idle()
    assert flow.ran == [("a", 1)]


def test_a_cancelled_run_still_runs_its_on_end_hook_once(flows) -> None:
    flow = chain(flows, "cancel_hooks")
    calls: list[tuple[str, str]] = []
    flow.job.on_failure(lambda run: calls.append(("on_failure", run.status.value)))
    flow.job.on_end(lambda run: calls.append(("on_end", run.status.value)))
    run_id = flow.job.start()
    flow.body_started("a")

    flow.engine.cancel(run_id)

    wait_for(lambda: not flow.store.get_run(run_id).hooks_pending, "the hooks to end")
    flow.gate.set()
    flow.idle()
    assert calls == [("on_end", "CANCELLED")]
    records = flow.records(run_id)
    assert records["__on_end__"].status is TaskStatus.SUCCEEDED
    assert records["__on_failure__"].status is TaskStatus.SKIPPED
    assert [records[t].status for t in "abc"] == [TaskStatus.CANCELLED] * 3


def test_repeated_and_concurrent_requests_act_once(flows) -> None:
    flow = chain(flows, "concurrent")
    run_id = flow.job.start()
    flow.body_started("a")

    def at_once(act: Callable[[str], Any]) -> list[Any]:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            futures_ = [pool.submit(act, run_id) for _ in range(6)]
        results = []
        for future in futures_:
            try:
                results.append(future.result())
            except RunEndedError as exc:
                results.append(exc)
        return results

    assert sorted(o.outcome for o in at_once(flow.engine.pause)) == \
        ["already_paused"] * 5 + ["paused"]
    paused_at = flow.store.get_run(run_id).paused_at
    assert flow.engine.pause(run_id).outcome == "already_paused"
    assert flow.store.get_run(run_id).paused_at == paused_at
    assert sorted(o.outcome for o in at_once(flow.engine.unpause)) == \
        ["not_paused"] * 5 + ["resumed"]
    assert flow.engine.unpause(run_id).outcome == "not_paused"

    results = at_once(flow.engine.cancel)

    assert [type(r).__name__ for r in results].count("Outcome") == 1
    assert all(isinstance(r, RunEndedError) and r.status == "CANCELLED"
               for r in results if not isinstance(r, control.Outcome))
    # (the refused ones help sweep: a cancel that died half way leaves no leftovers)
    assert [flow.status(run_id, t) for t in "abc"] == [TaskStatus.CANCELLED] * 3
    run = flow.store.get_run(run_id)
    assert run.status is RunStatus.CANCELLED
    with pytest.raises(RunEndedError):
        flow.engine.cancel(run_id)
    assert flow.store.get_run(run_id) == run


def test_actions_on_an_ended_or_unknown_run_are_refused_and_change_nothing(flows) -> None:
    flow = flows("ended")
    flow.task("only")
    run_id = flow.job.start()
    assert flow.finished(run_id).status is RunStatus.SUCCEEDED
    run, records = flow.store.get_run(run_id), flow.records(run_id)

    for act in (flow.engine.pause, flow.engine.unpause, flow.engine.cancel):
        with pytest.raises(RunEndedError, match=f"run {run_id} already ended \\(SUCCEEDED\\)"
                           ".*nothing was changed"):
            act(run_id)
        with pytest.raises(RunNotFoundError, match="no run with id 'nope'"):
            act("nope")

    assert flow.store.get_run(run_id) == run and flow.records(run_id) == records
    assert flow.store.get_run("nope") is None


def test_a_hold_that_raced_a_resume_or_a_cancel_sends_or_cancels_its_attempt(flows) -> None:
    """The hold reads only the task: the run is read again after it commits.

    The test plays the claimer (nothing delivers): claim, then the resume
    or cancel comes between the claim's look at the run and the hold.
    """
    flow = flows("raced_hold")
    flow.task("a")
    engine = flow.engine
    flow.bus.close()
    sent: list[Message] = []
    engine.bus = type("Capture", (), {"publish": lambda self, m, d=0.0: sent.append(m)})()
    run_id, _ = engine.start({}, run_id="raced")

    def claim() -> None:
        flow.store.transact(lambda tx: transitions.claim(
            tx.get_tasks(run_id, ["a"])["a"], run_id, 1, engine.clock(), 60).write_to(
            tx, run_id))

    claim()  # it saw the run paused; the resume came before its hold
    assert control.hold(engine, run_id, "a", 1) == "released"
    assert flow.status(run_id, "a") is TaskStatus.QUEUED and sent[-1] == Message(run_id, "a", 1)

    engine.pause(run_id)
    claim()
    assert control.hold(engine, run_id, "a", 2) == "stale"  # not the attempt claimed
    assert control.hold(engine, run_id, "a", 1) == "held"
    assert flow.status(run_id, "a") is TaskStatus.QUEUED and len(sent) == 2  # start, release

    claim()  # it saw the run paused; the cancel came before its hold
    flow.store.transact(lambda tx: tx.update_run(run_id, {"status": "CANCELLED"}))
    assert control.hold(engine, run_id, "a", 1) == "run_cancelled"
    assert flow.status(run_id, "a") is TaskStatus.CANCELLED


def test_a_cancel_counts_tasks_not_a_foreachs_own_records(store) -> None:
    from function_flow.core.engine import Engine
    from function_flow.tasks import Job
    from test_run_graph import Outbox

    job = Job("counted")
    job.task(task_id="list")(lambda **_: [1, 2, 3])
    job.foreach(task_id="each", over="list", max_concurrency=1)(lambda item, **_: item)
    bus = Outbox()
    engine = Engine(job, store, bus, lease_check_messages=False)
    run_id, _ = engine.start({})
    while store.get_tasks(run_id, ["each"])[0].status is not TaskStatus.RUNNING:
        engine.handle(bus.sent.pop(0))
    unfinished = [t.task_id for t in store.get_tasks(run_id)
                  if not t.status.is_final and not t.task_id.startswith("__")]
    assert len(unfinished) == 4  # the foreach and its three items
    assert control.cancel(store, run_id, time.time()).tasks == 4
