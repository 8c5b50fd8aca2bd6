"""The embedded store's group-commit writer (store/sqlite_writer.py).

What callers rely on: when `run` returns, its writes are committed; when
it raises, none of them are. `close()` may come from another thread at any
moment (a test's teardown, a process shutting down) and must not break a
group that is still open.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from function_flow.store.sqlite_writer import GroupCommitWriter


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    return conn


def test_close_from_another_thread_never_loses_or_breaks_a_group(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    connect(path).execute("CREATE TABLE t (writer INTEGER, n INTEGER)")
    writer = GroupCommitWriter(lambda: connect(path))
    returned: list[tuple[int, int]] = []
    raised: list[BaseException] = []
    stop = threading.Event()

    def write(who: int) -> None:
        for n in range(100):
            try:
                writer.run(lambda conn: conn.execute("INSERT INTO t VALUES (?, ?)", (who, n)))
                returned.append((who, n))
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

    stored = set(connect(path).execute("SELECT writer, n FROM t").fetchall())
    assert not raised, raised[:3]
    assert set(returned) <= stored  # what a caller was told is committed, is
    assert len(returned) == 400
