"""The SQLite store's group commit (store/sqlite_writer.py): a transaction that
raises undoes its own writes and nobody else's, whether it opened the group or
joined one that another thread's transaction left open."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest

from function_flow.store.sqlite_writer import GroupCommitWriter


def _writer(tmp_path: Path) -> tuple[GroupCommitWriter, sqlite3.Connection]:
    path = str(tmp_path / "w.db")

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        return conn

    reader = connect()
    reader.execute("CREATE TABLE t (k TEXT PRIMARY KEY)")
    return GroupCommitWriter(connect), reader


def _keys(reader: sqlite3.Connection) -> list[str]:
    return sorted(r[0] for r in reader.execute("SELECT k FROM t"))


def _insert_then_fail(conn: sqlite3.Connection) -> None:
    conn.execute("INSERT INTO t VALUES ('failed')")
    raise ValueError("the body failed")


def test_a_failed_first_transaction_is_undone_and_the_next_one_commits(tmp_path: Path) -> None:
    writer, reader = _writer(tmp_path)
    with pytest.raises(ValueError):
        writer.run(_insert_then_fail)
    writer.run(lambda conn: conn.execute("INSERT INTO t VALUES ('next')"))
    assert _keys(reader) == ["next"]
    writer.close()


def test_a_failed_transaction_in_a_group_undoes_only_its_own_writes(tmp_path: Path) -> None:
    writer, reader = _writer(tmp_path)
    joined = threading.Event()

    def first(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO t VALUES ('first')")
        deadline = time.monotonic() + 30
        while not writer._waiting and time.monotonic() < deadline:  # the second waits
            time.sleep(0.001)
        joined.set()

    errors: list[BaseException] = []

    def second() -> None:
        try:
            writer.run(_insert_then_fail)
        except ValueError as exc:
            errors.append(exc)

    thread = threading.Thread(target=lambda: writer.run(first))
    thread.start()
    deadline = time.monotonic() + 30
    while not writer._using and time.monotonic() < deadline:  # the first holds it
        time.sleep(0.001)
    other = threading.Thread(target=second)
    other.start()
    thread.join(30)
    other.join(30)
    assert joined.is_set() and len(errors) == 1
    writer.run(lambda conn: conn.execute("INSERT INTO t VALUES ('after')"))
    assert _keys(reader) == ["after", "first"]
    writer.close()


def test_close_from_another_thread_never_loses_or_breaks_a_group(tmp_path: Path) -> None:
    """close() may come from another thread at any moment (a test's teardown,
    a process shutting down): between two members of a group nobody uses the
    connection but its transaction is open, and closing it then lost the
    first members' writes ('cannot commit - no transaction is active')."""
    writer, reader = _writer(tmp_path)
    returned: list[str] = []
    raised: list[BaseException] = []
    stop = threading.Event()

    def write(who: int) -> None:
        for n in range(100):
            key = f"{who}-{n}"
            try:
                writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (?)", (key,)))
                returned.append(key)
            except sqlite3.Error as exc:
                raised.append(exc)

    def keep_closing() -> None:
        while not stop.is_set():
            writer.close()

    closer = threading.Thread(target=keep_closing)
    writers = [threading.Thread(target=write, args=(who,)) for who in range(4)]
    closer.start()
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    stop.set()
    closer.join()
    writer.close()

    assert not raised, raised[:3]
    assert len(returned) == 400
    assert set(returned) <= set(_keys(reader))  # what a caller was told is committed, is
