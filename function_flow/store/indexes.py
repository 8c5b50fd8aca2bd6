"""The composite indexes Firestore needs for function_flow's queries, declared once.

Firestore serves a query from an index: the single-field ones it makes by
itself serve every query of the engine (`status ==` on tasks, `holder ==`
null on slots, `created_at` order and `<` on runs, `run_id ==` and `watch` on
triggers, equalities merged). Only the lists of runs filtered by job and/or
status *newest first* (the dashboard's list, `function-flow status --job
--status`) need composite ones: the equalities, then `created_at`
descending (Firestore adds `__name__` in that direction). The emulator
serves any query without them, so production alone would fail.

`function-flow deploy` creates these (`gcloud firestore indexes composite
create`), terraform/firestore.tf declares the same (`google_firestore_index`),
and tests/test_firestore_indexes.py derives the needed indexes from the
queries the store sends and compares all three.
"""

from __future__ import annotations

import dataclasses
import itertools

from function_flow.errors import ConfigurationError

#: The fields a list of runs is filtered by (Store.list_runs's job_name, status).
LISTED_BY = ("job_name", "status")
#: The order of every list of runs: newest first.
NEWEST_FIRST = ("created_at", "DESCENDING")


class MissingIndexError(ConfigurationError):
    """Firestore refused a query for want of one of these indexes; says which."""


@dataclasses.dataclass(frozen=True)
class CompositeIndex:
    """One composite index of a collection (query scope COLLECTION)."""

    collection_group: str
    #: (field path, "ASCENDING" or "DESCENDING"), in the index's order.
    fields: tuple[tuple[str, str], ...]

    def describe(self) -> str:
        """`job_name, created_at descending`: how errors and logs name it."""
        return ", ".join(f"{path} descending" if order == "DESCENDING" else path
                         for path, order in self.fields)


def composite_indexes(prefix: str = "") -> list[CompositeIndex]:
    """Every composite index of the collections named with `prefix`, in a fixed order."""
    found = []
    for size in range(1, len(LISTED_BY) + 1):
        for fields in itertools.combinations(LISTED_BY, size):
            found.append(CompositeIndex(f"{prefix}runs", (*((f, "ASCENDING") for f in fields),
                                                          NEWEST_FIRST)))
    return found
