"""Recording an attempt's outcome and everything that follows from it.

A completion is one compare-and-set on the task's own record (see
transitions.succeed and transitions.fail); after it commits, its follow-up
runs here: publish what it queued, look at the joins it wrote into, and
hand free concurrency slots to READY tasks. Each follow-up step is
idempotent, so a redelivered message may repeat it safely.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from function_flow.core import (attempts, chaining, foreach, growth, hooks, leftovers,
                                payloads, transitions)
from function_flow.core.definition import END_TASK_ID, branch_choice
from function_flow.core.messages import Message, MessageKind
from function_flow.core.records import JoinProgress, TaskRecord, TaskStatus, Verdict
from function_flow.core.step import Step
from function_flow.errors import RecordTooLargeError, TransientBackendError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Transaction

logger = logging.getLogger("function_flow.engine")

#: An executor that has at least this much of its lease left hands its slot
#: straight to a READY task it finds (see complete): until the lease ends,
#: only its own executor (or a cancel) ends a RUNNING attempt. The margin
#: absorbs clock differences between machines.
LEASE_SAFETY_MARGIN_SECONDS = 10.0
#: Pauses before recording an outcome again after the store failed in a way
#: that leaves unknown whether the first try landed (see complete).
COMPLETION_RETRY_DELAYS = (0.2, 1.0, 3.0)


def complete(engine: "Engine", run_id: str, task_id: str, attempt: int, *, ok: bool,
             value: Any = None, error: str | None = None,
             claimed: TaskRecord | None = None,
             claimed_until: float | None = None,
             trigger_id: str | None = None, not_before: float = 0.0,
             retry: bool = True, cause: BaseException | None = None,
             output: Any = None) -> str:
    """Record the outcome of one attempt, exactly once, and advance the run.

    Returns "stale" when the attempt was already completed or superseded.
    A failure is retried while retries are left, unless retry is False or
    the task's `retry_on` does not cover `cause` (the exception; None for a
    failure an event or remote function reported, see TaskSpec.retries_on).
    The executor that claimed the attempt passes its claim: while its
    lease is comfortably valid, it may hand its slot on directly.
    A retry is not started before `not_before` (epoch seconds).

    A successful value must be storable (JSON; over the inline limit it is
    written to a blob first, see payloads.py), else the attempt fails with
    the reason. `output`: what the body printed (an output.Capture), kept
    with the attempt in the same write (core/attempts.py).
    """
    chosen = None
    grow = None
    if ok and isinstance(value, growth.Grow):  # the body grows the graph (growth.py)
        grow, value = value, value.value
    if ok:
        try:
            value = engine.payloads.store(
                f"the result of task {task_id!r}", value,
                lambda: payloads.result_key(run_id, task_id, attempt))
            chosen = _branches_chosen(engine, run_id, task_id, claimed, value)
        except Exception as exc:  # not JSON, too large, a bad branch, the blob store failed
            ok, value, error = False, None, f"{type(exc).__name__}: {exc}"
            cause = exc
    now = engine.clock()
    fenced = (claimed is not None and claimed_until is not None
              and now + LEASE_SAFETY_MARGIN_SECONDS < claimed_until)
    successor = None
    if ok and fenced and claimed is not None and claimed.slot is not None \
            and not engine.graph.single_dependency_dependents(task_id, claimed):
        # Our slot will be free: hand it straight to a READY task (found
        # by a query now, compare-and-set in the transaction) instead of
        # freeing it and making fill_slots look for both again; a foreach
        # item hands it to the next item of its lane, with no query.
        successor = foreach.lane_successor(claimed) \
            or engine.graph.slot_heir(task_id, claimed, engine.slots)
        if successor is None:
            ready = engine.store.find_tasks(run_id, TaskStatus.READY, 1)
            successor = ready[0].task_id if ready else None

    # The attempt this worker runs next may be claimed in the same commit.
    ahead = chaining.together(engine, run_id, task_id, claimed, ok)

    def finish(tx: Transaction, trust_claim: bool = True) -> Step | None:
        # The task's own record is read even while the claim's lease holds:
        # a cancel (control.py) may have ended the attempt under its
        # executor, and this read makes the commit conditional on it.
        heir_id = successor if successor and trust_claim else None
        next_id = ahead.begin() if trust_claim else None
        records = tx.get_tasks(run_id, [task_id, *([heir_id] if heir_id else []),
                                        *([next_id] if next_id else [])])
        task = records.get(task_id)
        heir = records.get(heir_id) if heir_id else None
        spec = engine.graph.spec(task_id, task)
        if task is None or spec is None or task.status is not TaskStatus.RUNNING \
                or task.attempt != attempt:
            return None
        if ok and grow is not None:
            growth.rewire(task, grow)
        if ok:
            run = tx.get_run(run_id) if hooks.is_hook(task_id) or transitions.ends_run(
                engine.graph, task, engine.end_record) else None
            step = transitions.succeed(engine.graph, task, run_id, value, now, run=run,
                                       has_end_task=engine.end_record, heir=heir,
                                       chosen=chosen)
        else:
            again = retry and spec.retries_on(cause)
            run = None if again and transitions.retries_left(spec, task) \
                else tx.get_run(run_id)
            delay = max(spec.retry_backoff.delay(task.attempt, engine.rng),
                        not_before - now)
            step = transitions.fail(spec, task, run_id, error or "failed", now,
                                    run=run, retry_delay=delay, retry=again,
                                    graph=engine.graph, has_end_task=engine.end_record)
        hooks.after_hook(step, task_id, run, now)
        attempts.add_output(step, task_id, output)
        if next_id:
            ahead.claim_in(step, tx, run_id, records.get(next_id), now)
        if ok and grow is not None:
            growth.write(tx, run_id, task, grow)
        step.write_to(tx, run_id)
        if trigger_id is not None:
            tx.delete_trigger(trigger_id)
        return step

    # Every record read here is written (the successor too, when it is
    # taken, and a chain's next task, which a success always queues), except
    # the run's when it has already ended: compare-and-set is safe, and a
    # store falls back to a transaction for that case. (A claim ahead reads
    # more, but only where the store locks for writes: chaining.py.)
    try:
        with ahead:  # a message reserved for this worker is settled either way
            step = engine.store.transact(finish, compare_and_set=True)
            ahead.keep()
    except RecordTooLargeError as exc:
        if not ok:
            raise
        return complete(engine, run_id, task_id, attempt, ok=False,
                        error=f"RecordTooLargeError: {exc}", trigger_id=trigger_id)
    except TransientBackendError as exc:
        step = _complete_again(engine, run_id, task_id, attempt, ok, exc,
                               lambda tx: finish(tx, trust_claim=False), ahead.landed)
    if step is None:
        logger.info("run %s task %s attempt %d already completed; outcome ignored",
                    run_id, task_id, attempt)
        engine.payloads.discard(value)  # nothing committed references its blob
        return "stale"
    # The attempt has ended: its lease check, an hour ahead, is not wanted.
    engine.bus.forget(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE))
    if step.verdict == "cancelled":  # the run was cancelled first
        logger.info("run %s task %s attempt %d: the run was cancelled; outcome discarded",
                    run_id, task_id, attempt)
        engine.payloads.discard(value)
        return step.verdict
    follow_up(engine, run_id, step)
    return "succeeded" if ok else "failed"


def _branches_chosen(engine: "Engine", run_id: str, task_id: str,
                     claimed: TaskRecord | None, value: Any) -> frozenset[str] | None:
    """For a branch task, the dependents its result chose (ValueError if it names
    others); None for any other task."""
    spec = engine.graph.spec(task_id, claimed)
    if spec is None or not spec.branch:
        return None
    record = claimed
    if record is None:
        found = engine.store.get_tasks(run_id, [task_id])
        record = found[0] if found else None
    return branch_choice(spec, engine.graph.dependents_of(task_id, record),
                         engine.payloads.load(value, f"the result of task {task_id!r}"),
                         task_id)


def _complete_again(engine: "Engine", run_id: str, task_id: str, attempt: int, ok: bool,
                    error: TransientBackendError,
                    finish: Callable[[Transaction], Step | None],
                    landed: Callable[[], None]) -> Step | None:
    """Record an outcome after the store failed to say whether it did.

    The body's result exists only in this process: redelivering the
    message would find the attempt RUNNING and wait for its lease (an
    hour by default), then fail a task that succeeded. So try again here,
    reading the record this time: if the first commit landed, only its
    follow-up messages are missing, and they are sent again, and the
    attempt it claimed too (core/chaining.py) runs here (`landed`): else
    nobody would run it before its lease ran out.
    """
    for delay in COMPLETION_RETRY_DELAYS:
        logger.warning("run %s task %s attempt %d: recording the outcome failed (%s); "
                       "trying again in %.1f s", run_id, task_id, attempt, error, delay)
        time.sleep(delay)
        try:
            step = engine.store.transact(finish)
        except TransientBackendError as exc:
            error = exc
            continue
        if step is None and ok:
            records = engine.store.get_tasks(run_id, [task_id])
            if records and records[0].status is TaskStatus.SUCCEEDED \
                    and records[0].attempt == attempt:
                landed()  # the first try landed, and the claim riding along it
                advance_after_success(engine, run_id, task_id)
                return Step()
        return step
    raise error


def follow_up(engine: "Engine", run_id: str, step: Step) -> None:
    """Work that happens after a commit: messages, joins, free slots.

    A join's rule may end it without running (SKIPPED, UPSTREAM_FAILED),
    which writes into its own dependents: those steps queue up here, so a
    skip cascading down a chain of 10,000 tasks needs no recursion.
    """
    steps = collections.deque([step])
    while steps:
        step = steps.popleft()
        publish(engine, step)
        for join in step.joins:
            resolved = check_join(engine, run_id, join, follow=False)
            if resolved is not None:
                steps.append(resolved)
        if step.fill_slots:
            fill_slots(engine, run_id)
        if step.collect is not None:
            foreach.collect(engine, run_id, *step.collect)
        if step.run_ended is not None:
            logger.info("run %s ended: %s", run_id, step.run_ended.value)
            leftovers.retire(engine, run_id, step.run_ended)


def publish(engine: "Engine", step: Step) -> None:
    for message in step.messages:
        engine.bus.publish(message, step.delay)


def advance_after_success(engine: "Engine", run_id: str, task_id: str) -> None:
    """Repeat the follow-up of a recorded success (idempotent)."""
    own = engine.store.get_tasks(run_id, [task_id])
    dependents = engine.graph.dependents_of(task_id, own[0] if own else None)
    records = {t.task_id: t for t in engine.store.get_tasks(run_id, dependents)}
    # A slot freed by that success may not have been handed out yet.
    step = Step(fill_slots=bool(engine.slots))
    for dependent in dependents:
        record = records.get(dependent)
        if record is None:
            continue
        if record.status is TaskStatus.QUEUED:
            step.messages.append(Message(run_id, dependent, record.attempt))
        elif record.status is TaskStatus.READY:
            step.fill_slots = True
        elif record.status is TaskStatus.WAITING:
            step.joins += (dependent,)
    follow_up(engine, run_id, step)


def check_join(engine: "Engine", run_id: str, join_id: str,
               follow: bool = True) -> Step | None:
    """Apply a join's trigger rule if its dependencies allow (queue it, skip it,
    mark it UPSTREAM_FAILED, or end the run for the end task).

    A plain read first: most completers of a wide join find it undecided
    and never open a transaction on it, which keeps the join cold. With
    follow=False the committed step is returned for the caller to follow up.
    """
    if hooks.is_hook(join_id):
        return None  # a hook is queued by the run's end, never as a join
    progress = engine.store.join_progress(run_id, join_id)
    if progress is None:
        return None
    deps = progress.expected if progress.expected is not None \
        else len(engine.graph.deps_of(join_id))
    # A task the run added (progress.expected set) may have another rule
    # than its id says; its record, read in the transaction, tells. Every
    # rule waits for all dependencies but the early ones, which no task a
    # run adds has (a foreach's are all_done): until then it is undecided.
    if progress.expected is not None:
        if progress.done < deps:
            return None
    elif not progress.complete(deps, engine.graph.rule_of(join_id)):
        return None
    if progress.status is not TaskStatus.WAITING:
        return None
    now = engine.clock()

    def resolve(tx: Transaction) -> Step | None:
        join = tx.get_tasks(run_id, [join_id]).get(join_id)
        run = None
        # The run only when this ends it: a sink that is queued neither reads
        # nor writes it, so the compare-and-set needs no lock on the run.
        if join is not None and (join_id == END_TASK_ID or transitions.ends_run(
                engine.graph, join, engine.end_record) and JoinProgress.of(join).verdict(
                len(engine.graph.deps_of(join_id, join)), engine.graph.rule_of(join_id, join))
                not in (Verdict.RUN, Verdict.WAIT)):
            run = tx.get_run(run_id)
        step = transitions.resolve_join(engine.graph, join_id, join, run_id, now, run=run,
                                        slots=engine.slots,
                                        has_end_task=engine.end_record)
        if step is not None:
            step.write_to(tx, run_id)
        return step

    # Every completer of the join writes into it (blind): compare-and-set
    # lets the queuing retry on a fresh read instead of locking the join.
    step = engine.store.transact(resolve, compare_and_set=True)
    if step is not None and follow:
        follow_up(engine, run_id, step)
    return step

# ------------------------------------------------------------------ slots


def fill_slots(engine: "Engine", run_id: str) -> None:
    """Give free concurrency slots to READY tasks.

    Both a task that becomes READY and a task that frees a slot call this
    after committing, so one of the two always sees the other's write.
    A take that loses a race is not a reason to stop: the winner may be
    a finishing task handing its own slot to our candidate, which leaves
    our free slot to us. So look again, until there is nothing to pair
    or the same pairs fail twice (the store is then ahead of us anyway).

    Each look reads as many free slots as it may pair, then as many READY
    records: one of each at first (usually a single slot was freed, and
    often no task waits for it: a foreach as wide as max_parallel_tasks),
    twice as many after each look that paired them all; a look that found
    fewer than it asked for and took them all is the last. Takes go in the
    store's order and a look ends at the first that fails: slot numbers
    with no record yet are then taken in order, so the records stay a
    prefix (ports.Store.find_free_slots).
    """
    if not engine.slots:
        return
    failed_on = None
    wanted = 1
    while True:
        free = engine.store.find_free_slots(run_id, engine.slots, wanted)
        if not free:
            return
        ready = engine.store.find_tasks(run_id, TaskStatus.READY, len(free))
        if not ready:
            return
        pairs = list(zip((t.task_id for t in ready), free))
        if pairs == failed_on:
            return
        taken = 0
        for task_id, slot in pairs:
            step = engine.store.transact(
                lambda tx, t=task_id, s=slot: _take_slot(engine, tx, run_id, t, s),
                compare_and_set=True)
            if step is None:
                break
            publish(engine, step)
            taken += 1
        if taken == len(pairs) < wanted:
            return  # all there was, as of the queries: later ones look themselves
        failed_on = None if taken else pairs
        wanted = min(engine.slots, 2 * wanted) if taken == wanted else 1


def _take_slot(engine: "Engine", tx: Transaction, run_id: str, task_id: str,
               slot: int) -> Step | None:
    holder = tx.get_slot(run_id, slot)
    task = tx.get_tasks(run_id, [task_id]).get(task_id)
    step = transitions.take_slot(slot, holder, task, run_id, engine.clock())
    if step is not None:
        step.write_to(tx, run_id)
    return step
