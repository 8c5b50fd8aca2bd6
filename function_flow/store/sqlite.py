"""SQLite store: the embedded backend's durable state, one file per project.

WAL mode with synchronous=NORMAL: a commit survives the process being
killed (kill -9) at any point; only a power cut can lose the last commits
(synchronous="full": an fsync per commit, which survives that too). Each
thread reads on its own connection; every write transaction of the process
runs on one connection (sqlite_writer.py: `BEGIN IMMEDIATE`, so a
transaction never needs retrying, and the transactions that wait while one
runs are committed with it, so writers never sleep in SQLite's busy handler).

Each process keeps the run records it read, parsed, while their rows'
revision is unchanged (a run's record holds a fingerprint per task, and
every claim reads it), and notifies its waiters of every commit that
writes one (`wait_run_write`: job.wait() returns as soon as a run ends).

How records map to rows is in sqlite_rows.py, the transaction the engine's
steps use in sqlite_transaction.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any, Callable, ContextManager, Iterable, TypeVar

from function_flow.errors import StoreUnavailableError
from function_flow.core.ports import Store
from function_flow.core.records import JoinProgress, RunRecord, RunStatus, TaskRecord, TaskStatus, \
    Trigger
from function_flow.store.sqlite_context import SqliteContext
from function_flow.store.sqlite_rows import (ACTIVE, ACTIVE_STATUSES, ADDED_COLUMNS, BATCH,
                                             RUN_REVISIONS, SCHEMA, TASK_COLUMNS, TRIGGER_COLUMNS, dumps, new_task_json,
                                             run_revision, select_tasks, task_record,
                                             trigger_of)
from function_flow.store.sqlite_transaction import SqliteTransaction
from function_flow.store.sqlite_writer import GroupCommitWriter

DEFAULT_PATH = os.path.join(".function_flow", "function_flow.db")

T = TypeVar("T")

#: Most run records SqliteStore keeps parsed (runs in progress, typically a few).
_CACHED_RUNS = 256


def _copy_run(record: RunRecord) -> RunRecord:
    """A record of its own for the caller (who may set its fields), sharing values."""
    copy = RunRecord.__new__(RunRecord)
    copy.__dict__.update(record.__dict__)
    return copy


def _unavailable(path: str, exc: BaseException) -> StoreUnavailableError:
    """Why the database at `path` cannot be used, and what to do about it."""
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and "not a database" in str(exc):
        advice = ("it is not a SQLite database; point FUNCTION_FLOW_DB at another "
                  "file, or move this one away")
    else:
        advice = f"{reason}; set FUNCTION_FLOW_DB to a file in a writable directory"
    return StoreUnavailableError(f"cannot open the database {path}: {advice}")


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """Bring a database made by an earlier release up to the current schema."""
    for table, columns in ADDED_COLUMNS.items():
        present = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in present:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")


class SqliteStore(SqliteContext, Store):
    """The embedded backend's store (see module docstring; the run context
    is in sqlite_context.py)."""

    def __init__(self, path: str = DEFAULT_PATH, synchronous: str = "normal") -> None:
        self.path = path
        if synchronous.lower() not in ("normal", "full"):
            raise ValueError(f"synchronous={synchronous!r}: use 'normal' or 'full'")
        #: NORMAL: a commit survives kill -9; FULL: an fsync per commit, so it
        #: survives a power cut too (bench/README.md has the cost).
        self.synchronous = synchronous.upper()
        self._local = threading.local()
        #: One connection for every write of this process (sqlite_writer.py).
        self._writer = GroupCommitWriter(self._open)
        #: run id -> (revision, record): every task's claim reads its run,
        #: whose record holds one fingerprint per task (versions.py), so
        #: parsing it each time made a task's cost grow with the run's size.
        #: A row whose revision is unchanged is not read again (see
        #: sqlite_rows.RUN_REVISIONS).
        self._runs: dict[str, tuple[int, RunRecord]] = {}
        #: Commits of this process that wrote a run record, counted, so that
        #: job.wait() learns of a run's end at once (wait_run_write).
        self._run_writes = 0
        self._run_written = threading.Condition()
        # Open the file and create the schema now: a bad path or a file that
        # is not a database fails here, with advice, not in a worker thread.
        try:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with self._connection() as conn:
                conn.executescript(SCHEMA)
                _add_missing_columns(conn)
                conn.executescript(RUN_REVISIONS)
                conn.execute("CREATE INDEX IF NOT EXISTS triggers_by_watch ON triggers(watch)")
        except (OSError, sqlite3.Error) as exc:
            self.close()
            raise _unavailable(path, exc) from exc

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection, for reads outside transactions."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._open()
        return conn

    def _open(self) -> sqlite3.Connection:
        conn = None
        try:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute("PRAGMA busy_timeout=60000")
        except sqlite3.Error:
            if conn is not None:  # do not leak a half-opened connection
                conn.close()
            raise
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        self._writer.close()

    def _writing(self) -> ContextManager[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, or ROLLBACK when the body raises: a transaction
        of this process's writer, committed with those that wait meanwhile."""
        return self._writer.transaction()

    def transact(self, fn: Callable[[Any], T], *, compare_and_set: bool = False) -> T:
        # Writers are serialized by BEGIN IMMEDIATE: nothing to gain from
        # compare-and-set, and nothing ever conflicts.
        made: list[SqliteTransaction] = []

        def step(conn: sqlite3.Connection) -> T:
            made.append(SqliteTransaction(conn, self._cached_run))
            return fn(made[0])

        result = self._writer.run(step)
        if made[0].wrote_run:
            self._ran_write()
        return result

    def locks_for_writes(self) -> bool:
        """True: every transaction is BEGIN IMMEDIATE on the one writer
        (ports.Store.locks_for_writes; core/chaining.py)."""
        return True

    def _ran_write(self) -> None:
        with self._run_written:
            self._run_writes += 1
            self._run_written.notify_all()

    def run_writes(self) -> int:
        """How many commits of this process have written a run record so far."""
        return self._run_writes

    def wait_run_write(self, seen: int, timeout: float) -> int:
        """Wait until this process commits a run record write after the `seen`-th
        (run_writes() before reading), at most `timeout` seconds; the new count.

        Only this process's commits notify: what another process writes (a
        `function-flow cancel`) is seen at the caller's next look.
        """
        with self._run_written:
            self._run_written.wait_for(lambda: self._run_writes != seen, timeout)
            return self._run_writes

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
                 dumps(run.to_dict())))
            conn.executemany(
                "INSERT INTO tasks (run_id, task_id, status, data) VALUES (?, ?, ?, ?)",
                [(run.run_id, t.task_id, t.status.value,
                  new_task_json(conn, run.run_id, t)) for t in tasks])
            conn.executemany(
                "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?)",
                [(run.run_id, slot, holder) for slot, holder in slots.items()])
        self._ran_write()
        return True

    def get_run(self, run_id: str) -> RunRecord | None:
        conn = self._connection()
        if run_id in self._runs:
            revision = run_revision(conn, run_id)
            if revision is None:
                return None
            cached = self._cached_run(run_id, revision)
            if cached is not None:
                return cached
        row = conn.execute("SELECT revision, data FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        if row is None:
            return None
        record = RunRecord.from_dict(json.loads(row[1]))
        if len(self._runs) >= _CACHED_RUNS:
            self._runs.clear()
        self._runs[run_id] = (row[0], record)
        return _copy_run(record)

    def _cached_run(self, run_id: str, revision: int) -> RunRecord | None:
        """A copy of the run record parsed at `revision`, if it is the one kept."""
        cached = self._runs.get(run_id)
        return _copy_run(cached[1]) if cached is not None and cached[0] == revision else None

    def get_tasks(self, run_id: str,
                  task_ids: Iterable[str] | None = None) -> list[TaskRecord]:
        conn = self._connection()
        if task_ids is None:
            rows = conn.execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ?",
                                (run_id,)).fetchall()
            return [task_record(r[1], r[2]) for r in rows]
        wanted = list(dict.fromkeys(task_ids))
        found = {r[0]: r for r in select_tasks(conn, run_id, wanted)}
        return [task_record(found[t][1], found[t][2]) for t in wanted if t in found]

    def join_progress(self, run_id: str, task_id: str) -> JoinProgress | None:
        conn = self._connection()
        try:
            row = conn.execute(
                "SELECT status, coalesce(succeeded, 0), coalesce(failed, 0), "
                "coalesce(skipped, 0), CASE json_type(data, '$.deps') WHEN 'array' "
                "THEN json_array_length(data, '$.deps') END "
                "FROM tasks LEFT JOIN join_counts USING (run_id, task_id) "
                "WHERE run_id = ? AND task_id = ?", (run_id, task_id)).fetchone()
        except sqlite3.OperationalError as exc:
            # A record holding NaN or an infinity (a foreach item from a result),
            # which Python's json writes and SQLite's JSON functions refuse.
            if "malformed JSON" not in str(exc):
                raise
            row = conn.execute(
                "SELECT status, coalesce(succeeded, 0), coalesce(failed, 0), "
                "coalesce(skipped, 0), data FROM tasks LEFT JOIN join_counts "
                "USING (run_id, task_id) WHERE run_id = ? AND task_id = ?",
                (run_id, task_id)).fetchone()
            deps = json.loads(row[4]).get("deps")
            row = (*row[:4], len(deps) if isinstance(deps, list) else None)
        if row is None:
            return None
        return JoinProgress(TaskStatus(row[0]), row[1], row[2], row[3], row[4])

    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        # Without INDEXED BY, SQLite (no ANALYZE statistics) scans the run's
        # primary key range instead: O(tasks) per call, 75 us at 1000 tasks.
        # That is what the statuses the index leaves out get (a run's end,
        # a cancel, the dashboard: not once per task).
        # The index's own term goes last: before `status = ?`, SQLite probes
        # the index with it (every active task of the run: 0.2 ms at 2,000).
        index, term = ("INDEXED BY tasks_active", f" AND {ACTIVE}") \
            if status.value in ACTIVE_STATUSES else ("", "")
        rows = self._connection().execute(
            f"SELECT {TASK_COLUMNS} FROM tasks {index} WHERE run_id = ? AND status = ?{term} "
            "LIMIT ?", (run_id, status.value, limit)).fetchall()
        return [task_record(r[1], r[2]) for r in rows]

    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        # The free rows from their own index, then the numbers past the last
        # row (MAX on the primary key: one probe), never the held rows.
        conn = self._connection()
        free = [r[0] for r in conn.execute(
            "SELECT slot FROM slots INDEXED BY slots_free "
            "WHERE run_id = ? AND holder IS NULL AND slot < ? ORDER BY slot LIMIT ?",
            (run_id, count, max(0, limit))).fetchall()]
        if len(free) < limit:
            last = conn.execute("SELECT MAX(slot) FROM slots WHERE run_id = ?",
                                (run_id,)).fetchone()[0]
            start = 0 if last is None else last + 1
            free += range(start, min(count, start + limit - len(free)))
        return free

    def list_runs(self, limit: int = 50, status: RunStatus | None = None,
                  hooks_pending: bool = False, *, job_name: str | None = None,
                  before: tuple[float, str] | None = None,
                  newest_first: bool = False) -> list[RunRecord]:
        # Always newest first: an index range here (runs_by_created, runs_by_job),
        # except hooks_pending, which is rare, and a scan: the poller's only.
        where, params = [], []
        for column, value in (("status", status.value if status else None),
                              ("job_name", job_name)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if hooks_pending:
            where.append("json_extract(data, '$.hooks_pending')")
        if before is not None:
            where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
            params += [before[0], before[0], before[1]]
        rows = self._connection().execute(
            "SELECT data FROM runs" + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY created_at DESC, run_id DESC LIMIT ?", (*params, limit)).fetchall()
        return [RunRecord.from_dict(json.loads(r[0])) for r in rows]

    def get_trigger(self, trigger_id: str) -> Trigger | None:
        row = self._connection().execute(
            f"SELECT {TRIGGER_COLUMNS} FROM triggers WHERE trigger_id = ?",
            (trigger_id,)).fetchone()
        return trigger_of(row) if row else None

    def find_watches(self, limit: int, among: Iterable[str] | None = None) -> list[Trigger]:
        if among is None:
            rows = self._connection().execute(
                f"SELECT {TRIGGER_COLUMNS} FROM triggers WHERE watch IS NOT NULL LIMIT ?",
                (limit,)).fetchall()
            return [trigger_of(row) for row in rows]
        wanted, found = list(dict.fromkeys(among)), []
        for start in range(0, len(wanted), BATCH):
            chunk = wanted[start:start + BATCH]
            found += self._connection().execute(
                f"SELECT {TRIGGER_COLUMNS} FROM triggers WHERE watch IN "
                f"({', '.join('?' * len(chunk))}) LIMIT ?", (*chunk, limit)).fetchall()
        return [trigger_of(row) for row in found[:limit]]

    def first_delivery(self, key: str, run_id: str) -> bool:
        with self._writing() as conn:
            return conn.execute("INSERT OR IGNORE INTO deliveries (key, run_id) VALUES (?, ?)",
                                (key, run_id)).rowcount == 1

    def forget_delivery(self, key: str) -> None:
        with self._writing() as conn:
            conn.execute("DELETE FROM deliveries WHERE key = ?", (key,))

    def delete_run(self, run_id: str) -> None:
        with self._writing() as conn:
            for table in ("tasks", "deps_done", "join_counts", "slots", "triggers",
                          "deliveries", "context", "runs"):
                conn.execute(f"DELETE FROM {table} WHERE run_id = ?", (run_id,))
        self._ran_write()

    def runs_started_before(self, timestamp: float) -> list[str]:
        return [r[0] for r in self._connection().execute(
            "SELECT run_id FROM runs WHERE created_at < ?", (timestamp,)).fetchall()]
