"""The engine: applies the rules of transitions.py through the ports.

Every backend runs this same code. It never imports a database or cloud
client; adapters behind `ports.Store`, `ports.Bus` and `ports.Executor` do
the I/O, and `transitions` decides. Each public method is one thing an
entry point does: `start` a run, `handle` a scheduling message,
`complete_trigger` with an external event's outcome, `poll` (the poller's
whole policy, in recovery.py), `resume` a run whose process died,
`pause`, `unpause` or `cancel` a run (control.py).
Once an attempt is claimed, bodies.py runs what it claimed.

A dependent with a single dependency is queued inside the completing
transaction. A join (several dependencies) is read after the commit by each
completer; the last completer to commit is sure to see it complete, and a
compare-and-set on the join lets exactly one of them queue it. The run ends
when the virtual end task, which depends on every sink, completes the same
way. Every message names its target (run, task, attempt), so a duplicate or
a late message finds the task already claimed or advanced and changes
nothing. See docs/design.md for the measurements behind this shape.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any, Callable, Iterable, Protocol

from function_flow import tracing
from function_flow.core import (bodies, chaining, completion, control, hooks, leftovers,
                                payloads, recovery, redrive, starts, transitions, versions,
                                waiting, watches)
from function_flow.core.definition import END_TASK_ID, TaskSpec
from function_flow.core.graph import Dag, RunGraph
from function_flow.core.listing import ordered_tasks
from function_flow.core.messages import Message, MessageKind
from function_flow.core.ports import (Blobs, Bus, Caller, Executor, InlineExecutor, Store,
                                      Transaction, Watcher)
from function_flow.core.records import RunRecord, TaskRecord
from function_flow.core.starts import new_run_id
from function_flow.core.step import Step
from function_flow.errors import RunNotFoundError, TransientBackendError

logger = logging.getLogger("function_flow.engine")

#: How long a synchronous attempt may run before its lease expires, when the
#: task sets no timeout (Cloud Functions 2nd gen stop at 60 minutes).
DEFAULT_LEASE_SECONDS = 3600.0
#: How long after its timeout an executor that stops bodies has to report
#: the stop, before the attempt's lease expires.
STOP_GRACE_SECONDS = 30.0


class Workflow(Protocol):
    """What the engine needs from a job definition (tasks.Job provides it)."""

    name: str
    dag: Dag
    max_parallel_tasks: int

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int, **item: Any) -> Any:
        """Run the task body and return its result (or a Pending).

        For an item of a foreach, `item` holds item= and item_key=.
        """


class Engine(control.Controls):
    """Advances the runs of one workflow. Thread-safe: it keeps no run state."""

    def __init__(self, workflow: Workflow, store: Store, bus: Bus, *,
                 clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 lease_check_messages: bool = True,
                 executor: Executor | None = None,
                 retry_after_overrun: float = 0.0,
                 caller: Caller | None = None, watcher: Watcher | None = None,
                 watch_every: float = watches.DEFAULT_EVERY_SECONDS,
                 watch_batch: int = watches.DEFAULT_BATCH,
                 blobs: Blobs | None = None,
                 inline_limit: int = payloads.DEFAULT_INLINE_LIMIT_BYTES) -> None:
        self.workflow = workflow
        #: The graph every step asks for dependencies and dependents: the
        #: definition plus what each run added (records carry their edges).
        self.graph = RunGraph(workflow.dag)
        self.store = store
        self.bus = bus
        self.clock = clock
        self.rng = rng or random.Random()
        #: The local bus can deliver delayed messages, so each attempt gets a
        #: message that checks its lease; on Pub/Sub the poller scans instead.
        self.lease_check_messages = lease_check_messages
        self.executor: Executor = executor or InlineExecutor()
        #: Calls the remote functions of remote tasks (function_flow/remote/).
        self.caller: Caller = caller or waiting.NoCaller()
        #: Where results and arguments over `inline_limit` bytes go (payloads.py).
        self.payloads = payloads.Payloads(blobs, inline_limit)
        #: Looks for the objects GCSFutures wait for (core/watches.py).
        self.watches = watches.Watches(watcher, watch_every, watch_batch)
        #: Where the executor cannot stop a body at its timeout (Cloud
        #: Functions), the retry of an attempt whose lease expired waits
        #: until this many seconds after that attempt started: by then the
        #: platform's request timeout has ended it.
        self.retry_after_overrun = retry_after_overrun
        parallel = max(1, int(workflow.max_parallel_tasks))
        #: 0 means the graph can never run more than max_parallel_tasks at
        #: once, so the run needs no slot records at all.
        self.slots = 0 if workflow.dag.width_bound <= parallel else parallel
        #: With a single sink, the sink's own completion ends the run; only
        #: several sinks need the virtual end task to join them (see
        #: Dag.end_deps for what else it may wait for).
        self.end_record = len(workflow.dag.end_deps) > 1
        versions.of(workflow.dag)  # the run's fingerprints, once, before any start

    def lease_of(self, spec: TaskSpec) -> float:
        """How long a claimed attempt is its executor's before others may act.

        Its timeout, plus a grace when the executor stops bodies at their
        timeout itself (so that its own TimeoutError, not the lease, ends
        the attempt); an hour without a timeout.
        """
        if not spec.timeout:
            return DEFAULT_LEASE_SECONDS
        if self.executor.stops_bodies:
            return spec.timeout + STOP_GRACE_SECONDS
        return spec.timeout

    @property
    def dag(self) -> Dag:
        """The workflow's definition (what `function-flow graph` draws)."""
        return self.graph.dag

    # ------------------------------------------------------------------ start

    @tracing.starts_run  # the run's span: the root of the run's one trace
    def start(self, args: dict[str, Any] | None = None, run_id: str | None = None,
              owner: str | None = None, source: str | None = None,
              callback_url: str | None = None) -> tuple[str, bool]:
        """Create a run and queue its root tasks. Returns (run_id, created).

        With a caller-chosen run id the call is idempotent: when the run
        exists with the same arguments, nothing is written and created is
        False; with other arguments, RunConflictError (core/starts.py). Raises
        TypeError or ValueError for arguments no backend can store or a bad
        callback_url.
        """
        if run_id is not None and (not isinstance(run_id, str)
                                   or not starts.RUN_ID.fullmatch(run_id)):
            raise ValueError(f"run_id {run_id!r} must be {starts.RUN_ID_RULE}")
        hook_ids, callback_url = hooks.for_start(self.dag, callback_url)
        given = dict(args or {})
        if run_id is not None:  # before any write: a conflicting start changes nothing
            existing = self.store.get_run(run_id)
            if existing is not None:
                return starts.repeated(self, existing, given, callback_url)
        run_id = run_id or new_run_id(self.workflow.name)
        args_key = payloads.args_key(run_id)
        args = self.payloads.store("the run's arguments", given, args_key, allow_nan=False)
        now = self.clock()
        records, slots, messages = transitions.first_attempts(self.graph, run_id, now,
                                                              self.slots)
        if self.end_record:
            records.append(TaskRecord(task_id=END_TASK_ID))
        records += [TaskRecord(task_id=hook_id) for hook_id in hook_ids]
        run = RunRecord(run_id=run_id, job_name=self.workflow.name, args=args,
                        slots=self.slots, created_at=now, owner=owner, source=source,
                        hooks=hook_ids or None, callback_url=callback_url,
                        traceparent=tracing.traceparent(), **versions.recorded(self.dag))
        try:
            created = self.store.create_run(run, records, slots)
        except TransientBackendError:
            # Several starts with one run id at once: one of them won.
            if self.store.get_run(run_id) is None:
                raise
            created = False
        if not created:  # a start with the same run id at the same time won
            existing = self.store.get_run(run_id)
            if existing is None or not self.payloads.references(existing.args, args_key):
                self.payloads.discard(args)  # the run exists with other arguments
            return (run_id, False) if existing is None else \
                starts.repeated(self, existing, given)
        try:
            for message in messages:
                self.bus.publish(message)
        except Exception:
            # A run whose roots were never sent would be found by the poller
            # and executed after its caller was told the start failed (and
            # may have started it again). A failed start leaves no run.
            starts.discard_failed(self, run_id)
            raise
        logger.info("run %s started: %d tasks", run_id, len(self.dag.tasks))
        return run_id, True

    # --------------------------------------------------------------- messages

    def handle(self, message: Message) -> str:
        """Act on one scheduling message; returns what happened, for logs.

        Never raises for a message that cannot be acted on (unknown run or
        task, duplicate, stale attempt): those are answered and dropped.
        Errors of the store or bus propagate so the message is redelivered.
        """
        if message.task_id == END_TASK_ID:
            return "unknown_task"
        if message.kind is MessageKind.CHECK_LEASE:
            return recovery.check_lease(self, message.run_id, message.task_id,
                                        message.attempt)
        return chaining.deliver(self, message.run_id, message.task_id, message.attempt)

    def execute(self, run_id: str, task_id: str, attempt: int) -> str:
        """Claim attempt `attempt` of a task and, if this call won, run it."""
        return self.after_claim(self.claim(run_id, task_id, attempt))

    def claim(self, run_id: str, task_id: str, attempt: int) -> chaining.Claim:
        """The claim's transaction (see `after_claim` for what follows its commit)."""
        now, since = self.clock(), tracing.now()
        lease = DEFAULT_LEASE_SECONDS

        def take(tx: Transaction) -> tuple[Step, TaskRecord | None]:
            nonlocal lease
            task = tx.get_tasks(run_id, [task_id]).get(task_id)
            spec = self.graph.spec(task_id, task)
            if task is None or spec is None:
                return Step("unknown_task"), None
            lease = self.lease_of(spec)
            step = transitions.claim(task, run_id, attempt, now, lease)
            step.write_to(tx, run_id)
            return step, task

        # Only the task's own record is read and written: duplicates of one
        # message fail fast on a changed record instead of locking it.
        step, task = self.store.transact(take, compare_and_set=True)
        return chaining.Claim(run_id, task_id, attempt, step, task, now, since, lease)

    def after_claim(self, claimed: chaining.Claim) -> str:
        """Once the claim has committed: look at the run, then run the body."""
        run_id, task_id, attempt, step, task, now, since, lease, run = claimed
        if step.verdict == "unknown_task":
            run = self.store.get_run(run_id)
            if run is None:
                logger.warning("message for unknown run %r dropped", run_id)
                return "unknown_run"
            if versions.check(self, run) is not None:  # a task this definition removed
                return "blocked"
            logger.warning("message for unknown task %r of run %s dropped", task_id, run_id)
            return step.verdict
        assert task is not None
        if step.verdict in ("claimed", "early"):
            # The claim read only the task (but a chain's step, see
            # chaining.py): look at the run after it committed. If the run
            # ended meanwhile, the attempt never runs.
            run = run or self.store.get_run(run_id)
            if run is None or (run.status.is_final and not hooks.is_hook(task_id)):
                leftovers.cancel_claim(self, run_id, task_id, attempt)
                return f"run_{run.status.value.lower()}" if run else "unknown_run"
            if versions.refused(self, run, step.verdict, task_id, attempt):
                return "blocked"  # started with a definition this one changes
            if run.paused_at is not None and not run.status.is_final \
                    and step.verdict == "claimed":  # (a hook runs after the end)
                return control.hold(self, run_id, task_id, attempt)  # resume sends it again
        if step.verdict == "redelivered" or step.verdict == "stale" and step.messages:
            # A duplicate (rare): what it would repeat follows this definition.
            if versions.refused(self, self.store.get_run(run_id), step.verdict, task_id,
                                attempt):
                return "blocked"
        if step.verdict == "redelivered":
            completion.advance_after_success(self, run_id, task_id)
            return step.verdict
        completion.publish(self, step)
        if step.verdict != "claimed":
            logger.info("run %s task %s attempt %d: %s, nothing to do",
                        run_id, task_id, attempt, step.verdict)
            return step.verdict
        if self.lease_check_messages:
            self.bus.publish(Message(run_id, task_id, attempt, MessageKind.CHECK_LEASE),
                             lease)
        spec = self.graph.spec(task_id, task)
        assert spec is not None and run is not None
        return tracing.claimed(run, task_id, attempt, since, lambda: bodies.run_claimed(
            self, run, task_id, spec, attempt, task, now + lease))

    # ------------------------------------------------------------- completion

    def complete_trigger(self, trigger_id: str, *, ok: bool, value: Any = None,
                         error: str | None = None, retry: bool = True,
                         record_block: bool = True) -> str:
        """Complete the task attempt waiting for `trigger_id` with an event's outcome.

        The trigger is deleted in the same transaction that records the
        outcome; a duplicate event finds it gone ("unknown_trigger").
        retry=False makes a failure final (a rejected approval).
        record_block=False: refused on a definition that may not advance the
        run, it leaves the run unmarked (a person's `--file`, not a deployment).
        """
        trigger = self.store.get_trigger(trigger_id)
        if trigger is None:
            logger.warning("external event for unknown trigger %r: nothing waits for it (a "
                           "duplicate of one that completed its task, one after its wait "
                           "timed out, or never issued); acknowledged", trigger_id)
            return "unknown_trigger"
        run_id, task_id, attempt = trigger.run_id, trigger.task_id, trigger.attempt
        with tracing.completing(self.store, trigger, None if ok else error or "failed"):
            versions.admit_event(self, trigger, record_block)  # blocked: RunBlockedError
            outcome = self.complete(run_id, task_id, attempt, ok=ok, value=value,
                                    error=error, trigger_id=trigger_id, retry=retry)
            logger.info("external event: run %s task %s attempt %d: %s",
                        run_id, task_id, attempt, outcome)
        return outcome

    def complete(self, run_id: str, task_id: str, attempt: int, *, ok: bool,
                 value: Any = None, error: str | None = None,
                 claimed: TaskRecord | None = None, claimed_until: float | None = None,
                 trigger_id: str | None = None, not_before: float = 0.0,
                 retry: bool = True, cause: BaseException | None = None,
                 output: Any = None) -> str:
        """Record the outcome of one attempt, exactly once, and advance the run."""
        return completion.complete(self, run_id, task_id, attempt, ok=ok, value=value,
                                   error=error, claimed=claimed, claimed_until=claimed_until,
                                   trigger_id=trigger_id, not_before=not_before,
                                   retry=retry, cause=cause, output=output)

    def complete_watches(self, path: str) -> str:
        """An object now exists at gs:// `path`: complete the waits for a prefix of it."""
        return watches.complete_covering(self, path)

    def follow_up(self, run_id: str, step: Step) -> None:
        """Work that happens after a commit: messages, joins, free slots."""
        completion.follow_up(self, run_id, step)

    def check_join(self, run_id: str, join_id: str) -> None:
        """Queue a join (or end the run) if all its dependencies are done."""
        completion.check_join(self, run_id, join_id)

    def fill_slots(self, run_id: str) -> None:
        """Give free concurrency slots to READY tasks."""
        completion.fill_slots(self, run_id)

    # ------------------------------------------- recovery (see recovery.py)

    def poll(self, stale_after: float = recovery.POLLER_STALE_AFTER_SECONDS,
             max_runs: int = recovery.POLLER_MAX_RUNS,
             run_ids: Iterable[str] | None = None) -> recovery.PollReport:
        """The poller's whole policy: due timers, expired leases, stalled runs."""
        return recovery.poll(self, stale_after=stale_after, max_runs=max_runs,
                             run_ids=run_ids)

    def recover(self, run_id: str, executors_dead: bool = False,
                stale_after: float = 0.0) -> None:
        """Find work a crash or a lost message left behind in one run, and redo it."""
        recovery.recover(self, run_id, executors_dead=executors_dead,
                         stale_after=stale_after)

    def resume(self, run_id: str, owner: str | None = None,
               owner_alive: Callable[[str], bool] | None = None) -> RunRecord:
        """Pick up a run whose executing process died (embedded backend)."""
        return recovery.resume(self, run_id, owner=owner, owner_alive=owner_alive)

    def redrive(self, run_id: str) -> RunRecord:
        """Restart a FAILED or CANCELLED run from the tasks that did not succeed."""
        return redrive.redrive(self, run_id)

    def retire_leftovers(self, run_id: str) -> None:
        """After a run ended, leave none of its tasks queued or running."""
        recovery.retire_leftovers(self, run_id)

    # ---------------------------------------------------------------- queries

    def run_status(self, run_id: str) -> RunRecord:
        run = self.store.get_run(run_id)
        if run is None:
            raise RunNotFoundError(run_id)
        return run

    def task_records(self, run_id: str) -> list[TaskRecord]:
        """Task records in graph order, without the virtual end task."""
        return ordered_tasks(self.store.get_tasks(run_id), self.dag.order)
