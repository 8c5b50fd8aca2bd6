"""Creating a run on Firestore (a mixin of FirestoreStore; see its module docstring).

A run of up to 500 documents is one batch whose `create` of the run
document fails if the run exists; a bigger one writes its task and slot
documents first and the run document last, in a transaction. Plain
WAITING tasks get no document until first written (firestore_absent.py).
"""

from __future__ import annotations

import json
from typing import Any, Callable

from google.api_core import exceptions as gexc
from google.cloud import firestore

from function_flow.core.records import RunRecord, TaskRecord
from function_flow.errors import TransientBackendError
from function_flow.store import firestore_absent, firestore_joins, firestore_schema
from function_flow.store.firestore_transactions import encode, transient
from function_flow.store.firestore_transactions import translated as _translated

#: Firestore's limit of writes in one transaction or batch.
MAX_WRITES = 500


class FirestoreCreation:
    """ports.Store.create_run; the host provides refs, clients and counting."""

    client: Any
    max_attempts: int
    known: Any
    absent: Any
    _run_ref: Callable[[str], Any]
    _task_ref: Callable[[str, str], Any]
    _slot_ref: Callable[[str, int], Any]
    _count: Callable[..., None]
    _expiring: Callable[..., dict[str, Any]]
    _delete_refs: Callable[[list[Any]], None]
    _written_slots: dict[str, int]

    @_translated
    def create_run(self, run: RunRecord, tasks: list[TaskRecord],
                   slots: dict[int, str | None]) -> bool:
        run_ref = self._run_ref(run.run_id)
        since = run.created_at or None
        tasks, absent = firestore_absent.split(tasks)
        documents = [(self._task_ref(run.run_id, t.task_id),
                      self._expiring(firestore_joins.marked(encode(t.to_dict())), since))
                     for t in tasks]
        documents += [(self._slot_ref(run.run_id, n), self._expiring({"holder": holder}, since))
                      for n, holder in slots.items()]
        run_data = self._expiring(encode(run.to_dict()), since)
        if absent:
            run_data[firestore_absent.FIELD] = json.dumps(absent)
        run_data[firestore_schema.FIELD] = firestore_schema.CURRENT
        if len(documents) + 1 <= MAX_WRITES:
            created = self._create_in_one_batch(run_ref, run_data, documents)
        else:
            created = self._create_in_batches(run.run_id, run_ref, run_data, documents)
        if created:
            self.absent.learn(run.run_id, run_data)
            if set(slots) == set(range(len(slots))):
                self._written_slots[run.run_id] = len(slots)  # firestore_slots.py
        return created

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
            results = batch.commit(retry=None)
        except gexc.AlreadyExists:
            return False
        self._count(writes=len(documents) + 1)
        for (ref, data), result in zip([*documents, (run_ref, run_data)], results or []):
            self.known.put(ref.path, data, getattr(result, "update_time", None))
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
                raise transient(exc) from exc
            raise
