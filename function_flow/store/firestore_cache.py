"""Documents this process has just written or read, for compare-and-set to start from.

A compare-and-set (firestore_transactions.CompareAndSet) reads each record,
decides, and commits its writes on the condition "unchanged since read"
(`last_update_time`). When this process itself wrote a document a moment
ago (a claim, then the same attempt's completion; a completion's merge that
made a task's document, then its claim: firestore_joins.py) or read it (a
join's counts, then the compare-and-set that queues it), it already knows the
content and the update time the condition needs: reading it again would
only cost a document read. So the store remembers, per document path, the
last content and update time it saw, and a compare-and-set starts from
that instead of reading.

Never trusted without the condition: a decision made on a remembered
document commits only if the document is still at that update time
(else the commit fails, the entry is dropped, and the step is decided
again on a fresh read), and a decision that would write nothing to a
remembered document (a claim finding it "duplicate") is made again on a
fresh read, since no condition would check it. Plain reads (status,
queries, join counts) never answer from here. Bounded: the oldest entries
go first.
"""

from __future__ import annotations

import collections
import copy
import threading
from typing import Any, Iterable

from google.cloud.firestore_v1.field_path import FieldPath

#: Documents remembered per store (a few KB each).
DEFAULT_SIZE = 4096


class Known:
    """A remembered document, standing in for a DocumentSnapshot."""

    exists = True

    def __init__(self, reference: Any, data: dict[str, Any], update_time: Any) -> None:
        self.reference = reference
        self.update_time = update_time
        self._data = data

    @property
    def id(self) -> str:
        return self.reference.id

    def to_dict(self) -> dict[str, Any]:
        return copy.deepcopy(self._data)


class DocumentCache:
    """Path -> (content, update time) of the documents last seen; thread-safe."""

    def __init__(self, size: int = DEFAULT_SIZE) -> None:
        self._size = size
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[str, tuple[dict[str, Any], Any]] = \
            collections.OrderedDict()

    def get(self, path: str) -> tuple[dict[str, Any], Any] | None:
        with self._lock:
            return self._entries.get(path)

    def put(self, path: str, data: dict[str, Any], update_time: Any) -> None:
        if update_time is None or not plain(data):
            self.drop([path])
            return
        with self._lock:
            self._entries[path] = (data, update_time)
            self._entries.move_to_end(path)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def remember(self, snapshots: Iterable[Any]) -> None:
        """Keep what reads returned (each existing document with its update time)."""
        for snapshot in snapshots:
            if snapshot.exists and getattr(snapshot, "update_time", None) is not None:
                self.put(snapshot.reference.path, snapshot.to_dict() or {},
                         snapshot.update_time)
            else:
                self.drop([snapshot.reference.path])

    def drop(self, paths: Iterable[str]) -> None:
        with self._lock:
            for path in paths:
                self._entries.pop(path, None)

    def drop_under(self, prefix: str) -> None:
        """Forget every document whose path starts with `prefix` (a deleted run)."""
        with self._lock:
            for path in [p for p in self._entries if p.startswith(prefix)]:
                del self._entries[path]


def plain(value: Any) -> bool:
    """Whether `value` holds only stored values (no transforms or sentinels)."""
    if isinstance(value, dict):
        return all(plain(v) for v in value.values())
    if isinstance(value, list):
        return all(plain(v) for v in value)
    return not type(value).__module__.startswith("google.cloud.firestore_v1.transforms")


def updated(base: dict[str, Any], data: dict[str, Any], paths: bool) -> dict[str, Any]:
    """`base` after an update with `data` (keys are field paths when `paths`)."""
    result = copy.deepcopy(base)
    for key, value in data.items():
        parts = FieldPath.from_api_repr(key).parts if paths else (key,)
        target = result
        for part in parts[:-1]:
            inner = target.get(part)
            if not isinstance(inner, dict):
                inner = target[part] = {}
            target = inner
        target[parts[-1]] = copy.deepcopy(value)
    return result


__all__ = ["DocumentCache", "Known", "updated"]
