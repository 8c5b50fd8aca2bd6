"""Composite indexes: what the store's queries need is what deploy and terraform/ create.

The emulator serves any query without its index, so only production would
refuse one that lacks it. Here every query the Firestore store sends is
recorded (Query.stream) while the dashboard lists runs with each filter,
`status` lists them, and every other query method of the store runs; the
index Firestore needs for each query is derived by Firestore's rules, and
the set must be store/indexes.py's, which `function-flow deploy` and the
terraform module must create, field for field.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from google.cloud.firestore_v1.query import Query
from google.cloud.firestore_v1.types import StructuredQuery

import terraform_hcl as tf
from function_flow import loader, selection
from function_flow.cli import inspect
from function_flow.core.records import RunRecord, RunStatus, TaskRecord
from function_flow.dashboard import create_app
from function_flow.deploy import commands, plan as planning
from function_flow.store import indexes
from function_flow.store.firestore_timers import FirestoreTimers

#: Filters served by merging single-field indexes, like equalities are.
EQUALITY_OPS = {"EQUAL", "IN", "ARRAY_CONTAINS", "ARRAY_CONTAINS_ANY"}
Needed = tuple[str, frozenset, tuple]


def filters_of(where: Any) -> list[tuple[str, str]]:
    """(field, operator) of every filter of a StructuredQuery's `where`."""
    kind = where.WhichOneof("filter_type")
    if kind == "composite_filter":
        return [f for sub in where.composite_filter.filters for f in filters_of(sub)]
    if kind == "field_filter":
        field = where.field_filter
        return [(field.field.field_path, StructuredQuery.FieldFilter.Operator(field.op).name)]
    if kind == "unary_filter":
        unary = where.unary_filter
        return [(unary.field.field_path, StructuredQuery.UnaryFilter.Operator(unary.op).name)]
    return []


def needed_index(query: Query) -> Needed | None:
    """The composite index Firestore needs for `query`, as (collection, the
    equality fields, the ordered fields after them), or None when its
    automatic single-field indexes serve it: equalities only (merged), or
    one field filtered and ordered."""
    structured = query._to_protobuf()
    collection = structured.from_[0].collection_id
    pb = StructuredQuery.pb(structured)
    found = filters_of(pb.where) if pb.HasField("where") else []
    equal = [field for field, op in found if op in EQUALITY_OPS]
    ranges = [field for field, op in found if op not in EQUALITY_OPS]
    Direction = StructuredQuery.Direction
    orders = tuple((o.field.field_path, Direction(o.direction).name) for o in pb.order_by
                   if o.field.field_path != "__name__")
    if not ranges and not orders:
        return None
    if len({*equal, *ranges, *(field for field, _ in orders)}) <= 1:
        return None
    tail = orders or tuple((field, "ASCENDING") for field in ranges)
    return collection, frozenset(set(equal) - {field for field, _ in tail}), tail


def declared(index: indexes.CompositeIndex) -> Needed:
    *equal, last = index.fields
    assert {order for _, order in equal} == {"ASCENDING"}
    return index.collection_group, frozenset(field for field, _ in equal), (last,)


@pytest.fixture
def sent(monkeypatch) -> list[Query]:
    """Every query streamed from now on."""
    queries: list[Query] = []
    stream = Query.stream

    def recorded(self: Query, *args: Any, **kwargs: Any) -> Any:
        queries.append(self)
        return stream(self, *args, **kwargs)

    monkeypatch.setattr(Query, "stream", recorded)
    return queries


def test_the_indexes_the_queries_need_are_the_ones_declared(firestore_store, sent,
                                                            collection_prefix) -> None:
    store = firestore_store
    for n, (job, status) in enumerate([("etl", "FAILED"), ("etl", "SUCCEEDED"),
                                       ("report", "FAILED"), ("etl", "RUNNING")]):
        store.create_run(RunRecord(run_id=f"r{n}", job_name=job, dag_hash="h", args={},
                                   created_at=10.0 + n, status=RunStatus(status)),
                         [TaskRecord(task_id="a")], {})
    client = create_app(lambda: store).test_client()
    for query in ("", "?job=etl", "?status=FAILED", "?job=etl&status=FAILED",
                  "?job=etl&limit=1&before=12.0:r2"):
        assert client.get(f"/api/runs{query}").status_code == 200
    selected = selection.SelectedStore("gcp", store, "the emulator")
    for job, status in ((None, None), ("etl", None), (None, "FAILED"), ("etl", "FAILED"),
                        (None, "PAUSED")):
        inspect.matching_runs(selected, 10, job, status)
    assert [r.run_id for r in inspect.matching_runs(selected, 10, "etl", "FAILED")] == ["r0"]
    # Every other query of the store: the engine's, the poller's, cleanup's.
    store.get_tasks("r0")
    store.find_tasks("r0", TaskRecord(task_id="a").status, 5)
    store.find_free_slots("r0", 3, 3)
    store.list_runs(10, status=RunStatus.RUNNING)
    store.list_runs(10, hooks_pending=True)
    store.runs_started_before(100.0)
    store.find_watches(10)
    store.find_watches(10, among=["t1", "t2"])
    store.list_context("r0")
    FirestoreTimers(lambda: store.client, collection_prefix).publish_due(lambda m: None)
    store.delete_run("r1")

    needed = {index for query in sent if (index := needed_index(query)) is not None}
    assert needed == {declared(i) for i in indexes.composite_indexes(collection_prefix)}
    assert len(sent) > 20


def test_deploy_and_terraform_create_the_declared_indexes(tmp_path: pathlib.Path) -> None:
    workflow = tmp_path / "indexed_flow.py"
    workflow.write_text("from function_flow import tasks\njob = tasks.Job(name='wf')\n"
                        "job.task(task_id='a')(lambda task, job: 1)\n" + "".join(
                            f"{name} = job.make_{name if name != 'external_event_listener' else 'external_event_listener'}()\n"
                            for name in planning.REQUIRED_ENTRY_POINTS))
    options = planning.Options("my-project", "europe-west1",
                               env=(("FUNCTION_FLOW_COLLECTION_PREFIX", "ff_"),))
    plan = planning.derive(loader.load_module(str(workflow)), loader.load_job(str(workflow)),
                           str(workflow), options)
    created = []
    for step in commands.steps(plan):
        argv = [part for word in getattr(step, "argv", ()) for part in word
                if isinstance(part, str)]
        if argv[:5] == ["gcloud", "firestore", "indexes", "composite", "create"]:
            assert "--query-scope=collection" in argv and step.exists_if == "ALREADY_EXISTS"
            group = next(a.split("=", 1)[1] for a in argv if a.startswith("--collection-group="))
            fields = tuple(tuple(part.split("=", 1)[1] for part in a.split("=", 1)[1].split(","))
                           for a in argv if a.startswith("--field-config="))
            created.append(indexes.CompositeIndex(
                group, tuple((path, order.upper()) for path, order in fields)))
    assert created == indexes.composite_indexes("ff_")

    scratch = tf.scratch(tmp_path)
    evaluated = tf.evaluate(scratch, {"project": "p", "region": "europe-west1",
                                      "source_archive": "/tmp/s.zip",
                                      "collection_prefix": "ff_"}, ["run_list_indexes"])
    in_terraform = [indexes.CompositeIndex(spec["collection"], tuple(
        (field["field_path"], field["order"]) for field in spec["fields"]))
        for spec in evaluated["run_list_indexes"].values()]
    assert sorted(in_terraform, key=repr) == sorted(indexes.composite_indexes("ff_"), key=repr)
    resource = tf.load(tf.MODULE_DIR).resource("google_firestore_index", "runs")
    assert resource["for_each"] == "${local.run_list_indexes}"
    assert (resource["collection"], resource["query_scope"]) == (
        "${each.value.collection}", "COLLECTION")
