"""Store conformance: a run's context values (job.context), on SQLite and the Firestore
emulator, and Firestore's non-atomic delete_run racing a late value.
"""

from __future__ import annotations

from function_flow.core.ports import Store

from store_conformance import ODD_IDS, in_threads, make_run


#: Context keys Firestore cannot take as document ids as they are ('/', "__x__",
#: ".", ".."), and the longest key whose escaped id would pass 1500 bytes.
ODD_KEYS = ODD_IDS + ["a/b", "__end__", "..", "%2F", "~%2F", "/" + "\U0001d11e" * 255]



def test_context_values_round_trip_per_key(store: Store) -> None:
    make_run(store)
    assert store.get_context("run-1", "k") is None and store.list_context("run-1") == {}
    for number, key in enumerate(ODD_KEYS):
        assert store.set_context("run-1", key, f'{{"n":{number}}}') is True
    assert store.list_context("run-1") == {
        key: f'{{"n":{number}}}' for number, key in sorted(enumerate(ODD_KEYS),
                                                         key=lambda pair: pair[1])}
    assert list(store.list_context("run-1")) == sorted(ODD_KEYS)
    for number, key in enumerate(ODD_KEYS):
        assert store.get_context("run-1", key) == f'{{"n":{number}}}'
    assert store.set_context("run-1", "a/b", "[1,2]") is True  # replaces
    assert store.get_context("run-1", "a/b") == "[1,2]"
    store.delete_context("run-1", "a/b")
    store.delete_context("run-1", "a/b")  # deleting again changes nothing
    store.delete_context("run-1", "never-set")
    assert store.get_context("run-1", "a/b") is None
    assert set(store.list_context("run-1")) == set(ODD_KEYS) - {"a/b"}



def test_context_belongs_to_one_run_and_goes_with_it(store: Store) -> None:
    make_run(store, run_id="gone")
    make_run(store, run_id="kept")
    assert store.set_context("gone", "k", '"gone"') and store.set_context("kept", "k", '"kept"')
    assert store.get_context("gone", "k") == '"gone"'
    store.delete_run("gone")
    assert store.get_context("gone", "k") is None and store.list_context("gone") == {}
    assert store.list_context("kept") == {"k": '"kept"'}
    # A late body setting a key of the deleted run stores nothing.
    assert store.set_context("gone", "late", "1") is False
    assert store.list_context("gone") == {}
    assert make_run(store, run_id="gone")  # the id is used again: an empty context
    assert store.list_context("gone") == {}



def test_concurrent_context_sets_of_different_keys_all_land(store: Store) -> None:
    make_run(store)
    in_threads(8, lambda i: [store.set_context("run-1", f"k{i}-{n}", str(n))
                             for n in range(3)])
    assert store.list_context("run-1") == {f"k{i}-{n}": str(n)
                                           for i in range(8) for n in range(3)}



def test_concurrent_context_sets_of_one_key_keep_one_value(store: Store) -> None:
    make_run(store)
    assert in_threads(6, lambda i: store.set_context("run-1", "same", str(i))) == [True] * 6
    assert store.list_context("run-1") in [{"same": str(i)} for i in range(6)]



def test_firestore_context_set_while_the_run_is_deleted_goes_with_it(firestore_store) -> None:
    """delete_run is not atomic: a late body's value lands after the context was
    listed, before the run document goes; the sweep after the run finds it."""
    store = firestore_store
    make_run(store)
    store.set_context("run-1", "early", "1")
    delete_refs = store._delete_refs
    landed = []

    def late_write_first(refs):
        if not landed:  # the first batch: the run document is still there
            landed.append(store.set_context("run-1", "late", "2"))
        delete_refs(refs)

    store._delete_refs = late_write_first
    try:
        store.delete_run("run-1")
    finally:
        store._delete_refs = delete_refs
    assert landed == [True]
    assert store.get_run("run-1") is None and store.list_context("run-1") == {}
