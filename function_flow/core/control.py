"""Pause, resume and cancel a run: control actions from outside the run.

- **pause** writes `paused_at` into the run record, once. Nothing is sent
  or rewritten per task: the claim of every task already reads the run
  after it commits (see engine.execute), and a claim that finds the run
  paused puts its attempt back QUEUED, unrun, with the same attempt
  (`hold`). Attempts already running finish, their dependents are queued
  and held the same way when their message arrives, and the poller sends
  no queued task of a paused run again (recovery.recover). Waits for an
  external event go on, and may complete.
- **resume** (`unpause`) clears the flag, writes `resumed_at`, and sends
  every QUEUED task of the run again. The embedded backend runs a run in
  the process that started it: a resume from another process (the CLI)
  cannot reach that process's bus, so that process, which looks at its run
  every few seconds (Job.repair_if_stalled), sees `resumed_at` change and
  sends them itself (`resend_if_resumed`).
- **cancel** ends the run CANCELLED, exactly once (transitions.end_run),
  then marks every unfinished task CANCELLED (`cancel_unfinished`), each
  in its own compare-and-set on its own record, slots freed and triggers of
  waiting attempts deleted. A body still executing finds its task
  CANCELLED when it returns and changes nothing (the completion reads its
  own record, completion.complete).

An action on an unknown run raises RunNotFoundError, on an ended one
RunEndedError; both change nothing. Repeating an action is harmless: a
second pause or resume answers `changed=False`, and every step is a
compare-and-set, so concurrent requests decide once. Pause, cancel and
the hold need no workflow definition, only the store (`function-flow
pause|cancel` work without the workflow file); resume needs the bus too.
`ACTIONS` names the actions for the control endpoint (cloud/control.py).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any, Callable

from function_flow.core import attempts, hooks, leftovers, transitions, waiting
from function_flow.core.definition import END_TASK_ID
from function_flow.core.messages import Message
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.core.step import Step
from function_flow.errors import RunEndedError, RunNotFoundError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Bus, Store, Transaction

logger = logging.getLogger("function_flow.engine")

#: Tasks of one status read per query while cancelling or resuming a run.
BATCH = 1000
#: The error a cancelled run records (people see it in `status`).
CANCELLED_ERROR = "cancelled on request"
#: Unfinished statuses, in the order `cancel_unfinished` sweeps them. Running
#: first: a success queues its single-dependency dependents with blind
#: writes, so a WAITING task cancelled before its running dependency would
#: be queued again by that dependency's success. Once every RUNNING task is
#: cancelled, no completion can commit any more (it reads its own record),
#: and a task claimed after the run ended cancels itself (engine.execute).
UNFINISHED = (TaskStatus.RUNNING, TaskStatus.QUEUED, TaskStatus.READY, TaskStatus.WAITING)


#: Each action's outcome in a word: when it changed the run, and when the run
#: already was so (a repeated request). A new action (redrive) adds its own.
OUTCOMES: dict[str, tuple[str, str]] = {"pause": ("paused", "already_paused"),
                                        "resume": ("resumed", "not_paused"),
                                        "cancel": ("cancelled", "already_cancelled"),
                                        "redrive": ("redriven", "redriven")}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a control action did to one run."""

    action: str
    #: The run record after the action.
    run: RunRecord
    #: False when the run already was so (a repeated pause or resume).
    changed: bool = True
    #: Tasks this call marked CANCELLED (cancel), or sent again (resume).
    tasks: int = 0

    @property
    def outcome(self) -> str:
        """What the action did, in a word: OUTCOMES[action][0], or [1] when unchanged."""
        done, already = OUTCOMES[self.action]
        return done if self.changed else already

    @property
    def run_status(self) -> str:
        """The run's status as `status` shows it (PAUSED for a paused run)."""
        return shown_status(self.run)

    def to_json(self) -> dict[str, Any]:
        """The control endpoint's answer."""
        answer: dict[str, Any] = {"action": self.action, "run_id": self.run.run_id,
                                  "outcome": self.outcome, "run_status": self.run_status}
        if self.action == "cancel":
            answer["tasks_cancelled"] = self.tasks
        if self.action == "resume":
            answer["tasks_sent"] = self.tasks
        if self.action == "redrive":
            answer["redrives"] = self.run.redrives
        return answer


def shown_status(run: RunRecord) -> str:
    """The status people see: PAUSED for a paused run (its status stays RUNNING)."""
    if run.paused_at is not None and run.status is RunStatus.RUNNING:
        return "PAUSED"
    return run.status.value


def _live(run_id: str, run: RunRecord | None, action: str) -> RunRecord:
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status.is_final:
        raise RunEndedError(run_id, run.status.value, action)
    return run


def _set_flag(store: "Store", run_id: str, action: str,
              fields: Callable[[RunRecord], dict[str, Any] | None]) -> Outcome:
    """One compare-and-set of the run record: `fields(run)` to write, or None."""
    def write(tx: "Transaction") -> tuple[RunRecord | None, bool]:
        run = tx.get_run(run_id)
        changes = fields(run) if run is not None and not run.status.is_final else None
        if run is None or changes is None:
            return run, False
        tx.update_run(run_id, changes)
        return dataclasses.replace(run, **changes), True

    run, changed = store.transact(write, compare_and_set=True)
    return Outcome(action, _live(run_id, run, action), changed)


def pause(store: "Store", run_id: str, now: float) -> Outcome:
    """Start nothing new in the run until it is resumed; what runs finishes."""
    outcome = _set_flag(store, run_id, "pause",
                        lambda run: None if run.paused_at is not None
                        else {"paused_at": now, **attempts.run_event(run, "paused", now)})
    if outcome.changed:
        logger.info("run %s paused", run_id)
    return outcome


def unpause(store: "Store", bus: "Bus", run_id: str, now: float) -> Outcome:
    """Resume a paused run: clear the flag, then send its QUEUED tasks again.

    A resume of a run that is not paused changes no record but still sends
    the queued tasks again (duplicates are harmless), in case the resume
    that cleared the flag died before sending them.
    """
    outcome = _set_flag(store, run_id, "resume",
                        lambda run: None if run.paused_at is None
                        else {"paused_at": None, "resumed_at": now,
                              **attempts.run_event(run, "resumed", now)})
    sent = send_queued(store, bus, run_id, now)
    if outcome.changed:
        logger.info("run %s resumed: %d queued task(s) sent again", run_id, sent)
    return dataclasses.replace(outcome, tasks=sent)


def send_queued(store: "Store", bus: "Bus", run_id: str, now: float) -> int:
    """Send a message for every QUEUED task of the run (when its backoff ends)."""
    sent = 0
    for task in store.find_tasks(run_id, TaskStatus.QUEUED, 100_000):
        bus.publish(Message(run_id, task.task_id, task.attempt),
                    max(0.0, (task.not_before or now) - now))
        sent += 1
    return sent


def resend_if_resumed(engine: "Engine", run_id: str, seen: dict[str, float]) -> bool:
    """For the process executing a run: send its held tasks after a resume made elsewhere.

    `seen` remembers the last `resumed_at` acted on, per run. Returns
    whether it sent them (one read of the run otherwise).
    """
    run = engine.store.get_run(run_id)
    if run is None or run.resumed_at is None or seen.get(run_id) == run.resumed_at:
        return False
    seen[run_id] = run.resumed_at
    if run.paused_at is not None or run.status.is_final:
        return False
    sent = send_queued(engine.store, engine.bus, run_id, engine.clock())
    logger.info("run %s was resumed: %d queued task(s) sent again", run_id, sent)
    return True


def held(task: TaskRecord | None, attempt: int) -> Step:
    """The rule of a claim of a paused run: back to QUEUED, unrun, same attempt.

    It never started, so it uses up no retry (transitions.LEGAL_TRANSITIONS
    allows RUNNING -> QUEUED with the same attempt for this alone).
    """
    if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
        return Step("stale")
    step = Step("held")
    step.task(task.task_id, status=TaskStatus.QUEUED.value, started_at=None, lease_until=None)
    return step


def hold(engine: "Engine", run_id: str, task_id: str, attempt: int) -> str:
    """A claim found its run paused: put the attempt back QUEUED, unrun.

    The hold reads only the task; the run is looked at again after it
    commits: a resume that came meanwhile may have missed this task (it was
    RUNNING when the resume looked), so it is sent again here; a cancel
    that came meanwhile may have missed it too, so it is cancelled here.
    """
    def put_back(tx: "Transaction") -> Step:
        step = held(tx.get_tasks(run_id, [task_id]).get(task_id), attempt)
        step.write_to(tx, run_id)
        return step

    verdict = engine.store.transact(put_back, compare_and_set=True).verdict
    if verdict != "held":
        return verdict
    run = engine.store.get_run(run_id)
    if run is None or run.status.is_final:
        leftovers.cancel_claim(engine, run_id, task_id, attempt)
        return f"run_{run.status.value.lower()}" if run else "unknown_run"
    if run.paused_at is None:
        engine.bus.publish(Message(run_id, task_id, attempt))
        return "released"
    logger.info("run %s task %s attempt %d: held, the run is paused", run_id, task_id,
                attempt)
    return "held"


def cancel(store: "Store", run_id: str, now: float, bus: "Bus | None" = None) -> Outcome:
    """End the run CANCELLED (once), then every unfinished task of it.

    The end queues the run's first hook (core/hooks.py: on_end, the
    callback), which runs after the sweep: its message goes on `bus`, and
    without one (the CLI) the poller sends it (the run's hooks are pending).
    A cancel of a run already CANCELLED is refused (RunEndedError), after
    finishing what an earlier cancel that died half way left unfinished.
    """
    def end(tx: "Transaction") -> tuple[RunRecord | None, Step | None]:
        run = tx.get_run(run_id)
        step = transitions.end_run(run, RunStatus.CANCELLED, CANCELLED_ERROR, now)
        if step is not None:
            step.write_to(tx, run_id)
        return run, step

    run, step = store.transact(end, compare_and_set=True)
    if step is None or run is None:
        if run is not None and run.status is RunStatus.CANCELLED:
            cancel_unfinished(store, run_id, now)
        _live(run_id, run, "cancel")  # raises: end_run ends only a live run
        raise AssertionError("unreachable")
    logger.info("run %s cancelled", run_id)
    count = cancel_unfinished(store, run_id, now)
    for message in step.messages if bus is not None else ():
        bus.publish(message, step.delay)
    return Outcome("cancel", dataclasses.replace(
        run, status=RunStatus.CANCELLED, finished_at=now, error=CANCELLED_ERROR), tasks=count)


def cancel_unfinished(store: "Store", run_id: str, now: float) -> int:
    """Mark every unfinished task of an ended run CANCELLED; returns how many.

    Each task in its own compare-and-set on its own record (no hot
    document): WAITING, READY, QUEUED and RUNNING alike, whatever its
    attempt; its slot is freed and, for an attempt waiting for an event,
    its trigger deleted, so a late event finds nothing (function_flow's own
    records, the virtual end task and the hooks, are left as they are; the
    hooks run after the end). Found by status
    queries, a batch at a time, so a run of 10,000 tasks is never read
    whole. Another pass finds what a completion that committed while this
    swept may have queued.
    """
    count = 0
    for _ in range(3):
        found = 0
        for status in UNFINISHED:
            done: set[tuple[str, int]] = set()
            while True:
                batch = [t for t in store.find_tasks(run_id, status, BATCH)
                         if (t.task_id, t.attempt) not in done and t.task_id != END_TASK_ID
                         and not hooks.is_hook(t.task_id)]
                if not batch:
                    break
                for task in batch:
                    done.add((task.task_id, task.attempt))
                    cancelled = _cancel_one(store, run_id, task, now)
                    # A foreach's groups and collector are its own, not tasks.
                    count += cancelled if not task.task_id.startswith("__") else 0
                found += len(batch)
        if not found:
            break
    return count


def _cancel_one(store: "Store", run_id: str, seen: TaskRecord, now: float) -> int:
    """Cancel one task (1), or find it finished meanwhile (0)."""
    trigger = waiting.waiting_trigger(store, run_id, seen)

    def cancel_it(tx: "Transaction") -> TaskRecord | None:
        task = tx.get_tasks(run_id, [seen.task_id]).get(seen.task_id)
        if task is None:
            return None
        step = transitions.cancel(task, task.attempt, now, among=UNFINISHED)
        if step.verdict != "cancelled":
            return None
        step.write_to(tx, run_id)
        if trigger is not None and trigger.attempt == task.attempt:
            tx.delete_trigger(trigger.trigger_id)
        return task

    task = store.transact(cancel_it, compare_and_set=True)
    if task is None:
        return 0
    if task.trigger_id and (trigger is None or trigger.trigger_id != task.trigger_id):
        # Its wait was recorded after we looked for it: delete that trigger too.
        late = waiting.waiting_trigger(store, run_id, task)
        if late is not None:
            store.transact(lambda tx: tx.delete_trigger(late.trigger_id))
    return 1


class Controls:
    """The control actions as methods of engine.Engine (which derives from this)."""

    store: "Store"
    bus: "Bus"
    clock: Callable[[], float]

    def pause(self, run_id: str) -> Outcome:
        """Start nothing new in the run until it is resumed; what runs finishes."""
        return pause(self.store, run_id, self.clock())

    def unpause(self, run_id: str) -> Outcome:
        """Resume a paused run: its queued tasks are sent again."""
        return unpause(self.store, self.bus, run_id, self.clock())

    def cancel(self, run_id: str) -> Outcome:
        """End the run CANCELLED, and every task of it that has not finished."""
        return cancel(self.store, run_id, self.clock(), self.bus)


#: The control actions by the name the control endpoint takes (cloud/control.py);
#: redrive joins them as "redrive": engine.redrive, with its words in OUTCOMES.
ACTIONS: dict[str, Callable[["Engine", str], Outcome]] = {
    "pause": lambda engine, run_id: engine.pause(run_id),
    "resume": lambda engine, run_id: engine.unpause(run_id),
    "cancel": lambda engine, run_id: engine.cancel(run_id),
    "redrive": lambda engine, run_id: Outcome("redrive", engine.redrive(run_id)),
}
