"""Firestore store: run state of the GCP backend, one document per record.

Schema (every collection name starts with the configured prefix):

    {prefix}runs/{run_id}                  the run record
    {prefix}runs/{run_id}/tasks/{task_id}  one task record per task
    {prefix}runs/{run_id}/slots/{n}        {"holder": task_id or null}
    {prefix}runs/{run_id}/context/{key}    {"key", "value_json"}: see firestore_context.py
    {prefix}triggers/{trigger_id}          a records.Trigger (run, task, attempt, watch...)
    {prefix}deliveries/{key}               {"key", "run_id"}: requests already acted on

With `ttl_days` (FUNCTION_FLOW_RUN_TTL_DAYS), every document of a run also
carries `expire_at`, for Firestore's TTL policies (see expiry.py).

How records become documents, and the transactions, are in
firestore_transactions.py.

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

import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from google.api_core import exceptions as gexc
from google.auth.exceptions import DefaultCredentialsError
from google.cloud import firestore
from google.cloud.firestore_v1.base_query import FieldFilter

from function_flow.config import DEFAULT_PROJECT
from function_flow.errors import ConfigurationError, RecordTooLargeError
from function_flow.core.ports import RecordExistsError, Store
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus, Trigger)
from function_flow.store import expiry
from function_flow.store import firestore_absent
from function_flow.store.firestore_absent import AbsentLists
from function_flow.store.firestore_cache import DocumentCache
from function_flow.store.firestore_context import FirestoreContext
from function_flow.store.firestore_joins import FreshCounts
from function_flow.store.firestore_create import MAX_WRITES, FirestoreCreation
from function_flow.store.firestore_slots import FirestoreSlots
from function_flow.store.firestore_transactions import (commit_compare_and_set,
                                                        commit_transaction, decode, doc_id,
                                                        task_from)
from function_flow.store.firestore_transactions import translated as _translated
from function_flow.store.indexes import MissingIndexError

T = TypeVar("T")

#: Attempts of a transaction before it counts as a transient failure.
DEFAULT_MAX_ATTEMPTS = 20

class FirestoreStore(FirestoreContext, FirestoreCreation, FirestoreSlots, Store):
    """ports.Store on Firestore (see module docstring for schema and counting).

    Building it is free of network calls: the client is made on first use,
    so defining a Job never needs credentials.
    """

    def __init__(self, project: str | None = None, database: str = "(default)",
                 prefix: str = "", client: Any = None,
                 max_attempts: int = DEFAULT_MAX_ATTEMPTS,
                 ttl_days: float | None = None) -> None:
        self.project = project
        self.ttl_days = ttl_days
        self.database = database or "(default)"
        self.prefix = prefix
        self.max_attempts = max_attempts
        self._client = client
        self._lock = threading.Lock()
        self.reads = 0
        self.writes = 0
        #: What this process last wrote or read of each document, for
        #: compare-and-set to start from (firestore_cache.py).
        self.known = DocumentCache()
        #: Per run, the tasks it started without documents (firestore_absent.py).
        self.absent = AbsentLists()
        #: Join counts this thread's latest commit returned (firestore_joins.py).
        self.fresh = FreshCounts()
        #: Per run, how many slots are known to have documents (firestore_slots.py).
        self._written_slots: dict[str, int] = {}

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

    def _expiring(self, data: dict[str, Any], since: float | None = None) -> dict[str, Any]:
        """`data` with its `expire_at` (written `since`, default now) when runs expire."""
        if self.ttl_days is None:
            return data
        moment = time.time() if since is None else since
        return {**data, expiry.FIELD: expiry.expire_at(moment, self.ttl_days)}

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
        self.known.remember(snapshots)
        return snapshots

    def _run_from(self, snapshot: Any) -> RunRecord | None:
        if not snapshot.exists:
            return None
        data = snapshot.to_dict()
        self.absent.learn(data.get("run_id", ""), data)
        return RunRecord.from_dict(decode(data))

    def absent_ids(self, run_id: str) -> frozenset[str]:
        """The run's tasks that have no document until first written (firestore_absent.py)."""
        ids = self.absent.known(run_id)
        if ids is None:
            self._count(reads=1)
            snapshot = self._run_ref(run_id).get()
            ids = self.absent.learn(run_id, snapshot.to_dict() if snapshot.exists else None)
        return ids

    # --------------------------------------------------------- transactions

    def transact(self, fn: Callable[[Any], T], *, compare_and_set: bool = False) -> T:
        self.fresh.clear()
        try:
            if compare_and_set:
                return commit_compare_and_set(self, fn)
            return commit_transaction(self, fn)
        except gexc.AlreadyExists as exc:
            raise RecordExistsError(f"Firestore: {exc.message}") from exc
        except gexc.InvalidArgument as exc:
            if any(word in str(exc) for word in ("size", "exceeds", "longer than")):
                raise RecordTooLargeError(
                    f"Firestore refused the write ({exc.message}); a document holds at "
                    "most 1 MiB") from exc
            raise

    def _delete_refs(self, refs: list[Any]) -> None:
        self.known.drop(ref.path for ref in refs)
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
        snapshot = self._run_ref(run_id).get()
        self.known.remember([snapshot])
        return self._run_from(snapshot)

    @_translated
    def get_tasks(self, run_id: str,
                  task_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        if task_ids is None:
            snapshots = self._query(self._run_ref(run_id).collection("tasks"))
            records = [task_from(s) for s in snapshots]
            absent = self.absent_ids(run_id)
            if not absent:
                return records
            records += firestore_absent.synthesized(
                sorted(absent), (r.task_id for r in records), absent)
            return sorted(records, key=lambda r: doc_id(r.task_id))
        wanted = list(dict.fromkeys(task_ids))
        if not wanted:
            return []
        self._count(reads=len(wanted))
        found = {}
        snapshots = list(self.client.get_all([self._task_ref(run_id, t) for t in wanted]))
        self.known.remember(snapshots)
        for snapshot in snapshots:
            if snapshot.exists:
                record = task_from(snapshot)
                found[record.task_id] = record
        if len(found) < len(wanted):
            found.update((r.task_id, r) for r in firestore_absent.synthesized(
                wanted, found, self.absent_ids(run_id)))
        return [found[t] for t in wanted if t in found]

    def join_progress(self, run_id: str, task_id: str) -> JoinProgress | None:
        # The counts this thread's commit just wrote into the join, when its
        # run keeps them (firestore_joins.py): only their "it still waits" is
        # final, so a decided rule is checked on the record, read here.
        fresh = self.fresh.take(self._task_ref(run_id, task_id).path)
        if fresh is not None and self.absent.counts_joins(run_id):
            return fresh
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
        found = [task_from(s) for s in self._query(query)]
        if TaskStatus(status) is not TaskStatus.WAITING or len(found) >= limit:
            return found
        # Absent tasks, and documents a merge made without a status, are WAITING
        # too, and no query on `status` sees them (firestore_absent.py).
        have = {r.task_id for r in found}
        rest = [t for t in sorted(self.absent_ids(run_id)) if t not in have]
        for start in range(0, len(rest), 300):
            for record in self.get_tasks(run_id, rest[start:start + 300]):
                if record.status is TaskStatus.WAITING and len(found) < limit:
                    found.append(record)
            if len(found) >= limit:
                break
        return found

    @_translated
    def list_runs(self, limit: int = 50, status: RunStatus | None = None,
                  hooks_pending: bool = False, *, job_name: str | None = None,
                  before: tuple[float, str] | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        query = self._runs()
        filters = {"status": status.value if status else None, "job_name": job_name,
                   "hooks_pending": True if hooks_pending else None}
        for field, value in filters.items():
            if value is not None:
                query = query.where(filter=FieldFilter(field, "==", value))
        filtered = [field for field, value in filters.items() if value is not None]
        # Unordered when filtered, unless asked: ordering needs a composite index.
        if newest_first or before is not None or not filtered:
            descending = firestore.Query.DESCENDING
            query = query.order_by("created_at", direction=descending).order_by(
                "__name__", direction=descending)
            if before is not None:
                query = query.start_after({"created_at": before[0],
                                           "__name__": self._run_ref(before[1])})
        try:
            snapshots = self._query(query.limit(limit))
        except gexc.FailedPrecondition as exc:  # the composite index is missing
            raise MissingIndexError(
                f"listing runs by {' and '.join(filtered)} newest first needs a composite "
                f"index on {self.prefix}runs: {', '.join(filtered)}, created_at descending "
                "(function-flow deploy and terraform/ create it; README, \"Firestore "
                f"indexes\"); Firestore says: {exc.message}") from exc
        return [RunRecord.from_dict(decode(s.to_dict())) for s in snapshots]

    @_translated
    def runs_started_before(self, timestamp: float) -> list[str]:
        query = (self._runs().where(filter=FieldFilter("created_at", "<", timestamp))
                 .select(["run_id"]))
        return [s.get("run_id") for s in self._query(query)]

    # ------------------------------------------------------------- triggers

    @_translated
    def get_trigger(self, trigger_id: str) -> Trigger | None:
        self._count(reads=1)
        snapshot = self._trigger_ref(trigger_id).get()
        return Trigger.from_dict(snapshot.to_dict()) if snapshot.exists else None

    @_translated
    def find_watches(self, limit: int, among: Iterable[str] | None = None) -> list[Trigger]:
        triggers = self.client.collection(f"{self.prefix}triggers")
        if among is None:
            queries = [triggers.where(filter=FieldFilter("watch", ">", "")).limit(limit)]
        else:  # equality on the watch field's automatic index, 30 values per query
            wanted = list(dict.fromkeys(among))
            queries = [triggers.where(filter=FieldFilter("watch", "in", wanted[i:i + 30]))
                       .limit(limit) for i in range(0, len(wanted), 30)]
        found = [Trigger.from_dict(s.to_dict()) for q in queries for s in self._query(q)]
        return found[:limit]

    @_translated
    def first_delivery(self, key: str, run_id: str) -> bool:
        self._count(writes=1)
        try:
            self.client.collection(f"{self.prefix}deliveries").document(doc_id(key)).create(
                self._expiring({"key": key, "run_id": run_id}))
        except gexc.AlreadyExists:
            return False
        return True

    @_translated
    def forget_delivery(self, key: str) -> None:
        self._count(writes=1)
        self.client.collection(f"{self.prefix}deliveries").document(doc_id(key)).delete()

    # ------------------------------------------------------------- deletion

    @_translated
    def delete_run(self, run_id: str) -> None:
        """Delete a run's tasks, slots, context and triggers, then the run itself.

        Not atomic (a run can exceed 500 documents); the run document goes
        last, so an interrupted deletion can simply be repeated. Then the
        context once more: a value a late body set meanwhile.
        """
        run_ref = self._run_ref(run_id)
        self.known.drop_under(run_ref.path + "/")
        self.absent.forget(run_id)
        self._written_slots.pop(run_id, None)
        refs: list[Any] = []
        for name in ("tasks", "slots", "context"):
            refs.extend(self._listed(run_ref.collection(name)))
        for name in ("triggers", "deliveries"):
            keyed = self.client.collection(f"{self.prefix}{name}").where(
                filter=FieldFilter("run_id", "==", run_id)).select([])
            refs.extend(s.reference for s in self._query(keyed))
        self._delete_refs(refs)
        self._delete_refs([run_ref])
        # A value a late body set meanwhile (see firestore_context.py).
        self._delete_refs(list(self._listed(run_ref.collection("context"))))

    def _listed(self, collection: Any) -> Iterator[Any]:
        refs = list(collection.list_documents(page_size=MAX_WRITES))
        self._count(reads=max(1, len(refs)))
        return iter(refs)
