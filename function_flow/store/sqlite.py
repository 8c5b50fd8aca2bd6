"""SQLite store: the embedded backend's durable state, one file per project.

WAL mode with synchronous=NORMAL: a commit survives the process being
killed (kill -9) at any point; only a power cut can lose the last commits.
Each thread gets its own connection; `BEGIN IMMEDIATE` serializes writers,
so a transaction never needs retrying.

Records are stored as JSON next to the columns that queries filter on. The
transaction object refuses a read after a write, like Firestore does, so
engine code that passes here also passes on Firestore.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable, TypeVar

from function_flow.ports import ReadAfterWriteError  # noqa: F401 (re-exported)
from function_flow.records import RunRecord, TaskRecord, TaskStatus

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    job_name   TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at REAL NOT NULL,
    data       TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    run_id  TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status  TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks (run_id, status);
CREATE TABLE IF NOT EXISTS slots (
    run_id TEXT NOT NULL,
    slot   INTEGER NOT NULL,
    holder TEXT,
    PRIMARY KEY (run_id, slot)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS triggers (
    trigger_id TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL
);
"""

DEFAULT_PATH = os.path.join(".function_flow", "function_flow.db")


class _SqliteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._wrote = False

    def _reading(self) -> None:
        if self._wrote:
            raise ReadAfterWriteError("transaction read after a write")

    def get_run(self, run_id: str) -> RunRecord | None:
        self._reading()
        row = self._conn.execute("SELECT data FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        return RunRecord.from_dict(json.loads(row[0])) if row else None

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        self._reading()
        found = {}
        for task_id in task_ids:
            row = self._conn.execute(
                "SELECT data FROM tasks WHERE run_id = ? AND task_id = ?",
                (run_id, task_id)).fetchone()
            if row:
                found[task_id] = TaskRecord.from_dict(json.loads(row[0]))
        return found

    def get_slot(self, run_id: str, slot: int) -> str | None:
        self._reading()
        row = self._conn.execute("SELECT holder FROM slots WHERE run_id = ? AND slot = ?",
                                 (run_id, slot)).fetchone()
        return row[0] if row else None

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self._wrote = True
        row = self._conn.execute("SELECT data FROM runs WHERE run_id = ?",
                                 (run_id,)).fetchone()
        if row is None:
            return
        data = json.loads(row[0])
        data.update(fields)
        self._conn.execute("UPDATE runs SET status = ?, data = ? WHERE run_id = ?",
                           (data["status"], json.dumps(data), run_id))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self._wrote = True
        row = self._conn.execute("SELECT data FROM tasks WHERE run_id = ? AND task_id = ?",
                                 (run_id, task_id)).fetchone()
        if row is None:
            return
        data = json.loads(row[0])
        _merge(data, fields)
        self._conn.execute(
            "UPDATE tasks SET status = ?, data = ? WHERE run_id = ? AND task_id = ?",
            (data["status"], json.dumps(data), run_id, task_id))

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        self._wrote = True
        self._conn.execute(
            "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?) "
            "ON CONFLICT (run_id, slot) DO UPDATE SET holder = excluded.holder",
            (run_id, slot, holder))


def _merge(data: dict[str, Any], fields: dict[str, Any]) -> None:
    """Apply an update where "a.b" keys set one entry of map field "a"."""
    for key, value in fields.items():
        if "." in key:
            field, entry = key.split(".", 1)
            data.setdefault(field, {})[entry] = value
        else:
            data[key] = value


class SqliteStore:
    """The embedded backend's store (see module docstring)."""

    def __init__(self, path: str = DEFAULT_PATH) -> None:
        self.path = path
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        self._local = threading.local()
        with self._connection() as conn:
            conn.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def transact(self, fn: Callable[[Any], T]) -> T:
        conn = self._connection()
        for attempt in range(50):
            try:
                conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:  # database is locked
                if "locked" not in str(exc) or attempt == 49:
                    raise
                time.sleep(0.01 * (attempt + 1))
        try:
            result = fn(_SqliteTransaction(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return result

    def create_run(self, run: RunRecord, tasks: list[TaskRecord],
                   slots: dict[int, str]) -> bool:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute("SELECT 1 FROM runs WHERE run_id = ?",
                                  (run.run_id,)).fetchone()
            if exists:
                conn.execute("ROLLBACK")
                return False
            conn.execute(
                "INSERT INTO runs (run_id, job_name, status, created_at, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.run_id, run.job_name, run.status.value, run.created_at,
                 json.dumps(run.to_dict())))
            conn.executemany(
                "INSERT INTO tasks (run_id, task_id, status, data) VALUES (?, ?, ?, ?)",
                [(run.run_id, t.task_id, t.status.value, json.dumps(t.to_dict()))
                 for t in tasks])
            conn.executemany(
                "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?)",
                [(run.run_id, slot, holder) for slot, holder in slots.items()])
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        row = self._connection().execute("SELECT data FROM runs WHERE run_id = ?",
                                         (run_id,)).fetchone()
        return RunRecord.from_dict(json.loads(row[0])) if row else None

    def get_tasks(self, run_id: str,
                  task_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        conn = self._connection()
        if task_ids is None:
            rows = conn.execute("SELECT data FROM tasks WHERE run_id = ?",
                                (run_id,)).fetchall()
        else:
            rows = []
            for task_id in task_ids:
                rows.extend(conn.execute(
                    "SELECT data FROM tasks WHERE run_id = ? AND task_id = ?",
                    (run_id, task_id)).fetchall())
        return [TaskRecord.from_dict(json.loads(r[0])) for r in rows]

    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        rows = self._connection().execute(
            "SELECT data FROM tasks WHERE run_id = ? AND status = ? LIMIT ?",
            (run_id, status.value, limit)).fetchall()
        return [TaskRecord.from_dict(json.loads(r[0])) for r in rows]

    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        taken = {r[0] for r in self._connection().execute(
            "SELECT slot FROM slots WHERE run_id = ? AND holder IS NOT NULL",
            (run_id,)).fetchall()}
        return [s for s in range(count) if s not in taken][:limit]

    def list_runs(self, limit: int = 50) -> list[RunRecord]:
        rows = self._connection().execute(
            "SELECT data FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        return [RunRecord.from_dict(json.loads(r[0])) for r in rows]

    def put_trigger(self, trigger_id: str, run_id: str, task_id: str, attempt: int) -> None:
        self._connection().execute(
            "INSERT OR REPLACE INTO triggers (trigger_id, run_id, task_id, attempt) "
            "VALUES (?, ?, ?, ?)", (trigger_id, run_id, task_id, attempt))

    def get_trigger(self, trigger_id: str) -> tuple[str, str, int] | None:
        row = self._connection().execute(
            "SELECT run_id, task_id, attempt FROM triggers WHERE trigger_id = ?",
            (trigger_id,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def delete_trigger(self, trigger_id: str) -> None:
        self._connection().execute("DELETE FROM triggers WHERE trigger_id = ?",
                                   (trigger_id,))

    def delete_run(self, run_id: str) -> None:
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        for table in ("tasks", "slots", "triggers", "runs"):
            conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        conn.execute("COMMIT")

    def runs_started_before(self, timestamp: float) -> list[str]:
        return [r[0] for r in self._connection().execute(
            "SELECT run_id FROM runs WHERE created_at < ?", (timestamp,)).fetchall()]
