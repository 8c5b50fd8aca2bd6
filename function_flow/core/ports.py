"""The engine's ports: a transactional store, a message bus, a blob store, a body executor.

Adapters (store/sqlite.py, store/firestore.py, bus/local.py, bus/pubsub.py,
blobs/local.py, blobs/gcs.py, local/child.py) implement these protocols and
nothing else: they store, send and run, the engine decides. Every operation
some caller uses is declared here, so nobody probes an adapter with
getattr. What only some adapters can do (a store committing several
transactions as one, a bus keeping a message for the publishing thread) is
declared too, with a default body saying "cannot" that the others inherit
(stores and buses subclass Store and Bus). The conformance suites in tests/
run against every store and every blob store adapter.

Transaction rules, which Firestore imposes and SQLite follows for parity:
all reads come before the first write, and the transaction function may run
more than once, so it must not have side effects outside the transaction.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, Callable, ContextManager, Iterable, Protocol, TypeVar

from function_flow.core.definition import Call
from function_flow.core.messages import Message
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus, Trigger)

T = TypeVar("T")


class ReadAfterWriteError(RuntimeError):
    """Engine bug: a transaction read after writing (Firestore forbids it).

    Every store adapter raises this same class, so the rule is tested once.
    """


class RecordExistsError(RuntimeError):
    """A transaction added a task record under an id the run already has.

    The whole transaction is rolled back, as Firestore does for `create`.
    """


class Transaction(Protocol):
    """Reads and writes that commit together or not at all."""

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        """Read several task records; missing ones are absent from the result."""

    def get_run_and_tasks(self, run_id: str, task_ids: Iterable[str]
                          ) -> tuple[RunRecord | None, dict[str, TaskRecord]]:
        """get_run and get_tasks in one round trip where the backend allows."""

    def get_slot(self, run_id: str, slot: int) -> str | None:
        """The task holding concurrency slot `slot`, or None if it is free."""

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None: ...

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        """Merge `fields` into a task record without reading it.

        A key "deps_done.<dep>" sets one entry of the deps_done map, so that
        several tasks can write into the same record without conflicting.
        Nothing is written when the record does not exist.
        """

    def add_task(self, run_id: str, record: TaskRecord) -> None:
        """Add a task record to a running run (a run's graph grows).

        The commit fails with RecordExistsError, writing nothing, when the
        run already has a task with that id.
        """

    def replace_task(self, run_id: str, record: TaskRecord) -> None:
        """Write a task record whole, `deps_done` included, over the one stored.

        For `redrive`, which starts a task of an ended run afresh: entries of
        dependencies that will run again are left out of `deps_done`.
        """

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None: ...

    def put_trigger(self, trigger: Trigger) -> None:
        """Remember which task attempt an external event with this id completes.

        Replaces a trigger of the same id.
        """

    def delete_trigger(self, trigger_id: str) -> None: ...


class Store(Protocol):
    """Durable run state.

    The operations after `close` are capabilities only some stores have;
    their bodies here are the answer of a store that has not (a store
    inherits them by subclassing Store).
    """

    def transact(self, fn: Callable[[Transaction], T], *,
                 compare_and_set: bool = False) -> T:
        """Run `fn` in a transaction, retrying it on contention.

        compare_and_set: a promise that whenever `fn` writes, it writes every
        record it read. A store may then skip locking and instead commit on
        the condition that nothing `fn` read has changed since (and run `fn`
        again if something has). Contended records then cost a failed commit
        instead of a lock wait (about 2 s per conflict on the Firestore
        emulator, see docs/design.md).
        """

    def create_run(self, run: RunRecord, tasks: list[TaskRecord],
                   slots: dict[int, str | None]) -> bool:
        """Create a run with all its task and slot records at once.

        `slots` maps slot number -> holding task id, or None for a free slot.

        Returns False, writing nothing, when a run with that id exists. A
        failure leaves nothing behind: no run record without its tasks.
        """

    def get_run(self, run_id: str) -> RunRecord | None: ...

    def get_tasks(self, run_id: str, task_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        """Task records of a run (all of them when task_ids is None)."""

    def join_progress(self, run_id: str, task_id: str) -> JoinProgress | None:
        """Status and deps_done counts by outcome of one task (None if it does not exist).

        Each of a join's N completers asks once; a store should answer
        without building the N-entry map when it can (SQLite counts rows).
        """

    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        """Up to `limit` tasks of a run in `status` (a query, not a scan)."""

    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        """Up to `limit` free slot numbers among 0..count-1, ascending by kind:
        slot records without a holder first, then numbers no record was
        written for yet, lowest first.

        Reads O(limit) records, never the held ones (a foreach as wide as
        max_parallel_tasks holds 10,000). A run's slot records are a prefix
        0..P-1 (create_run writes them all; fill_slots takes the numbers past
        it in order), so the never-written numbers are those past the last
        record: more than P only when the definition now allows more slots.
        """

    def list_runs(self, limit: int = 50, status: RunStatus | None = None,
                  hooks_pending: bool = False, *, job_name: str | None = None,
                  before: tuple[float, str] | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        """Up to `limit` runs: with `status`, only runs in that status; with
        `job_name`, only runs of that job; with hooks_pending, only runs whose
        `hooks_pending` is set (core/hooks.py).

        Unfiltered, or with newest_first, the most recent first (created_at,
        then run id, descending); `before` = (created_at, run_id) of the last
        run of a page asks for the page after it, in that order. People's
        views (the dashboard) ask so. Filtered without newest_first, the order
        is unspecified: the poller wants every such run, not the newest ones,
        and on Firestore an ordered filtered query needs a composite index
        (the README lists them), which the poller must not need.
        """

    def get_trigger(self, trigger_id: str) -> Trigger | None:
        """The trigger of that id, or None."""

    def find_watches(self, limit: int, among: Iterable[str] | None = None) -> list[Trigger]:
        """Up to `limit` triggers that watch a path (`watch` set), for the poller.

        With `among`, only triggers whose watch is one of those strings (an
        indexed equality query: core/watches.py passes every prefix of an
        object's path, to find the waits an object notification completes).
        """

    def first_delivery(self, key: str, run_id: str) -> bool:
        """Remember `key`: True the first time, False on every later call.

        Lets a remote function act on a request once however often Pub/Sub
        delivers it. Remembered keys are deleted with their run.
        """

    def forget_delivery(self, key: str) -> None:
        """Undo first_delivery: acting on the request failed, let a redelivery try."""

    def get_context(self, run_id: str, key: str) -> str | None:
        """The JSON text stored under `key` in the run's context, or None.

        A run's context is the small key/values its task bodies share
        (function_flow/context.py decides what may be stored; the store
        keeps the text as given).
        """

    def list_context(self, run_id: str) -> dict[str, str]:
        """Every key of the run's context and its JSON text, ordered by key."""

    def set_context(self, run_id: str, key: str, value: str) -> bool:
        """Store JSON text under `key`, replacing what was there.

        Returns False, storing nothing, when the run does not exist (it was
        deleted, and its context with it): nothing outlives `delete_run`.
        Each key is written on its own, so bodies setting different keys at
        once never contend.
        """

    def delete_context(self, run_id: str, key: str) -> None:
        """Delete one key of the run's context; nothing happens if it is not there."""

    def delete_run(self, run_id: str) -> None:
        """Delete the run with everything it owns: tasks, slots, triggers,
        remembered deliveries, its context."""

    def runs_started_before(self, timestamp: float) -> list[str]: ...

    def close(self) -> None:
        """Release connections; the store may be used again afterwards."""

    def locks_for_writes(self) -> bool:
        """Whether a transaction holds the store's write lock from its first read
        to its commit (SQLite's BEGIN IMMEDIATE): nothing it read changes before
        it commits, and a read in it costs no other writer anything.

        core/chaining.py then reads a chain's next task and the run in the
        completion's transaction and claims that task in the same commit.
        False, the default: a store whose transactions compare and set
        (Firestore), where every read a commit depends on is contention.
        """
        return False

    def run_writes(self) -> int | None:
        """How many commits of this process have written a run record so far.

        With `wait_run_write`, lets `job.wait()` (run_end.py) return as soon
        as a run ends instead of at its next look. None, the default: this
        store does not count them (Firestore), and waiting is polling.
        """
        return None

    def wait_run_write(self, seen: int, timeout: float) -> int:
        """Wait until this process commits a run record write after the `seen`-th
        (run_writes() before reading), at most `timeout` seconds; the new count.

        The default, for a store that does not count: sleep `timeout`.
        """
        time.sleep(timeout)
        return seen


class BlobNotFoundError(LookupError):
    """`Blobs.get` found no blob under the key (every adapter raises this one)."""


class Blobs(Protocol):
    """Large values, stored apart from the records that reference them.

    Keys are paths like `runs/<run_id>/tasks/<task>/<attempt>-<id>.json`
    (core/payloads.py makes them); every blob of a run lives under
    `payloads.run_prefix(run_id)`, so deleting a run deletes its blobs.
    A key is written once: the engine never reuses one.
    """

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, completely or not at all."""

    def get(self, key: str) -> bytes:
        """The bytes stored under `key`; raises BlobNotFoundError if there are none."""

    def delete(self, key: str) -> None:
        """Delete one blob; nothing happens if it does not exist."""

    def delete_run(self, run_id: str) -> None:
        """Delete every blob of run `run_id`; nothing happens if it has none."""

    def location(self, key: str) -> str:
        """Where the blob of `key` is, for people (a path, a gs:// URL)."""


class Bus(Protocol):
    """Delivers scheduling messages at least once, in any order.

    The bodies below are what a bus that delivers elsewhere does (Pub/Sub
    pushes to the scheduler function); a bus inherits them by subclassing Bus.
    """

    def publish(self, message: Message, delay: float = 0.0) -> None:
        """Send `message`, delivered no earlier than `delay` seconds from now."""
        raise NotImplementedError

    def subscribe(self, handler: Callable[[Message], object]) -> None:
        """Deliver messages to `handler` in this process (if they arrive here)."""

    def release_due(self, limit: int = 500) -> int:
        """Send delayed messages whose time has come; returns how many.

        For buses that cannot delay messages themselves (Pub/Sub); the
        poller calls it. A bus that delays on its own answers 0.
        """
        return 0

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued, running or waiting to be retried here.

        True when the bus knows it is idle; a bus that delivers elsewhere
        can never know, and answers False at once.
        """
        return False

    def close(self) -> None:
        """Stop delivering and release clients."""

    def keeps_next(self) -> bool:
        """Whether a message published now would be kept for the calling thread
        to handle next, rather than delivered anywhere.

        core/chaining.py then claims that attempt in the commit that queues
        it and runs it here, without a message (LocalBus's workers, outside
        a task body). False, the default: messages go out (Pub/Sub).
        """
        return False

    def forget(self, message: Message) -> None:
        """A delayed message no longer wanted (the lease check of an attempt that
        ended): a bus that holds it may drop it. The default keeps it: when
        delivered it finds nothing to do."""

    def reserve_next(self, run_id: str) -> tuple[Message, object] | None:
        """The RUN_TASK message of `run_id` the calling thread would handle next,
        reserved for it, with its trace context (core/chaining.py claims that
        attempt in the commit in progress). None, the default: cannot (Pub/Sub)."""
        return None

    def settle_next(self, claimed: bool) -> None:
        """After `reserve_next`: `claimed`, its attempt was claimed and runs here, so
        the message is spent; else it is handled as if it had never been reserved."""

    def blocking(self) -> ContextManager[None]:
        """Entered while a task body runs on the calling thread, which may wait
        off the CPU (I/O, a remote call, a sleep).

        A bus with a worker pool learns that this worker may block, so it
        may wake another for what is queued (LocalBus wakes workers lazily).
        The default does nothing.
        """
        return contextlib.nullcontext()

    def beside(self, work: Callable[[], object]) -> Callable[[], object]:
        """`work`, counted as this bus's own from now until it returns.

        For work another thread pool does on the bus's behalf (a hosted
        remote function's answer completes its attempt there), so that
        `wait_idle` waits for it as for a message. The default, for a bus
        that cannot know it is idle anyway: `work` unchanged.
        """
        return work


@dataclasses.dataclass(frozen=True)
class Request:
    """What a remote task sends its remote function: one attempt's call."""

    #: Names this attempt; the remote function's answer quotes it.
    job_id: str
    run_id: str
    task_id: str
    attempt: int
    job_args: dict[str, Any]
    task_args: dict[str, Any]
    result: Any

    def function_flow_payload(self) -> dict[str, Any]:
        """The JSON Function Flow sends: its remote functions read exactly this."""
        payload = {"job_id": self.job_id, "job_args": self.job_args,
                   "task_args": self.task_args}
        if self.result:
            payload["result"] = self.result
        return payload


class Caller(Protocol):
    """Calls the remote functions of remote tasks (function_flow/remote/)."""

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        """A synchronous call: return the function's answer, the task's result.

        Raise (with the status and the start of the answer) when it failed.
        """

    def send(self, call: Call, request: Request) -> None:
        """An asynchronous call: deliver the request; its answer arrives later
        as an external event naming `request.job_id`. Raise if it cannot be sent."""


class Watcher(Protocol):
    """Looks for objects in Cloud Storage (function_flow/services/gcs.py)."""

    def exists(self, path_prefix: str) -> bool:
        """Whether some object's gs:// path starts with `path_prefix`.

        Raise when it cannot tell (no such bucket, no permission, network).
        """


class Executor(Protocol):
    """Runs a task body, and stops it at its timeout where the platform allows."""

    #: Whether `run` stops a body at its timeout (so no two attempts of a
    #: task ever run at once), or can only let it run on.
    stops_bodies: bool

    def run(self, body: Callable[[], Any], timeout: float | None, what: str) -> Any:
        """Return what `body()` returns, or raise what it raises.

        With a timeout, an executor that can stop the body (a child process
        it kills) raises TimeoutError once `timeout` seconds have passed,
        after the body has stopped; `what` names the attempt in that error.
        """


class InlineExecutor:
    """Calls the body in the calling thread; it cannot stop it at a timeout.

    Where it is used (Cloud Functions), the lease of an attempt that ran
    past its timeout expires, and its retry waits until the platform's own
    request timeout has ended the first attempt (see docs/design.md).
    """

    stops_bodies = False

    def run(self, body: Callable[[], Any], timeout: float | None, what: str) -> Any:
        return body()
