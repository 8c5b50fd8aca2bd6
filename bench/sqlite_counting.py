"""Count the SQL statements, and the time inside SQLite, of the embedded backend.

What firestore_bench.py's instrument.py is for Firestore: every SQLite
connection opened while `counting_statements()` is active reports each
statement (sqlite3's trace callback) and the time spent in its execute
calls, where SQLite parses, steps and commits. The rest of a run is Python.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from typing import Any, Callable, Iterator


def _timed(method: Callable[..., sqlite3.Cursor]) -> Callable[..., sqlite3.Cursor]:
    """`method` of a connection, adding the seconds it takes to the class's `spent`."""
    def timed(self: Any, *args: Any) -> sqlite3.Cursor:
        started = time.perf_counter()
        try:
            return method(self, *args)
        finally:
            self.spent[0] += time.perf_counter() - started
    return timed


@contextlib.contextmanager
def counting_statements() -> Iterator[list[Any]]:
    """[statements, seconds]: the SQL statements that every SQLite connection
    opened meanwhile runs (statements inside triggers not apart), and the
    seconds spent in their execute calls, all threads together. Both are
    final once the block has ended."""
    counted: list[Any] = [0, 0.0]
    real_connect = sqlite3.connect

    def count(statement: str) -> None:
        if not statement.startswith("--"):  # a trigger's statement, reported apart
            counted[0] += 1

    class Timed(sqlite3.Connection):
        spent = [0.0]
        execute = _timed(sqlite3.Connection.execute)
        executemany = _timed(sqlite3.Connection.executemany)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, factory=Timed, **kwargs)
        conn.set_trace_callback(count)
        return conn

    sqlite3.connect = connect  # type: ignore[assignment]
    try:
        yield counted
    finally:
        sqlite3.connect = real_connect  # type: ignore[assignment]
        counted[1] = Timed.spent[0]
