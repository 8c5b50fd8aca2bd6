"""How the SQLite store lays out records: the schema, and rows to and from records.

Records are stored as JSON next to the columns that queries filter on,
except `deps_done`: each entry a completer writes blind (into a join) is a
row of its own table, so a write into a wide join is one small insert
instead of a rewrite of a record that grows to one entry per dependency,
and triggers keep per-outcome counts so that checking a join is O(1). An
entry written together with the record's own fields (a task queued by its
only dependency, which is never checked as a join) stays in the record's
JSON: that is one row written instead of three. A record reads back with
both.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterator

from function_flow.core.records import TaskRecord, Trigger

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id     TEXT PRIMARY KEY,
    job_name   TEXT NOT NULL,
    status     TEXT NOT NULL,
    created_at REAL NOT NULL,
    data       TEXT NOT NULL,
    revision   INTEGER NOT NULL DEFAULT 0 -- see RUN_REVISIONS
);
CREATE INDEX IF NOT EXISTS runs_by_created ON runs (created_at, run_id);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job_name, created_at, run_id);
CREATE TABLE IF NOT EXISTS tasks (
    run_id  TEXT NOT NULL,
    task_id TEXT NOT NULL,
    status  TEXT NOT NULL,
    data    TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
-- Only the statuses a task passes through on its way (see ACTIVE): an index
-- of every status made each step rewrite three of its pages (the WAITING
-- entries, the running ones, the finished ones), 20 us of a chain task's
-- commits. Queries for other statuses scan the run's rows (sqlite.find_tasks).
DROP INDEX IF EXISTS tasks_by_status;
CREATE INDEX IF NOT EXISTS tasks_active ON tasks (run_id, status)
    WHERE status IN ('READY', 'QUEUED', 'RUNNING');
CREATE TABLE IF NOT EXISTS deps_done (
    run_id  TEXT NOT NULL,
    task_id TEXT NOT NULL,
    dep     TEXT NOT NULL,
    status  TEXT NOT NULL,
    PRIMARY KEY (run_id, task_id, dep)
) WITHOUT ROWID;
-- How many deps_done entries of each outcome a task has (see
-- records.outcome_of): kept by triggers, so that checking a join of N tasks
-- is O(1), not O(N). The counts say nothing about trigger rules: the
-- engine applies those to the counts.
DROP TRIGGER IF EXISTS deps_done_counted;
DROP TRIGGER IF EXISTS deps_done_recounted;
DROP TABLE IF EXISTS deps_counts;
CREATE TABLE IF NOT EXISTS join_counts (
    run_id    TEXT NOT NULL,
    task_id   TEXT NOT NULL,
    succeeded INTEGER NOT NULL,
    failed    INTEGER NOT NULL,
    skipped   INTEGER NOT NULL,
    PRIMARY KEY (run_id, task_id)
) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS join_counted AFTER INSERT ON deps_done BEGIN
    INSERT INTO join_counts (run_id, task_id, succeeded, failed, skipped)
    VALUES (NEW.run_id, NEW.task_id, NEW.status = 'SUCCEEDED',
            NEW.status NOT IN ('SUCCEEDED', 'SKIPPED'), NEW.status = 'SKIPPED')
    ON CONFLICT (run_id, task_id) DO UPDATE SET
        succeeded = succeeded + (NEW.status = 'SUCCEEDED'),
        failed = failed + (NEW.status NOT IN ('SUCCEEDED', 'SKIPPED')),
        skipped = skipped + (NEW.status = 'SKIPPED');
END;
CREATE TRIGGER IF NOT EXISTS join_recounted AFTER UPDATE OF status ON deps_done BEGIN
    UPDATE join_counts SET
        succeeded = succeeded + (NEW.status = 'SUCCEEDED') - (OLD.status = 'SUCCEEDED'),
        failed = failed + (NEW.status NOT IN ('SUCCEEDED', 'SKIPPED'))
                        - (OLD.status NOT IN ('SUCCEEDED', 'SKIPPED')),
        skipped = skipped + (NEW.status = 'SKIPPED') - (OLD.status = 'SKIPPED')
    WHERE run_id = NEW.run_id AND task_id = NEW.task_id;
END;
CREATE TABLE IF NOT EXISTS slots (
    run_id TEXT NOT NULL,
    slot   INTEGER NOT NULL,
    holder TEXT,
    PRIMARY KEY (run_id, slot)
) WITHOUT ROWID;
-- The free slots alone (Store.find_free_slots reads O(limit) entries, never
-- the held ones: 10,000 of them in a foreach as wide as max_parallel_tasks).
CREATE INDEX IF NOT EXISTS slots_free ON slots (run_id, slot) WHERE holder IS NULL;
CREATE TABLE IF NOT EXISTS deliveries (
    key    TEXT PRIMARY KEY,
    run_id TEXT NOT NULL
);
-- A run's context (function_flow/context.py): one row per key, JSON text.
CREATE TABLE IF NOT EXISTS context (
    run_id TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS triggers (
    trigger_id TEXT PRIMARY KEY,
    run_id     TEXT NOT NULL,
    task_id    TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    watch      TEXT,
    on_timeout TEXT, -- JSON, see records.Trigger
    definition TEXT
);
"""

#: A run row's `revision` changes with every write of its data, whoever
#: writes it (triggers, so another process or an earlier release too), and a
#: new row starts at a random one: a process that has parsed a revision
#: (SqliteStore's run cache) knows the row is unchanged while it reads the
#: same revision, even across a delete and a new run of the same id. Run
#: after ADDED_COLUMNS (an older database gets the column first).
RUN_REVISIONS = """
-- The revision is read alone, from this index: in the row it comes after
-- the data, which spans overflow pages in a run of thousands of tasks.
CREATE INDEX IF NOT EXISTS runs_revision ON runs (run_id, revision);
CREATE TRIGGER IF NOT EXISTS run_created AFTER INSERT ON runs BEGIN
    UPDATE runs SET revision = random() WHERE run_id = NEW.run_id;
END;
CREATE TRIGGER IF NOT EXISTS run_revised AFTER UPDATE OF data ON runs BEGIN
    UPDATE runs SET revision = OLD.revision + 1 WHERE run_id = NEW.run_id;
END;
"""


#: The statuses `tasks_active` indexes, as its WHERE term: a query that
#: repeats the term word for word may use the index (SQLite's rule for
#: partial indexes), whatever status it binds.
ACTIVE = "status IN ('READY', 'QUEUED', 'RUNNING')"
ACTIVE_STATUSES = frozenset(("READY", "QUEUED", "RUNNING"))


#: Columns added after the first release; databases made before get them
#: on open (see SqliteStore.__init__).
ADDED_COLUMNS = {"triggers": (("watch", "TEXT"), ("on_timeout", "TEXT"),
                              ("definition", "TEXT")),
                 "runs": (("revision", "INTEGER NOT NULL DEFAULT 0"),)}


def trigger_row(trigger: Trigger) -> tuple[Any, ...]:
    return (trigger.trigger_id, trigger.run_id, trigger.task_id, trigger.attempt,
            trigger.watch,
            None if trigger.on_timeout is None else json.dumps(trigger.on_timeout),
            trigger.definition)


TRIGGER_COLUMNS = "trigger_id, run_id, task_id, attempt, watch, on_timeout, definition"


def trigger_of(row: tuple[Any, ...]) -> Trigger:
    return Trigger(row[0], row[1], row[2], int(row[3]), row[4],
                   None if row[5] is None else json.loads(row[5]), row[6])


#: Most task ids bound into one `IN (...)` query (SQLite allows 32766).
BATCH = 500


_COMPACT = json.JSONEncoder(separators=(",", ":"))
_STRICT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def dumps(data: Any, allow_nan: bool = True) -> str:
    return (_COMPACT if allow_nan else _STRICT).encode(data)


def task_json(fields: dict[str, Any]) -> str:
    """A task record's data column: its fields but those that are None.

    Every TaskRecord field that may be None defaults to None, so the record
    reads back the same, and a row holds the few fields a task uses, not
    all of them (the row is written at every step and read at most).
    """
    return _COMPACT.encode({k: v for k, v in fields.items() if v is not None})


def chunks(items: list[str]) -> Iterator[list[str]]:
    for start in range(0, len(items), BATCH):
        yield items[start:start + BATCH]


#: A task row's columns: its id, its JSON data and its deps_done entries as
#: one JSON object (see task_record).
TASK_COLUMNS = ("task_id, data, (SELECT json_group_object(dep, status) FROM deps_done AS d "
                 "WHERE d.run_id = tasks.run_id AND d.task_id = tasks.task_id)")
DEP_PREFIX = "deps_done."


def parse_deps(deps: str | None) -> dict[str, str]:
    return json.loads(deps) if deps and deps != "{}" else {}


def task_record_of(fields: dict[str, Any], deps: dict[str, str]) -> TaskRecord:
    """A task record from its JSON fields and its deps_done rows (and entries its
    JSON holds: those written with the record's own fields)."""
    if deps:
        kept = fields.get("deps_done")
        fields = dict(fields, deps_done=dict(kept, **deps) if kept else deps)
    return TaskRecord.from_dict(fields)


def task_record(data: str, deps: str | None) -> TaskRecord:
    return task_record_of(json.loads(data), parse_deps(deps))


def run_revision(conn: sqlite3.Connection, run_id: str) -> int | None:
    """The run row's revision (None: no such run), from its index alone: every
    write of the run record raises it, so an unchanged revision is an
    unchanged record (SqliteStore's parsed-run cache)."""
    row = conn.execute("SELECT revision FROM runs INDEXED BY runs_revision "
                       "WHERE run_id = ?", (run_id,)).fetchone()
    return None if row is None else row[0]


def select_tasks(conn: sqlite3.Connection, run_id: str,
                  task_ids: list[str]) -> list[tuple[str, str, str | None]]:
    """(task_id, data, deps_done) rows of the given tasks, one query per BATCH ids."""
    rows: list[tuple[str, str, str | None]] = []
    for chunk in chunks(task_ids):
        marks = ",".join("?" * len(chunk))
        rows.extend(conn.execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE run_id = ? AND task_id IN ({marks})",
            (run_id, *chunk)).fetchall())
    return rows


def write_deps_done(conn: sqlite3.Connection, run_id: str, task_id: str,
                     entries: dict[str, str]) -> None:
    # Like an update of a missing Firestore document, nothing is written for
    # a task that does not exist.
    conn.executemany(
        "INSERT INTO deps_done (run_id, task_id, dep, status) "
        "SELECT ?, ?, ?, ? WHERE EXISTS "
        "(SELECT 1 FROM tasks WHERE run_id = ?1 AND task_id = ?2) "
        "ON CONFLICT (run_id, task_id, dep) DO UPDATE SET status = excluded.status",
        [(run_id, task_id, dep, status) for dep, status in entries.items()])


def new_task_json(conn: sqlite3.Connection, run_id: str, record: TaskRecord) -> str:
    """The JSON data column of a new task record; deps_done entries go to their table."""
    fields = record.to_dict()
    entries = fields.pop("deps_done")
    if entries:
        write_deps_done(conn, run_id, record.task_id, entries)
    return task_json(fields)


def merge_fields(data: dict[str, Any], fields: dict[str, Any]) -> None:
    """Apply an update where "a.b" keys set one entry of map field "a"."""
    for key, value in fields.items():
        if "." in key:
            field, entry = key.split(".", 1)
            data.setdefault(field, {})[entry] = value
        else:
            data[key] = value
