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

Every other write of a task document (whole, or without `deps_done`
entries) sets `join_other` to 1, and the counting writes carry Maximum(0) on
it. So a commit also learns whether only counting writes ever touched the
document; when it did, and the counts are its own entries, written once,
this write made the document and its whole content is known: it is
remembered (store/firestore_cache.py) for the claim that follows (a chain's
next task claimed by the process that queued it reads nothing). Only in runs
whose schema version says every write marks (firestore_schema.MARKED_WRITES).

Runs created before the counters have join documents without them: their
schema version is below firestore_schema.COUNTED_JOINS, and their completers
read the join as before (FirestoreStore.join_progress). Fresh counts are kept per thread
and only until the thread's next transaction: they answer the follow-up of
the commit that returned them, nothing later.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Iterable

from google.cloud import firestore

from function_flow.core.records import (OUTCOME_FAILED, OUTCOME_SKIPPED, OUTCOME_SUCCEEDED,
                                        JoinProgress, TaskStatus, outcome_of)

if TYPE_CHECKING:
    from function_flow.store.firestore import FirestoreStore

#: Task document fields: counts by outcome (a map), len(deps) or -1, how many
#: writes each entry had (a map), and how many entries were written again.
COUNTS, DEPS, WRITES, REWRITES = "join_counts", "join_deps", "join_writes", "join_rewrites"
#: 1 once a write other than a counting one touched the document.
OTHER = "join_other"
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
        data = {**data, COUNTS: counts, WRITES: dict.fromkeys(data["deps_done"], 1),
                REWRITES: 0}
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
    ops[OTHER] = firestore.Maximum(0)
    ops[REWRITES] = firestore.Increment(0)
    for key in fields:
        if key.startswith(DEPS_PREFIX):
            ops[f"{WRITES}.{key[len(DEPS_PREFIX):]}"] = firestore.Increment(1)
    return ops


def stored(data: dict[str, Any]) -> dict[str, Any]:
    """Document fields without the counters (records do not have them)."""
    for field in (COUNTS, DEPS, WRITES, REWRITES, OTHER):
        data.pop(field, None)
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

    def learn(self, written: Iterable[str | None], results: list[Any]
              ) -> tuple[list[str], dict[str, dict[str, Any]]]:
        """Keep the counts returned for each write of a commit (`written`: the
        path of each write that carried the transforms, else None; in order).
        Returns the paths whose entry was written again (their counts are no
        longer exact, which `rewritten` must record on the document), and the
        counters of each document this commit's write made (`made_content`)."""
        paths = self._paths()
        again: list[str] = []
        made: dict[str, dict[str, Any]] = {}
        for path, result in zip(written, results):
            if path is None:
                continue
            paths.pop(path, None)
            # In field path order: the counts, join_deps, join_other,
            # join_rewrites, then join_writes.<entry> for each entry written.
            values = [_integer(v) for v in getattr(result, "transform_results", None) or ()]
            if len(values) <= len(OUTCOMES) + 3 or None in values:
                again.append(path)  # not what was asked for: trust the map only
                continue
            numbers, (deps, other, rewrites), writes = values[:3], values[3:6], values[6:]
            if any(n != 1 for n in writes):
                again.append(path)
            if any(n != 1 for n in writes) or rewrites:
                continue  # an entry was written twice: only the map is exact
            if not other and sum(numbers) == len(writes):
                # Only this write's entries, and never another kind of write:
                # this write made the document.
                made[path] = {COUNTS: dict(zip(OUTCOMES, numbers)), DEPS: deps, OTHER: 0,
                              REWRITES: 0}
            counts = dict(zip(OUTCOMES, numbers))
            # The status is unknown (not returned): WAITING, as far as the counts
            # go; whoever acts on the answer reads the record (module docstring).
            paths[path] = JoinProgress(
                TaskStatus.WAITING, counts[OUTCOME_SUCCEEDED], counts[OUTCOME_FAILED],
                counts[OUTCOME_SKIPPED], deps if deps >= 0 else None)
        return again, made

    def take(self, path: str) -> JoinProgress | None:
        return self._paths().pop(path, None)


class CountingWrites:
    """The writes of one transaction attempt that carry a join's counter
    transforms, and what to do with their commit's transform results.

    FirestoreTransaction keeps one, and asks it about each task document
    write by its index among the transaction's writes.
    """

    def __init__(self) -> None:
        #: Indexes of the writes that carry the transforms.
        self._counting: set[int] = set()
        #: Write index -> the data of a counting merge, in a run whose writes mark
        #: documents: its content once the commit says it made the document.
        self._merged: dict[int, dict[str, Any]] = {}

    def fields(self, write: int, fields: dict[str, Any]) -> dict[str, Any]:
        """`fields` of blind update number `write`, with the counters' transforms
        if it writes deps_done entries (then it is a counting write)."""
        ops = transforms(fields)
        if not ops:
            return fields
        self._counting.add(write)
        return {**fields, **ops}

    def marking(self, write: int, data: dict[str, Any]) -> dict[str, Any]:
        """Write number `write`'s `data` (encoded), marked as a write other than a
        counting one unless it counts."""
        return data if write in self._counting else marked(data)

    def merged(self, write: int, data: dict[str, Any]) -> None:
        """Write number `write` is a merge (firestore_absent.merge_write) of `data`,
        in a run whose writes mark documents: if it counts, and its commit says it
        made the document, `learn` remembers the document's whole content."""
        if write in self._counting:
            self._merged[write] = data

    def learn(self, store: "FirestoreStore", written: list[str], results: list[Any]) -> None:
        """After the commit (`written`: the path of each write, in order; `results`:
        the commit's WriteResults): keep the join counts its transforms returned
        (store.fresh), and the content of each document a counting merge made
        (store.known); mark the joins whose entry was written again."""
        if not self._counting:
            return
        paths = [path if i in self._counting else None for i, path in enumerate(written)]
        again, made = store.fresh.learn(paths, results)
        for i, data in self._merged.items():
            path = written[i]
            if path in made and written.count(path) == 1 and i < len(results):
                store.known.put(path, made_content(data, made[path]),
                                getattr(results[i], "update_time", None))
        for path in again:  # rare: an entry written twice (module docstring)
            store.client.document(path).update(rewritten())
            store._count(writes=1)


def _integer(value: Any) -> int | None:
    """The integer a transform result holds (a google.firestore.v1.Value)."""
    if getattr(value, "_pb", value).WhichOneof("value_type") != "integer_value":
        return None
    return int(value.integer_value)


def made_content(merged: dict[str, Any], counters: dict[str, Any]) -> dict[str, Any]:
    """The whole content of a document a counting merge made: the merge's data
    (firestore_absent.merge_write) plus the counters its commit returned."""
    data = {key: value for key, value in merged.items()
            if not type(value).__module__.startswith("google.cloud.firestore_v1.transforms")}
    data.update(counters)
    data[WRITES] = dict.fromkeys(merged.get("deps_done") or {}, 1)
    return data


def marked(data: dict[str, Any]) -> dict[str, Any]:
    """Encoded fields of a write other than a counting one: it marks the document."""
    return {**data, OTHER: 1}


def rewritten() -> dict[str, Any]:
    """The update marking a join whose entry was written again: its counters
    over-count from now on, so answers come from its record."""
    return {REWRITES: firestore.Increment(1)}


__all__ = ["COUNTS", "CountingWrites", "DEPS", "FreshCounts", "OTHER", "made_content",
           "marked", "rewritten", "stored", "transforms", "whole"]
