"""Task records a run starts without on Firestore: created when first written.

A new run's tasks are mostly WAITING with nothing else set, the record
`TaskRecord(task_id=...)`. Writing each of them at the start costs a
document write per task, the same again as the write that later queues it.
So `create_run` writes only the records that say something (the queued
roots), and lists the others in the run document (`absent_json`, JSON
text: one index entry). Until a task's document exists, it reads as that
WAITING record, everywhere the store answers: `get_tasks` (so `status`,
the dashboard, `function-flow logs`, redrive and the poller list every
task of the run), `find_tasks(WAITING)`, joins, and transactions.

Writes make the document: a transaction that read the task as absent
creates it whole (the create fails if someone made it meanwhile, which a
compare-and-set takes as a conflict and decides again), and a blind write
(`deps_done.<dep>` from a completer, the queueing of a dependent) is a
merge that creates the document if it is missing, with only the fields
written: a document without `status` is still WAITING (TaskRecord's
defaults), which a query on `status` cannot see, so `find_tasks(WAITING)`
also looks at the listed tasks. Runs created before this (no
`absent_json`) have every document, and nothing changes for them.

The list of a run never changes, so each store remembers it per run once
it has read the run document (which every claim reads anyway).
"""

from __future__ import annotations

import collections
import json
import threading
from typing import Any, Iterable

from google.cloud.firestore_v1.field_path import FieldPath

from function_flow.core.records import TaskRecord
from function_flow.store import firestore_schema

#: The run document's field listing the tasks created when first written.
FIELD = "absent_json"
#: Above this many bytes of ids, a run's records are all written at the start
#: (a run document holds at most 1 MiB, and every claim reads it).
MAX_BYTES = 200_000
#: Runs whose lists a store remembers.
REMEMBERED_RUNS = 256


def split(tasks: list[TaskRecord]) -> tuple[list[TaskRecord], list[str]]:
    """(records to write now, ids of the plain WAITING ones to leave absent)."""
    written, absent = [], []
    for record in tasks:
        if record.to_dict() == TaskRecord(task_id=record.task_id).to_dict():
            absent.append(record.task_id)
        else:
            written.append(record)
    if len(json.dumps(absent)) > MAX_BYTES:
        return tasks, []
    return written, absent


def created(task_id: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The whole record of an absent task after an update with `fields`."""
    data = TaskRecord(task_id=task_id).to_dict()
    for key, value in fields.items():
        if "." in key:
            field, entry = key.split(".", 1)
            data[field] = {**(data.get(field) or {}), entry: value}
        else:
            data[key] = value
    return data


def merge_write(task_id: str, encoded: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """A blind update as (data, field paths) for `set(..., merge=paths)`: it
    writes those fields, and creates the document when it is missing."""
    data: dict[str, Any] = {"task_id": task_id}
    paths: list[Any] = [FieldPath("task_id")]
    for key, value in encoded.items():
        if "." in key:
            field, entry = key.split(".", 1)
            data.setdefault(field, {})[entry] = value
            paths.append(FieldPath(field, entry))
        else:
            data[key] = value
            paths.append(FieldPath(key))
    return data, paths


class AbsentLists:
    """Run id -> the ids its run document lists as absent; thread-safe.

    Also the run's schema version (firestore_schema.py): another fact of a
    run that never changes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: collections.OrderedDict[str, tuple[frozenset[str], int]] = \
            collections.OrderedDict()

    def known(self, run_id: str) -> frozenset[str] | None:
        with self._lock:
            found = self._runs.get(run_id)
        return None if found is None else found[0]

    def _version(self, run_id: str) -> int:
        """The run's schema version; 1 (promising nothing) when unknown."""
        with self._lock:
            found = self._runs.get(run_id)
        return 1 if found is None else found[1]

    def counts_joins(self, run_id: str) -> bool:
        """Whether the run's join documents keep counters (False when unknown)."""
        return self._version(run_id) >= firestore_schema.COUNTED_JOINS

    def marks_writes(self, run_id: str) -> bool:
        """Whether the run's task writes mark documents (False when unknown)."""
        return self._version(run_id) >= firestore_schema.MARKED_WRITES

    def learn(self, run_id: str, run_data: dict[str, Any] | None) -> frozenset[str]:
        """Remember the list of a run document just read (None: the run is gone)."""
        if run_data is None:
            self.forget(run_id)
            return frozenset()
        text = run_data.get(FIELD)
        ids = frozenset(json.loads(text)) if text else frozenset()
        with self._lock:
            self._runs[run_id] = (ids, firestore_schema.version_of(run_data))
            self._runs.move_to_end(run_id)
            while len(self._runs) > REMEMBERED_RUNS:
                self._runs.popitem(last=False)
        return ids

    def forget(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)


def synthesized(ids: Iterable[str], present: Iterable[str], absent: frozenset[str]
                ) -> list[TaskRecord]:
    """The WAITING records of the absent tasks among `ids` that have no document."""
    have = set(present)
    return [TaskRecord(task_id=t) for t in ids if t in absent and t not in have]


__all__ = ["AbsentLists", "FIELD", "created", "merge_write", "split", "synthesized"]
