"""How the Firestore store writes: records as documents, and its two kinds of transaction.

`FirestoreTransaction` is ports.Transaction over one attempt of a Firestore
transaction (or a batch write, when the function only writes).
`CompareAndSet` stands in for a transaction without locks: reads happen at
once and remember each document's update time, and the writes commit as one
batch whose writes carry "unchanged since read" preconditions (see
docs/design.md, "No hot document").

Record fields are stored as they are, except `args` (run) and `result`
(task), which hold arbitrary JSON and are stored as JSON text in `args_json`
and `result_json`: Firestore refuses arrays of arrays, very large integers and
map keys like "__x__", so JSON text is the only lossless form. A task's
`attempts` and a run's `history` (lists of small maps) are JSON text too,
in `attempts_json` and `history_json`: one index entry, not one per
subfield. Document ids that Firestore reserves ("__end__", the engine's
virtual end task, ".", "..", anything with "/") are stored escaped: "~" +
percent-encoding (any id starting with "~" is escaped too, so the mapping
stays one-to-one).

`deps_done` is a map written with blind field updates (`deps_done.<task>`,
quoted with FieldPath for ids with special characters), so completers never
read the dependent's document and never contend on it.
"""

from __future__ import annotations

import collections
import functools
import json
import re
import urllib.parse
import random
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable, TypeVar

from google.api_core import exceptions as gexc
from google.cloud import firestore
from google.cloud.firestore_v1.field_path import FieldPath

from function_flow.core.ports import ReadAfterWriteError
from function_flow.errors import TransientBackendError, transient_google_errors
from function_flow.core.records import RunRecord, TaskRecord, Trigger
from function_flow.store.firestore_cache import Known, updated

if TYPE_CHECKING:
    from function_flow.store.firestore import FirestoreStore

T = TypeVar("T")

#: Errors raised as TransientBackendError: the one list every Google client
#: of function_flow shares (errors.transient_google_errors). Besides the
#: statuses Firestore answers when busy, it holds Unknown (a commit whose
#: connection broke: the engine then records the outcome again after reading
#: what landed) and RetryError (the client's own retries ran out of time).
TRANSIENT = transient_google_errors()


def transient(exc: Exception) -> TransientBackendError:
    error = TransientBackendError(f"Firestore: {exc}")
    error.__cause__ = exc
    return error

def translated(method: Callable[..., T]) -> Callable[..., T]:
    """Raise Firestore's transient errors as TransientBackendError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except TRANSIENT as exc:
            raise transient(exc) from exc
    return wrapper


#: Record fields holding arbitrary JSON, and the document field storing it.
JSON_FIELDS = {"args": "args_json", "result": "result_json",
               "attempts": "attempts_json", "history": "history_json"}
RESERVED_ID = re.compile(r"^__.*__$|^\.{1,2}$|^~|/")


def doc_id(key: str) -> str:
    """The document id of a run, task or trigger id (see module docstring)."""
    if RESERVED_ID.search(key):
        return "~" + urllib.parse.quote(key, safe="")
    return key


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Record fields -> document fields (JSON fields as text)."""
    data = {}
    for key, value in fields.items():
        if key in JSON_FIELDS:
            data[JSON_FIELDS[key]] = json.dumps(value)
        else:
            data[key] = value
    return data


def decode(data: dict[str, Any]) -> dict[str, Any]:
    """Document fields -> record fields."""
    fields = dict(data)
    for key, stored in JSON_FIELDS.items():
        if stored in fields:
            text = fields.pop(stored)
            fields[key] = json.loads(text) if text is not None else None
    return fields


def update_paths(fields: dict[str, Any]) -> dict[str, Any]:
    """An update's keys as Firestore field paths ("a.b" sets entry b of map a)."""
    data = {}
    for key, value in encode(fields).items():
        if "." in key:
            field, entry = key.split(".", 1)
            data[FieldPath(field, entry).to_api_repr()] = value
        else:
            data[FieldPath(key).to_api_repr()] = value
    return data


class NeedsRead(Exception):
    """A transaction function read something: it needs a real transaction."""


class CompareAndSet:
    """Stands in for a Firestore Transaction, without locks.

    Reads happen at once, outside any transaction, and remember each
    document's update time. Writes are kept and committed later as one batch
    (atomic) in which the first write to each document read carries the
    precondition "unchanged since it was read". A conflicting writer makes
    the commit fail at once with FailedPrecondition; the caller runs the
    function again on fresh reads. A Firestore transaction would instead
    hold a lock that makes the other side wait (on the emulator a flat 2 s
    per conflict) before one of them aborts.

    Only correct when every document read is also written: `batch()` answers
    None otherwise, and the caller falls back to a real transaction.
    """

    def __init__(self, store: "FirestoreStore", remembering: bool = True) -> None:
        self._store = store
        #: Whether documents the store remembers stand in for reads.
        self._remembering = remembering
        self._client = store.client
        self.read_times: dict[str, Any] = {}  # document path -> update time (None: missing)
        self.read_data: dict[str, dict[str, Any]] = {}  # document path -> content read
        #: Paths answered from what the store remembered (firestore_cache.py).
        self.remembered: set[str] = set()
        self.writes: list[tuple[str, Any, dict[str, Any]]] = []
        #: Whether the batch carries preconditions (then it must not be resent).
        self.guarded = False

    def get(self, ref: Any) -> list[Any]:
        return self.get_all([ref])

    def get_all(self, refs: list[Any]) -> list[Any]:
        answers: dict[str, Any] = {}
        wanted = []
        for ref in refs:
            known = self._store.known.get(ref.path) \
                if self._remembering and ref.path not in self.read_times else None
            if known is not None:
                answers[ref.path] = Known(ref, *known)
                self.remembered.add(ref.path)
            else:
                wanted.append(ref)
        if wanted:
            fetched = list(self._client.get_all(wanted))
            self._store._count(reads=len(wanted))
            self._store.known.remember(fetched)
            answers.update((snapshot.reference.path, snapshot) for snapshot in fetched)
        snapshots = [answers[ref.path] for ref in refs if ref.path in answers]
        for snapshot in snapshots:
            # A document read twice is checked against its first read.
            path = snapshot.reference.path
            if path not in self.read_times:
                self.read_times[path] = snapshot.update_time if snapshot.exists else None
                self.read_data[path] = (snapshot.to_dict() or {}) if snapshot.exists else {}
        return snapshots

    def trusts_memory(self) -> bool:
        """Whether every remembered document this attempt used is checked by a
        precondition (it is written); else the attempt must be decided again."""
        written = {ref.path for _, ref, _ in self.writes}
        return self.remembered <= written

    def remember_commit(self, results: list[Any]) -> None:
        """After the batch committed: what each document it wrote now holds."""
        known = self._store.known
        counts = collections.Counter(ref.path for _, ref, _ in self.writes)
        for (kind, ref, data), result in zip(self.writes, results):
            path = ref.path
            update_time = getattr(result, "update_time", None)
            if counts[path] > 1 or kind in ("delete", "update") and path not in self.read_times:
                known.drop([path])
            elif path in self.read_times:  # guarded: it was what we read, plus this
                known.put(path, updated(self.read_data[path], data, kind == "update"),
                          update_time)
            else:  # created or set whole
                known.put(path, dict(data), update_time)

    def update(self, ref: Any, data: dict[str, Any]) -> None:
        self.writes.append(("update", ref, data))

    def set(self, ref: Any, data: dict[str, Any]) -> None:
        self.writes.append(("set", ref, data))

    def create(self, ref: Any, data: dict[str, Any]) -> None:
        self.writes.append(("create", ref, data))

    def delete(self, ref: Any) -> None:
        self.writes.append(("delete", ref, None))

    def batch(self) -> Any | None:
        """The guarded batch to commit, or None if preconditions cannot cover the reads."""
        written = {ref.path for _, ref, _ in self.writes}
        if any(path not in written or update_time is None
               for path, update_time in self.read_times.items()):
            return None
        batch = self._client.batch()
        guarded: set[str] = set()
        for kind, ref, data in self.writes:
            if ref.path in self.read_times and ref.path not in guarded:
                guarded.add(ref.path)
                self.guarded = True
                # A document read exists, so a set of it is an update of the
                # fields it has (records are written with all their fields).
                option = self._client.write_option(last_update_time=self.read_times[ref.path])
                batch.update(ref, data, option=option)
            elif kind == "set":
                batch.set(ref, data)
            elif kind == "create":
                batch.create(ref, data)
            elif kind == "delete":
                batch.delete(ref)
            else:
                batch.update(ref, data)
        return batch


class FirestoreTransaction:
    """ports.Transaction over one attempt of a Firestore transaction.

    Over a WriteBatch instead (`batch=True`), it probes whether the function
    only writes: the first read raises NeedsRead. A function that never
    reads commits as one batch write (one round trip instead of begin and
    commit); it is just as atomic, and without reads there is nothing a
    transaction could check.
    """

    def __init__(self, store: "FirestoreStore", tx: Any, batch: bool = False,
                 counted: bool = True) -> None:
        self._store = store
        self._tx = tx
        self._batch = batch
        #: Whether reads are counted here (a CompareAndSet counts its own).
        self._counted = counted
        self.writes = 0
        #: Paths of the documents written, so the store forgets what it knew of them.
        self.written: list[str] = []
        #: Slot -> the task read here that holds it; slots read here.
        self._holders: dict[int, str] = {}
        self._slots_read: set[int] = set()

    def _reading(self, documents: int) -> None:
        if self._batch:
            raise NeedsRead
        if self.writes:
            raise ReadAfterWriteError("transaction read after a write")
        if self._counted:
            self._store._count(reads=max(1, documents))

    def _wrote(self, ref: Any) -> Any:
        self.writes += 1
        self.written.append(ref.path)
        return ref

    def get_run(self, run_id: str) -> RunRecord | None:
        self._reading(1)
        snapshot = next(iter(self._tx.get(self._store._run_ref(run_id))))
        return self._store._run_from(snapshot)

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        refs = [self._store._task_ref(run_id, t) for t in dict.fromkeys(task_ids)]
        self._reading(len(refs))
        if not refs:
            return {}
        found = {}
        for snapshot in self._tx.get_all(refs):
            if snapshot.exists:
                record = self._task_from(snapshot)
                found[record.task_id] = record
        return found

    def _task_from(self, snapshot: Any) -> TaskRecord:
        record = TaskRecord.from_dict(decode(snapshot.to_dict()))
        if record.slot is not None:
            self._holders[record.slot] = record.task_id
        return record

    def get_run_and_tasks(self, run_id: str, task_ids: Iterable[str]
                          ) -> tuple[RunRecord | None, dict[str, TaskRecord]]:
        run_ref = self._store._run_ref(run_id)
        refs = [self._store._task_ref(run_id, t) for t in dict.fromkeys(task_ids)]
        self._reading(1 + len(refs))
        run, found = None, {}
        for snapshot in self._tx.get_all([run_ref, *refs]):
            if snapshot.reference.path == run_ref.path:
                run = self._store._run_from(snapshot)
            elif snapshot.exists:
                record = self._task_from(snapshot)
                found[record.task_id] = record
        return run, found

    def get_slot(self, run_id: str, slot: int) -> str | None:
        self._reading(1)
        self._slots_read.add(slot)
        snapshot = next(iter(self._tx.get(self._store._slot_ref(run_id, slot))))
        return (snapshot.to_dict() or {}).get("holder") if snapshot.exists else None

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self._tx.update(self._wrote(self._store._run_ref(run_id)), update_paths(fields))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self._tx.update(self._wrote(self._store._task_ref(run_id, task_id)),
                        update_paths(self._store._expiring(fields)))

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        if holder is not None and slot not in self._slots_read \
                and self._holders.get(slot, holder) != holder:
            # A task read here hands its own slot to its heir: the slot's
            # document stays taken (its holder's name is never read, only
            # whether it has one), so a write per hand-over is saved.
            return
        self._tx.set(self._wrote(self._store._slot_ref(run_id, slot)),
                     self._store._expiring({"holder": holder}))

    def add_task(self, run_id: str, record: TaskRecord) -> None:
        self._tx.create(self._wrote(self._store._task_ref(run_id, record.task_id)),
                        self._store._expiring(encode(record.to_dict())))

    def replace_task(self, run_id: str, record: TaskRecord) -> None:
        self._tx.set(self._wrote(self._store._task_ref(run_id, record.task_id)),
                     self._store._expiring(encode(record.to_dict())))

    def put_trigger(self, trigger: Trigger) -> None:
        self._tx.set(self._wrote(self._store._trigger_ref(trigger.trigger_id)),
                     self._store._expiring(trigger.to_dict()))

    def delete_trigger(self, trigger_id: str) -> None:
        self._tx.delete(self._wrote(self._store._trigger_ref(trigger_id)))


def commit_compare_and_set(store: "FirestoreStore", fn: Callable[[Any], T]) -> T:
    """ports.Store.transact(compare_and_set=True): see CompareAndSet."""
    remembering = True
    for attempt in range(store.max_attempts):
        recorder = CompareAndSet(store, remembering)
        try:
            result = fn(FirestoreTransaction(store, recorder, counted=False))
        except TRANSIENT as exc:
            raise transient(exc) from exc
        if not recorder.trusts_memory():
            # Decided on a remembered document that no precondition would
            # check (firestore_cache.py): decide again on fresh reads.
            remembering = False
            continue
        if not recorder.writes:
            return result
        batch = recorder.batch()
        if batch is None:  # it read something it does not write: lock it
            return commit_transaction(store, fn)
        try:
            # No automatic retry: a resend of a commit that did land would
            # fail its preconditions and look like a lost race, and the
            # step would be decided again on top of itself. An error that
            # leaves the outcome unknown is raised instead (transient), so
            # the message is redelivered and the engine sees what landed.
            if recorder.guarded:
                results = batch.commit(retry=None)
            else:  # blind writes: a resend writes the same values again
                results = batch.commit()
        except (gexc.FailedPrecondition, gexc.Aborted):
            # Someone changed what we read: decide again on fresh reads,
            # after a short random pause so two losers do not collide again.
            store.known.drop(recorder.read_times)
            time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
            continue
        except TRANSIENT as exc:
            store.known.drop(recorder.read_times)
            store.known.drop(ref.path for _, ref, _ in recorder.writes)
            raise transient(exc) from exc
        recorder.remember_commit(list(results or []))
        store._count(writes=len(recorder.writes))
        return result
    raise TransientBackendError(
        f"Firestore: compare-and-set still conflicting after {store.max_attempts} attempts")

def commit_transaction(store: "FirestoreStore", fn: Callable[[Any], T]) -> T:
    """ports.Store.transact: one batch when `fn` only writes, else a transaction."""
    batch = store.client.batch()
    probe = FirestoreTransaction(store, batch, batch=True)
    try:
        result = fn(probe)
    except NeedsRead:
        pass
    else:
        if probe.writes:
            store.known.drop(probe.written)
            try:
                batch.commit()
            except TRANSIENT as exc:
                raise transient(exc) from exc
            store._count(writes=probe.writes)
        return result
    attempts: list[FirestoreTransaction] = []

    @firestore.transactional
    def run(tx: Any) -> T:
        wrapper = FirestoreTransaction(store, tx)
        attempts.append(wrapper)
        return fn(wrapper)

    # The client would retry an aborted commit at once, in step with the
    # other side of the conflict (two deliveries of one message claiming
    # the same task), and on the emulator each collision waits 2 s for a
    # lock: 20 attempts could all collide. So one attempt per client
    # call, and a random pause, growing, between ours.
    for attempt in range(store.max_attempts):
        try:
            result = run(store.client.transaction(max_attempts=1))
        except gexc.Aborted as exc:
            aborted: Exception = exc
        except TRANSIENT as exc:
            raise transient(exc) from exc
        except ValueError as exc:
            # "Failed to commit transaction in 1 attempts", caused by Aborted.
            if not isinstance(exc.__cause__, gexc.Aborted):
                raise
            aborted = exc
        else:
            if attempts:
                store.known.drop(attempts[-1].written)
                store._count(writes=attempts[-1].writes)
            return result
        time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
    raise TransientBackendError(
        f"Firestore: transaction still aborted after {store.max_attempts} attempts: "
        f"{aborted}")
