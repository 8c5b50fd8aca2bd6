"""Firestore store: run state of the GCP backend, one document per record.

Schema (every collection name starts with the configured prefix):

    {prefix}runs/{run_id}                  the run record
    {prefix}runs/{run_id}/tasks/{task_id}  one task record per task
    {prefix}runs/{run_id}/slots/{n}        {"holder": task_id or null}
    {prefix}triggers/{trigger_id}          {"run_id", "task_id", "attempt"}

Record fields are stored as they are, except `args` (run) and `result`
(task), which hold arbitrary JSON and are stored as JSON text in `args_json`
and `result_json`: Firestore refuses arrays of arrays, very large integers and
map keys like "__x__", so JSON text is the only lossless form. Document ids
that Firestore reserves ("__end__", the engine's virtual end task, ".",
"..", anything with "/") are stored escaped: "~" + percent-encoding (any id
starting with "~" is escaped too, so the mapping stays one-to-one).

`deps_done` is a map written with blind field updates (`deps_done.<task>`,
quoted with FieldPath for ids with special characters), so completers never
read the dependent's document and never contend on it.

Every transition is atomic: a Firestore transaction, or (when the engine
promises that it writes everything it read: `compare_and_set`) one batch
write whose writes carry "unchanged since read" preconditions. Reads come
before writes (Firestore enforces it; this adapter raises
ports.ReadAfterWriteError like the SQLite one). Queries never run inside a
transaction: on the emulator a query in a transaction conflicts with every
write to that collection.

create_run: a run of up to 500 documents is created in one batch write
whose `create` of the run document fails if the run exists (no lock, so
concurrent starts with one run id fail fast instead of waiting). A bigger
run (a transaction or batch
holds at most 500 writes) writes its task and slot documents first, with
`create` in batches of 500 (a batch fails whole if any document exists, so
two concurrent creators never overwrite each other's tasks), then creates
the run document last in a transaction that checks it does not exist. On any
failure it deletes the documents it wrote, so no run document ever exists
without its tasks. A process killed in the middle can leave task documents
without a run document; nothing reads them (every engine path starts from
the run), and `delete_run(run_id)` removes them.

Operation counts, for the benchmark: `reads` and `writes` count documents,
as Firestore bills them. A get counts 1 per document asked for (found or
not), a query the number of documents it returned, at least 1. Every set,
update, create and delete counts 1; inside a transaction, reads count on
every attempt and writes once, when the commit succeeds.

Transient failures (unavailable, deadline exceeded, a transaction still
aborted after its retries) are raised as errors.TransientBackendError, so a
Cloud Function lets Pub/Sub redeliver the message.
"""

from __future__ import annotations

import functools
import json
import os
import random
import re
import threading
import time
import urllib.parse
from typing import Any, Callable, Iterable, Iterator, TypeVar

from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter
from google.cloud.firestore_v1.field_path import FieldPath

from function_flow.config import DEFAULT_PROJECT
from function_flow.errors import (ConfigurationError, RecordTooLargeError, TransientBackendError,
                                  transient_google_errors)
from function_flow.core.ports import ReadAfterWriteError, RecordExistsError
from function_flow.core.records import JoinProgress, RunRecord, RunStatus, TaskRecord, TaskStatus

T = TypeVar("T")

#: Firestore's limit of writes in one transaction or batch.
MAX_WRITES = 500
#: Attempts of a transaction before it counts as a transient failure.
DEFAULT_MAX_ATTEMPTS = 20

#: Errors raised as TransientBackendError: the one list every Google client
#: of function_flow shares (errors.transient_google_errors). Besides the
#: statuses Firestore answers when busy, it holds Unknown (a commit whose
#: connection broke: the engine then records the outcome again after reading
#: what landed) and RetryError (the client's own retries ran out of time).
_TRANSIENT = transient_google_errors()
#: Record fields holding arbitrary JSON, and the document field storing it.
_JSON_FIELDS = {"args": "args_json", "result": "result_json"}
_RESERVED_ID = re.compile(r"^__.*__$|^\.{1,2}$|^~|/")


def doc_id(key: str) -> str:
    """The document id of a run, task or trigger id (see module docstring)."""
    if _RESERVED_ID.search(key):
        return "~" + urllib.parse.quote(key, safe="")
    return key


def _transient(exc: Exception) -> TransientBackendError:
    error = TransientBackendError(f"Firestore: {exc}")
    error.__cause__ = exc
    return error


def _translated(method: Callable[..., T]) -> Callable[..., T]:
    """Raise Firestore's transient errors as TransientBackendError."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        try:
            return method(*args, **kwargs)
        except _TRANSIENT as exc:
            raise _transient(exc) from exc
    return wrapper


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    """Record fields -> document fields (JSON fields as text)."""
    data = {}
    for key, value in fields.items():
        if key in _JSON_FIELDS:
            data[_JSON_FIELDS[key]] = json.dumps(value)
        else:
            data[key] = value
    return data


def _decode(data: dict[str, Any]) -> dict[str, Any]:
    """Document fields -> record fields."""
    fields = dict(data)
    for key, stored in _JSON_FIELDS.items():
        if stored in fields:
            text = fields.pop(stored)
            fields[key] = json.loads(text) if text is not None else None
    return fields


def _update_paths(fields: dict[str, Any]) -> dict[str, Any]:
    """An update's keys as Firestore field paths ("a.b" sets entry b of map a)."""
    data = {}
    for key, value in _encode(fields).items():
        if "." in key:
            field, entry = key.split(".", 1)
            data[FieldPath(field, entry).to_api_repr()] = value
        else:
            data[FieldPath(key).to_api_repr()] = value
    return data


class _NeedsRead(Exception):
    """A transaction function read something: it needs a real transaction."""


class _CompareAndSet:
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

    def __init__(self, client: Any) -> None:
        self._client = client
        self.read_times: dict[str, Any] = {}  # document path -> update time (None: missing)
        self.writes: list[tuple[str, Any, dict[str, Any]]] = []
        #: Whether the batch carries preconditions (then it must not be resent).
        self.guarded = False

    def get(self, ref: Any) -> list[Any]:
        return self.get_all([ref])

    def get_all(self, refs: list[Any]) -> list[Any]:
        snapshots = list(self._client.get_all(refs))
        for snapshot in snapshots:
            # A document read twice is checked against its first read.
            self.read_times.setdefault(snapshot.reference.path,
                                       snapshot.update_time if snapshot.exists else None)
        return snapshots

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


class _FirestoreTransaction:
    """ports.Transaction over one attempt of a Firestore transaction.

    Over a WriteBatch instead (`batch=True`), it probes whether the function
    only writes: the first read raises _NeedsRead. A function that never
    reads commits as one batch write (one round trip instead of begin and
    commit); it is just as atomic, and without reads there is nothing a
    transaction could check.
    """

    def __init__(self, store: "FirestoreStore", tx: Any, batch: bool = False) -> None:
        self._store = store
        self._tx = tx
        self._batch = batch
        self.writes = 0

    def _reading(self, documents: int) -> None:
        if self._batch:
            raise _NeedsRead
        if self.writes:
            raise ReadAfterWriteError("transaction read after a write")
        self._store._count(reads=max(1, documents))

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
                record = TaskRecord.from_dict(_decode(snapshot.to_dict()))
                found[record.task_id] = record
        return found

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
                record = TaskRecord.from_dict(_decode(snapshot.to_dict()))
                found[record.task_id] = record
        return run, found

    def get_slot(self, run_id: str, slot: int) -> str | None:
        self._reading(1)
        snapshot = next(iter(self._tx.get(self._store._slot_ref(run_id, slot))))
        return (snapshot.to_dict() or {}).get("holder") if snapshot.exists else None

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self.writes += 1
        self._tx.update(self._store._run_ref(run_id), _update_paths(fields))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self.writes += 1
        self._tx.update(self._store._task_ref(run_id, task_id), _update_paths(fields))

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        self.writes += 1
        self._tx.set(self._store._slot_ref(run_id, slot), {"holder": holder})

    def add_task(self, run_id: str, record: TaskRecord) -> None:
        self.writes += 1
        self._tx.create(self._store._task_ref(run_id, record.task_id),
                        _encode(record.to_dict()))

    def put_trigger(self, trigger_id: str, run_id: str, task_id: str, attempt: int) -> None:
        self.writes += 1
        self._tx.set(self._store._trigger_ref(trigger_id),
                     {"trigger_id": trigger_id, "run_id": run_id, "task_id": task_id,
                      "attempt": attempt})

    def delete_trigger(self, trigger_id: str) -> None:
        self.writes += 1
        self._tx.delete(self._store._trigger_ref(trigger_id))


class FirestoreStore:
    """ports.Store on Firestore (see module docstring for schema and counting).

    Building it is free of network calls: the client is made on first use,
    so defining a Job never needs credentials.
    """

    def __init__(self, project: str | None = None, database: str = "(default)",
                 prefix: str = "", client: Any = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS) -> None:
        self.project = project
        self.database = database or "(default)"
        self.prefix = prefix
        self.max_attempts = max_attempts
        self._client = client
        self._lock = threading.Lock()
        self.reads = 0
        self.writes = 0

    # ------------------------------------------------------------ plumbing

    @property
    def client(self) -> firestore.Client:
        with self._lock:
            if self._client is None:
                project = self.project
                if project is None and os.environ.get("FIRESTORE_EMULATOR_HOST"):
                    project = DEFAULT_PROJECT
                try:
                    self._client = firestore.Client(project=project, database=self.database)
                except DefaultCredentialsError as exc:
                    raise ConfigurationError(
                        "no Google Cloud credentials for Firestore: run `gcloud auth "
                        "application-default login` and set GOOGLE_CLOUD_PROJECT, or set "
                        f"FIRESTORE_EMULATOR_HOST to use the emulator ({exc})") from exc
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def _count(self, reads: int = 0, writes: int = 0) -> None:
        with self._lock:
            self.reads += reads
            self.writes += writes

    def reset_counts(self) -> None:
        with self._lock:
            self.reads = self.writes = 0

    def _runs(self) -> Any:
        return self.client.collection(f"{self.prefix}runs")

    def _run_ref(self, run_id: str) -> Any:
        return self._runs().document(doc_id(run_id))

    def _task_ref(self, run_id: str, task_id: str) -> Any:
        return self._run_ref(run_id).collection("tasks").document(doc_id(task_id))

    def _slot_ref(self, run_id: str, slot: int) -> Any:
        return self._run_ref(run_id).collection("slots").document(str(int(slot)))

    def _trigger_ref(self, trigger_id: str) -> Any:
        return self.client.collection(f"{self.prefix}triggers").document(doc_id(trigger_id))

    def _query(self, query: Any) -> list[Any]:
        snapshots = list(query.stream())
        self._count(reads=max(1, len(snapshots)))
        return snapshots

    @staticmethod
    def _run_from(snapshot: Any) -> RunRecord | None:
        return RunRecord.from_dict(_decode(snapshot.to_dict())) if snapshot.exists else None

    # --------------------------------------------------------- transactions

    def transact(self, fn: Callable[[Any], T], *, compare_and_set: bool = False) -> T:
        try:
            if compare_and_set:
                return self._transact_compare_and_set(fn)
            return self._transact(fn)
        except gexc.AlreadyExists as exc:
            raise RecordExistsError(f"Firestore: {exc.message}") from exc
        except gexc.InvalidArgument as exc:
            if any(word in str(exc) for word in ("size", "exceeds", "longer than")):
                raise RecordTooLargeError(
                    f"Firestore refused the write ({exc.message}); a document holds at "
                    "most 1 MiB") from exc
            raise

    def _transact_compare_and_set(self, fn: Callable[[Any], T]) -> T:
        """ports.Store.transact(compare_and_set=True): see _CompareAndSet."""
        for attempt in range(self.max_attempts):
            recorder = _CompareAndSet(self.client)
            try:
                result = fn(_FirestoreTransaction(self, recorder))
            except _TRANSIENT as exc:
                raise _transient(exc) from exc
            if not recorder.writes:
                return result
            batch = recorder.batch()
            if batch is None:  # it read something it does not write: lock it
                return self._transact(fn)
            try:
                # No automatic retry: a resend of a commit that did land would
                # fail its preconditions and look like a lost race, and the
                # step would be decided again on top of itself. An error that
                # leaves the outcome unknown is raised instead (transient), so
                # the message is redelivered and the engine sees what landed.
                if recorder.guarded:
                    batch.commit(retry=None)
                else:  # blind writes: a resend writes the same values again
                    batch.commit()
            except (gexc.FailedPrecondition, gexc.Aborted):
                # Someone changed what we read: decide again on fresh reads,
                # after a short random pause so two losers do not collide again.
                time.sleep(random.uniform(0, 0.005 * 2 ** min(attempt, 6)))
                continue
            except _TRANSIENT as exc:
                raise _transient(exc) from exc
            self._count(writes=len(recorder.writes))
            return result
        raise TransientBackendError(
            f"Firestore: compare-and-set still conflicting after {self.max_attempts} attempts")

    def _transact(self, fn: Callable[[Any], T]) -> T:
        batch = self.client.batch()
        probe = _FirestoreTransaction(self, batch, batch=True)
        try:
            result = fn(probe)
        except _NeedsRead:
            pass
        else:
            if probe.writes:
                try:
                    batch.commit()
                except _TRANSIENT as exc:
                    raise _transient(exc) from exc
                self._count(writes=probe.writes)
            return result
        attempts: list[_FirestoreTransaction] = []

        @firestore.transactional
        def run(tx: Any) -> T:
            wrapper = _FirestoreTransaction(self, tx)
            attempts.append(wrapper)
            return fn(wrapper)

        # The client would retry an aborted commit at once, in step with the
        # other side of the conflict (two deliveries of one message claiming
        # the same task), and on the emulator each collision waits 2 s for a
        # lock: 20 attempts could all collide. So one attempt per client
        # call, and a random pause, growing, between ours.
        for attempt in range(self.max_attempts):
            try:
                result = run(self.client.transaction(max_attempts=1))
            except gexc.Aborted as exc:
                aborted: Exception = exc
            except _TRANSIENT as exc:
                raise _transient(exc) from exc
            except ValueError as exc:
                # "Failed to commit transaction in 1 attempts", caused by Aborted.
                if not isinstance(exc.__cause__, gexc.Aborted):
                    raise
                aborted = exc
            else:
                self._count(writes=attempts[-1].writes if attempts else 0)
                return result
            time.sleep(random.uniform(0, min(1.0, 0.02 * 2 ** attempt)))
        raise TransientBackendError(
            f"Firestore: transaction still aborted after {self.max_attempts} attempts: "
            f"{aborted}")

    @_translated
    def create_run(self, run: RunRecord, tasks: list[TaskRecord],
                   slots: dict[int, str | None]) -> bool:
        run_ref = self._run_ref(run.run_id)
        documents = [(self._task_ref(run.run_id, t.task_id), _encode(t.to_dict()))
                     for t in tasks]
        documents += [(self._slot_ref(run.run_id, n), {"holder": holder})
                      for n, holder in slots.items()]
        run_data = _encode(run.to_dict())
        if len(documents) + 1 <= MAX_WRITES:
            return self._create_in_one_batch(run_ref, run_data, documents)
        return self._create_in_batches(run.run_id, run_ref, run_data, documents)

    def _create_in_one_batch(self, run_ref: Any, run_data: dict[str, Any],
                             documents: list[tuple[Any, dict[str, Any]]]) -> bool:
        """One atomic batch whose `create` of the run document fails if it exists.

        No transaction, so no lock: concurrent starts with one run id (a
        client retrying) fail at once on the existing document instead of
        waiting for each other's locks. Not resent by the client: a resent
        commit that had landed would look like someone else's run.
        """
        batch = self.client.batch()
        for ref, data in documents:
            batch.set(ref, data)
        batch.create(run_ref, run_data)
        try:
            batch.commit(retry=None)
        except gexc.AlreadyExists:
            return False
        self._count(writes=len(documents) + 1)
        return True

    def _create_in_batches(self, run_id: str, run_ref: Any, run_data: dict[str, Any],
                           documents: list[tuple[Any, dict[str, Any]]]) -> bool:
        self._count(reads=1)
        if run_ref.get().exists:
            return False
        written: list[Any] = []
        try:
            for start in range(0, len(documents), MAX_WRITES):
                chunk = documents[start:start + MAX_WRITES]
                batch = self.client.batch()
                for ref, data in chunk:
                    batch.create(ref, data)
                batch.commit()
                self._count(writes=len(chunk))
                written.extend(ref for ref, _ in chunk)

            @firestore.transactional
            def create(tx: Any) -> bool:
                self._count(reads=1)
                if next(iter(tx.get(run_ref))).exists:
                    return False
                tx.create(run_ref, run_data)
                return True

            created = self._commit(create)
        except gexc.AlreadyExists as exc:
            self._delete_refs(written)
            if self._run_ref(run_id).get().exists:
                return False
            raise TransientBackendError(
                f"run {run_id!r} is being created by another caller at the same time "
                "(or an interrupted creation left its tasks behind: `delete_run` "
                "removes them); retry later") from exc
        except BaseException:
            self._delete_refs(written)
            raise
        if not created:
            self._delete_refs(written)
            return False
        self._count(writes=1)
        return True

    def _commit(self, fn: Any) -> bool:
        try:
            return fn(self.client.transaction(max_attempts=self.max_attempts))
        except ValueError as exc:
            if isinstance(exc.__cause__, gexc.Aborted):
                raise _transient(exc) from exc
            raise

    def _delete_refs(self, refs: list[Any]) -> None:
        for start in range(0, len(refs), MAX_WRITES):
            batch = self.client.batch()
            chunk = refs[start:start + MAX_WRITES]
            for ref in chunk:
                batch.delete(ref)
            batch.commit()
            self._count(writes=len(chunk))

    # ---------------------------------------------------------------- reads

    @_translated
    def get_run(self, run_id: str) -> RunRecord | None:
        self._count(reads=1)
        return self._run_from(self._run_ref(run_id).get())

    @_translated
    def get_tasks(self, run_id: str,
                  task_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        if task_ids is None:
            snapshots = self._query(self._run_ref(run_id).collection("tasks"))
            return [TaskRecord.from_dict(_decode(s.to_dict())) for s in snapshots]
        wanted = list(dict.fromkeys(task_ids))
        if not wanted:
            return []
        self._count(reads=len(wanted))
        found = {}
        for snapshot in self.client.get_all([self._task_ref(run_id, t) for t in wanted]):
            if snapshot.exists:
                record = TaskRecord.from_dict(_decode(snapshot.to_dict()))
                found[record.task_id] = record
        return [found[t] for t in wanted if t in found]

    def join_progress(self, run_id: str, task_id: str) -> JoinProgress | None:
        # One document read whatever its size: counting would not be cheaper.
        records = self.get_tasks(run_id, [task_id])
        return JoinProgress.of(records[0]) if records else None

    @_translated
    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        if limit <= 0:
            return []
        query = (self._run_ref(run_id).collection("tasks")
                 .where(filter=FieldFilter("status", "==", TaskStatus(status).value))
                 .limit(limit))
        return [TaskRecord.from_dict(_decode(s.to_dict())) for s in self._query(query)]

    @_translated
    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        query = (self._run_ref(run_id).collection("slots")
                 .where(filter=FieldFilter("holder", "!=", None)))
        taken = {int(s.id) for s in self._query(query)}
        return [n for n in range(count) if n not in taken][:max(0, limit)]

    @_translated
    def list_runs(self, limit: int = 50,
                  status: RunStatus | None = None) -> list[RunRecord]:
        if status is not None:  # no order_by: that would need a composite index
            query = self._runs().where(filter=FieldFilter("status", "==", status.value))
        else:
            query = self._runs().order_by("created_at", direction=firestore.Query.DESCENDING)
        return [RunRecord.from_dict(_decode(s.to_dict()))
                for s in self._query(query.limit(limit))]

    @_translated
    def runs_started_before(self, timestamp: float) -> list[str]:
        query = (self._runs().where(filter=FieldFilter("created_at", "<", timestamp))
                 .select(["run_id"]))
        return [s.get("run_id") for s in self._query(query)]

    # ------------------------------------------------------------- triggers

    @_translated
    def get_trigger(self, trigger_id: str) -> tuple[str, str, int] | None:
        self._count(reads=1)
        snapshot = self._trigger_ref(trigger_id).get()
        if not snapshot.exists:
            return None
        data = snapshot.to_dict()
        return data["run_id"], data["task_id"], int(data["attempt"])

    # ------------------------------------------------------------- deletion

    @_translated
    def delete_run(self, run_id: str) -> None:
        """Delete a run's tasks, slots and triggers, then the run itself.

        Not atomic (a run can exceed 500 documents); the run document goes
        last, so an interrupted deletion can simply be repeated.
        """
        run_ref = self._run_ref(run_id)
        refs: list[Any] = []
        for name in ("tasks", "slots"):
            refs.extend(self._listed(run_ref.collection(name)))
        triggers = self.client.collection(f"{self.prefix}triggers").where(
            filter=FieldFilter("run_id", "==", run_id)).select([])
        refs.extend(s.reference for s in self._query(triggers))
        self._delete_refs(refs)
        self._delete_refs([run_ref])

    def _listed(self, collection: Any) -> Iterator[Any]:
        refs = list(collection.list_documents(page_size=MAX_WRITES))
        self._count(reads=max(1, len(refs)))
        return iter(refs)
