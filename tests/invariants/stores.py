"""The real stores the properties run on, one fresh store per example.

A store factory is a callable returning a context manager that yields a
`StoreUnderTest`: a ports.Store nobody else uses (its own SQLite file, or
its own Firestore collection prefix, so examples never see each other), a
name for reports, and, for stores that commit compare-and-set transactions
optimistically, a way to make another writer change a record (see
fakes.RecordingStore, Scenario.conflict_rate).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import tempfile
import uuid
from typing import Any, Callable, ContextManager, Iterator

from function_flow.core.ports import Store
from function_flow.store.sqlite import SqliteStore

from .fakes import Conflict, RecordKey


@dataclasses.dataclass
class StoreUnderTest:
    store: Store
    name: str
    conflict: Conflict | None = None


StoreFactory = Callable[[], ContextManager[StoreUnderTest]]


@contextlib.contextmanager
def sqlite_store() -> Iterator[StoreUnderTest]:
    """A fresh SQLite file. Its transactions lock: nothing can conflict with them."""
    with tempfile.TemporaryDirectory(prefix="ff-prop-") as directory:
        store = SqliteStore(os.path.join(directory, "prop.db"))
        try:
            yield StoreUnderTest(store, "sqlite")
        finally:
            store.close()


class FirestoreStores:
    """FirestoreStore factory: one client for all examples, one prefix per example.

    Build it while FIRESTORE_EMULATOR_HOST points at the emulator (the
    `firestore_env` fixture), and `close()` it at the end of the test.
    """

    def __init__(self, project: str) -> None:
        from google.cloud import firestore

        self.project = project
        self.client = firestore.Client(project=project)
        #: Conflicts made, by what the other writer found: "existing" (it
        #: updated the record's document) or "absent" (a task the store had not
        #: written yet, store/firestore_absent.py: it created the document).
        self.conflicts: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def __call__(self) -> Iterator[StoreUnderTest]:
        from function_flow.store.firestore import FirestoreStore

        prefix = f"p{uuid.uuid4().hex[:10]}_"
        store = FirestoreStore(project=self.project, prefix=prefix, client=self.client)
        # Not closed: store.close() would close the shared client.
        yield StoreUnderTest(store, f"firestore (prefix {prefix})", self._conflict(prefix))

    def _conflict(self, prefix: str) -> Conflict:
        from google.api_core.exceptions import NotFound
        from google.cloud import firestore
        from function_flow.store.firestore import doc_id

        def conflict(run_id: str, key: RecordKey) -> None:
            """Another writer changes a record a compare-and-set transaction read,
            before its commit, in a field no record has: an update of the record's
            document, whose new update time the commit's "unchanged since read"
            precondition must catch; or, when the task has no document yet, its
            creation, which the commit's create must fail on. Either way the store
            has to run the transaction again (fakes.RecordingStore checks it did)."""
            ref: Any = self.client.collection(f"{prefix}runs").document(doc_id(run_id))
            if key[0] == "task":
                ref = ref.collection("tasks").document(doc_id(key[1]))
            elif key[0] == "slot":
                ref = ref.collection("slots").document(str(int(key[1])))
            try:
                ref.update({"harness_conflicts": firestore.Increment(1)})
                self.conflicts["existing"] += 1
            except NotFound:
                ref.create({"harness_conflicts": 1})
                self.conflicts["absent"] += 1
        return conflict

    def close(self) -> None:
        self.client.close()
