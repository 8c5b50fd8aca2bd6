"""The stand-ins the runner puts around the real engine and the real store.

- `FakeClock`: seconds that pass only when the runner advances them, so
  leases expire only for executors that are dead (or bodies that overrun).
- `PoolBus`: a ports.Bus that does not deliver on publish. Messages wait in
  a pool; the runner (runner.py) picks what arrives when.
- `KeepingBus` wraps a PoolBus: it keeps a published message for its
  publisher and reserves one of the pool for it, so completions claim
  attempts ahead in their own commits (core/chaining.py), as on LocalBus.
- `Crasher`: numbers the operations of deliveries (transactions, publishes)
  and crashes the planned ones with `SimulatedCrash`.
- `RecordingStore` wraps any ports.Store. Every committed transaction's
  writes go to the oracle (oracle.Recorder) in commit order; it crashes the
  caller inside a transaction (which must roll back) or right after its
  commit; on stores that commit optimistically it can make a compare-and-set
  commit lose to another writer, so the store runs the function again.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from typing import Any, Callable, Iterable

from function_flow.core.messages import Message, MessageKind
from function_flow.core.ports import Bus, Store

#: A record as the oracle names it: ("task", task_id), ("run",) or ("slot", n).
RecordKey = tuple
#: Makes another writer change a record of a run now (stores.StoreUnderTest.conflict).
Conflict = Callable[[str, RecordKey], None]


class SimulatedCrash(BaseException):
    """The executor died here. BaseException, so the engine cannot catch it."""


class FakeClock:
    """Seconds that pass only when the harness says so."""

    START = 1_000_000.0

    def __init__(self, start: float = START) -> None:
        self._now = start
        self._lock = threading.Lock()

    def now(self) -> float:
        with self._lock:
            return self._now

    def advance_to(self, moment: float) -> None:
        with self._lock:
            self._now = max(self._now, moment)


@dataclasses.dataclass
class Pending:
    """A message in the pool: deliverable once the clock reaches `due`."""

    due: float
    seq: int
    message: Message
    generation: int = 0   # how many times this copy descends from a duplicate


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


class PoolBus(Bus):
    """A bus that only collects messages; the harness decides what arrives when.

    `pick` chooses the next due message at random and, as Pub/Sub may,
    delivers some twice and re-injects long-delivered ones late. Callers
    hold `cond` around `pick` and `advance_clock`.
    """

    def __init__(self, clock: FakeClock, crasher: Crasher) -> None:
        self.clock = clock
        self.crasher = crasher
        self.pool: list[Pending] = []
        self.cond = threading.Condition()
        self.seq = 0
        self.delivered: list[Message] = []
        self.reinjected = 0

    def publish(self, message: Message, delay: float = 0.0) -> None:
        if self.crasher.next(f"publish {message}") is not None:
            raise SimulatedCrash(f"crash before publishing {message}")
        self.put(message, self.clock.now() + max(0.0, delay))

    def put(self, message: Message, due: float, generation: int = 0) -> None:
        with self.cond:
            self.seq += 1
            self.pool.append(Pending(due, self.seq, message, generation))
            self.cond.notify_all()

    def pick(self, rng: random.Random, scenario: Any) -> Pending | None:
        """Choose the next message (scenario: its rates); None if none is due."""
        pool = self.pool
        now = self.clock.now()
        due = [i for i, p in enumerate(pool) if p.due <= now]
        if not due:
            return None
        item = pool.pop(rng.choice(due))
        self.delivered.append(item.message)
        if item.generation < 2 and rng.random() < scenario.duplicate_rate:
            # Half the copies are due at once: with threads, or inside a
            # running body, the same message then reaches two instances at once.
            later = rng.choice([0.0, rng.uniform(0.0, 20.0)])
            self.seq += 1
            pool.append(Pending(now + later, self.seq, item.message, item.generation + 1))
        if self.delivered and self.reinjected < 2 * scenario.n + 2 \
                and rng.random() < scenario.reinject_rate:
            self.reinjected += 1
            self.seq += 1
            pool.append(Pending(now + rng.uniform(0.0, 5.0), self.seq,
                                rng.choice(self.delivered), 2))
        return item

    def advance_clock(self) -> None:
        """Nothing is due: let time pass until the next message is."""
        self.clock.advance_to(min(p.due for p in self.pool))


class KeepingBus:
    """The harness's bus, saying (as LocalBus's workers do) that it keeps the next
    message for the thread that publishes it (ports.Bus.keeps_next), and
    offering the thread a due RUN_TASK message of the pool to handle next
    (ports.Bus.reserve_next), which a completion may claim in its own commit:
    most times there is one, one at random, sometimes delivered twice meanwhile
    (the copy stays in the pool). Not claimed, it goes back to the pool, as
    Pub/Sub redelivers a message nobody acknowledged; claimed, it is spent.
    The rest, `beside` included, is the harness's PoolBus, a ports.Bus.
    Shared by test_chaining_properties.py and test_foreach_properties.py."""

    def __init__(self, inner: "PoolBus", seed: int = 7) -> None:
        self.inner = inner
        self.rng = random.Random(seed)
        self.local = threading.local()
        #: (task, attempt) of every reservation whose attempt a completion claimed.
        self.claimed: list[tuple[str, int]] = []

    def keeps_next(self) -> bool:
        return True

    def reserve_next(self, run_id: str) -> tuple[Message, Any] | None:
        pool = self.inner
        with pool.cond:
            now = pool.clock.now()
            due = [p for p in pool.pool if p.due <= now and p.message.run_id == run_id
                   and p.message.kind is MessageKind.RUN_TASK]
            if not due or self.rng.random() < 0.2:
                return None
            item = self.rng.choice(due)
            pool.pool.remove(item)
            pool.delivered.append(item.message)
            if item.generation < 2 and self.rng.random() < 0.2:
                pool.seq += 1
                pool.pool.append(Pending(now, pool.seq, item.message, item.generation + 1))
        self.local.reserved = item
        return item.message, None

    def settle_next(self, claimed: bool) -> None:
        item, self.local.reserved = self.local.reserved, None
        if claimed:
            self.claimed.append((item.message.task_id, item.message.attempt))
        else:
            self.inner.put(item.message, item.due, item.generation)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class RecordingTx:
    """Passes every call to the real transaction and notes reads and writes."""

    def __init__(self, inner: Any, reads: list[tuple[str, RecordKey]],
                 writes: list[tuple]) -> None:
        self._inner = inner
        self._reads = reads
        self._writes = writes

    def get_run(self, run_id: str) -> Any:
        self._reads.append((run_id, ("run",)))
        return self._inner.get_run(run_id)

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> Any:
        task_ids = list(task_ids)
        self._reads.extend((run_id, ("task", t)) for t in task_ids)
        return self._inner.get_tasks(run_id, task_ids)

    def get_run_and_tasks(self, run_id: str, task_ids: Iterable[str]) -> Any:
        task_ids = list(task_ids)
        self._reads.append((run_id, ("run",)))
        self._reads.extend((run_id, ("task", t)) for t in task_ids)
        return self._inner.get_run_and_tasks(run_id, task_ids)

    def get_slot(self, run_id: str, slot: int) -> Any:
        self._reads.append((run_id, ("slot", slot)))
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

    def replace_task(self, run_id: str, record: Any) -> None:
        self._inner.replace_task(run_id, record)

    def put_trigger(self, trigger: Any) -> None:
        self._inner.put_trigger(trigger)

    def delete_trigger(self, trigger_id: str) -> None:
        self._inner.delete_trigger(trigger_id)


def _written_key(write: tuple) -> RecordKey:
    return ("run",) if write[0] == "run" else (write[0], write[1])


class RecordingStore:
    """A real ports.Store, with every commit recorded and planned crashes.

    `recorder` is the oracle (oracle.Recorder); `conflict`, when the store
    commits compare-and-set transactions optimistically, makes another
    writer change a record, and `conflict_rate` is how often a
    compare-and-set transaction sees that happen between its reads and its
    commit.
    """

    def __init__(self, inner: Store, recorder: Any, crasher: Crasher, *,
                 conflict: Conflict | None = None, conflict_rate: float = 0.0,
                 seed: int = 0) -> None:
        self.inner = inner
        self.recorder = recorder
        self.crasher = crasher
        self.conflict = conflict
        self.conflict_rate = conflict_rate if conflict is not None else 0.0
        self.conflict_rng = random.Random(seed)
        #: Conflicts made, and how many more times than once the store ran
        #: the functions of compare-and-set transactions (after a lost
        #: commit, or falling back to a locking transaction).
        self.conflicts = 0
        self.reruns = 0

    def transact(self, fn: Callable[[Any], Any], *, compare_and_set: bool = False) -> Any:
        if getattr(self.crasher.local, "body_died", False):
            # The engine catches whatever a body raises and records it; a
            # body that died takes its executor with it, so that recording
            # never commits.
            self.crasher.local.body_died = False
            raise SimulatedCrash("the executor died with its body")
        mode = self.crasher.next("transact")
        reads: list[tuple[str, RecordKey]] = []
        writes: list[tuple] = []
        calls = 0
        conflicted = False

        def recorded(tx: Any) -> Any:
            nonlocal calls, conflicted
            calls += 1
            # The store may run the function more than once (a conflict, a
            # probe, a fallback to a locking transaction): only the writes
            # of the last run, the one that committed, are recorded.
            reads.clear()
            writes.clear()
            result = fn(RecordingTx(tx, reads, writes))
            if mode == "in_tx":
                raise SimulatedCrash("crash inside a transaction (rolled back)")
            if calls == 1 and compare_and_set:
                conflicted = self._maybe_conflict(reads, writes)
            return result

        # One lock over commit and log keeps the log in commit order.
        with self.recorder.lock:
            result = self.inner.transact(recorded, compare_and_set=compare_and_set)
            if compare_and_set:
                self.reruns += max(0, calls - 1)
            if conflicted and calls == 1:
                self.recorder.violation(
                    f"another writer changed a record this compare-and-set transaction "
                    f"read, yet its commit went through without running it again: a "
                    f"lost update ({writes})")
            self.recorder.record_commit(writes)
        if mode == "after_commit":
            raise SimulatedCrash("crash right after a commit")
        return result

    def _maybe_conflict(self, reads: list[tuple[str, RecordKey]], writes: list[tuple]) -> bool:
        """Another writer changes a record this function read and writes.

        Only before a compare-and-set commit, whose reads took no locks: the
        other write lands at once, and the commit fails its "unchanged since
        read" precondition. The change is to no field a record has, so the
        function decides the same again on fresh reads.
        """
        if not self.conflict_rate or self.conflict_rng.random() >= self.conflict_rate:
            return False
        written = {_written_key(w) for w in writes}
        contested = [(run_id, key) for run_id, key in reads if key in written]
        if not contested:
            return False
        assert self.conflict is not None
        self.conflicts += 1
        self.conflict(*self.conflict_rng.choice(contested))
        return True

    def create_run(self, run: Any, tasks: list[Any], slots: dict[int, str | None]) -> bool:
        with self.recorder.lock:
            created = self.inner.create_run(run, tasks, slots)
            if created:
                self.recorder.record_create(tasks, slots)
        return created

    def __getattr__(self, name: str) -> Any:
        # Plain reads and the rest, the inner store's ports.Store capabilities
        # (locks_for_writes, run_writes) included: what it can, this can.
        return getattr(self.inner, name)
