"""The engine's decision rules: records in, writes and follow-up messages out.

No rule reads or writes a store. Each rule takes the records a
transaction has read (and the time) and returns a `Step`: the writes to
commit and what to do once they have committed (messages to publish, joins
to look at, free slots to fill). `engine.Engine` reads the records,
applies the writes through a `ports.Transaction` and carries out the rest,
so every rule can be tested with plain records, and the property tests'
oracle checks committed writes against `LEGAL_TRANSITIONS`.

How a task moves (see docs/design.md for why it is shaped this way):

  WAITING --deps done--> QUEUED (or READY, then QUEUED once it holds a slot)
  QUEUED  --claim: compare-and-set of its record (or in another's success)--> RUNNING
  WAITING --queued and claimed in its only dependency's success (chaining.py)--> RUNNING
  RUNNING --complete: the task's own record--> SUCCEEDED
          |  which also writes `deps_done.<task>` into each dependent
          |  (blind writes: they read nothing, so they never contend)
          +--> QUEUED again (attempt + 1, after a backoff) or FAILED
  RUNNING --the run had ended when the claim committed--> CANCELLED
  WAITING --its trigger rule decided it does not run--> SKIPPED or UPSTREAM_FAILED
          |  which is written into its dependents like any final outcome
          +--the run ended first--> CANCELLED (or UPSTREAM_FAILED, see leftovers.py)

`redrive` (redrive.py) is outside this table: it rewrites the records of
an ended run's unfinished tasks whole, as WAITING, before reopening it.
"""

from __future__ import annotations

from typing import Any

from function_flow.core import attempts, hooks
from function_flow.core.attempts import bounded_error
from function_flow.core.definition import END_TASK_ID, TaskSpec
from function_flow.core.graph import RunGraph
from function_flow.core.messages import Message
from function_flow.core.records import (ITEM_ROLES, JoinProgress, RunRecord, RunStatus,
                                        TaskRecord, TaskStatus, Verdict)
from function_flow.core.step import Step

W, RD, Q, R = TaskStatus.WAITING, TaskStatus.READY, TaskStatus.QUEUED, TaskStatus.RUNNING
S, F, C = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED
SK, UF = TaskStatus.SKIPPED, TaskStatus.UPSTREAM_FAILED

#: Every status change a rule may commit, and what it does to `attempt`:
#: "same", "next" (attempt + 1) or "one" (attempt becomes 1); "a|b": either.
LEGAL_TRANSITIONS: dict[tuple[TaskStatus, TaskStatus], str] = {
    (W, Q): "one",   # its last dependency succeeded (no slots needed)
    (W, RD): "same",  # its last dependency succeeded; it waits for a slot
    (RD, Q): "next",  # it took a free slot, or a finishing task handed it one
    (Q, R): "same",   # claimed by an executor
    (W, R): "one",   # W -> Q -> R in the commit of its only dependency's success
    (R, S): "same",   # its body returned, or its event arrived
    (R, F): "same",   # it failed with no retry left
    (R, Q): "next|same",  # retried, or its executor died; "same": held (control.hold)
    (Q, C): "same",   # the run ended before it was claimed
    (R, C): "same",   # the run had ended when its claim committed, or was cancelled
    (W, S): "same",   # only the virtual end task: every sink is done
    (W, SK): "same",  # its trigger rule says it does not run (a branch not taken)
    (W, UF): "same",  # a dependency failed: it can no longer run
    (W, C): "same",   # the run ended (failed, or was cancelled) before its dependencies did
    (RD, C): "same",  # the run ended while it waited for a slot
}

#: Attempts cut short by a dead process (kill -9, os._exit, out of memory)
#: that do not count against a task's retries. A body that kills its own
#: process every time would otherwise be re-run by every resume, forever:
#: past this many, each further interruption counts as a failed attempt.
MAX_INTERRUPTED_ATTEMPTS = 3


# ------------------------------------------------------------------- claims


def claim(task: TaskRecord | None, run_id: str, attempt: int, now: float,
          lease: float) -> Step:
    """Claim attempt `attempt` of a task: QUEUED -> RUNNING, or why not."""
    if task is None:
        return Step("unknown_task")
    step = Step()
    if task.status is Q and task.attempt == attempt:
        if task.not_before and task.not_before > now:
            # Delivered before its backoff ended: send it again for later.
            step.verdict, step.delay = "early", task.not_before - now
            step.messages.append(Message(run_id, task.task_id, attempt))
            return step
        step.verdict = "claimed"
        step.task(task.task_id, status=R.value, started_at=now, lease_until=now + lease,
                  not_before=None, finished_at=None)
        return step
    if task.status is S and task.attempt == attempt:
        # An earlier delivery may have died between its commit and its
        # follow-up messages: the engine repeats them (harmless if not).
        return Step("redelivered")
    if task.attempt > attempt or task.status is W:
        step.verdict = "stale"
        if task.attempt > attempt and task.status is Q:
            # Attempt `attempt` failed and the retry is queued, but the
            # delivery that queued it may have died before sending it.
            step.delay = max(0.0, (task.not_before or now) - now)
            step.messages.append(Message(run_id, task.task_id, task.attempt))
        return step
    return Step("duplicate")


def cancel(task: TaskRecord, attempt: int, now: float,
           among: tuple[TaskStatus, ...] = (Q, R)) -> Step:
    """A claimed or queued attempt of a run that has ended: it never runs.

    `among`: the statuses it may be cancelled from (leftovers.py also ends
    tasks that are WAITING or READY).
    """
    step = Step("cancelled")
    if task.status not in among or task.attempt != attempt:
        step.verdict = "stale"
        return step
    step.task(task.task_id, status=C.value, finished_at=now, lease_until=None, slot=None)
    attempts.record(step, task, now)
    if task.slot is not None:
        step.slot(task.slot, None)
    return step


# -------------------------------------------------------------- completions


def succeed(graph: RunGraph, task: TaskRecord, run_id: str, value: Any, now: float, *,
            run: RunRecord | None, has_end_task: bool,
            heir: TaskRecord | None = None, chosen: frozenset[str] | None = None) -> Step:
    """Attempt `task.attempt` succeeded with `value`.

    Dependents with this task as their only dependency are queued in the
    same commit (the first inherits this task's slot); every other
    dependent is a join and gets a blind `deps_done` write, to be looked at
    after the commit. `run` is the run record when this success can end
    the run (see `ends_run`), `heir` a READY task found to take our slot.
    For a branch task, `chosen` holds the dependents its result chose: the
    others see this task as SKIPPED.
    """
    cancelled = discarded_by_cancel(task, run, now)
    if cancelled is not None:
        return cancelled
    step = Step("succeeded")
    done_field = {f"deps_done.{task.task_id}": S.value}
    single = set(graph.single_dependency_dependents(task.task_id, task))
    handed_slot = False
    joins = []
    for dependent in () if ends_run(graph, task, has_end_task) \
            else graph.dependents_of(task.task_id, task):
        if task.slot is not None and not handed_slot and heir is not None \
                and heir.task_id == dependent and graph.runs_after(heir, task.task_id):
            # A foreach item's lane successor (foreach.lane_successor) takes our slot.
            step.task(dependent, **done_field, status=Q.value, attempt=1, queued_at=now,
                      slot=task.slot)
            step.slot(task.slot, dependent)
            step.messages.append(Message(run_id, dependent, 1))
            handed_slot = True
            continue
        if dependent not in single:
            skipped = chosen is not None and dependent not in chosen \
                and dependent != END_TASK_ID
            step.task(dependent, **{f"deps_done.{task.task_id}":
                                    SK.value if skipped else S.value})
            joins.append(dependent)
            continue
        fields: dict[str, Any] = dict(done_field)
        if task.slot is None or not handed_slot:
            fields.update(status=Q.value, attempt=1, queued_at=now)
            if task.slot is not None:
                fields["slot"] = task.slot
                step.slot(task.slot, dependent)
                handed_slot = True
            step.messages.append(Message(run_id, dependent, 1))
        else:
            fields["status"] = RD.value
            step.fill_slots = True
        step.task(dependent, **fields)
    if task.slot is not None and not handed_slot:
        if heir is not None and heir.status is RD:
            step.writes.extend(give_slot(task.slot, heir, now).writes)
            step.messages.append(Message(run_id, heir.task_id, heir.attempt + 1))
        else:
            step.slot(task.slot, None)
            step.fill_slots = True
    step.task(task.task_id, status=S.value, result=value, error=None, finished_at=now,
              lease_until=None, slot=None)
    attempts.record(step, task, now)
    end_run_with_tasks(step, run, now)
    step.joins = tuple(joins)
    return step


def discarded_by_cancel(task: TaskRecord, run: RunRecord | None, now: float) -> Step | None:
    """The attempt ended after its run was cancelled: its outcome is discarded.

    The task ends CANCELLED, as the cancel's sweep (control.py) would have
    left it had it come first; the README promises that what a body returns
    after a cancel changes nothing. Only a completion that reads the run
    (one that may end it, or a failure for good) can see the cancel; any
    other completing between the cancel's commit and the sweep keeps its
    outcome, and nothing starts after it (the claim reads the run). Hooks
    run after the end, so theirs stand.
    """
    if run is None or run.status is not RunStatus.CANCELLED or hooks.is_hook(task.task_id):
        return None
    return cancel(task, task.attempt, now, among=(R,))


def end_run_with_tasks(step: Step, run: RunRecord | None, now: float) -> None:
    """The run's last task ended: the run ends, FAILED if a task failed on the way.

    A failure in a run that does not fail fast leaves its reason on the run
    record (see `fail`), so the end needs no scan of the tasks.
    """
    if run is not None and run.status is RunStatus.RUNNING:
        end(step, run, RunStatus.FAILED if run.error else RunStatus.SUCCEEDED, now)


def end(step: Step, run: RunRecord, status: RunStatus, now: float, **fields: Any) -> None:
    """The one way a step ends a run; its hooks are queued in that commit (hooks.py)."""
    step.run(status=status.value, finished_at=now, **fields,
             **hooks.on_end(step, run, status, now))
    step.run_ended = status


def ends_run(graph: RunGraph, task: TaskRecord, has_end_task: bool) -> bool:
    """Whether this task's success ends the run by itself (it is the only sink)."""
    return not has_end_task and graph.dependents_of(task.task_id, task) == (END_TASK_ID,)


def retries_left(spec: TaskSpec, task: TaskRecord) -> bool:
    """Whether a failure of the current attempt is retried (then the run is not read)."""
    return task.attempt - min(task.interrupted, MAX_INTERRUPTED_ATTEMPTS) <= spec.retries


def fail(spec: TaskSpec, task: TaskRecord, run_id: str, error: str, now: float, *,
         run: RunRecord | None, retry_delay: float, graph: RunGraph, has_end_task: bool,
         retry: bool = True) -> Step:
    """Attempt `task.attempt` failed: queue a retry, or fail the task.

    A task that fails for good is written into its dependents, whose trigger
    rules decide what follows. In a graph that fails fast (no rule reacts to
    failures) the run ends FAILED now; otherwise the run goes on, with the
    failure noted on the run record so that its end is FAILED.
    retry=False fails the task whatever retries are left (a rejected approval).
    """
    error = bounded_error(error)
    cancelled = discarded_by_cancel(task, run, now)
    if cancelled is not None:
        return cancelled
    if retry and retries_left(spec, task):
        step = Step("failed", delay=retry_delay)
        step.task(task.task_id, status=Q.value, attempt=task.attempt + 1, error=error,
                  lease_until=None, queued_at=now, not_before=now + retry_delay,
                  finished_at=now)
        attempts.record(step, task, now)
        step.messages.append(Message(run_id, task.task_id, task.attempt + 1))
        return step
    step = Step("failed")
    step.task(task.task_id, status=F.value, error=error, finished_at=now,
              lease_until=None, slot=None)
    attempts.record(step, task, now)
    if task.slot is not None:
        step.slot(task.slot, None)
        step.fill_slots = True
    ends = ends_run(graph, task, has_end_task)
    if not ends:
        step.joins = write_outcome(step, graph, task, F)
    if task.role in ITEM_ROLES:
        return step  # its foreach decides, by the failures it tolerates
    if run is not None and run.status is RunStatus.RUNNING:
        reason = f"task {task.task_id!r} failed: {attempts.headline(error) or 'failed'}"
        if ends or graph.dag.fails_fast:
            end(step, run, RunStatus.FAILED, now, error=run.error or reason)
        elif not run.error:
            step.run(error=reason)
    return step


def write_outcome(step: Step, graph: RunGraph, task: TaskRecord,
                  status: TaskStatus) -> tuple[str, ...]:
    """Blind-write a task's final status into each dependent; returns the joins."""
    dependents = graph.dependents_of(task.task_id, task)
    for dependent in dependents:
        step.task(dependent, **{f"deps_done.{task.task_id}": status.value})
    return tuple(dependents)


def interrupted(spec: TaskSpec, task: TaskRecord, run_id: str, now: float, *,
                run: RunRecord | None, retry_delay: float, graph: RunGraph,
                has_end_task: bool) -> Step:
    """The process running attempt `task.attempt` died (found by `resume`).

    Queued again as a new attempt without using up a retry, up to
    MAX_INTERRUPTED_ATTEMPTS; past that it counts as a failed attempt.
    """
    if task.interrupted >= MAX_INTERRUPTED_ATTEMPTS:
        return fail(spec, task, run_id, (
            f"ProcessDied: attempt {task.attempt} of task {task.task_id!r} was "
            f"interrupted: its process died (kill -9, os._exit, out of memory), after "
            f"{task.interrupted} interrupted attempts; past {MAX_INTERRUPTED_ATTEMPTS}, each "
            "one counts against its retries"),
            now, run=run, retry_delay=retry_delay, graph=graph, has_end_task=has_end_task)
    step = Step("interrupted")
    step.task(task.task_id, status=Q.value, attempt=task.attempt + 1,
              interrupted=task.interrupted + 1, queued_at=now, lease_until=None,
              not_before=None)
    attempts.record(step, task, now)
    step.messages.append(Message(run_id, task.task_id, task.attempt + 1))
    return step


# -------------------------------------------------------------------- joins


def resolve_join(graph: RunGraph, join_id: str, join: TaskRecord | None, run_id: str,
                 now: float, *, run: RunRecord | None, slots: int,
                 has_end_task: bool) -> Step | None:
    """Apply a join's trigger rule once its dependencies allow: queue it,
    SKIP it or mark it UPSTREAM_FAILED (or, for the end task, end the run).

    None while the rule still waits. `run` is the run record when this
    join can end the run (the end task, or the only sink).
    """
    if join is None:
        return None
    deps = len(graph.deps_of(join_id, join))
    verdict = JoinProgress.of(join).verdict(deps, graph.rule_of(join_id, join))
    if verdict is Verdict.WAIT:
        return None
    if join_id == END_TASK_ID:
        step = Step("ended")
        step.task(join_id, status=S.value, finished_at=now)
        end_run_with_tasks(step, run, now)
        return step
    if join.role in ("group", "collect"):
        # A foreach's bookkeeping (core/foreach.py): it runs no body.
        progress = JoinProgress.of(join)
        step = Step("counted")
        step.task(join_id, status=S.value, finished_at=now,
                  result={"succeeded": progress.succeeded, "failed": progress.failed,
                          "skipped": progress.skipped})
        if join.role == "collect":
            step.collect = (join.template or "", join.node_attempt or 1)
        else:
            step.joins = write_outcome(step, graph, join, S)
        return step
    if verdict is not Verdict.RUN:
        status = SK if verdict is Verdict.SKIP else UF
        step = Step(status.value.lower())
        step.task(join_id, status=status.value, finished_at=now)
        if ends_run(graph, join, has_end_task):
            end_run_with_tasks(step, run, now)
        else:
            step.joins = write_outcome(step, graph, join, status)
        return step
    step = Step("queued")
    if slots:
        step.task(join_id, status=RD.value)
        step.fill_slots = True
        return step
    step.task(join_id, status=Q.value, attempt=1, queued_at=now)
    step.messages.append(Message(run_id, join_id, 1))
    return step


# -------------------------------------------------------------------- slots


def give_slot(slot: int, task: TaskRecord, now: float) -> Step:
    """Make READY `task` the holder of `slot` and queue its next attempt."""
    step = Step("slot_taken")
    step.slot(slot, task.task_id)
    step.task(task.task_id, status=Q.value, attempt=task.attempt + 1, slot=slot,
              queued_at=now)
    return step


def take_slot(slot: int, holder: str | None, task: TaskRecord | None, run_id: str,
              now: float) -> Step | None:
    """A READY task takes free slot `slot`; None when either was taken meanwhile."""
    if holder is not None or task is None or task.status is not RD:
        return None
    step = give_slot(slot, task, now)
    step.messages.append(Message(run_id, task.task_id, task.attempt + 1))
    return step


# --------------------------------------------------------------------- runs


def end_run(run: RunRecord | None, status: RunStatus, error: str | None,
            now: float) -> Step | None:
    """End a RUNNING run from outside (cancellation, cleanup of stuck runs)."""
    if run is None or run.status is not RunStatus.RUNNING:
        return None
    step = Step("ended")
    end(step, run, status, now, error=error)
    return step


def first_attempts(graph: RunGraph, run_id: str, now: float,
                   slots: int) -> tuple[list[TaskRecord], dict[int, str | None], list[Message]]:
    """The records a new run starts with: roots queued (those with a slot), the rest WAITING."""
    records: list[TaskRecord] = []
    holders: dict[int, str | None] = dict.fromkeys(range(slots))
    held = 0
    messages: list[Message] = []
    roots = set(graph.dag.roots)
    for task_id in graph.dag.order:
        record = TaskRecord(task_id=task_id)
        if task_id in roots:
            if slots and held >= slots:
                record.status = RD
            else:
                record.status, record.attempt, record.queued_at = Q, 1, now
                if slots:
                    record.slot = held
                    holders[held] = task_id
                    held += 1
                messages.append(Message(run_id, task_id, 1))
        records.append(record)
    return records, holders, messages
