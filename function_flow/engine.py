"""The state machine that advances runs. Pure logic over a store and a bus.

Every backend runs this same code. It never imports a database or cloud
client; adapters behind `ports.Store` and `ports.Bus` do the I/O.

How a task moves (see DESIGN.md for why it is shaped this way):

  WAITING --deps done--> QUEUED (or READY, then QUEUED once it holds a slot)
  QUEUED  --claim: a transaction on the task's own record--> RUNNING
  RUNNING --complete: a transaction on the task's own record--> SUCCEEDED
          |  which also writes `deps_done.<task>` into each dependent
          |  (blind writes: they read nothing, so they never contend)
          +--> QUEUED again (attempt + 1, after a backoff) or FAILED

A dependent with a single dependency is queued inside the completing
transaction. A join (several dependencies) is read after the commit by each
completer; the last completer to commit is sure to see it complete, and a
transaction on the join lets exactly one of them queue it. The run ends when
the virtual end task, which depends on every sink, completes the same way.

Every message names its target (run, task, attempt), so a duplicate or a
late message finds the task already claimed or advanced and changes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import random
import socket
import time
import traceback
import uuid
from typing import Any, Callable, Protocol

from function_flow.dag import END_TASK_ID, Dag, TaskSpec
from function_flow.errors import RunNotFoundError, RunStillActiveError, TransientBackendError
from function_flow.ports import Bus, Store, Transaction
from function_flow.records import (JoinProgress, Message, MessageKind, RunRecord,
                                   RunStatus, TaskRecord, TaskStatus)

logger = logging.getLogger("function_flow.engine")

#: How long a synchronous attempt may run before its lease expires, when the
#: task sets no timeout (Cloud Functions 2nd gen stop at 60 minutes).
DEFAULT_LEASE_SECONDS = 3600.0
#: How long an asynchronous attempt (a Future) may wait for its event when
#: the task sets no timeout. Long, but not forever: nothing waits silently.
DEFAULT_ASYNC_LEASE_SECONDS = 7 * 24 * 3600.0
#: An executor completes its attempt without re-reading the task record when
#: at least this much of its lease is left: until the lease ends, nobody else
#: may touch a RUNNING attempt, so the read could only confirm what it knows.
#: The margin absorbs clock differences between machines.
LEASE_SAFETY_MARGIN_SECONDS = 10.0
#: Pauses before recording an outcome again after the store failed in a way
#: that leaves unknown whether the first try landed (see Engine.complete).
COMPLETION_RETRY_DELAYS = (0.2, 1.0, 3.0)


class Pending:
    """Base of values a task returns to say "an external event completes me".

    `futures.Future` derives from it. The engine only needs `trigger_id`.
    """

    trigger_id: str


class Workflow(Protocol):
    """What the engine needs from a job definition (tasks.Job provides it)."""

    name: str
    dag: Dag
    max_parallel_tasks: int

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int) -> Any:
        """Run the task body and return its result (or a Pending)."""


@dataclasses.dataclass
class _Completion:
    """What a committed completion asks the engine to do next."""

    publish: list[Message] = dataclasses.field(default_factory=list)
    publish_delay: float = 0.0
    joins: tuple[str, ...] = ()
    fill_slots: bool = False
    run_ended: RunStatus | None = None


def new_run_id(job_name: str) -> str:
    """Readable, sortable and unique: `<job>-<UTC time>-<random>`."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{job_name}-{stamp}-{uuid.uuid4().hex[:6]}"


def process_owner() -> str:
    """Identifies this process, for runs the embedded backend executes."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Engine:
    """Advances the runs of one workflow. Thread-safe: it keeps no run state."""

    def __init__(self, workflow: Workflow, store: Store, bus: Bus, *,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 lease_check_messages: bool = True) -> None:
        self.workflow = workflow
        self.dag: Dag = workflow.dag
        self.store = store
        self.bus = bus
        self.clock = clock
        self.rng = rng or random.Random()
        #: The local bus can deliver delayed messages, so each attempt gets a
        #: message that checks its lease; on Pub/Sub the poller scans instead.
        self.lease_check_messages = lease_check_messages
        parallel = max(1, int(workflow.max_parallel_tasks))
        #: 0 means the graph can never run more than max_parallel_tasks at
        #: once, so the run needs no slot records at all.
        self.slots = 0 if self.dag.width_bound <= parallel else parallel
        #: With a single sink, the sink's own completion ends the run; only
        #: several sinks need the virtual end task to join them.
        self.end_record = len(self.dag.sinks) > 1

    # ------------------------------------------------------------------ start

    def start(self, args: dict[str, Any] | None = None, run_id: str | None = None,
              owner: str | None = None,
              source: str | None = None) -> tuple[str, bool]:
        """Create a run and queue its root tasks. Returns (run_id, created).

        With a caller-chosen run id the call is idempotent: when the run
        exists, nothing is written and created is False.
        """
        args = dict(args or {})
        json.dumps(args)  # arguments must be storable on every backend
        run_id = run_id or new_run_id(self.workflow.name)
        now = self.clock()
        records: list[TaskRecord] = []
        # Every slot record exists from the start, so that taking a free one
        # is a compare-and-set of a record that is there (see ports.Store).
        slots: dict[int, str | None] = dict.fromkeys(range(self.slots))
        held = 0
        to_publish: list[Message] = []
        for task_id in self.dag.order:
            record = TaskRecord(task_id=task_id)
            if not self.dag.tasks[task_id].deps:
                if self.slots and held >= self.slots:
                    record.status = TaskStatus.READY
                else:
                    record.status, record.attempt, record.queued_at = TaskStatus.QUEUED, 1, now
                    if self.slots:
                        record.slot = held
                        slots[held] = task_id
                        held += 1
                    to_publish.append(Message(run_id, task_id, 1))
            records.append(record)
        if self.end_record:
            records.append(TaskRecord(task_id=END_TASK_ID))
        run = RunRecord(run_id=run_id, job_name=self.workflow.name,
                        dag_hash=self.dag.digest(), args=args, slots=self.slots,
                        created_at=now, owner=owner, source=source)
        if not self.store.create_run(run, records, slots):
            # A retried start (same run id) may follow one that died before
            # publishing: send the roots that are still queued again.
            existing = self.store.get_run(run_id)
            if existing is not None and existing.status is RunStatus.RUNNING:
                for root in self.store.get_tasks(run_id, self.dag.roots):
                    if root.status is TaskStatus.QUEUED:
                        self.bus.publish(Message(run_id, root.task_id, root.attempt))
            return run_id, False
        try:
            for message in to_publish:
                self.bus.publish(message)
        except Exception:
            # A run whose roots were never sent would be found by the poller
            # and executed after its caller was told the start failed (and
            # may have started it again). A failed start leaves no run.
            self._discard_failed_start(run_id)
            raise
        logger.info("run %s started: %d tasks", run_id, len(self.dag.tasks))
        return run_id, True

    def _discard_failed_start(self, run_id: str) -> None:
        try:
            self.store.delete_run(run_id)
        except Exception:  # the original error matters more; say what is left
            logger.exception("run %s: start failed and its records could not be "
                             "deleted; delete them with cleanup or retry the start "
                             "with the same run id", run_id)

    # --------------------------------------------------------------- messages

    def handle(self, message: Message) -> str:
        """Act on one scheduling message; returns what happened, for logs.

        Never raises for a message that cannot be acted on (unknown run or
        task, duplicate, stale attempt): those are answered and dropped.
        Errors of the store or bus propagate so the message is redelivered.
        """
        if message.task_id != END_TASK_ID and message.task_id not in self.dag.tasks:
            logger.warning("message for unknown task %r of run %s dropped",
                           message.task_id, message.run_id)
            return "unknown_task"
        if message.kind is MessageKind.CHECK_LEASE:
            return self.check_lease(message.run_id, message.task_id, message.attempt)
        return self.execute(message.run_id, message.task_id, message.attempt)

    def execute(self, run_id: str, task_id: str, attempt: int) -> str:
        """Claim attempt `attempt` of a task and, if this call won, run it."""
        if task_id == END_TASK_ID:
            return "unknown_task"
        spec = self.dag.tasks[task_id]
        now = self.clock()
        lease = spec.timeout or DEFAULT_LEASE_SECONDS

        def claim(tx: Transaction) -> tuple[str, TaskRecord | None]:
            run, tasks = tx.get_run_and_tasks(run_id, [task_id])
            if run is None:
                return "unknown_run", None
            task = tasks.get(task_id)
            if task is None:
                return "unknown_task", None
            if run.status is not RunStatus.RUNNING:
                if task.status is TaskStatus.QUEUED and task.attempt == attempt:
                    # The run ended while this was queued: it will never run.
                    tx.update_task(run_id, task_id, {
                        "status": TaskStatus.CANCELLED.value, "finished_at": now,
                        "slot": None})
                    if task.slot is not None:
                        tx.set_slot(run_id, task.slot, None)
                return f"run_{run.status.value.lower()}", task
            if task.status is TaskStatus.QUEUED and task.attempt == attempt:
                if task.not_before and task.not_before > now:
                    return "early", task
                tx.update_task(run_id, task_id, {
                    "status": TaskStatus.RUNNING.value, "started_at": now,
                    "lease_until": now + lease, "not_before": None,
                    "finished_at": None})
                return "claimed", task
            if task.attempt > attempt or task.status is TaskStatus.WAITING:
                return "stale", task
            return "duplicate", task

        verdict, task = self.store.transact(claim)
        claimed_until = now + lease
        if verdict == "early":
            assert task is not None and task.not_before is not None
            self.bus.publish(Message(run_id, task_id, attempt), task.not_before - now)
            return verdict
        if verdict == "duplicate" and task is not None \
                and task.status is TaskStatus.SUCCEEDED and task.attempt == attempt:
            # Our earlier delivery may have died between its commit and its
            # follow-up messages: repeat them (duplicates of those are harmless).
            self._advance_after_success(run_id, task_id)
            return "redelivered"
        if verdict == "stale" and task is not None and task.attempt > attempt \
                and task.status is TaskStatus.QUEUED:
            # Attempt `attempt` failed and the retry is queued, but the
            # delivery that queued it may have died before sending it.
            delay = max(0.0, (task.not_before or now) - now)
            self.bus.publish(Message(run_id, task_id, task.attempt), delay)
            return "stale"
        if verdict != "claimed":
            logger.info("run %s task %s attempt %d: %s, nothing to do",
                        run_id, task_id, attempt, verdict)
            return verdict
        if self.lease_check_messages:
            self.bus.publish(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE),
                             lease)
        assert task is not None
        return self._run_body(run_id, spec, attempt, task, claimed_until)

    def _run_body(self, run_id: str, spec: TaskSpec, attempt: int,
                  claimed: TaskRecord, claimed_until: float) -> str:
        try:
            value = self.workflow.invoke(spec, run_id, attempt)
            if isinstance(value, Pending):
                self._await_event(run_id, spec, attempt, value.trigger_id)
                return "waiting"
            value = _storable(spec.task_id, value)
        except (Exception, SystemExit):  # the task's own error: record it, never crash the bus
            error = traceback.format_exc()
            logger.warning("run %s task %s attempt %d failed:\n%s",
                           run_id, spec.task_id, attempt, error)
            self.complete(run_id, spec.task_id, attempt, ok=False, error=error,
                          claimed=claimed, claimed_until=claimed_until)
            return "failed"
        self.complete(run_id, spec.task_id, attempt, ok=True, value=value,
                      claimed=claimed, claimed_until=claimed_until)
        return "succeeded"

    def _await_event(self, run_id: str, spec: TaskSpec, attempt: int, trigger_id: str) -> None:
        """Leave the attempt RUNNING until an external event completes it."""
        if not isinstance(trigger_id, str) or not trigger_id:
            raise ValueError(f"task {spec.task_id!r} returned a Future without a trigger id")
        self.store.put_trigger(trigger_id, run_id, spec.task_id, attempt)
        lease = spec.timeout or DEFAULT_ASYNC_LEASE_SECONDS
        now = self.clock()

        def record(tx: Transaction) -> bool:
            task = tx.get_tasks(run_id, [spec.task_id]).get(spec.task_id)
            if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
                return False
            tx.update_task(run_id, spec.task_id,
                           {"trigger_id": trigger_id, "lease_until": now + lease})
            return True

        if self.store.transact(record) and self.lease_check_messages:
            self.bus.publish(Message(run_id, spec.task_id, attempt,
                                     MessageKind.CHECK_LEASE), lease)

    # ------------------------------------------------------------- completion

    def complete(self, run_id: str, task_id: str, attempt: int, *, ok: bool,
                 value: Any = None, error: str | None = None,
                 claimed: TaskRecord | None = None,
                 claimed_until: float | None = None) -> str:
        """Record the outcome of one attempt, exactly once, and advance the run.

        Also the entry point for asynchronous completion (external events).
        Returns "stale" when the attempt was already completed or superseded.
        The executor that claimed the attempt passes its claim: while its
        lease is comfortably valid, the task record need not be read again.
        """
        spec = self.dag.tasks[task_id]
        now = self.clock()
        retry_delay = spec.retry_backoff.delay(attempt, self.rng)
        fenced = (claimed is not None and claimed_until is not None
                  and now + LEASE_SAFETY_MARGIN_SECONDS < claimed_until)
        successor = None
        if ok and fenced and claimed is not None and claimed.slot is not None \
                and not self._queues_a_dependent(task_id):
            # Our slot will be free: hand it straight to a READY task (found
            # by a query now, compare-and-set in the transaction) instead of
            # freeing it and making fill_slots look for both again.
            ready = self.store.find_tasks(run_id, TaskStatus.READY, 1)
            successor = ready[0].task_id if ready else None

        def finish(tx: Transaction, trust_claim: bool = True) -> _Completion | None:
            if fenced and trust_claim:
                assert claimed is not None
                task = dataclasses.replace(claimed, status=TaskStatus.RUNNING)
            else:
                task = tx.get_tasks(run_id, [task_id]).get(task_id)
            heir = tx.get_tasks(run_id, [successor]).get(successor) \
                if successor and trust_claim else None
            if task is None or task.status is not TaskStatus.RUNNING or task.attempt != attempt:
                return None
            if ok:
                return self._record_success(tx, run_id, task, value, now, heir)
            return self._record_failure(tx, run_id, task, spec, error or "failed",
                                        now, retry_delay)

        # Every record read here is written (the successor too, when it is
        # taken), except the run's when it has already ended: compare-and-set
        # is safe, and a store falls back to a transaction for that case.
        try:
            completion = self.store.transact(finish, compare_and_set=True)
        except TransientBackendError as exc:
            completion = self._complete_again(run_id, task_id, attempt, ok, exc,
                                              lambda tx: finish(tx, trust_claim=False))
        if completion is None:
            logger.info("run %s task %s attempt %d already completed; outcome ignored",
                        run_id, task_id, attempt)
            return "stale"
        self._follow_up(run_id, completion)
        if completion.run_ended is not None:
            logger.info("run %s ended: %s", run_id, completion.run_ended.value)
        return "succeeded" if ok else "failed"

    def _complete_again(self, run_id: str, task_id: str, attempt: int, ok: bool,
                        error: TransientBackendError,
                        finish: Callable[[Transaction], _Completion | None]
                        ) -> _Completion | None:
        """Record an outcome after the store failed to say whether it did.

        The body's result exists only in this process: redelivering the
        message would find the attempt RUNNING and wait for its lease (an
        hour by default), then fail a task that succeeded. So try again here,
        reading the record this time: if the first commit landed, only its
        follow-up messages are missing, and they are sent again.
        """
        for delay in COMPLETION_RETRY_DELAYS:
            logger.warning("run %s task %s attempt %d: recording the outcome failed (%s); "
                           "trying again in %.1f s", run_id, task_id, attempt, error, delay)
            time.sleep(delay)
            try:
                completion = self.store.transact(finish)
            except TransientBackendError as exc:
                error = exc
                continue
            if completion is None and ok:
                records = self.store.get_tasks(run_id, [task_id])
                if records and records[0].status is TaskStatus.SUCCEEDED \
                        and records[0].attempt == attempt:
                    self._advance_after_success(run_id, task_id)  # the first try landed
                    return _Completion()
            return completion
        raise error

    def _queues_a_dependent(self, task_id: str) -> bool:
        """Whether a success of `task_id` queues a dependent (which inherits its slot)."""
        return any(d != END_TASK_ID and len(self.dag.deps_of(d)) == 1
                   for d in self.dag.dependents_of(task_id))

    def _record_success(self, tx: Transaction, run_id: str, task: TaskRecord,
                        value: Any, now: float,
                        heir: TaskRecord | None = None) -> _Completion:
        dependents = self.dag.dependents_of(task.task_id)
        ends_run = dependents == (END_TASK_ID,) and not self.end_record
        run = tx.get_run(run_id) if ends_run else None  # reads before writes
        completion = _Completion()
        done = {f"deps_done.{task.task_id}": TaskStatus.SUCCEEDED.value}
        handed_slot = False
        joins = []
        for dependent in dependents if not ends_run else ():
            if dependent == END_TASK_ID or len(self.dag.deps_of(dependent)) > 1:
                tx.update_task(run_id, dependent, done)
                joins.append(dependent)
                continue
            # Our success alone makes this dependent runnable: queue it here,
            # in the same transaction, with no read and no extra message.
            fields: dict[str, Any] = dict(done)
            if task.slot is None or not handed_slot:
                fields.update(status=TaskStatus.QUEUED.value, attempt=1, queued_at=now)
                if task.slot is not None:
                    fields["slot"] = task.slot
                    tx.set_slot(run_id, task.slot, dependent)
                    handed_slot = True
                completion.publish.append(Message(run_id, dependent, 1))
            else:
                fields["status"] = TaskStatus.READY.value
                completion.fill_slots = True
            tx.update_task(run_id, dependent, fields)
        if task.slot is not None and not handed_slot:
            if heir is not None and heir.status is TaskStatus.READY:
                completion.publish.append(self._give_slot(tx, run_id, task.slot, heir))
            else:
                tx.set_slot(run_id, task.slot, None)
                completion.fill_slots = True
        tx.update_task(run_id, task.task_id, {
            "status": TaskStatus.SUCCEEDED.value, "result": value, "error": None,
            "finished_at": now, "lease_until": None, "slot": None})
        if run is not None and run.status is RunStatus.RUNNING:
            tx.update_run(run_id, {"status": RunStatus.SUCCEEDED.value, "finished_at": now})
            completion.run_ended = RunStatus.SUCCEEDED
        completion.joins = tuple(joins)
        return completion

    def _record_failure(self, tx: Transaction, run_id: str, task: TaskRecord,
                        spec: TaskSpec, error: str, now: float,
                        retry_delay: float) -> _Completion:
        if task.attempt - task.interrupted <= spec.retries:
            tx.update_task(run_id, task.task_id, {
                "status": TaskStatus.QUEUED.value, "attempt": task.attempt + 1,
                "error": error, "lease_until": None, "queued_at": now,
                "not_before": now + retry_delay, "finished_at": now})
            return _Completion(publish=[Message(run_id, task.task_id, task.attempt + 1)],
                               publish_delay=retry_delay)
        run = tx.get_run(run_id)
        tx.update_task(run_id, task.task_id, {
            "status": TaskStatus.FAILED.value, "error": error,
            "finished_at": now, "lease_until": None, "slot": None})
        if task.slot is not None:
            tx.set_slot(run_id, task.slot, None)
        completion = _Completion()
        if run is not None and run.status is RunStatus.RUNNING:
            first_line = error.strip().splitlines()[-1] if error.strip() else "failed"
            tx.update_run(run_id, {
                "status": RunStatus.FAILED.value, "finished_at": now,
                "error": f"task {task.task_id!r} failed: {first_line}"})
            completion.run_ended = RunStatus.FAILED
        return completion

    def _follow_up(self, run_id: str, completion: _Completion) -> None:
        """Work that happens after a commit: messages, joins, free slots."""
        for message in completion.publish:
            self.bus.publish(message, completion.publish_delay)
        for join in completion.joins:
            self._check_join(run_id, join)
        if completion.fill_slots:
            self.fill_slots(run_id)

    def _advance_after_success(self, run_id: str, task_id: str) -> None:
        """Repeat the follow-up of a recorded success (idempotent)."""
        dependents = self.dag.dependents_of(task_id)
        records = {t.task_id: t for t in self.store.get_tasks(run_id, dependents)}
        # A slot freed by that success may not have been handed out yet.
        completion = _Completion(fill_slots=bool(self.slots))
        for dependent in dependents:
            record = records.get(dependent)
            if record is None:
                continue
            if record.status is TaskStatus.QUEUED:
                completion.publish.append(Message(run_id, dependent, record.attempt))
            elif record.status is TaskStatus.READY:
                completion.fill_slots = True
            elif record.status is TaskStatus.WAITING:
                completion.joins += (dependent,)
        self._follow_up(run_id, completion)

    def _check_join(self, run_id: str, join_id: str) -> None:
        """Queue a join (or end the run) if all its dependencies are done.

        A plain read first: most completers of a wide join find it incomplete
        and never open a transaction on it, which keeps the join cold.
        """
        deps = self.dag.deps_of(join_id)
        progress = self.store.join_progress(run_id, join_id)
        if progress is None or not progress.complete(len(deps)):
            return
        now = self.clock()

        def queue(tx: Transaction) -> _Completion | None:
            run = tx.get_run(run_id) if join_id == END_TASK_ID else None
            join = tx.get_tasks(run_id, [join_id]).get(join_id)
            if join is None or not JoinProgress.of(join).complete(len(deps)):
                return None
            if join_id == END_TASK_ID:
                tx.update_task(run_id, join_id, {"status": TaskStatus.SUCCEEDED.value,
                                                 "finished_at": now})
                if run is not None and run.status is RunStatus.RUNNING:
                    tx.update_run(run_id, {"status": RunStatus.SUCCEEDED.value,
                                           "finished_at": now})
                    return _Completion(run_ended=RunStatus.SUCCEEDED)
                return _Completion()
            if self.slots:
                tx.update_task(run_id, join_id, {"status": TaskStatus.READY.value})
                return _Completion(fill_slots=True)
            tx.update_task(run_id, join_id, {"status": TaskStatus.QUEUED.value,
                                             "attempt": 1, "queued_at": now})
            return _Completion(publish=[Message(run_id, join_id, 1)])

        # Every completer of the join writes into it (blind): compare-and-set
        # lets the queuing retry on a fresh read instead of locking the join.
        completion = self.store.transact(queue, compare_and_set=True)
        if completion is not None:
            self._follow_up(run_id, completion)
            if completion.run_ended is not None:
                logger.info("run %s ended: %s", run_id, completion.run_ended.value)

    # ------------------------------------------------------------------ slots

    def fill_slots(self, run_id: str) -> None:
        """Give free concurrency slots to READY tasks.

        Both a task that becomes READY and a task that frees a slot call this
        after committing, so one of the two always sees the other's write.
        A take that loses a race is not a reason to stop: the winner may be
        a finishing task handing its own slot to our candidate, which leaves
        our free slot to us. So look again, until there is nothing to pair
        or the same pairs fail twice (the store is then ahead of us anyway).
        """
        if not self.slots:
            return
        failed_on = None
        while True:
            # Free slots first: usually one, so only that many READY records
            # are read (reading `slots` of them per completion dominated).
            free = self.store.find_free_slots(run_id, self.slots, self.slots)
            if not free:
                return
            ready = self.store.find_tasks(run_id, TaskStatus.READY, len(free))
            if not ready:
                return
            pairs = list(zip((t.task_id for t in ready), free))
            if pairs == failed_on:
                return
            progressed = False
            for task_id, slot in pairs:
                message = self.store.transact(
                    lambda tx, t=task_id, s=slot: self._take_slot(tx, run_id, t, s),
                    compare_and_set=True)
                if message is not None:
                    self.bus.publish(message)
                    progressed = True
            failed_on = None if progressed else pairs

    def _take_slot(self, tx: Transaction, run_id: str, task_id: str,
                   slot: int) -> Message | None:
        holder = tx.get_slot(run_id, slot)
        task = tx.get_tasks(run_id, [task_id]).get(task_id)
        if holder is not None or task is None or task.status is not TaskStatus.READY:
            return None
        return self._give_slot(tx, run_id, slot, task)

    def _give_slot(self, tx: Transaction, run_id: str, slot: int,
                   task: TaskRecord) -> Message:
        """Make READY `task` the holder of `slot` and queue its next attempt."""
        tx.set_slot(run_id, slot, task.task_id)
        tx.update_task(run_id, task.task_id, {
            "status": TaskStatus.QUEUED.value, "attempt": task.attempt + 1,
            "slot": slot, "queued_at": self.clock()})
        return Message(run_id, task.task_id, task.attempt + 1)

    # ----------------------------------------------------------------- leases

    def check_lease(self, run_id: str, task_id: str, attempt: int) -> str:
        """Fail (and maybe retry) an attempt whose executor went silent."""
        if task_id == END_TASK_ID:
            return "unknown_task"
        records = self.store.get_tasks(run_id, [task_id])
        if not records:
            return "unknown_task"
        task = records[0]
        if task.status is not TaskStatus.RUNNING or task.attempt != attempt:
            return "stale"
        now = self.clock()
        if task.lease_until is not None and task.lease_until > now:
            if self.lease_check_messages:
                self.bus.publish(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE),
                                 task.lease_until - now)
            return "lease_valid"
        spec = self.dag.tasks[task_id]
        limit = spec.timeout or "default lease"
        self.complete(run_id, task_id, attempt, ok=False, error=(
            f"TimeoutError: attempt {attempt} of task {task_id!r} did not finish "
            f"within its lease ({limit} s): it timed out or its executor died"))
        return "lease_expired"

    # ----------------------------------------------------------------- resume

    def resume(self, run_id: str, owner: str | None = None,
               owner_alive: Callable[[str], bool] | None = None) -> RunRecord:
        """Pick up a run whose executing process died (embedded backend).

        Attempts that were RUNNING in the dead process are queued again as a
        new attempt without using up a retry; tasks that succeeded are never
        run again. Also re-sends anything a crash may have left unsent.
        """
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        if run.status.is_final:
            return run
        if run.owner and owner_alive is not None and run.owner != owner \
                and owner_alive(run.owner):
            raise RunStillActiveError(
                f"run {run_id} is still being executed by process {run.owner}; "
                "wait for it or stop that process first")
        if owner is not None:
            self.store.transact(lambda tx: tx.update_run(run_id, {"owner": owner}))
        self.recover(run_id, executors_dead=True)
        return run

    def retire_leftovers(self, run_id: str) -> None:
        """After a run ended, leave none of its tasks queued or running.

        For a process about to exit while attempts of an ended run are still
        busy in it (a body that overran its timeout, a retry waiting out its
        backoff): they cannot change the outcome, and the records must not
        show them running forever. Running attempts count as interrupted and
        are queued again; a queued task of an ended run is cancelled when
        its message is handled.
        """
        self.recover(run_id, executors_dead=True)
        for task in self.store.find_tasks(run_id, TaskStatus.QUEUED, len(self.dag.tasks)):
            self.handle(Message(run_id, task.task_id, task.attempt))

    def recover(self, run_id: str, executors_dead: bool = False,
                stale_after: float = 0.0) -> None:
        """Find work a crash or a lost message left behind, and redo it.

        Safe to call at any time: every step it takes is idempotent. With
        executors_dead, RUNNING attempts are re-queued at once instead of
        waiting for their lease to expire. A QUEUED task is sent again only
        when it has waited `stale_after` seconds past its due time, so a
        periodic poller does not duplicate messages that are still in flight.
        """
        now = self.clock()
        for task in self.store.get_tasks(run_id):
            if task.task_id != END_TASK_ID and task.task_id not in self.dag.tasks:
                continue
            if task.status is TaskStatus.QUEUED:
                due = max(task.not_before or 0.0, task.queued_at or 0.0)
                if due + stale_after <= now or executors_dead:
                    delay = max(0.0, (task.not_before or now) - now)
                    self.bus.publish(Message(run_id, task.task_id, task.attempt), delay)
            elif task.status is TaskStatus.RUNNING:
                if executors_dead:
                    self._requeue_interrupted(run_id, task)
                elif task.lease_until is not None and task.lease_until <= now:
                    self.check_lease(run_id, task.task_id, task.attempt)
            elif task.status is TaskStatus.WAITING and \
                    JoinProgress.of(task).complete(len(self.dag.deps_of(task.task_id))):
                self._check_join(run_id, task.task_id)
        self.fill_slots(run_id)

    def _requeue_interrupted(self, run_id: str, task: TaskRecord) -> None:
        now = self.clock()

        def requeue(tx: Transaction) -> Message | None:
            current = tx.get_tasks(run_id, [task.task_id]).get(task.task_id)
            if current is None or current.status is not TaskStatus.RUNNING \
                    or current.attempt != task.attempt:
                return None
            # The interrupted attempt does not count against retries: the
            # task did not fail, its process was killed.
            tx.update_task(run_id, task.task_id, {
                "status": TaskStatus.QUEUED.value, "attempt": current.attempt + 1,
                "interrupted": current.interrupted + 1,
                "queued_at": now, "lease_until": None, "not_before": None})
            return Message(run_id, task.task_id, current.attempt + 1)

        message = self.store.transact(requeue)
        if message is not None:
            self.bus.publish(message)

    # ---------------------------------------------------------------- queries

    def run_status(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    def task_records(self, run_id: str) -> list[TaskRecord]:
        """Task records in graph order, without the virtual end task."""
        by_id = {t.task_id: t for t in self.store.get_tasks(run_id)}
        return [by_id[t] for t in self.dag.order if t in by_id] + \
            [t for i, t in by_id.items() if i not in self.dag.tasks and i != END_TASK_ID]


def fail_run(store: Store, run_id: str, error: str, now: float) -> bool:
    """End a RUNNING run as FAILED from outside (cleanup of runs stuck too long).

    Needs no workflow definition: only the run record changes. Queued tasks
    are cancelled when their message arrives, running ones finish without
    starting anything new, exactly as after a task failure. Returns whether
    this call ended the run.
    """
    def end(tx: Transaction) -> bool:
        run = tx.get_run(run_id)
        if run is None or run.status is not RunStatus.RUNNING:
            return False
        tx.update_run(run_id, {"status": RunStatus.FAILED.value, "finished_at": now,
                               "error": error})
        return True

    return store.transact(end)


def _storable(task_id: str, value: Any) -> Any:
    """Results must survive every backend: JSON types only, checked here."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"task {task_id!r} returned a {type(value).__name__} that cannot be "
            f"stored as a result ({exc}); return JSON-compatible data "
            "(dict, list, str, number, bool, None)") from exc
