"""The README's Firestore schema table names every document and field the store writes.

Someone reading Firestore's console (or writing a query, an export, a TTL
policy) has only that table to say what a document holds. So each record
field, under the name firestore_transactions.encode stores it by, and each
field the store adds (absent_json, schema_version, the join counters)
must be in the row of its document, expire_at said once for all; and every
collection the store writes run data to must have a row.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re

from function_flow.core.records import RunRecord, TaskRecord, Trigger
from function_flow.store import expiry, firestore_absent, firestore_joins, firestore_schema
from function_flow.store.firestore_transactions import JSON_FIELDS

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def schema_rows() -> dict[str, str]:
    """document path -> its fields cell, from the table under '### Firestore schema'."""
    text = README.read_text(encoding="utf-8")
    section = text.split("### Firestore schema", 1)[1].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`{prefix}"):
            rows[cells[0].strip("`")] = cells[2]
    return rows


def named(cell: str) -> set[str]:
    """The field names a cell quotes (`name`, or `name.<entry>`)."""
    return {name.split(".")[0] for name in re.findall(r"`([A-Za-z_][\w.<>]*)`", cell)}


def stored(record: type) -> set[str]:
    return {JSON_FIELDS.get(f.name, f.name) for f in dataclasses.fields(record)}


def test_every_document_of_a_run_has_a_row() -> None:
    rows = schema_rows()
    for collection in expiry.TOP_LEVEL:
        assert any(path.startswith(f"{{prefix}}{collection}/") and path.count("/") == 1
                   for path in rows), collection
    for sub in expiry.SUBCOLLECTIONS:
        assert any(path.startswith(f"{{prefix}}runs/{{run_id}}/{sub}/") for path in rows), sub


def test_every_field_the_store_writes_is_in_its_documents_row() -> None:
    rows = schema_rows()
    run_fields = stored(RunRecord) | {firestore_absent.FIELD, firestore_schema.FIELD}
    task_fields = stored(TaskRecord) | {firestore_joins.COUNTS, firestore_joins.DEPS,
                                        firestore_joins.WRITES, firestore_joins.REWRITES,
                                        firestore_joins.OTHER}
    expected = {
        "{prefix}runs/{run_id}": run_fields,
        "{prefix}runs/{run_id}/tasks/{task_id}": task_fields,
        "{prefix}triggers/{trigger_id}": stored(Trigger),
        "{prefix}runs/{run_id}/context/{key}": {"key", "value_json"},
    }
    for path, fields in expected.items():
        assert path in rows, path
        missing = fields - named(rows[path])
        assert not missing, f"{path} lacks {sorted(missing)}"
    # The TTL field is on every document of a run: said once, under the table.
    section = README.read_text(encoding="utf-8").split("### Firestore schema", 1)[1]
    assert f"also carries `{expiry.FIELD}`" in section.split("\n### ", 1)[0]
