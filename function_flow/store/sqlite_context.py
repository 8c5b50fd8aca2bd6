"""The run context on SQLite: one row per key in table `context` (see sqlite_rows.SCHEMA).

A mixin of SqliteStore, apart so that sqlite.py keeps to the records the
engine reads and writes. Writes go through the store's BEGIN IMMEDIATE
transactions; `set_context` inserts only while the run's row exists, and
`delete_run` removes the run and its context in one transaction, so no
context row ever outlives its run.
"""

from __future__ import annotations

import sqlite3
from typing import Callable, ContextManager


class SqliteContext:
    """ports.Store's context operations; the host provides the connections."""

    _connection: Callable[[], sqlite3.Connection]
    _writing: Callable[[], ContextManager[sqlite3.Connection]]

    def get_context(self, run_id: str, key: str) -> str | None:
        row = self._connection().execute(
            "SELECT value FROM context WHERE run_id = ? AND key = ?", (run_id, key)).fetchone()
        return row[0] if row else None

    def list_context(self, run_id: str) -> dict[str, str]:
        return dict(self._connection().execute(
            "SELECT key, value FROM context WHERE run_id = ? ORDER BY key", (run_id,)))

    def set_context(self, run_id: str, key: str, value: str) -> bool:
        with self._writing() as conn:
            return conn.execute(
                "INSERT INTO context (run_id, key, value) "
                "SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM runs WHERE run_id = ?1) "
                "ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                (run_id, key, value)).rowcount == 1

    def delete_context(self, run_id: str, key: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM context WHERE run_id = ? AND key = ?", (run_id, key))


__all__ = ["SqliteContext"]
