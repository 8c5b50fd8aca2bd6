"""Finding free concurrency slots on Firestore (a mixin of FirestoreStore).

A run's slot documents `runs/{run}/slots/{n}` are written with the run,
0..P-1 (docs/design.md, "slots"), and rewritten by each take and release;
none is ever deleted before the run. So the free slots are the documents
whose holder is null (a query with a limit: O(limit) documents, never the
held ones) and the numbers past the last document, which exist only when
the definition now allows more slots than the run was made with. Those
are found by probing documents (the written ones are a prefix: numbers
past it are taken in order, see core/completion.fill_slots), once per run
and process in the usual case.
"""

from __future__ import annotations

from typing import Any, Callable

from google.cloud.firestore_v1.base_query import FieldFilter

from function_flow.store.firestore_transactions import translated as _translated


class FirestoreSlots:
    """ports.Store.find_free_slots; the host provides refs, queries and counting."""

    _run_ref: Callable[[str], Any]
    _slot_ref: Callable[[str, int], Any]
    _query: Callable[[Any], list[Any]]
    _count: Callable[..., None]
    #: Per run, a number of slots known to have documents (0..n-1): they are
    #: never deleted while the run exists, so it only grows.
    _written_slots: dict[str, int]

    @_translated
    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        if limit <= 0 or count <= 0:
            return []
        query = (self._run_ref(run_id).collection("slots")
                 .where(filter=FieldFilter("holder", "==", None)).limit(limit))
        free: list[int] = []
        after = None
        while len(free) < limit:
            page = self._query(query if after is None else query.start_after(after))
            # Documents past `count` (the definition now allows fewer slots
            # than the run was made with) are not slots any more.
            free += [n for n in (int(s.id) for s in page) if n < count][:limit - len(free)]
            if len(page) < limit:
                break
            after = page[-1]
        free.sort()
        if len(free) < limit:
            start = self._slots_written(run_id, count)
            free += range(start, min(count, start + limit - len(free)))
        return free

    def _slots_written(self, run_id: str, count: int) -> int:
        """How many of slots 0..count-1 have documents (they form a prefix).

        The last one first: every slot is written with the run, so that
        one read usually settles it for the rest of the run.
        """
        low, high = min(self._written_slots.get(run_id, 0), count), count
        probe = count - 1
        while low < high:
            self._count(reads=1)
            if self._slot_ref(run_id, probe).get().exists:
                low = probe + 1
            else:
                high = probe
            probe = (low + high) // 2
        self._written_slots[run_id] = max(self._written_slots.get(run_id, 0), low)
        return low
