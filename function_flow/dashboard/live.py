"""A run's records for the page's live updates, re-reading only what can have changed.

A page polls its run every few seconds. Reading all of a run's records each
time would read a foreach of 10,000 items 10,000 times a poll (on
Firestore, 10,000 billed reads). Instead the dashboard keeps the records of
the runs it shows, from the page's own full read, and each poll reads by id
only the records that can have changed since:

- a record that is not final, unless it is WAITING for a dependency that is
  not final either (it cannot move before that one does);
- then, in the same poll, the WAITING dependents of every record that just
  became final, and so on down a cascade of skips.

A final record never changes while the run's own record stays the same, so
any change of the run that can touch final records (a redrive, a cancel,
an end with its hooks, a pause, a new version) makes the next poll a full
read; so does a record naming one the cache does not know (a body that grew
the graph, core/growth.py) and a foreach that has just expanded (its
summary result names items the cache has not seen). A full read also
happens at least every FULL_READ_SECONDS, whatever happened.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Callable, Iterable

from function_flow.core import foreach
from function_flow.core.graph import END_TASK_ID, RunGraph
from function_flow.core.ports import Store
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus

#: Runs whose records one dashboard keeps (the pages open at once).
MAX_RUNS = 16
#: The longest a run's records go without a full read.
FULL_READ_SECONDS = 300.0


@dataclasses.dataclass
class Reading:
    """What one refresh read: records read, and whether it was a full read."""

    records: int = 0
    full: bool = False


@dataclasses.dataclass
class _Cached:
    key: tuple
    records: dict[str, TaskRecord]
    read_at: float


def run_key(run: RunRecord) -> tuple:
    """What of the run record, when it changes, may have changed final records."""
    return (run.status, run.redrives, run.paused_at, run.resumed_at, run.hooks_pending,
            run.dag_hash, run.blocked, run.finished_at, len(run.history or ()))


def may_change(record: TaskRecord, records: dict[str, TaskRecord], graph: RunGraph) -> bool:
    """Whether `record` can be different now than when it was read."""
    if record.status.is_final:
        return False
    if record.status is TaskStatus.WAITING:
        return all(dep not in records or records[dep].status.is_final
                   for dep in graph.deps_of(record.task_id, record))
    return True


def _unknown(record: TaskRecord, records: dict[str, TaskRecord]) -> bool:
    """Whether `record` names records the cache has not seen (the graph grew)."""
    if any(d not in records and d != END_TASK_ID for d in record.dependents or ()):
        return True
    return foreach.is_summary(record.result) and \
        foreach.collector_id(record.task_id) not in records


class LiveRecords:
    """The records of the runs a dashboard shows (see module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._runs: collections.OrderedDict[str, _Cached] = collections.OrderedDict()
        self._lock = threading.Lock()
        #: What the last refresh read (measured by tests and the bench).
        self.last = Reading()

    def read(self, store: Store, run: RunRecord,
             graph_of: Callable[[list[TaskRecord]], RunGraph],
             full: bool = False) -> list[TaskRecord]:
        """The run's records as they are now; `full` reads them all. `graph_of`
        gives the edges that records do not hold (a declared task's)."""
        with self._lock:
            cached = self._runs.get(run.run_id)
        if full or cached is None or cached.key != run_key(run) \
                or self.clock() - cached.read_at > FULL_READ_SECONDS:
            return self._full(store, run)
        records = dict(cached.records)
        graph = graph_of(list(records.values()))
        ids = [t for t, r in records.items() if may_change(r, records, graph)]
        count = 0
        seen: set[str] = set()
        while ids:
            seen.update(ids)
            fresh = store.get_tasks(run.run_id, ids)
            count += len(ids)
            if len(fresh) != len(ids):  # a record is gone: let a full read say what is left
                return self._full(store, run)
            ended = []
            for record in fresh:
                if _unknown(record, records):
                    return self._full(store, run)
                if record.status.is_final and not records[record.task_id].status.is_final:
                    ended.append(record)
                records[record.task_id] = record
            ids = list(dict.fromkeys(
                d for record in ended for d in graph.dependents_of(record.task_id, record)
                if d in records and d not in seen
                and records[d].status is TaskStatus.WAITING))
        self._keep(run, records, cached.read_at)
        self.last = Reading(count)
        return list(records.values())

    def forget(self, run_ids: Iterable[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._runs.pop(run_id, None)

    def _full(self, store: Store, run: RunRecord) -> list[TaskRecord]:
        found = store.get_tasks(run.run_id)
        self._keep(run, {r.task_id: r for r in found}, self.clock())
        self.last = Reading(len(found), full=True)
        return found

    def _keep(self, run: RunRecord, records: dict[str, TaskRecord], read_at: float) -> None:
        with self._lock:
            self._runs[run.run_id] = _Cached(run_key(run), records, read_at)
            self._runs.move_to_end(run.run_id)
            while len(self._runs) > MAX_RUNS:
                self._runs.popitem(last=False)
