"""One SQLite write transaction, as ports.Transaction: what the engine's steps see.

SqliteStore opens it with BEGIN IMMEDIATE, so it holds the write lock from
its first read to its commit, and nothing it read can change under it.
It refuses a read after a write, like Firestore does, so engine code that
passes here also passes on Firestore. How records map to rows is in
sqlite_rows.py.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Callable, Iterable

from function_flow.core.ports import ReadAfterWriteError, RecordExistsError
from function_flow.core.records import RunRecord, TaskRecord, Trigger
from function_flow.store.sqlite_rows import (DEP_PREFIX, TRIGGER_COLUMNS, dumps,
                                             merge_fields, parse_deps, run_revision, select_tasks,
                                             task_json, task_record_of, trigger_row,
                                             write_deps_done)


#: Integers SQLite binds as they are (64 bits); larger ones go as JSON text.
_INT64 = 2 ** 63


class SqliteTransaction:
    """One BEGIN IMMEDIATE transaction; it holds the write lock throughout.

    Records read in the transaction are kept (parsed), so a later update of
    the same record merges into them instead of reading the row again: no
    other writer can change the row while this transaction holds the lock.
    """

    def __init__(self, conn: sqlite3.Connection,
                 cached_run: Callable[[str, int], RunRecord | None] | None = None) -> None:
        self._conn = conn
        #: (run id, revision) -> the run record the store keeps parsed for that
        #: revision, or None (SqliteStore's run cache: a run's record holds a
        #: fingerprint per task, too long to parse at every read).
        self._cached_run = cached_run
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
        if run_id not in self._runs and self._cached_run is not None:
            revision = run_revision(self._conn, run_id)
            if revision is None:
                return None
            # Only committed revisions are cached (readers see nothing else), and
            # a revision only grows: the same revision is the same record.
            cached = self._cached_run(run_id, revision)
            if cached is not None:
                return cached
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
        if deps and len(deps) == len(fields):
            # A completer's blind write into a join: rows of their own (counted
            # for join_progress), the record is not read. With fields of the
            # record's own (a dependent its only dependency queues), the entry
            # goes into the record's JSON in the same write (see sqlite_rows).
            write_deps_done(self._conn, run_id, task_id, deps)
            cached = self._tasks.get(key)
            if cached is not None:
                cached[1].update(deps)
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
            (data["status"], task_json(data), run_id, task_id))

    def _set_in_sql(self, run_id: str, task_id: str, fields: dict[str, Any]) -> bool:
        """Set top-level fields of an unread record with json_set; False if it cannot.

        That is an executor completing the attempt it claimed: no round trip
        of the record through Python. Values SQLite's JSON refuses (NaN,
        infinities, which Python's json writes), given or already in the
        record, take the read-and-merge way.
        """
        deps = [(f'$."{k[len(DEP_PREFIX):]}"', v) for k, v in fields.items()
                if k.startswith(DEP_PREFIX)]
        if deps:
            fields = {k: v for k, v in fields.items() if not k.startswith(DEP_PREFIX)}
        if not all(name.isidentifier() for name in fields) or any(
                '"' in path[3:-1] or "\\" in path or type(value) is not str
                for path, value in deps):
            return False
        if "status" in fields:  # a TaskStatus, or its value already
            fields = dict(fields, status=getattr(fields["status"], "value", fields["status"]))
        values: list[Any] = []
        paths = []
        if deps:  # entries of the deps_done object, made if missing
            paths.append("'$.deps_done', json_set(coalesce(json_extract(data, '$.deps_done'), "
                         f"'{{}}'), {', '.join('?, ?' for _ in deps)})")
            values += [part for entry in deps for part in entry]
        for name, value in fields.items():
            if value is None or (type(value) is str and value.isascii()) or (
                    type(value) is int and -_INT64 <= value < _INT64):
                paths.append(f"'$.{name}', ?")  # SQLite's JSON writes these as Python's does
                values.append(value)
                continue
            try:  # floats too: SQLite would write 15 digits, Python's repr up to 17
                values.append(dumps(value, allow_nan=False))
            except ValueError:
                return False
            paths.append(f"'$.{name}', json(?)")
        status = "status = ?, " if "status" in fields else ""
        try:
            self._conn.execute(
                f"UPDATE tasks SET {status}data = json_set(data, {', '.join(paths)}) "
                "WHERE run_id = ? AND task_id = ?",
                ([fields["status"]] if status else []) + values + [run_id, task_id])
        except sqlite3.OperationalError as exc:
            if "malformed JSON" not in str(exc):  # the record holds NaN (an item's)
                raise
            return False  # the statement changed nothing: read and merge
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
                (run_id, record.task_id, record.status.value, task_json(fields)))
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
            (run_id, record.task_id, record.status.value, task_json(fields)))
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
