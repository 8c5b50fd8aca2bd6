"""Per-outcome counters on a join's document, so its completers need not read it.

Every completer of a join writes `deps_done.<itself>` into the join's
document (a blind write), then asks how far the join is
(`Store.join_progress`): without help, a read of the whole document per
completer, which is most of what a fan-out task costs beyond a chain task.
So each such write also carries Firestore field transforms on the same
document: `join_counts.<outcome>` Increment(1) for its outcome and
Increment(0) for the others, and `join_deps` Maximum(-1). A commit returns
the values those transforms left (WriteResult.transform_results), so the
completer learns the join's counts, and how many dependencies its record
lists (`join_deps`, -1: as the definition says), from its own commit, for
free. Whole-record writes (create_run, add_task, replace_task, an absent
task created whole) store the counts of their `deps_done` map and
`join_deps`, so the counters start right.

Only ever an over-count: an entry written twice (a resent blind batch, an
outcome overwritten) counts twice, while no entry goes uncounted. The
answer is therefore used only the way check_join uses it: counts that say
the rule still waits mean it waits (more entries could only decide it
sooner); counts that say it has decided are checked on the record itself,
which the join's transaction reads anyway. A fan-out's last completer is
then the only one that reads the join.

Runs created before this have join documents without counters: their run
document has no `counted_joins` marker, and their completers read the join
as before (FirestoreStore.join_progress). Fresh counts are kept per thread
and only until the thread's next transaction: they answer the follow-up of
the commit that returned them, nothing later.
"""

from __future__ import annotations

import threading
from typing import Any, Iterable

from google.cloud import firestore

from function_flow.store.firestore_absent import COUNTED_JOINS
from function_flow.core.records import (OUTCOME_FAILED, OUTCOME_SKIPPED, OUTCOME_SUCCEEDED,
                                        JoinProgress, TaskStatus, outcome_of)

#: The run document's marker: its join documents carry counters.
MARKER = COUNTED_JOINS
#: Task document fields: counts by outcome (a map), and len(deps) or -1.
COUNTS, DEPS = "join_counts", "join_deps"
#: The order Firestore returns transform results in: by field path (the
#: client sorts a write's transforms so).
OUTCOMES = (OUTCOME_FAILED, OUTCOME_SKIPPED, OUTCOME_SUCCEEDED)
DEPS_PREFIX = "deps_done."


def whole(data: dict[str, Any]) -> dict[str, Any]:
    """Encoded record fields plus the counters, for a write of a whole `deps_done`
    map and/or `deps` list (unchanged when it writes neither)."""
    if "deps_done" in data and isinstance(data["deps_done"], dict):
        counts = dict.fromkeys(OUTCOMES, 0)
        for status in data["deps_done"].values():
            counts[outcome_of(status)] += 1
        data = {**data, COUNTS: counts}
    if "deps" in data:
        deps = data["deps"]
        data = {**data, DEPS: len(deps) if deps is not None else -1}
    return data


def transforms(fields: dict[str, Any]) -> dict[str, Any]:
    """The counter transforms (as dotted record keys) for a blind update writing
    `deps_done.<dep>` entries; empty when it writes none."""
    added = dict.fromkeys(OUTCOMES, 0)
    for key, value in fields.items():
        if key.startswith(DEPS_PREFIX):
            added[outcome_of(value)] += 1
    if not any(added.values()) or "deps_done" in fields:
        return {}
    ops: dict[str, Any] = {f"{COUNTS}.{o}": firestore.Increment(added[o]) for o in OUTCOMES}
    ops[DEPS] = firestore.Maximum(-1)
    return ops


def stored(data: dict[str, Any]) -> dict[str, Any]:
    """Document fields without the counters (records do not have them)."""
    data.pop(COUNTS, None)
    data.pop(DEPS, None)
    return data


class FreshCounts:
    """Per thread: document path -> the join counts its latest commit returned."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _paths(self) -> dict[str, JoinProgress]:
        paths = getattr(self._local, "paths", None)
        if paths is None:
            paths = self._local.paths = {}
        return paths

    def clear(self) -> None:
        """A new transaction begins: what earlier commits returned is no longer fresh."""
        self._paths().clear()

    def learn(self, written: Iterable[str | None], results: list[Any]) -> None:
        """Keep the counts returned for each write of a commit (`written`: the
        path of each write that carried the transforms, else None; in order)."""
        paths = self._paths()
        for path, result in zip(written, results):
            if path is None:
                continue
            values = [_integer(v) for v in getattr(result, "transform_results", None) or ()]
            if len(values) != len(OUTCOMES) + 1 or None in values:
                paths.pop(path, None)
                continue
            counts = dict(zip(OUTCOMES, values))
            deps = values[-1]
            # The status is unknown (not returned): WAITING, as far as the counts
            # go; whoever acts on the answer reads the record (module docstring).
            paths[path] = JoinProgress(
                TaskStatus.WAITING, counts[OUTCOME_SUCCEEDED], counts[OUTCOME_FAILED],
                counts[OUTCOME_SKIPPED], deps if deps is not None and deps >= 0 else None)

    def take(self, path: str) -> JoinProgress | None:
        return self._paths().pop(path, None)


def _integer(value: Any) -> int | None:
    """The integer a transform result holds (a google.firestore.v1.Value)."""
    if getattr(value, "_pb", value).WhichOneof("value_type") != "integer_value":
        return None
    return int(value.integer_value)


__all__ = ["COUNTS", "DEPS", "FreshCounts", "MARKER", "stored", "transforms", "whole"]
