"""A deterministic harness that drives the real engine over the real SQLite store.

The property tests in test_engine_properties.py generate a `Scenario` (a
random DAG, retries, planned failures, planned crashes, a delivery seed) and
hand it to `Harness`, which plays the part of Pub/Sub and of the machines:

- `PoolBus` does not deliver on publish. Messages wait in a pool; the harness
  picks the next one at random, delivers some twice, re-injects long-delivered
  ones late, and honours delays against a `FakeClock` that it advances only
  when nothing is due (so leases expire only for executors that are dead).
- `RecordingStore` wraps the real `SqliteStore`. It logs every committed
  write in commit order, keeps a shadow of each task's status and attempt, and
  checks the invariants at every commit. It can also crash the caller at a
  chosen operation: inside a transaction (the transaction rolls back) or right
  after its commit (so follow-up messages are lost). Publishes can crash too.
- The workflow's bodies log (task, attempt), check that every dependency is
  SUCCEEDED in the store, count concurrent executions, and fail or crash on
  planned attempts.

A crashed delivery is put back into the pool, as Pub/Sub redelivers a message
its function never acknowledged. When the pool is empty and the run has not
ended, the harness does what the deployed poller does: lets time pass and
calls `engine.recover(run_id)`.

Violations are collected rather than raised where they are detected, because
an assertion raised inside a task body would be caught by the engine and
recorded as an ordinary task failure.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import random
import tempfile
import threading
import traceback
from typing import Any, Callable, Iterable

from function_flow.core.ports import Bus
from function_flow.core.graph import END_TASK_ID, Backoff, Dag, TaskSpec, make_spec
from function_flow.core.engine import Engine
from function_flow.core.recovery import POLLER_STALE_AFTER_SECONDS
from function_flow.core.transitions import LEGAL_TRANSITIONS
from function_flow.core.records import Message, MessageKind, RunStatus, TaskStatus
from function_flow.store.sqlite import SqliteStore

#: Lease of every attempt (the task timeout), in fake seconds.
LEASE = 50.0
#: Results are kept small: the value of a task is 1 + the sum of its deps'.
MODULUS = 1_000_003

W, RD, Q, R = TaskStatus.WAITING, TaskStatus.READY, TaskStatus.QUEUED, TaskStatus.RUNNING
S, F, C = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELLED


class SimulatedCrash(BaseException):
    """The executor died here. BaseException, so the engine cannot catch it."""


class PlannedFailure(Exception):
    """A task body failing on purpose (an ordinary, retryable task error)."""


def task_name(index: int) -> str:
    return f"t{index:02d}"


@dataclasses.dataclass
class Scenario:
    """Everything one example needs; all of it is plain data, so it prints well."""

    deps: list[list[int]]                 # deps[i] = indices < i
    max_parallel: int
    retries: list[int]
    #: task index -> attempts on which its body raises
    fail_attempts: dict[int, frozenset[int]] = dataclasses.field(default_factory=dict)
    #: (task index, attempt) whose body dies half way
    body_crashes: frozenset[tuple[int, int]] = frozenset()
    #: (task index, attempt) whose body runs about as long as its lease, or
    #: longer, while other deliveries go on (sequential mode only)
    slow_bodies: frozenset[tuple[int, int]] = frozenset()
    #: operation number -> "in_tx" | "after_commit" (publishes crash before sending)
    crash_ops: dict[int, str] = dataclasses.field(default_factory=dict)
    seed: int = 0
    duplicate_rate: float = 0.0
    reinject_rate: float = 0.0
    recover_rate: float = 0.0             # the poller running in the middle of things
    threads: int = 0                      # 0: deliver one message at a time
    #: sequential mode: chance that a running body lets other deliveries
    #: happen (nested, in the same thread) before it returns, as other
    #: instances would while it runs; this is what makes bodies overlap
    interleave_rate: float = 0.0
    lease_check_messages: bool = True
    #: when the run stalls, call engine.resume() instead of engine.recover()
    resume_on_stall: bool = False

    @property
    def n(self) -> int:
        return len(self.deps)

    def permanently_failing(self) -> set[int]:
        return {i for i, attempts in self.fail_attempts.items()
                if set(range(1, self.retries[i] + 2)) <= set(attempts)}


class FakeClock:
    """Seconds that pass only when the harness says so."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance_to(self, moment: float) -> None:
        with self._lock:
            self._now = max(self._now, moment)


@dataclasses.dataclass
class _Pending:
    due: float
    seq: int
    message: Message
    generation: int = 0   # how many times this copy descends from a duplicate


@dataclasses.dataclass
class Transition:
    seq: int
    task_id: str
    old: TaskStatus
    new: TaskStatus
    old_attempt: int
    new_attempt: int
    #: RUNNING -> QUEUED because the executor was declared dead (resume),
    #: which does not use up a retry
    interrupted: bool = False


class Recorder:
    """Commit-ordered log of everything the engine wrote, plus a shadow state.

    Every committed transaction goes through `record_commit` under one lock,
    so the log's order is the commit order even with several threads.
    """

    def __init__(self, scenario: Scenario, dag: Dag, slots: int) -> None:
        self.scenario = scenario
        self.dag = dag
        self.slots = slots
        self.lock = threading.RLock()
        self.seq = 0
        self.violations: list[str] = []
        self.status: dict[str, TaskStatus] = {}
        self.attempt: dict[str, int] = {}
        self.slot_holder: dict[int, str | None] = {}
        self.slot_holders_ever: dict[int, set[str]] = collections.defaultdict(set)
        self.transitions: list[Transition] = []
        self.transition_keys: set[tuple[str, int, TaskStatus, TaskStatus]] = set()
        self.claim_seq: dict[tuple[str, int], int] = {}
        #: record -> set of actors (tasks whose transition wrote it)
        self.writers: dict[tuple, set[str]] = collections.defaultdict(set)
        self.write_count: collections.Counter = collections.Counter()
        self.run_updates: list[tuple[int, str, dict[str, Any]]] = []
        self.final_seq: int | None = None
        self.final_status: RunStatus | None = None
        self.failed_seq: int | None = None
        self.max_running_records = 0

    def violation(self, text: str) -> None:
        with self.lock:
            self.violations.append(text)

    def record_create(self, tasks: Iterable[Any], slots: dict[int, str]) -> None:
        with self.lock:
            for task in tasks:
                self.status[task.task_id] = task.status
                self.attempt[task.task_id] = task.attempt
            for slot in range(self.slots):
                self.slot_holder[slot] = slots.get(slot)
                if slots.get(slot):
                    self.slot_holders_ever[slot].add(slots[slot])

    def record_commit(self, writes: list[tuple]) -> None:
        with self.lock:
            self.seq += 1
            seq = self.seq
            if not writes:
                return
            # The actor: the task whose own record the transaction advances.
            # Writes into other tasks' records are deps_done blind writes, or
            # a READY task queued with a slot: the heir of a finishing task's
            # slot, which advances its own record (alone, in fill_slots).
            heirs = {w[1] for w in writes if w[0] == "task" and "slot" in w[2]
                     and w[2].get("status") == Q.value and self.status.get(w[1]) is RD
                     and not any(k.startswith("deps_done.") for k in w[2])}
            actors = [w[1] for w in writes if w[0] == "task" and w[1] not in heirs
                      and not any(k.startswith("deps_done.") for k in w[2])] or sorted(heirs)
            if len(actors) != 1 or len(heirs) > 1:
                self.violations.append(
                    f"commit {seq}: a transaction must advance exactly one task's own "
                    f"record (and hand its slot to at most one READY task), this one "
                    f"advanced {actors}, heirs {sorted(heirs)}: {writes}")
            actor = actors[0] if actors else "?"
            for write in writes:
                if write[0] == "task":
                    writer = write[1] if write[1] in heirs else actor
                    self._task_write(seq, writer, write[1], write[2])
                elif write[0] == "run":
                    self._run_write(seq, actor, write[1])
                else:
                    self._slot_write(actor, write[1], write[2])
            self._check_parallelism(seq)

    def _task_write(self, seq: int, actor: str, task_id: str, fields: dict[str, Any]) -> None:
        key = ("task", task_id)
        self.writers[key].add(actor)
        self.write_count[(key, actor)] += 1
        if "status" not in fields:
            return
        old, old_attempt = self.status[task_id], self.attempt[task_id]
        new = TaskStatus(fields["status"])
        new_attempt = fields.get("attempt", old_attempt)
        rule = LEGAL_TRANSITIONS.get((old, new))
        if rule is None or ((old, new) == (W, S)) != (task_id == END_TASK_ID):
            self.violations.append(
                f"commit {seq}: illegal transition of {task_id}: {old.value} -> {new.value}")
        expected = {"same": old_attempt, "next": old_attempt + 1, "one": 1}.get(rule)
        if expected is not None and new_attempt != expected:
            self.violations.append(
                f"commit {seq}: {task_id} {old.value} -> {new.value} set attempt "
                f"{new_attempt}, expected {expected}")
        tkey = (task_id, new_attempt, old, new)
        if tkey in self.transition_keys:
            self.violations.append(
                f"commit {seq}: transition {old.value} -> {new.value} of {task_id} "
                f"attempt {new_attempt} committed twice")
        self.transition_keys.add(tkey)
        self.transitions.append(Transition(seq, task_id, old, new, old_attempt, new_attempt,
                                           "interrupted" in fields))
        if (old, new) == (Q, R):
            self.claim_seq[(task_id, new_attempt)] = seq
            # A claim committed after the run ended is allowed: claims are
            # compare-and-set on the task alone, and the claimer then reads
            # the run and cancels the attempt unrun. check() makes sure no
            # body ran for such a claim.
        self.status[task_id], self.attempt[task_id] = new, new_attempt

    def _run_write(self, seq: int, actor: str, fields: dict[str, Any]) -> None:
        self.writers[("run",)].add(actor)
        self.write_count[(("run",), actor)] += 1
        self.run_updates.append((seq, actor, dict(fields)))
        if "status" in fields and RunStatus(fields["status"]).is_final:
            if self.final_seq is not None:
                self.violations.append(
                    f"commit {seq}: run status set to {fields['status']} after it already "
                    f"ended {self.final_status.value} at commit {self.final_seq}")
                return
            self.final_seq, self.final_status = seq, RunStatus(fields["status"])
            if self.final_status is RunStatus.FAILED:
                self.failed_seq = seq
        elif self.final_seq is not None:
            self.violations.append(f"commit {seq}: run record written after it ended: {fields}")

    def _slot_write(self, actor: str, slot: int, holder: str | None) -> None:
        key = ("slot", slot)
        self.writers[key].add(actor)
        self.write_count[(key, actor)] += 1
        self.slot_holder[slot] = holder
        if holder is not None:
            self.slot_holders_ever[slot].add(holder)

    def _check_parallelism(self, seq: int) -> None:
        running = [t for t, s in self.status.items() if s is R]
        self.max_running_records = max(self.max_running_records, len(running))
        if len(running) > self.scenario.max_parallel:
            self.violations.append(
                f"commit {seq}: {len(running)} tasks RUNNING ({running}), "
                f"max_parallel_tasks is {self.scenario.max_parallel}")
        if self.slots:
            holders = [h for h in self.slot_holder.values() if h is not None]
            if len(holders) != len(set(holders)):
                self.violations.append(f"commit {seq}: a task holds two slots: {self.slot_holder}")
            for task_id in running:
                if task_id not in holders:
                    self.violations.append(
                        f"commit {seq}: {task_id} is RUNNING without holding a slot")


class _RecordingTx:
    """Passes every call to the real transaction and notes the writes."""

    def __init__(self, inner: Any, writes: list[tuple]) -> None:
        self._inner = inner
        self._writes = writes

    def get_run(self, run_id: str) -> Any:
        return self._inner.get_run(run_id)

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> Any:
        return self._inner.get_tasks(run_id, task_ids)

    def get_run_and_tasks(self, run_id: str, task_ids: Iterable[str]) -> Any:
        return self._inner.get_run_and_tasks(run_id, task_ids)

    def get_slot(self, run_id: str, slot: int) -> Any:
        return self._inner.get_slot(run_id, slot)

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self._inner.update_run(run_id, fields)
        self._writes.append(("run", dict(fields)))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self._inner.update_task(run_id, task_id, fields)
        self._writes.append(("task", task_id, dict(fields)))

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        self._inner.set_slot(run_id, slot, holder)
        self._writes.append(("slot", slot, holder))

    def add_task(self, run_id: str, record: Any) -> None:
        self._inner.add_task(run_id, record)

    def put_trigger(self, trigger_id: str, run_id: str, task_id: str, attempt: int) -> None:
        self._inner.put_trigger(trigger_id, run_id, task_id, attempt)

    def delete_trigger(self, trigger_id: str) -> None:
        self._inner.delete_trigger(trigger_id)


class Crasher:
    """Numbers the operations of deliveries and crashes the planned ones."""

    def __init__(self, plan: dict[int, str]) -> None:
        self.plan = dict(plan)
        self.ops = 0
        self.fired: list[tuple[int, str, str]] = []
        self.lock = threading.Lock()
        self.local = threading.local()

    def armed(self) -> bool:
        return getattr(self.local, "armed", False)

    def next(self, what: str) -> str | None:
        """Count one operation; return the crash mode planned for it, if any."""
        if not self.armed():
            return None
        with self.lock:
            op = self.ops
            self.ops += 1
            mode = self.plan.get(op)
            if mode is not None:
                mode = "before_publish" if what.startswith("publish") else mode
                self.fired.append((op, mode, what))
            return mode


class RecordingStore:
    """The real SqliteStore, with every commit recorded and planned crashes."""

    def __init__(self, inner: SqliteStore, recorder: Recorder, crasher: Crasher) -> None:
        self.inner = inner
        self.recorder = recorder
        self.crasher = crasher

    def transact(self, fn: Callable[[Any], Any], *, compare_and_set: bool = False) -> Any:
        if getattr(self.crasher.local, "body_died", False):
            # The engine catches whatever a body raises and records it; a
            # body that died takes its executor with it, so that recording
            # never commits.
            self.crasher.local.body_died = False
            raise SimulatedCrash("the executor died with its body")
        mode = self.crasher.next("transact")
        writes: list[tuple] = []

        def recorded(tx: Any) -> Any:
            writes.clear()  # the store may run the function more than once
            result = fn(_RecordingTx(tx, writes))
            if mode == "in_tx":
                raise SimulatedCrash("crash inside a transaction (rolled back)")
            return result

        # One lock over commit and log keeps the log in commit order.
        with self.recorder.lock:
            result = self.inner.transact(recorded, compare_and_set=compare_and_set)
            self.recorder.record_commit(writes)
        if mode == "after_commit":
            raise SimulatedCrash("crash right after a commit")
        return result

    def create_run(self, run: Any, tasks: list[Any], slots: dict[int, str | None]) -> bool:
        with self.recorder.lock:
            created = self.inner.create_run(run, tasks, slots)
            if created:
                self.recorder.record_create(tasks, slots)
        return created

    def __getattr__(self, name: str) -> Any:  # plain reads and the rest
        return getattr(self.inner, name)


class PoolBus(Bus):
    """A bus that only collects messages; the harness decides what arrives when."""

    def __init__(self, clock: FakeClock, crasher: Crasher) -> None:
        self.clock = clock
        self.crasher = crasher
        self.pool: list[_Pending] = []
        self.cond = threading.Condition()
        self.seq = 0

    def publish(self, message: Message, delay: float = 0.0) -> None:
        if self.crasher.next(f"publish {message}") is not None:
            raise SimulatedCrash(f"crash before publishing {message}")
        self.put(message, self.clock.now() + max(0.0, delay))

    def put(self, message: Message, due: float, generation: int = 0) -> None:
        with self.cond:
            self.seq += 1
            self.pool.append(_Pending(due, self.seq, message, generation))
            self.cond.notify_all()


class HarnessWorkflow:
    """engine.Workflow over a generated DAG, with instrumented bodies."""

    def __init__(self, harness: "Harness", dag: Dag, max_parallel: int) -> None:
        self.name = "prop"
        self.dag = dag
        self.max_parallel_tasks = max_parallel
        self.h = harness

    def invoke(self, spec: TaskSpec, run_id: str, attempt: int) -> Any:
        h = self.h
        task_id = spec.task_id
        index = int(task_id[1:])
        rec = h.recorder
        with h.body_lock:
            key = (task_id, attempt)
            if key in h.bodies:
                rec.violation(f"body of {task_id} attempt {attempt} started twice")
            start = h.clock.now()
            h.bodies[key] = {"outcome": "started", "start": start}
            h.executing[key] = start
            # A body whose lease has run out counts as dead (its function
            # timed out), whether or not it is still unwinding here.
            live = [k for k, began in h.executing.items() if start < began + LEASE]
            h.max_executing = max(h.max_executing, len(live))
            if len(live) > h.scenario.max_parallel:
                rec.violation(f"{len(live)} bodies executing at once while starting "
                              f"{task_id} attempt {attempt}: {live}; max_parallel_tasks is "
                              f"{h.scenario.max_parallel}")
        try:
            if rec.failed_seq is not None and h.scenario.threads == 0:
                rec.violation(f"body of {task_id} attempt {attempt} started after the "
                              f"run FAILED (commit {rec.failed_seq})")
            # Invariant 1, checked against the store, from inside the body.
            # The harness's own graph, not the engine's: a check that trusted
            # the engine's idea of the dependencies could not catch it forgetting one.
            wanted = h.dag.tasks[task_id].deps
            found = {d.task_id: d for d in h.store.inner.get_tasks(run_id, wanted)}
            total = 1
            for dep in wanted:
                record = found.get(dep)
                if record is None or record.status is not TaskStatus.SUCCEEDED:
                    rec.violation(
                        f"body of {task_id} attempt {attempt} started while dependency "
                        f"{dep} is {record.status.value if record else 'missing'}")
                    continue
                total += int(record.result["value"])  # like job.get_task_result(dep)
            if h.scenario.threads:
                h.yield_thread()
            else:
                h.interleave()
            if (index, attempt) in h.scenario.slow_bodies:
                h.overrun(task_id, attempt, start)
            if (index, attempt) in h.scenario.body_crashes:
                h.bodies[key]["outcome"] = "crashed"
                h.crasher.local.body_died = True
                raise SimulatedCrash(f"executor of {task_id} attempt {attempt} died")
            if attempt in h.scenario.fail_attempts.get(index, ()):
                h.bodies[key]["outcome"] = "raised"
                raise PlannedFailure(f"{task_id} fails attempt {attempt} on purpose")
            value = {"task": task_id, "attempt": attempt, "value": total % MODULUS}
            h.bodies[key]["outcome"] = "ok"
            h.bodies[key]["value"] = value
            return value
        finally:
            with h.body_lock:
                del h.executing[key]
                h.bodies[key]["expired"] = h.clock.now() >= start + LEASE


def build_dag(scenario: Scenario) -> Dag:
    backoff = Backoff(initial=1.0, maximum=8.0, multiplier=2.0)
    specs = [make_spec(task_name(i), [task_name(d) for d in deps], None,
                       retries=scenario.retries[i], retry_backoff=backoff, timeout=LEASE)
             for i, deps in enumerate(scenario.deps)]
    return Dag("prop", specs)


class Harness:
    """Runs one scenario to its end and judges it (see module docstring)."""

    def __init__(self, scenario: Scenario, directory: str,
                 engine_factory: Callable[..., Engine] = Engine) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.clock = FakeClock()
        self.dag = build_dag(scenario)
        self.workflow = HarnessWorkflow(self, self.dag, scenario.max_parallel)
        self.crasher = Crasher(scenario.crash_ops)
        self.bus = PoolBus(self.clock, self.crasher)
        self.sqlite = SqliteStore(os.path.join(directory, "prop.db"))
        probe = Engine(self.workflow, self.sqlite, self.bus)  # only to learn the slot count
        self.recorder = Recorder(scenario, self.dag, probe.slots)
        self.store = RecordingStore(self.sqlite, self.recorder, self.crasher)
        self.engine = engine_factory(self.workflow, self.store, self.bus, clock=self.clock.now,
                                     rng=random.Random(scenario.seed + 1),
                                     lease_check_messages=scenario.lease_check_messages)
        self.body_lock = threading.Lock()
        self.bodies: dict[tuple[str, int], dict[str, Any]] = {}
        self.executing: dict[tuple[str, int], float] = {}
        self.max_executing = 0
        self.crashed_deliveries: set[tuple[str, int]] = set()
        self.delivered: list[Message] = []
        self.trace: list[str] = []
        self.steps = 0
        self.recover_rounds = 0
        self.reinjected = 0
        self.errors: list[str] = []
        self.run_id = ""
        self.busy = 0
        self.stopped = False
        self.depth = 0

    # ------------------------------------------------------------ delivery

    @property
    def max_steps(self) -> int:
        attempts = max(self.scenario.retries, default=0) + 2
        return 200 + 60 * (self.scenario.n + 1) * attempts

    def yield_thread(self) -> None:
        """Give other threads a chance to interleave with a running body."""
        threading.Event().wait(0.0005)

    def overrun(self, task_id: str, attempt: int, start: float) -> None:
        """A body that runs for about its whole lease, or longer (sequential mode).

        Time passes while it runs, and other deliveries happen meanwhile: its
        lease check may fire and its next attempt may run before it returns.
        """
        self.clock.advance_to(start + LEASE + self.rng.uniform(-15.0, 20.0))
        self._log(f"{task_id} a{attempt} still running at t="
                  f"{self.clock.now() - 1_000_000.0:.2f} (lease ends "
                  f"{start + LEASE - 1_000_000.0:.2f})")
        self.interleave(force=True)

    def interleave(self, force: bool = False) -> None:
        """Deliver a few due messages while a body runs (sequential mode).

        Only messages already due: the clock must not move while a live
        executor holds a lease, or its lease would expire under it.
        """
        if self.depth >= 4 or (not force and self.rng.random() >= self.scenario.interleave_rate):
            return
        self.depth += 1
        try:
            for _ in range(self.rng.randint(1, 6 if force else 3)):
                with self.bus.cond:
                    item = self._pick() if self.bus.pool else None
                if item is None:
                    return
                self._step_budget()
                self._log(f"(inside a running body, depth {self.depth})")
                self._deliver(item)
                self._check_store_parallelism()
        finally:
            self.depth -= 1

    def _poll(self) -> None:
        """The poller runs while deliveries go on; it may crash too."""
        armed = self.crasher.armed()
        self.crasher.local.armed = True
        try:
            self.engine.poll(stale_after=POLLER_STALE_AFTER_SECONDS)
            self._log("poller: recover")
        except SimulatedCrash as crash:
            self._log(f"poller: recover CRASHED ({crash})")
        finally:
            self.crasher.local.armed = armed

    def _stale_completion(self) -> None:
        """A late external completion of an attempt that already finished."""
        with self.recorder.lock:
            done = [(t.task_id, t.old_attempt) for t in self.recorder.transitions
                    if t.old is R and t.task_id != END_TASK_ID]
        if not done:
            return
        task_id, attempt = self.rng.choice(done)
        ok = self.rng.random() < 0.5
        before = len(self.recorder.transitions)
        outcome = self.engine.complete(self.run_id, task_id, attempt, ok=ok,
                                       value={"late": True}, error="late failure")
        self._log(f"late complete({task_id}, a{attempt}, ok={ok}) -> {outcome}")
        if outcome != "stale" or len(self.recorder.transitions) != before:
            self.recorder.violation(
                f"a late completion of finished attempt {attempt} of {task_id} was "
                f"not ignored: {outcome}")

    def _log(self, text: str) -> None:
        with self.bus.cond:
            self.trace.append(f"[{self.steps}] t={self.clock.now() - 1_000_000.0:.2f} {text}")

    def _deliver(self, item: _Pending) -> None:
        message = item.message
        armed = self.crasher.armed()
        self.crasher.local.armed = True
        try:
            outcome = self.engine.handle(message)
        except SimulatedCrash as crash:
            outcome = f"CRASH ({crash}); redelivered later"
            if message.kind is MessageKind.RUN_TASK:
                with self.body_lock:
                    self.crashed_deliveries.add((message.task_id, message.attempt))
            # Not acknowledged: Pub/Sub delivers it again after the ack deadline.
            self.bus.put(message, self.clock.now() + self.rng.uniform(0.0, 10.0),
                         item.generation)
        finally:
            self.crasher.local.armed = armed
        self._log(f"deliver {message.task_id} a{message.attempt} {message.kind.value} "
                  f"(copy gen {item.generation}) -> {outcome}")

    def _pick(self) -> _Pending | None:
        """Choose the next message (caller holds bus.cond); None if none is due."""
        pool = self.bus.pool
        now = self.clock.now()
        due = [i for i, p in enumerate(pool) if p.due <= now]
        if not due:
            return None
        item = pool.pop(self.rng.choice(due))
        self.delivered.append(item.message)
        if item.generation < 2 and self.rng.random() < self.scenario.duplicate_rate:
            # Half the copies are due at once: with threads, or inside a
            # running body, the same message then reaches two instances at once.
            later = self.rng.choice([0.0, self.rng.uniform(0.0, 20.0)])
            self.bus.seq += 1
            pool.append(_Pending(now + later, self.bus.seq, item.message,
                                 item.generation + 1))
        if self.delivered and self.reinjected < 2 * self.scenario.n + 2 \
                and self.rng.random() < self.scenario.reinject_rate:
            self.reinjected += 1
            self.bus.seq += 1
            pool.append(_Pending(now + self.rng.uniform(0.0, 5.0), self.bus.seq,
                                 self.rng.choice(self.delivered), 2))
        return item

    def _advance_clock(self) -> None:
        """Nothing is due: let time pass until the next message is (caller holds cond)."""
        self.clock.advance_to(min(p.due for p in self.bus.pool))

    def _step_budget(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise AssertionError(
                f"liveness: run {self.run_id} still going after {self.max_steps} "
                f"deliveries; last steps:\n" + "\n".join(self.trace[-30:]))

    def _drain_sequential(self) -> None:
        while True:
            with self.bus.cond:
                if not self.bus.pool:
                    return
                item = self._pick()
                if item is None:
                    self._advance_clock()
                    continue
            self._step_budget()
            if self.rng.random() < self.scenario.recover_rate:
                self._poll()
            if self.rng.random() < self.scenario.reinject_rate:
                self._stale_completion()
            self._deliver(item)
            self._check_store_parallelism()

    def _worker(self) -> None:
        try:
            while True:
                with self.bus.cond:
                    while True:
                        if self.stopped:
                            return
                        if not self.bus.pool and self.busy == 0:
                            self.bus.cond.notify_all()
                            return
                        item = self._pick() if self.bus.pool else None
                        if item is not None:
                            self.busy += 1
                            self._step_budget()
                            break
                        if self.bus.pool and self.busy == 0:
                            self._advance_clock()  # nobody runs: leases of the dead expire
                            continue
                        self.bus.cond.wait()
                    poll = self.rng.random() < self.scenario.recover_rate
                try:
                    if poll:
                        self._poll()
                    self._deliver(item)
                    self._check_store_parallelism()
                finally:
                    with self.bus.cond:
                        self.busy -= 1
                        self.bus.cond.notify_all()
        except BaseException as exc:  # report, and stop the others
            with self.bus.cond:
                self.errors.append("".join(traceback.format_exception(exc)))
                self.stopped = True
                self.bus.cond.notify_all()

    def _drain_threaded(self) -> None:
        threads = [threading.Thread(target=self._worker, name=f"instance-{i}")
                   for i in range(self.scenario.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise AssertionError("a delivery thread failed:\n" + self.errors[0])

    def _drain(self) -> None:
        if self.scenario.threads:
            self._drain_threaded()
        else:
            self._drain_sequential()

    def _check_store_parallelism(self) -> None:
        running = self.sqlite.find_tasks(self.run_id, TaskStatus.RUNNING, 10_000)
        if len(running) > self.scenario.max_parallel:
            self.recorder.violation(
                f"store shows {len(running)} RUNNING tasks after a delivery, "
                f"max_parallel_tasks is {self.scenario.max_parallel}")

    def crash_count(self) -> int:
        """Crashes that happened: planned operations reached, bodies that died."""
        with self.body_lock:
            dead = sum(1 for body in self.bodies.values() if body["outcome"] == "crashed")
        return len(self.crasher.fired) + dead

    def run_status(self) -> RunStatus:
        run = self.sqlite.get_run(self.run_id)
        assert run is not None
        return run.status

    def execute(self) -> None:
        """Start the run and deliver until it has ended and every message is spent."""
        self.crasher.local.armed = True
        try:
            self.run_id, created = self.engine.start({"seed": self.scenario.seed},
                                                     run_id="run-1")
            assert created
        except SimulatedCrash as crash:
            self.run_id = "run-1"
            self._log(f"start: CRASH ({crash})")
        finally:
            self.crasher.local.armed = False
        if self.sqlite.get_run(self.run_id) is None:
            raise AssertionError("start() crashed before creating the run")
        while True:
            self._drain()
            if self.run_status().is_final:
                break
            # What the deployed poller does: time passes, then recover().
            self.recover_rounds += 1
            if self.recover_rounds > self.crash_count() + 1:
                break  # judged in check(): more rounds than crashes explain
            # The poller runs every minute; by the time it finds the stall,
            # leases of dead executors and its grace period have passed.
            self.clock.advance_to(self.clock.now() + max(LEASE, POLLER_STALE_AFTER_SECONDS) + 1.0)
            if self.scenario.resume_on_stall:
                # The embedded backend's `function-flow resume`: nothing runs
                # now, so every RUNNING attempt's executor is dead.
                self._log(f"pool empty, run not ended: resume {self.recover_rounds}")
                self.engine.resume(self.run_id)
            else:
                self._log(f"pool empty, run not ended: poller round {self.recover_rounds}")
                self.engine.poll(stale_after=POLLER_STALE_AFTER_SECONDS)
        # Late duplicates after the end must change nothing.
        for message in list(dict.fromkeys(self.delivered)):
            self.bus.put(message, self.clock.now())
        self._drain()
        self.engine.recover(self.run_id)
        self._drain()
        for _ in range(5):
            self._stale_completion()

    def close(self) -> None:
        self.sqlite.close()

    # --------------------------------------------------------------- judging

    def check(self) -> list[str]:
        """Every invariant of DESIGN.md that this run can show; [] when all hold."""
        problems = list(self.recorder.violations)
        sc, rec, dag = self.scenario, self.recorder, self.dag
        names = [task_name(i) for i in range(sc.n)]
        records = {t.task_id: t for t in self.sqlite.get_tasks(self.run_id)}
        run = self.sqlite.get_run(self.run_id)
        assert run is not None
        crashes = self.crash_count()

        # Liveness (invariant 5): the run ended, with no more poller rounds than
        # crashes that could have lost a message, and none at all without crashes.
        if not run.status.is_final:
            problems.append(f"liveness: run still {run.status.value} after "
                            f"{self.recover_rounds} poller rounds and {self.steps} steps")
        if self.recover_rounds > crashes:
            problems.append(f"liveness: needed {self.recover_rounds} poller rounds, "
                            f"but only {crashes} crashes happened")

        # Invariant 3: one final status, written once, matching the tasks.
        finals = [u for u in rec.run_updates if "status" in u[2]
                  and RunStatus(u[2]["status"]).is_final]
        if len(finals) != 1:
            problems.append(f"run final status written {len(finals)} times: {finals}")
        if len(rec.run_updates) != len(finals):
            problems.append(f"run record written besides its final status: {rec.run_updates}")
        if rec.final_status is not None and run.status is not rec.final_status:
            problems.append(f"run status {run.status.value} differs from the final status "
                            f"written, {rec.final_status.value}")
        all_ok = all(records[t].status is S for t in names)
        if (run.status is RunStatus.SUCCEEDED) != all_ok:
            problems.append(f"run {run.status.value} but tasks: "
                            f"{ {t: records[t].status.value for t in names} }")
        any_failed = any(records[t].status is F for t in names)
        if (run.status is RunStatus.FAILED) != any_failed:
            problems.append(f"run {run.status.value}, a task FAILED: {any_failed}")
        timed_out = any(body.get("expired") for body in self.bodies.values())
        if not crashes and not timed_out:
            expected = RunStatus.FAILED if sc.permanently_failing() else RunStatus.SUCCEEDED
            if run.status is not expected:
                problems.append(f"run {run.status.value}, expected {expected.value} "
                                f"(permanently failing: {sorted(sc.permanently_failing())})")

        # Retries: a task fails only after retries + 1 failed attempts.
        failed_attempts = collections.Counter(
            tr.task_id for tr in rec.transitions
            if tr.old is R and tr.new in (Q, F) and not tr.interrupted)
        for i, t in enumerate(names):
            limit = sc.retries[i] + 1
            if failed_attempts[t] > limit:
                problems.append(f"{t}: {failed_attempts[t]} failed attempts, limit {limit}")
            if records[t].status is F and failed_attempts[t] != limit:
                problems.append(f"{t} FAILED after {failed_attempts[t]} failed attempts, "
                                f"it has {sc.retries[i]} retries")

        # Invariant 2: bodies and their outcomes, exactly once.
        committed = {(tr.task_id, tr.old_attempt): tr.new for tr in rec.transitions
                     if tr.old is R}
        for (t, a), body in self.bodies.items():
            dead = (t, a) in self.crashed_deliveries or body.get("expired")
            if body["outcome"] == "ok" and committed.get((t, a)) is not S and not dead:
                problems.append(f"{t} attempt {a}: body succeeded but its success never "
                                "committed, and its executor did not crash or time out")
            if body["outcome"] == "raised" and committed.get((t, a)) not in (Q, F) \
                    and not dead:
                problems.append(f"{t} attempt {a}: body failed but no failure committed")
            if (t, a) not in rec.claim_seq:
                problems.append(f"{t} attempt {a}: body ran without a committed claim")
            elif rec.failed_seq is not None and rec.claim_seq[(t, a)] > rec.failed_seq:
                problems.append(f"{t} attempt {a} claimed after the run FAILED")
        for t in names:
            wins = [a for (tt, a), tr in committed.items() if tt == t and tr is S]
            if records[t].status is S:
                if len(wins) != 1:
                    problems.append(f"{t}: {len(wins)} committed successes")
                    continue
                body = self.bodies.get((t, wins[0]), {})
                if body.get("outcome") != "ok":
                    problems.append(f"{t}: success of attempt {wins[0]} committed without "
                                    f"a successful body ({body})")
                elif records[t].result != body["value"]:
                    problems.append(f"{t}: stored result {records[t].result} is not what "
                                    f"the committed body returned, {body['value']}")
            elif wins:
                problems.append(f"{t} is {records[t].status.value} after a committed success")

        # Results flow: value = 1 + sum of the dependencies' values.
        expected_value: dict[str, int] = {}
        for i, t in enumerate(names):
            expected_value[t] = (1 + sum(expected_value[task_name(d)]
                                         for d in sc.deps[i])) % MODULUS
            if records[t].status is S and records[t].result["value"] != expected_value[t]:
                problems.append(f"{t}: result {records[t].result} expected value "
                                f"{expected_value[t]}")

        # Failed tasks: nothing downstream of them ever started.
        for t in names:
            if records[t].status is F:
                for d in _descendants(dag, t):
                    if any(tt == d for (tt, _) in self.bodies):
                        problems.append(f"{d} ran although its ancestor {t} FAILED")

        # The recorder saw every write: its shadow matches the store.
        for t, record in records.items():
            if (record.status, record.attempt) != (rec.status.get(t), rec.attempt.get(t)):
                problems.append(f"{t}: store {record.status.value}/{record.attempt}, "
                                f"recorded {rec.status.get(t)}/{rec.attempt.get(t)}")
        if rec.slots:
            free = set(self.sqlite.find_free_slots(self.run_id, rec.slots, rec.slots))
            shadow_free = {s for s, h in rec.slot_holder.items() if h is None}
            if free != shadow_free:
                problems.append(f"free slots: store {free}, recorded {shadow_free}")
            if run.status is RunStatus.SUCCEEDED and free != set(range(rec.slots)):
                problems.append(f"run SUCCEEDED with slots still held: {rec.slot_holder}")

        problems.extend(self._check_writers(records))
        return problems

    def _check_writers(self, records: dict[str, Any]) -> list[str]:
        """No hot document: who writes each record (see DESIGN.md)."""
        problems = []
        sc, rec, dag = self.scenario, self.recorder, self.dag
        names = set(dag.tasks)
        for key, actors in rec.writers.items():
            if key[0] == "task":
                t = key[1]
                allowed = {t} | (set(dag.sinks) if t == END_TASK_ID else set(dag.tasks[t].deps))
                if not actors <= allowed:
                    problems.append(f"record of {t} written by {sorted(actors - allowed)}, "
                                    f"which are neither {t} nor its dependencies")
                for dep in allowed - {t}:
                    count = rec.write_count[(key, dep)]
                    wanted = 1 if records[dep].status is S else 0
                    if count != wanted:
                        problems.append(f"{dep} wrote into {t}'s record {count} times, "
                                        f"expected {wanted}")
                everyone = names <= actors
                own_join = t != END_TASK_ID and set(dag.tasks[t].deps) == names - {t}
                if sc.n >= 3 and everyone and t != END_TASK_ID and not own_join:
                    problems.append(f"record of {t} written by every task")
            elif key[0] == "run":
                if len(actors) != 1:
                    problems.append(f"run record written by {sorted(actors)}")
            else:
                slot = key[1]
                if not actors <= rec.slot_holders_ever[slot]:
                    problems.append(f"slot {slot} written by {sorted(actors)}, which never "
                                    f"held it ({sorted(rec.slot_holders_ever[slot])})")
                # With one slot every task must pass through it, one at a time,
                # by definition of max_parallel_tasks = 1; with more, none is shared by all.
                if sc.n >= 3 and rec.slots >= 2 and names <= actors:
                    problems.append(f"slot {slot} written by every task")
        return problems

    def report(self, problems: list[str]) -> str:
        sc = self.scenario
        lines = [f"{len(problems)} invariant violation(s):", *problems[:20], "",
                 f"scenario: {sc}", f"slots: {self.recorder.slots}, "
                 f"width bound {self.dag.width_bound}, crashes fired {self.crasher.fired}, "
                 f"poller rounds {self.recover_rounds}", "delivery trace (last 60):",
                 *self.trace[-60:]]
        return "\n".join(lines)


def _descendants(dag: Dag, task_id: str) -> set[str]:
    seen: set[str] = set()
    stack = list(dag.dependents[task_id])
    while stack:
        t = stack.pop()
        if t not in seen:
            seen.add(t)
            stack.extend(dag.dependents[t])
    return seen


def run_scenario(scenario: Scenario,
                 engine_factory: Callable[..., Engine] = Engine) -> tuple[Harness, list[str]]:
    """Run one scenario in a fresh SQLite file; returns the harness and its problems."""
    with tempfile.TemporaryDirectory(prefix="ff-prop-") as directory:
        harness = Harness(scenario, directory, engine_factory)
        try:
            harness.execute()
            return harness, harness.check()
        finally:
            harness.close()
