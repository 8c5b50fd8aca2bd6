"""The run context on Firestore: one document per key, `{prefix}runs/{run}/context/{key}`.

A mixin of FirestoreStore. One document per key, not a map in one
document: bodies setting different keys at once never write the same
document, so they never contend (no hot document, see docs/design.md).
A document holds `key` (the key itself) and `value_json` (the JSON text).

Keys may hold what Firestore forbids in document ids ('/', "__x__", ".");
such ids are escaped as run and task ids are (firestore_transactions.doc_id),
and an escaped id that would pass Firestore's 1500 bytes is replaced by a
hash of the key. Listing reads the `key` field, so ids never need decoding.

No context document outlives its run, without a transaction: `set_context`
looks for the run document after writing and deletes what it wrote if the
run is gone, and `delete_run` deletes the context both before and after the
run document. A set that saw the run still there wrote before the run was
deleted, so the sweep after finds it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable

from function_flow.store.firestore_transactions import doc_id, translated

#: Firestore's limit on a document id, in bytes of UTF-8.
MAX_ID_BYTES = 1500


def context_doc_id(key: str) -> str:
    """The document id of a context key: doc_id, or a hash when that is too long.

    doc_id's escaped ids start with "~" followed by percent-encoding, which
    never holds "#": "~#" + hash can be no escaped id, nor a plain one.
    """
    escaped = doc_id(key)
    if len(escaped.encode("utf-8")) <= MAX_ID_BYTES:
        return escaped
    return "~#" + hashlib.sha256(key.encode("utf-8")).hexdigest()


class FirestoreContext:
    """ports.Store's context operations; the host provides refs and counting."""

    _run_ref: Callable[[str], Any]
    _count: Callable[..., None]
    _query: Callable[[Any], list[Any]]
    _delete_refs: Callable[[list[Any]], None]
    _expiring: Callable[[dict[str, Any]], dict[str, Any]]

    def _context_ref(self, run_id: str, key: str) -> Any:
        return self._run_ref(run_id).collection("context").document(context_doc_id(key))

    @translated
    def get_context(self, run_id: str, key: str) -> str | None:
        self._count(reads=1)
        snapshot = self._context_ref(run_id, key).get()
        return snapshot.get("value_json") if snapshot.exists else None

    @translated
    def list_context(self, run_id: str) -> dict[str, str]:
        snapshots = self._query(self._run_ref(run_id).collection("context"))
        return dict(sorted((s.get("key"), s.get("value_json")) for s in snapshots))

    @translated
    def set_context(self, run_id: str, key: str, value: str) -> bool:
        ref = self._context_ref(run_id, key)
        ref.set(self._expiring({"key": key, "value_json": value}))
        self._count(reads=1, writes=1)
        if self._run_ref(run_id).get().exists:
            return True
        self._delete_refs([ref])  # the run was deleted: its context goes with it
        return False

    @translated
    def delete_context(self, run_id: str, key: str) -> None:
        self._count(writes=1)
        self._context_ref(run_id, key).delete()


__all__ = ["FirestoreContext", "context_doc_id"]
