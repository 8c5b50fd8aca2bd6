"""Waits for objects in Cloud Storage: the poller's checks and object notifications.

A task that returns a GCSFuture waits on a records.Trigger whose `watch` is
its gs:// prefix. Whichever comes first completes it:

- polling: `check`, part of the poller's policy (recovery.poll: the poller
  function, the embedded wait loop, function-flow dev), asks the backend's
  `ports.Watcher` whether an object under each watched prefix exists. One
  process checks a prefix at most once every `every` seconds and at most
  `batch` prefixes per poll, those checked longest ago first, among the
  first SCAN_LIMIT watching triggers the store returns.
- push: `complete_covering(path)`, for a Cloud Storage notification naming
  an object: the store is asked for the triggers whose watch is one of the
  path's prefixes (indexed equality queries on every candidate prefix), so
  a notification never scans the other watches.

Either way the attempt succeeds with its prefix as the result, the value
Function Flow's GCSFuture gave. A trigger whose attempt is over (it timed
out, its run was deleted) is deleted when found: a GCSFuture's trigger id
is unique to its wait, so no later attempt can be using it.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import TYPE_CHECKING, Iterable

from function_flow.core.ports import Watcher
from function_flow.core.records import TaskStatus, Trigger
from function_flow.errors import RunBlockedError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine

logger = logging.getLogger("function_flow.engine")

#: Seconds between two checks of one prefix (FUNCTION_FLOW_GCS_POLL_INTERVAL).
DEFAULT_EVERY_SECONDS = 10.0
#: Most prefixes one poll checks (FUNCTION_FLOW_GCS_POLL_BATCH).
DEFAULT_BATCH = 100
#: Most watching triggers one poll reads; beyond, the rest wait their turn.
SCAN_LIMIT = 1000
#: Most triggers one object notification completes.
NOTIFIED_LIMIT = 1000
GS = "gs://"


class Watches:
    """The backend's Watcher and when this process last checked each prefix."""

    def __init__(self, watcher: Watcher | None, every: float = DEFAULT_EVERY_SECONDS,
                 batch: int = DEFAULT_BATCH) -> None:
        self.watcher = watcher
        self.every = every
        self.batch = max(1, int(batch))
        self._checked: dict[str, float] = {}
        #: Prefixes whose check failed and was said so as an error.
        self._reported: set[str] = set()
        self._lock = threading.Lock()

    def reported(self, prefix: str) -> bool:
        """Whether a failed check of `prefix` was reported before; it is now."""
        with self._lock:
            seen = prefix in self._reported
            self._reported.add(prefix)
        return seen

    def due(self, prefixes: Iterable[str], now: float, known: Iterable[str]) -> list[str]:
        """The prefixes to check now, and remember that they were.

        `known`: every prefix still watched; the others are forgotten.
        """
        with self._lock:
            last = self._checked
            for gone in last.keys() - set(known):
                del last[gone]
            due = sorted((p for p in set(prefixes) if now - last.get(p, -math.inf) >= self.every),
                         key=lambda p: (last.get(p, -math.inf), p))[:self.batch]
            for prefix in due:
                last[prefix] = now
        return due


def check(engine: "Engine", run_ids: Iterable[str] | None = None) -> int:
    """Complete the waits whose prefix now has an object; returns how many.

    With `run_ids`, only the waits of those runs (the embedded runner's).
    A prefix that cannot be checked (no such bucket, no permission) is
    logged and tried again later; the attempt's timeout bounds the wait.
    """
    watches = engine.watches
    if watches.watcher is None:
        return 0
    wanted = None if run_ids is None else set(run_ids)
    watching = engine.store.find_watches(SCAN_LIMIT)
    by_prefix: dict[str, list[Trigger]] = {}
    for trigger in watching:
        if wanted is None or trigger.run_id in wanted:
            by_prefix.setdefault(str(trigger.watch), []).append(trigger)
    due = watches.due(by_prefix, engine.clock(), known={str(t.watch) for t in watching})
    completed = 0
    for prefix in due:
        waiting = [t for t in by_prefix[prefix] if _still_waiting(engine, t)]
        if not waiting:
            continue
        try:
            found = watches.watcher.exists(prefix)
        except Exception as exc:  # the adapter's error names the bucket and why
            # An error the first time (`function-flow run` shows those): a bucket
            # name's typo would otherwise be a silent wait until the timeout.
            level = logging.WARNING if watches.reported(prefix) else logging.ERROR
            logger.log(level, "cannot check %s, which %d task(s) wait for: %s; checking "
                       "again in %g s", prefix, len(waiting), exc, watches.every)
            continue
        if found:
            logger.info("an object exists under %s: completing %d waiting task(s)",
                        prefix, len(waiting))
            completed += sum(_complete(engine, t, polling=True) == "succeeded"
                             for t in waiting)
    return completed


def complete_covering(engine: "Engine", path: str) -> str:
    """Complete every wait whose prefix `path` (an object that now exists) starts with."""
    triggers = engine.store.find_watches(NOTIFIED_LIMIT, among=prefixes_of(path))
    if not triggers:
        logger.info("external event: no task waits for an object under a prefix of %s "
                    "(unknown trigger); acknowledged", path)
        return "unknown_trigger"
    outcomes = [_complete(engine, t) if _still_waiting(engine, t) else "stale"
                for t in triggers]
    return "succeeded" if "succeeded" in outcomes else outcomes[0]


def prefixes_of(path: str) -> list[str]:
    """Every prefix of a gs:// path that still names its bucket: what a watch may be."""
    if not path.startswith(GS) or len(path) == len(GS):
        return []
    slash = path.find("/", len(GS))
    bucket_end = len(path) if slash < 0 else slash
    return [path[:end] for end in range(bucket_end, len(path) + 1)]


def _still_waiting(engine: "Engine", trigger: Trigger) -> bool:
    """Whether the trigger's attempt, of a run of this workflow, still waits.

    A trigger left over by an attempt that is over is deleted; the triggers
    of other workflows sharing the store are left to their own pollers.
    """
    run = engine.store.get_run(trigger.run_id)
    if run is not None and run.job_name != engine.workflow.name:
        return False
    records = [] if run is None or run.status.is_final else \
        engine.store.get_tasks(trigger.run_id, [trigger.task_id])
    task = records[0] if records else None
    if task is not None and task.status is TaskStatus.RUNNING \
            and task.trigger_id == trigger.trigger_id:
        return task.attempt == trigger.attempt
    _forget(engine, trigger)
    return False


def _complete(engine: "Engine", trigger: Trigger, polling: bool = False) -> str:
    try:
        outcome = engine.complete_trigger(trigger.trigger_id, ok=True, value=trigger.watch)
    except RunBlockedError:
        if not polling:  # a notification: delivered again, like any event
            raise
        return "blocked"  # the object stays: a later poll completes the wait
    if outcome == "stale":
        _forget(engine, trigger)
    return outcome


def _forget(engine: "Engine", trigger: Trigger) -> None:
    logger.info("run %s task %s attempt %d no longer waits for %s; its watch is deleted",
                trigger.run_id, trigger.task_id, trigger.attempt, trigger.watch)
    engine.store.transact(lambda tx: tx.delete_trigger(trigger.trigger_id))
