"""SQLite store: the embedded backend's durable state, one file per project.

WAL mode with synchronous=NORMAL: a commit survives the process being
killed (kill -9) at any point; only a power cut can lose the last commits.
Each thread gets its own connection; `BEGIN IMMEDIATE` serializes writers,
so a transaction never needs retrying. Writers wait in SQLite's busy
handler, not on a Python lock: a lock handed from thread to thread forces a
thread switch per transaction (a convoy under the GIL), while the busy
handler lets the thread that just committed start its next transaction at
once; bench/engine_bench.py measured the lock 20-30% slower.

Records are stored as JSON next to the columns that queries filter on. The
transaction object refuses a read after a write, like Firestore does, so
engine code that passes here also passes on Firestore.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from function_flow.errors import StoreUnavailableError
from function_flow.ports import ReadAfterWriteError  # noqa: F401 (re-exported)
from function_flow.records import RunRecord, RunStatus, TaskRecord, TaskStatus

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

#: Most task ids bound into one `IN (...)` query (SQLite allows 32766).
_BATCH = 500

def _dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), _BATCH):
        yield items[start:start + _BATCH]


def _select_tasks(conn: sqlite3.Connection, run_id: str,
                  task_ids: list[str]) -> list[tuple[str, str]]:
    """(task_id, data) rows of the given tasks, one query per _BATCH ids."""
    rows: list[tuple[str, str]] = []
    for chunk in _chunks(task_ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(
            f"SELECT task_id, data FROM tasks WHERE run_id = ? AND task_id IN ({marks})",
            (run_id, *chunk)).fetchall())
    return rows


class _SqliteTransaction:
    """One BEGIN IMMEDIATE transaction; it holds the write lock throughout.

    Records read in the transaction are kept (parsed), so a later update of
    the same record merges into them instead of reading the row again: no
    other writer can change the row while this transaction holds the lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._wrote = False
        self._tasks: dict[tuple[str, str], dict[str, Any] | None] = {}
        self._runs: dict[str, dict[str, Any] | None] = {}

    def _reading(self) -> None:
        if self._wrote:
            raise ReadAfterWriteError("transaction read after a write")

    def _run_data(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self._runs:
            row = self._conn.execute("SELECT data FROM runs WHERE run_id = ?",
                                     (run_id,)).fetchone()
            self._runs[run_id] = json.loads(row[0]) if row else None
        return self._runs[run_id]

    def get_run(self, run_id: str) -> RunRecord | None:
        self._reading()
        data = self._run_data(run_id)
        return RunRecord.from_dict(data) if data is not None else None

    def get_tasks(self, run_id: str, task_ids: Iterable[str]) -> dict[str, TaskRecord]:
        self._reading()
        wanted = list(dict.fromkeys(task_ids))
        unread = [t for t in wanted if (run_id, t) not in self._tasks]
        if unread:
            for task_id in unread:
                self._tasks[(run_id, task_id)] = None
            for task_id, data in _select_tasks(self._conn, run_id, unread):
                self._tasks[(run_id, task_id)] = json.loads(data)
        found = {}
        for task_id in wanted:
            data = self._tasks[(run_id, task_id)]
            if data is not None:
                found[task_id] = TaskRecord.from_dict(data)
        return found

    def get_run_and_tasks(self, run_id: str, task_ids: Iterable[str]
                          ) -> tuple[RunRecord | None, dict[str, TaskRecord]]:
        return self.get_run(run_id), self.get_tasks(run_id, task_ids)

    def get_slot(self, run_id: str, slot: int) -> str | None:
        self._reading()
        row = self._conn.execute("SELECT holder FROM slots WHERE run_id = ? AND slot = ?",
                                 (run_id, slot)).fetchone()
        return row[0] if row else None

    def update_run(self, run_id: str, fields: dict[str, Any]) -> None:
        self._wrote = True
        data = self._run_data(run_id)
        if data is None:
            return
        data.update(fields)
        self._conn.execute("UPDATE runs SET status = ?, data = ? WHERE run_id = ?",
                           (data["status"], _dumps(data), run_id))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self._wrote = True
        key = (run_id, task_id)
        if key not in self._tasks and self._blind_update(run_id, task_id, fields):
            return
        if key in self._tasks:
            data = self._tasks[key]
        else:
            row = self._conn.execute("SELECT data FROM tasks WHERE run_id = ? AND task_id = ?",
                                     (run_id, task_id)).fetchone()
            data = self._tasks[key] = json.loads(row[0]) if row else None
        if data is None:
            return
        _merge(data, fields)
        self._conn.execute(
            "UPDATE tasks SET status = ?, data = ? WHERE run_id = ? AND task_id = ?",
            (data["status"], _dumps(data), run_id, task_id))

    def _blind_update(self, run_id: str, task_id: str, fields: dict[str, Any]) -> bool:
        """Set map entries ("deps_done.<task>") of an unread record, in SQL.

        That is what a completer writes into each dependent. A wide join's
        record grows to one entry per dependency, and SQLite's json_set edits
        it without a round trip through Python's json (O(N) per completer in
        C instead of in Python). Returns False, doing nothing, for any other
        update: small records are cheaper to merge in Python.
        """
        arguments: list[Any] = []
        for name, value in fields.items():
            path = _entry_path(name)
            if path is None or not _plain_scalar(value):
                return False
            arguments += (path, _dumps(value))
        if not arguments:
            return False
        setters = ", ".join("?, json(?)" for _ in fields)
        self._conn.execute(
            f"UPDATE tasks SET data = json_set(data, {setters}) "
            "WHERE run_id = ? AND task_id = ?", (*arguments, run_id, task_id))
        return True

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        self._wrote = True
        self._conn.execute(
            "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?) "
            "ON CONFLICT (run_id, slot) DO UPDATE SET holder = excluded.holder",
            (run_id, slot, holder))


#: A key that can be written as a double-quoted label of a SQLite JSON path.
_PATH_LABEL = re.compile(r'[^"\\\x00-\x1f]+')


@functools.lru_cache(maxsize=4096)
def _entry_path(key: str) -> str | None:
    """'deps_done.t1' -> '$."deps_done"."t1"'; None unless the key is a map entry."""
    field, dot, entry = key.partition(".")
    if not dot or not _PATH_LABEL.fullmatch(field) or not _PATH_LABEL.fullmatch(entry):
        return None
    return f'$."{field}"."{entry}"'


def _plain_scalar(value: Any) -> bool:
    """Whether SQLite's json() accepts `value` exactly as Python's json wrote it."""
    if value is None or isinstance(value, (str, bool, int)):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _merge(data: dict[str, Any], fields: dict[str, Any]) -> None:
    """Apply an update where "a.b" keys set one entry of map field "a"."""
    for key, value in fields.items():
        if "." in key:
            field, entry = key.split(".", 1)
            data.setdefault(field, {})[entry] = value
        else:
            data[key] = value


def _unavailable(path: str, exc: BaseException) -> StoreUnavailableError:
    """Why the database at `path` cannot be used, and what to do about it."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        advice = ("it is not a SQLite database; point FUNCTION_FLOW_DB at another "
                  "file, or move this one away")
    else:
        advice = f"{reason}; set FUNCTION_FLOW_DB to a file in a writable directory"
    return StoreUnavailableError(f"cannot open the database {path}: {advice}")


class SqliteStore:
    """The embedded backend's store (see module docstring)."""

    def __init__(self, path: str = DEFAULT_PATH) -> None:
        self.path = path
        self._local = threading.local()
        # Open the file and create the schema now: a bad path or a file that
        # is not a database fails here, with advice, not in a worker thread.
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with self._connection() as conn:
                conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise _unavailable(path, exc) from exc

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                       check_same_thread=False)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=60000")
            except sqlite3.Error:
                if conn is not None:  # do not leak a half-opened connection
                    conn.close()
                raise
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises."""
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
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def transact(self, fn: Callable[[Any], T], *, compare_and_set: bool = False) -> T:
        # Writers are serialized by BEGIN IMMEDIATE: nothing to gain from
        # compare-and-set, and nothing ever conflicts.
        with self._writing() as conn:
            return fn(_SqliteTransaction(conn))

    def create_run(self, run: RunRecord, tasks: list[TaskRecord],
                   slots: dict[int, str | None]) -> bool:
        with self._writing() as conn:
            exists = conn.execute("SELECT 1 FROM runs WHERE run_id = ?",
                                  (run.run_id,)).fetchone()
            if exists:
                return False  # nothing was written: the commit is empty
            conn.execute(
                "INSERT INTO runs (run_id, job_name, status, created_at, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.run_id, run.job_name, run.status.value, run.created_at,
                 _dumps(run.to_dict())))
            conn.executemany(
                "INSERT INTO tasks (run_id, task_id, status, data) VALUES (?, ?, ?, ?)",
                [(run.run_id, t.task_id, t.status.value, _dumps(t.to_dict()))
                 for t in tasks])
            conn.executemany(
                "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?)",
                [(run.run_id, slot, holder) for slot, holder in slots.items()])
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
            return [TaskRecord.from_dict(json.loads(r[0])) for r in rows]
        wanted = list(dict.fromkeys(task_ids))
        found = dict(_select_tasks(conn, run_id, wanted))
        return [TaskRecord.from_dict(json.loads(found[t])) for t in wanted if t in found]

    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        # Without INDEXED BY, SQLite (no ANALYZE statistics) scans the run's
        # primary key range instead: O(tasks) per call, 75 us at 1000 tasks.
        rows = self._connection().execute(
            "SELECT data FROM tasks INDEXED BY tasks_by_status "
            "WHERE run_id = ? AND status = ? LIMIT ?",
            (run_id, status.value, limit)).fetchall()
        return [TaskRecord.from_dict(json.loads(r[0])) for r in rows]

    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        taken = {r[0] for r in self._connection().execute(
            "SELECT slot FROM slots WHERE run_id = ? AND holder IS NOT NULL",
            (run_id,)).fetchall()}
        return [s for s in range(count) if s not in taken][:limit]

    def list_runs(self, limit: int = 50,
                  status: RunStatus | None = None) -> list[RunRecord]:
        if status is None:
            rows = self._connection().execute(
                "SELECT data FROM runs ORDER BY created_at DESC LIMIT ?", (limit,)).fetchall()
        else:
            rows = self._connection().execute(
                "SELECT data FROM runs WHERE status = ? ORDER BY created_at DESC LIMIT ?",
                (status.value, limit)).fetchall()
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
        with self._writing() as conn:
            for table in ("tasks", "slots", "triggers", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))

    def runs_started_before(self, timestamp: float) -> list[str]:
        return [r[0] for r in self._connection().execute(
            "SELECT run_id FROM runs WHERE created_at < ?", (timestamp,)).fetchall()]
