"""SQLite store: the embedded backend's durable state, one file per project.

WAL mode with synchronous=NORMAL: a commit survives the process being
killed (kill -9) at any point; only a power cut can lose the last commits.
Each thread gets its own connection; `BEGIN IMMEDIATE` serializes writers,
so a transaction never needs retrying. Writers wait in SQLite's busy
handler, not on a Python lock: a lock handed from thread to thread forces a
thread switch per transaction (a convoy under the GIL), while the busy
handler lets the thread that just committed start its next transaction at
once; bench/engine_bench.py measured the lock 20-30% slower.

How records map to rows is in sqlite_rows.py. The transaction object refuses a read after a write, like
Firestore does, so engine code that passes here also passes on Firestore.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from typing import Any, Callable, Iterable, Iterator, TypeVar

from function_flow.errors import StoreUnavailableError
from function_flow.core.ports import ReadAfterWriteError, RecordExistsError
from function_flow.core.records import (JoinProgress, RunRecord, RunStatus, TaskRecord,
                                        TaskStatus, Trigger)
from function_flow.store.sqlite_context import SqliteContext
from function_flow.store.sqlite_rows import (ADDED_COLUMNS, BATCH, DEP_PREFIX, RUN_REVISIONS,
                                             SCHEMA,
                                          TRIGGER_COLUMNS, trigger_of, trigger_row, TASK_COLUMNS, dumps,
                                             merge_fields, new_task_json, parse_deps,
                                             select_tasks, task_record, task_record_of,
                                             write_deps_done)

DEFAULT_PATH = os.path.join(".function_flow", "function_flow.db")

T = TypeVar("T")

class _SqliteTransaction:
    """One BEGIN IMMEDIATE transaction; it holds the write lock throughout.

    Records read in the transaction are kept (parsed), so a later update of
    the same record merges into them instead of reading the row again: no
    other writer can change the row while this transaction holds the lock.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._wrote = False
        self.wrote_run = False  # for SqliteStore.wait_run_write
        #: (run, task) -> (JSON fields, deps_done rows), or None if missing.
        self._tasks: dict[tuple[str, str], tuple[dict[str, Any], dict[str, str]] | None] = {}
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
            for task_id, data, deps in select_tasks(self._conn, run_id, unread):
                self._tasks[(run_id, task_id)] = (json.loads(data), parse_deps(deps))
        found = {}
        for task_id in wanted:
            cached = self._tasks[(run_id, task_id)]
            if cached is not None:
                found[task_id] = task_record_of(*cached)
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
        self.wrote_run = True
        self._conn.execute("UPDATE runs SET status = ?, data = ? WHERE run_id = ?",
                           (data["status"], dumps(data), run_id))

    def update_task(self, run_id: str, task_id: str, fields: dict[str, Any]) -> None:
        self._wrote = True
        key = (run_id, task_id)
        deps = {k[len(DEP_PREFIX):]: v for k, v in fields.items() if k.startswith(DEP_PREFIX)}
        if deps:  # a completer's blind write: rows of their own, the record is not read
            write_deps_done(self._conn, run_id, task_id, deps)
            fields = {k: v for k, v in fields.items() if not k.startswith(DEP_PREFIX)}
            cached = self._tasks.get(key)
            if cached is not None:
                cached[1].update(deps)
            if not fields:
                return
        if key not in self._tasks and self._set_in_sql(run_id, task_id, fields):
            return
        if key not in self._tasks:
            row = self._conn.execute("SELECT data FROM tasks WHERE run_id = ? AND task_id = ?",
                                     (run_id, task_id)).fetchone()
            self._tasks[key] = (json.loads(row[0]), {}) if row else None
        cached = self._tasks[key]
        if cached is None:
            return
        data = cached[0]
        merge_fields(data, fields)
        self._conn.execute(
            "UPDATE tasks SET status = ?, data = ? WHERE run_id = ? AND task_id = ?",
            (data["status"], dumps(data), run_id, task_id))

    def _set_in_sql(self, run_id: str, task_id: str, fields: dict[str, Any]) -> bool:
        """Set top-level fields of an unread record with json_set; False if it cannot.

        That is an executor completing the attempt it claimed: no round trip
        of the record through Python. Values SQLite's JSON refuses (NaN,
        infinities, which Python's json writes) take the read-and-merge way.
        """
        if not all(name.isidentifier() for name in fields):
            return False
        fields = {k: TaskStatus(v).value if k == "status" else v for k, v in fields.items()}
        try:
            values = [dumps(v, allow_nan=False) for v in fields.values()]
        except ValueError:
            return False
        paths = ", ".join(f"'$.{name}', json(?)" for name in fields)
        status = "status = ?, " if "status" in fields else ""
        self._conn.execute(
            f"UPDATE tasks SET {status}data = json_set(data, {paths}) "
            "WHERE run_id = ? AND task_id = ?",
            ([fields["status"]] if status else []) + values + [run_id, task_id])
        return True

    def set_slot(self, run_id: str, slot: int, holder: str | None) -> None:
        self._wrote = True
        self._conn.execute(
            "INSERT INTO slots (run_id, slot, holder) VALUES (?, ?, ?) "
            "ON CONFLICT (run_id, slot) DO UPDATE SET holder = excluded.holder",
            (run_id, slot, holder))

    def add_task(self, run_id: str, record: TaskRecord) -> None:
        self._wrote = True
        fields = record.to_dict()
        entries = fields.pop("deps_done")
        try:
            self._conn.execute(
                "INSERT INTO tasks (run_id, task_id, status, data) VALUES (?, ?, ?, ?)",
                (run_id, record.task_id, record.status.value, dumps(fields)))
        except sqlite3.IntegrityError as exc:
            raise RecordExistsError(
                f"run {run_id!r} already has a task {record.task_id!r}") from exc
        if entries:
            write_deps_done(self._conn, run_id, record.task_id, entries)
        self._tasks.pop((run_id, record.task_id), None)

    def replace_task(self, run_id: str, record: TaskRecord) -> None:
        self._wrote = True
        fields = record.to_dict()
        entries = fields.pop("deps_done")
        for table in ("deps_done", "join_counts"):
            self._conn.execute(f"DELETE FROM {table} WHERE run_id = ? AND task_id = ?",
                               (run_id, record.task_id))
        self._conn.execute(
            "INSERT OR REPLACE INTO tasks (run_id, task_id, status, data) VALUES (?, ?, ?, ?)",
            (run_id, record.task_id, record.status.value, dumps(fields)))
        if entries:
            write_deps_done(self._conn, run_id, record.task_id, entries)
        self._tasks.pop((run_id, record.task_id), None)

    def put_trigger(self, trigger: Trigger) -> None:
        self._wrote = True
        self._conn.execute(f"INSERT OR REPLACE INTO triggers ({TRIGGER_COLUMNS}) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?)", trigger_row(trigger))

    def delete_trigger(self, trigger_id: str) -> None:
        self._wrote = True
        self._conn.execute("DELETE FROM triggers WHERE trigger_id = ?", (trigger_id,))


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


class SqliteStore(SqliteContext):
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
        conn = getattr(self._local, "conn", None)
        if conn is None:
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
            conn.execute("COMMIT")
        except BaseException:
            # Also when COMMIT itself failed: a connection left inside a
            # transaction would fail every later BEGIN on this thread.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    def transact(self, fn: Callable[[Any], T], *, compare_and_set: bool = False) -> T:
        # Writers are serialized by BEGIN IMMEDIATE: nothing to gain from
        # compare-and-set, and nothing ever conflicts.
        with self._writing() as conn:
            tx = _SqliteTransaction(conn)
            result = fn(tx)
        if tx.wrote_run:
            self._ran_write()
        return result

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
        cached = self._runs.get(run_id)
        if cached is not None:
            row = conn.execute("SELECT revision FROM runs INDEXED BY runs_revision "
                               "WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                return None
            if row[0] == cached[0]:
                return _copy_run(cached[1])
        row = conn.execute("SELECT revision, data FROM runs WHERE run_id = ?",
                           (run_id,)).fetchone()
        if row is None:
            return None
        record = RunRecord.from_dict(json.loads(row[1]))
        if len(self._runs) >= _CACHED_RUNS:
            self._runs.clear()
        self._runs[run_id] = (row[0], record)
        return _copy_run(record)

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
        row = self._connection().execute(
            "SELECT status, coalesce(succeeded, 0), coalesce(failed, 0), coalesce(skipped, 0), "
            "CASE json_type(data, '$.deps') WHEN 'array' THEN json_array_length(data, '$.deps') END "
            "FROM tasks LEFT JOIN join_counts USING (run_id, task_id) "
            "WHERE run_id = ? AND task_id = ?", (run_id, task_id)).fetchone()
        if row is None:
            return None
        return JoinProgress(TaskStatus(row[0]), row[1], row[2], row[3], row[4])

    def find_tasks(self, run_id: str, status: TaskStatus, limit: int) -> list[TaskRecord]:
        # Without INDEXED BY, SQLite (no ANALYZE statistics) scans the run's
        # primary key range instead: O(tasks) per call, 75 us at 1000 tasks.
        rows = self._connection().execute(
            f"SELECT {TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_status "
            "WHERE run_id = ? AND status = ? LIMIT ?",
            (run_id, status.value, limit)).fetchall()
        return [task_record(r[1], r[2]) for r in rows]

    def find_free_slots(self, run_id: str, count: int, limit: int) -> list[int]:
        taken = {r[0] for r in self._connection().execute(
            "SELECT slot FROM slots WHERE run_id = ? AND holder IS NOT NULL",
            (run_id,)).fetchall()}
        return [s for s in range(count) if s not in taken][:limit]

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
