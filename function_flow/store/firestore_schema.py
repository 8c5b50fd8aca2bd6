"""The run document's schema version: what the writes of a run's documents promise.

A Firestore run is advanced by whichever process a message reaches, so
after a deploy, new code advances runs that old code started (and, while
the old instances drain, the other way round). What a process may skip
reading depends on how every write of the run so far was made, so the
run document says it once, at creation (`create_run`), and it never
changes. A store remembers it per run with the run's absent list
(firestore_absent.AbsentLists), since every claim reads the run document.

| version | what the run's documents promise | what it lets a process skip |
| --- | --- | --- |
| 1 | nothing beyond the records (runs created before join counters) | nothing: a join's completers read it (FirestoreStore.join_progress) |
| 2 | every `deps_done.<dep>` write also counts into the join's `join_counts` with Increment transforms (firestore_joins.py) | the join read: a completer's commit returns the counts |
| 3 | and every other task document write sets `join_other` (firestore_joins.marked) | the claim's read of a document a counting merge made: its content is known (firestore_cache.py) |

Each version keeps the promises of those before it, so a feature checks
`version_of(run) >= ITS_VERSION`. The code writes every promise whatever a
run's version says (as all code since version 3 has): a version says only
since when they were all kept. So reading a run as older than it is costs
reads, never correctness: code from before this field, which knows only
the markers below, reads a run that has just the field as version 1.

Before this field, run documents carried one boolean marker per promise:
`counted_joins` (version 2) and `marked_writes` (version 3). A run with
neither, and no `schema_version`, is version 1.
"""

from __future__ import annotations

from typing import Any

#: The run document's field holding its version (an integer).
FIELD = "schema_version"
#: The version `create_run` writes: every promise of the table above.
CURRENT = 3
#: The first version whose join documents carry counters.
COUNTED_JOINS = 2
#: The first version whose task writes all mark documents (`join_other`).
MARKED_WRITES = 3
#: Markers of run documents written before FIELD, and the version each implies.
LEGACY_MARKERS = {"counted_joins": COUNTED_JOINS, "marked_writes": MARKED_WRITES}


def version_of(run_data: dict[str, Any]) -> int:
    """The schema version of a run document's data (module docstring)."""
    stored = run_data.get(FIELD)
    if isinstance(stored, int) and not isinstance(stored, bool):
        return stored
    return max((version for marker, version in LEGACY_MARKERS.items()
                if run_data.get(marker)), default=1)


__all__ = ["COUNTED_JOINS", "CURRENT", "FIELD", "MARKED_WRITES", "version_of"]
