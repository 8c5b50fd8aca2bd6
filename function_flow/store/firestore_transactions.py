"""How the Firestore store writes: records as documents, and its two kinds of transaction.

`FirestoreTransaction` is ports.Transaction over one attempt of a Firestore
transaction (or a batch write, when the function only writes).
`CompareAndSet` (firestore_cas.py) stands in for a transaction without locks: reads happen at
once and remember each document's update time, and the writes commit as one
batch whose writes carry "unchanged since read" preconditions (see
docs/design.md, "No hot document").

Record fields are stored as they are, except `args` (run) and `result`
(task), which hold arbitrary JSON and are stored as JSON text in `args_json`
and `result_json` (and a foreach item's `item`, a piece of a result, in
`item_json`): Firestore refuses arrays of arrays, very large integers and
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
from function_flow.store import firestore_joins
from function_flow.store.firestore_absent import created, merge_write, synthesized
from function_flow.store.firestore_cas import CompareAndSet

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
JSON_FIELDS = {"args": "args_json", "result": "result_json", "item": "item_json",
               "attempts": "attempts_json", "history": "history_json"}
RESERVED_ID = re.compile(r"^__.*__$|^\.{1,2}$|^~|/")


def doc_id(key: str) -> str:
    """The document id of a run, task or trigger id (see module docstring)."""
    if RESERVED_ID.search(key):
        return "~" + urllib.parse.quote(key, safe="")
    return key


def key_of(document_id: str) -> str:
    """The run, task or trigger id of a document id (doc_id undone)."""
    return urllib.parse.unquote(document_id[1:]) if document_id.startswith("~") \
        else document_id


def task_from(snapshot: Any) -> TaskRecord:
    """The task record of an existing document. One a merge made (firestore_absent.py)
    may hold only some fields: the rest are TaskRecord's defaults."""
    data = decode(snapshot.to_dict())
    data.setdefault("task_id", key_of(snapshot.reference.id))
    return TaskRecord.from_dict(data)


def encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Record fields -> document fields (JSON fields as text; a join's counters
    beside a whole deps_done map, see firestore_joins.py)."""
    data = {}
    for key, value in fields.items():
        if key in JSON_FIELDS:
            data[JSON_FIELDS[key]] = json.dumps(value)
        else:
            data[key] = value
    return firestore_joins.whole(data)


def decode(data: dict[str, Any]) -> dict[str, Any]:
    """Document fields -> record fields."""
    fields = firestore_joins.stored(dict(data))
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
        #: Those writes that carry a join's counter transforms (firestore_joins.py).
        self.counts = firestore_joins.CountingWrites()
        #: Tasks read here, and those read as absent (firestore_absent.py).
        self._read: set[str] = set()
        self._synthesized: set[str] = set()
        self._made: set[str] = set()
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
        return self._with_absent(run_id, task_ids, found)

    def _with_absent(self, run_id: str, task_ids: Iterable[str],
                     found: dict[str, TaskRecord]) -> dict[str, TaskRecord]:
        """`found` plus the absent tasks among `task_ids` (firestore_absent.py)."""
        wanted = list(dict.fromkeys(task_ids))
        self._read.update(wanted)
        if len(found) < len(wanted):
            for record in synthesized(wanted, found, self._store.absent_ids(run_id)):
                self._synthesized.add(record.task_id)
                found[record.task_id] = record
        return found

    def _task_from(self, snapshot: Any) -> TaskRecord:
        record = task_from(snapshot)
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
        return run, self._with_absent(run_id, task_ids, found)

    def get_slot(self, run_id: str, slot: int) -> str | None:
        self._reading(1)
        self._slots_read.add(slot)
        snapshot = next(iter(self._tx.get(self._store._slot_ref(run_id, slot))))
        return (snapshot.to_dict() or {}).get("holder") if snapshot.exists else None

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self._tx.update(self._wrote(self._store._run_ref(run_id)), update_paths(fields))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        ref = self._wrote(self._store._task_ref(run_id, task_id))
        if task_id in self._synthesized:  # read as absent here: create it whole
            self._synthesized.discard(task_id)
            self._made.add(task_id)
            self._tx.create(ref, self._store._expiring(
                firestore_joins.marked(encode(created(task_id, fields)))))
        elif task_id in self._made or task_id not in self._read \
                and task_id in self._store.absent_ids(run_id):
            # Blind, and maybe still absent: a merge creates it if missing (a
            # commit checks every write against the documents before it, so
            # a second write of a document this commit creates is one too).
            write = len(self.written) - 1
            counted = self.counts.fields(write, fields)
            data, paths = merge_write(task_id, self.counts.marking(
                write, encode(self._store._expiring(counted))))
            if self._store.absent.marks_writes(run_id):
                self.counts.merged(write, data)
            self._tx.set(ref, data, paths)
        else:
            write = len(self.written) - 1
            counted = self.counts.fields(write, fields)
            self._tx.update(ref, self.counts.marking(
                write, update_paths(self._store._expiring(counted))))

    def learn_counts(self, results: list[Any]) -> None:
        """After the commit: what its counter transforms returned (firestore_joins.py)."""
        self.counts.learn(self._store, self.written, results)

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
                        self._store._expiring(firestore_joins.marked(encode(record.to_dict()))))

    def replace_task(self, run_id: str, record: TaskRecord) -> None:
        self._tx.set(self._wrote(self._store._task_ref(run_id, record.task_id)),
                     self._store._expiring(firestore_joins.marked(encode(record.to_dict()))))

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
        wrapper = FirestoreTransaction(store, recorder, counted=False)
        try:
            result = fn(wrapper)
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
        except (gexc.FailedPrecondition, gexc.Aborted, gexc.AlreadyExists) as exc:
            if isinstance(exc, gexc.AlreadyExists) and not recorder.creates_missing():
                raise  # a task added twice (ports.RecordExistsError)
            # Someone changed (or made) what we read: decide again on fresh reads,
            # after a short random pause so two losers do not collide again.
            store.known.drop(recorder.read_times)
            time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
            continue
        except TRANSIENT as exc:
            store.known.drop(recorder.read_times)
            store.known.drop(ref.path for _, ref, _ in recorder.writes)
            raise transient(exc) from exc
        recorder.remember_commit(list(results or []))
        wrapper.learn_counts(list(results or []))
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
                results = batch.commit()
            except TRANSIENT as exc:
                raise transient(exc) from exc
            probe.learn_counts(list(results or []))
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
