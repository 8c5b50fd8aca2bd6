"""A stand-in for a Firestore transaction without locks: compare-and-set.

See CompareAndSet, and docs/design.md ("No hot document") for why.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from function_flow.store.firestore_cache import Known, updated

if TYPE_CHECKING:
    from function_flow.store.firestore import FirestoreStore


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
            if counts[path] > 1 or kind == "merge" \
                    or kind in ("delete", "update") and path not in self.read_times:
                known.drop([path])
            elif path in self.read_times:  # guarded: it was what we read, plus this
                known.put(path, updated(self.read_data[path], data, kind == "update"),
                          update_time)
            else:  # created or set whole
                known.put(path, dict(data), update_time)

    def update(self, ref: Any, data: dict[str, Any]) -> None:
        self.writes.append(("update", ref, data))

    def set(self, ref: Any, data: dict[str, Any], merge: Any = None) -> None:
        if merge:
            self.writes.append(("merge", ref, (data, merge)))
        else:
            self.writes.append(("set", ref, data))

    def create(self, ref: Any, data: dict[str, Any]) -> None:
        self.writes.append(("create", ref, data))

    def delete(self, ref: Any) -> None:
        self.writes.append(("delete", ref, None))

    def batch(self) -> Any | None:
        """The guarded batch to commit, or None if preconditions cannot cover the reads."""
        first = {}
        for kind, ref, _ in self.writes:
            first.setdefault(ref.path, kind)
        # A document read as missing is guarded by the create that makes it.
        if any(path not in first or update_time is None and first[path] != "create"
               for path, update_time in self.read_times.items()):
            return None
        batch = self._client.batch()
        guarded: set[str] = set()
        for kind, ref, data in self.writes:
            if ref.path in self.read_times and ref.path not in guarded \
                    and self.read_times[ref.path] is None:
                guarded.add(ref.path)
                self.guarded = True
                batch.create(ref, data)
            elif ref.path in self.read_times and ref.path not in guarded:
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
            elif kind == "merge":
                batch.set(ref, data[0], merge=data[1])
            else:
                batch.update(ref, data)
        return batch

    def creates_missing(self) -> bool:
        """Whether the batch creates a document it read as missing."""
        return any(kind == "create" and ref.path in self.read_times
                   and self.read_times[ref.path] is None for kind, ref, _ in self.writes)


__all__ = ["CompareAndSet"]
