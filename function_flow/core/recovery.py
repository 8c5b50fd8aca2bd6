"""Finding work that crashes and lost messages left behind: one policy for every poller.

Cloud Scheduler calls the `poller` function every minute; the embedded
runner calls `poll` when its bus is idle but a run has not ended; the
property tests call it when their message pool runs dry. All of them run
this same policy: publish due timers, complete the waits for Cloud Storage
objects that now exist (core/watches.py), then for each live run re-send
messages that never arrived, fail or retry attempts whose lease expired,
queue joins nobody queued, and fill free slots. Every step is idempotent,
so two pollers at once only risk duplicate messages, which are harmless.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Callable, Iterable

from function_flow.core import hooks, leftovers, transitions, versions, waiting, watches
from function_flow.core.definition import END_TASK_ID
from function_flow.core.messages import Message, MessageKind
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus, Trigger)
from function_flow.core.step import Step
from function_flow.errors import RunBlockedError, RunNotFoundError, RunStillActiveError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Store, Transaction

logger = logging.getLogger("function_flow.engine")

#: A QUEUED task is sent again by the poller only this long after it was due,
#: so messages still in flight are not duplicated on every poll.
POLLER_STALE_AFTER_SECONDS = 60.0
#: Live runs one poller call checks; older ones wait for the next call.
POLLER_MAX_RUNS = 1000
#: Queued and running tasks (each) the poller reads per run and call.
POLLER_MAX_TASKS = 500
#: The poller reads every task of a busy run (for joins nobody queued) in
#: about one call out of this many, chosen at random; a run with nothing
#: queued or running is read whole at every call.
POLLER_FULL_SCAN_EVERY = 10


@dataclasses.dataclass
class PollReport:
    """What one poll did, for logs and the poller's HTTP answer."""

    timers_published: int = 0
    runs_checked: int = 0
    #: Waits for a gs:// prefix that an object now found completed.
    watches_completed: int = 0
    #: Live runs left alone: started with a definition this one changes
    #: where they would go (core/versions.py).
    runs_blocked: int = 0


def poll(engine: "Engine", stale_after: float = POLLER_STALE_AFTER_SECONDS,
         max_runs: int = POLLER_MAX_RUNS, run_ids: Iterable[str] | None = None) -> PollReport:
    """Due timers first, then every live run of this workflow (or only `run_ids`).

    The embedded runner polls only the run it waits for: runs of other
    processes sharing its database are theirs to finish (or to `resume`).
    """
    run_ids = None if run_ids is None else list(run_ids)
    report = PollReport(timers_published=engine.bus.release_due(),
                        watches_completed=watches.check(engine, run_ids))
    if run_ids is None:
        runs = [run for run in engine.store.list_runs(limit=max_runs,
                                                      status=RunStatus.RUNNING)
                if run.job_name == engine.workflow.name]
        # Ended runs whose hooks have not all run (core/hooks.py).
        runs += [run for run in engine.store.list_runs(limit=max_runs, hooks_pending=True)
                 if run.job_name == engine.workflow.name and hooks.pending(run)]
    else:
        runs = [run for run_id in run_ids
                if (run := engine.store.get_run(run_id)) is not None
                and (run.status is RunStatus.RUNNING or hooks.pending(run))]
    for run in runs:
        if versions.check(engine, run) is not None:
            report.runs_blocked += 1
        else:
            recover(engine, run.run_id, stale_after=stale_after,
                    only=run.hooks if run.status.is_final else None,
                    bounded=run_ids is None)
        report.runs_checked += 1
    return report


def check_lease(engine: "Engine", run_id: str, task_id: str, attempt: int) -> str:
    """Fail (and maybe retry) an attempt whose executor went silent or overran."""
    records = engine.store.get_tasks(run_id, [task_id])
    if not records or engine.graph.spec(task_id, records[0]) is None:
        return "unknown_task"
    task = records[0]
    if task.status is not TaskStatus.RUNNING or task.attempt != attempt:
        return "stale"
    now = engine.clock()
    if task.lease_until is not None and task.lease_until > now:
        if engine.lease_check_messages:
            engine.bus.publish(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE),
                               task.lease_until - now)
        return "lease_valid"
    if versions.check(engine, engine.store.get_run(run_id)) is not None:
        return "blocked"  # its retry or failure would follow another definition
    spec = engine.graph.spec(task_id, task)
    assert spec is not None
    limit = f"its timeout ({spec.timeout} s)" if spec.timeout else "its lease"
    trigger = waiting.waiting_trigger(engine.store, run_id, task)
    if trigger is not None:
        return _end_wait(engine, run_id, task, trigger, limit)
    not_before = 0.0
    if engine.retry_after_overrun and task.started_at is not None:
        # The body may still be running: its retry waits until the
        # platform's request timeout has certainly ended it.
        not_before = task.started_at + engine.retry_after_overrun
        how = (f"; a retry starts no earlier than {engine.retry_after_overrun:.0f} s "
               "after it began, when the platform has stopped it")
    else:
        how = ": its executor died or hung"
    engine.complete(run_id, task_id, attempt, ok=False, not_before=not_before,
                    cause=TimeoutError(), error=(
        f"TimeoutError: attempt {attempt} of task {task_id!r} did not finish within "
        f"{limit}{how}"))
    return "lease_expired"


def _end_wait(engine: "Engine", run_id: str, task: TaskRecord, trigger: Trigger,
              limit: str) -> str:
    """No event came for a waiting attempt in time: its trigger says what it becomes.

    Its body returned long ago, so no executor can still be running it and
    a retry needs no overrun delay. The trigger goes in the same commit.
    """
    on_timeout = trigger.on_timeout if isinstance(trigger.on_timeout, dict) else {}
    if "result" in on_timeout:
        engine.complete(run_id, task.task_id, task.attempt, ok=True,
                        value=on_timeout["result"], trigger_id=trigger.trigger_id)
        return "lease_expired"
    awaited = f"an object under {trigger.watch}" if trigger.watch \
        else f"{trigger.trigger_id!r}"
    error = on_timeout.get("error") or (
        f"TimeoutError: attempt {task.attempt} of task {task.task_id!r} got no answer "
        f"or event for {awaited} within {limit}")
    # retry False: the waiting front end applies its own retries (asl/tokens.py).
    engine.complete(run_id, task.task_id, task.attempt, ok=False, error=str(error),
                    cause=None if on_timeout.get("error") else TimeoutError(),
                    trigger_id=trigger.trigger_id, retry=on_timeout.get("retry", True))
    return "lease_expired"


def resume(engine: "Engine", run_id: str, owner: str | None = None,
           owner_alive: Callable[[str], bool] | None = None) -> RunRecord:
    """Pick up a run whose executing process died (embedded backend).

    Attempts that were RUNNING in the dead process are queued again as a
    new attempt without using up a retry (up to
    transitions.MAX_INTERRUPTED_ATTEMPTS); tasks that succeeded are never
    run again. Also re-sends anything a crash may have left unsent.
    """
    run = engine.store.get_run(run_id)
    if run is None:
        raise RunNotFoundError(run_id)
    if run.status.is_final and not hooks.pending(run):
        return run
    if run.owner and owner_alive is not None and run.owner != owner \
            and owner_alive(run.owner):
        raise RunStillActiveError(
            f"run {run_id} is still being executed by process {run.owner}; "
            "wait for it or stop that process first")
    why = versions.check(engine, run, record=False)  # refused: nothing changes
    if why is not None:
        raise RunBlockedError(why)
    if owner is not None:
        engine.store.transact(lambda tx: tx.update_run(run_id, {"owner": owner}))
    recover(engine, run_id, executors_dead=True,
            only=run.hooks if run.status.is_final else None)
    return run


def retire_leftovers(engine: "Engine", run_id: str) -> None:
    """After a run ended, leave none of its tasks queued or running.

    For a process about to exit while attempts of an ended run are still
    busy in it (a body that overran its timeout, a retry waiting out its
    backoff): they cannot change the outcome, and the records must not
    show them running forever. Each ends CANCELLED, as a claim of an
    ended run's task does (the bodies die with the process), and what
    waited for it ends too. Hooks are not touched: they run after the end.
    """
    run = engine.store.get_run(run_id)
    if run is None or not run.status.is_final:
        return
    for status in (TaskStatus.RUNNING, TaskStatus.QUEUED):
        for task in engine.store.find_tasks(run_id, status, 100_000):
            if not hooks.is_hook(task.task_id):
                leftovers.cancel_claim(engine, run_id, task.task_id, task.attempt)


def recover(engine: "Engine", run_id: str, executors_dead: bool = False,
            stale_after: float = 0.0, only: Iterable[str] | None = None,
            bounded: bool = False) -> None:
    """Find work a crash or a lost message left behind in one run, and redo it.

    Safe to call at any time: every step it takes is idempotent. With
    executors_dead, RUNNING attempts are re-queued at once instead of
    waiting for their lease to expire, except, while the run lives, those
    waiting for an external event (their body returned; no process runs
    them, and an approval's token must keep working). A QUEUED task is sent again only
    when it has waited `stale_after` seconds past its due time, so a
    periodic poller does not duplicate messages that are still in flight.
    `only`: look at these tasks alone (an ended run's hooks). `bounded`
    (the periodic poller, which checks every live run): see `_records_to_check`.
    """
    now = engine.clock()
    run = engine.store.get_run(run_id)
    # A paused run's queued tasks wait for its resume, which sends them (control.py).
    paused = run is not None and run.paused_at is not None and not run.status.is_final
    for task in _records_to_check(engine, run_id, only, bounded and not executors_dead,
                                  now, stale_after):
        if not engine.graph.knows(task.task_id, task):
            continue
        if task.status is TaskStatus.QUEUED:
            if paused:
                continue
            due = max(task.not_before or 0.0, task.queued_at or 0.0)
            if due + stale_after <= now or executors_dead:
                delay = max(0.0, (task.not_before or now) - now)
                engine.bus.publish(Message(run_id, task.task_id, task.attempt), delay)
        elif task.status is TaskStatus.RUNNING and task.task_id != END_TASK_ID:
            if executors_dead:
                trigger = waiting.waiting_trigger(engine.store, run_id, task)
                if trigger is None or waiting.answered_by_dead_process(trigger) \
                        or not _run_lives(engine, run_id):
                    _requeue_interrupted(engine, run_id, task, trigger)
                    continue
            if task.lease_until is not None and task.lease_until <= now:
                check_lease(engine, run_id, task.task_id, task.attempt)
        elif task.status is TaskStatus.WAITING and JoinProgress.of(task).complete(
                len(engine.graph.deps_of(task.task_id, task)),
                engine.graph.rule_of(task.task_id, task)):
            engine.check_join(run_id, task.task_id)
    if only is None:
        engine.fill_slots(run_id)


def _records_to_check(engine: "Engine", run_id: str, only: Iterable[str] | None,
                      bounded: bool, now: float, stale_after: float
                      ) -> Iterable[TaskRecord]:
    """The records one recovery pass looks at.

    All of them, unless `bounded`: then the queued and running ones (two
    queries of at most POLLER_MAX_TASKS), so that a poller checking a
    foreach of 10,000 items does not read 10,000 records a minute. Joins
    nobody queued (a process died after a failure's commit) are found by
    reading the whole run, which the poller does when nothing in it moves:
    nothing is queued or running, or all of it is stalled (one crash can
    lose a message and a join's check at once: both are then repaired in
    one pass, not in two a minute apart); and
    otherwise in one call out of POLLER_FULL_SCAN_EVERY.
    """
    if only is not None or not bounded:
        return engine.store.get_tasks(run_id, only)
    busy = [task for status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
            for task in engine.store.find_tasks(run_id, status, POLLER_MAX_TASKS)]
    if all(_stalled(task, now, stale_after) for task in busy) \
            or engine.rng.random() * POLLER_FULL_SCAN_EVERY < 1:
        return engine.store.get_tasks(run_id)
    return busy


def _stalled(task: TaskRecord, now: float, stale_after: float) -> bool:
    """Queued `stale_after` past its due time (its message is lost, as `recover`
    judges it), or running past its lease (its executor is gone)."""
    if task.status is TaskStatus.QUEUED:
        return max(task.not_before or 0.0, task.queued_at or 0.0) + stale_after <= now
    return task.lease_until is not None and task.lease_until <= now


def _run_lives(engine: "Engine", run_id: str) -> bool:
    run = engine.store.get_run(run_id)
    return run is not None and run.status is RunStatus.RUNNING


def _requeue_interrupted(engine: "Engine", run_id: str, seen: TaskRecord,
                         trigger: Trigger | None = None) -> None:
    """Queue an attempt again whose process died; its trigger, if any, goes with it."""
    now = engine.clock()

    def requeue(tx: "Transaction") -> Step | None:
        run, tasks = tx.get_run_and_tasks(run_id, [seen.task_id])
        task = tasks.get(seen.task_id)
        spec = engine.graph.spec(seen.task_id, task)
        if task is None or spec is None or task.status is not TaskStatus.RUNNING \
                or task.attempt != seen.attempt:
            return None
        step = transitions.interrupted(spec, task, run_id, now, run=run,
                                       retry_delay=spec.retry_backoff.delay(task.attempt,
                                                                            engine.rng),
                                       graph=engine.graph, has_end_task=engine.end_record)
        hooks.after_hook(step, task.task_id, run, now)
        step.write_to(tx, run_id)
        if trigger is not None:
            tx.delete_trigger(trigger.trigger_id)
        return step

    step = engine.store.transact(requeue)
    if step is not None:
        engine.follow_up(run_id, step)


def fail_run(store: Store, run_id: str, error: str, now: float) -> bool:
    """End a RUNNING run as FAILED from outside (cleanup of runs stuck too long).

    Needs no workflow definition: only the run record changes. Queued tasks
    are cancelled when their message arrives, running ones finish without
    starting anything new, exactly as after a task failure. Returns whether
    this call ended the run.
    """
    def end(tx: Transaction) -> bool:
        step = transitions.end_run(tx.get_run(run_id), RunStatus.FAILED, error, now)
        if step is not None:
            step.write_to(tx, run_id)
        return step is not None

    return store.transact(end)
