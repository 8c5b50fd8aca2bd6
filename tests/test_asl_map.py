"""Map states at scale and when they fail: groups instead of one join written by
every item, chunked adding on Firestore, and the items a failed Map stops."""

from __future__ import annotations

from typing import Any

import pytest

from function_flow.asl.job import StateMachine
from function_flow.backends import Backend, embedded
from function_flow.bus.local import LocalBus
from function_flow.core import foreach
from function_flow.core.records import TaskStatus


def _map(processor: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {"StartAt": "Each", "States": {"Each": {
        "Type": "Map", "ItemsPath": "$.xs", "End": True, "ItemProcessor": processor,
        **fields}}}


NOOP = {"StartAt": "Echo", "States": {"Echo": {"Type": "Pass", "End": True}}}


#: More records than one Firestore transaction may write (500), kept small for time.
ITEMS = 520


def test_a_map_larger_than_a_firestore_transaction_runs_without_a_hot_join(
        firestore_store: Any) -> None:
    job = StateMachine(_map(NOOP))
    job.use_backend(Backend("embedded", firestore_store, LocalBus(8)))
    try:
        outcome = job.execute({"xs": list(range(ITEMS))}, timeout=170)
    finally:
        job.engine.bus.close()
    assert outcome.status == "SUCCEEDED", outcome
    assert outcome.output == list(range(ITEMS))  # every item, in order
    records = firestore_store.get_tasks(job.id)
    groups = {r.task_id for r in records if r.task_id.startswith("__group__")}
    assert len(groups) == 6
    # The most deps_done entries any record holds: a group's 100, not one per item.
    assert max(len(r.deps_done or {}) for r in records) == foreach.GROUP_SIZE
    join = next(r for r in records if r.task_id == "0002.Each")
    assert set(join.deps_done) == groups


def _failing_map(tmp_path: Any, **limits: Any) -> tuple[StateMachine, Any]:
    processor = {"StartAt": "Check", "States": {
        "Check": {"Type": "Choice", "Choices": [
            {"Variable": "$", "NumericEquals": 3, "Next": "Bad"}], "Default": "Ok"},
        "Bad": {"Type": "Fail", "Error": "Three", "Cause": "3 is bad"},
        "Ok": {"Type": "Pass", "End": True}}}
    definition = {"StartAt": "Each", "States": {
        "Each": {"Type": "Map", "ItemsPath": "$.xs", "MaxConcurrency": 1, "Next": "Done",
                 "ItemProcessor": processor, **limits,
                 "Catch": [{"ErrorEquals": ["States.ALL"], "Next": "Caught"}]},
        "Caught": {"Type": "Pass", "End": True},
        "Done": {"Type": "Pass", "End": True}}}
    job = StateMachine(definition)
    backend = embedded(str(tmp_path / "ff.db"), workers=4)
    job.use_backend(backend)
    return job, backend


def test_items_past_the_tolerated_failures_never_run(tmp_path: Any) -> None:
    job, backend = _failing_map(tmp_path)
    try:
        outcome = job.execute({"xs": [1, 2, 3, 4, 5, 6, 7, 8]}, timeout=60)
        assert outcome.status == "SUCCEEDED"  # the Catch took the Map's failure
        assert outcome.output == {"Error": "Three", "Cause": "3 is bad"}
        records = {r.task_id: r for r in job.engine.store.get_tasks(job.id)}
        firsts = {int(t.split(".i")[1].split(".")[0]): r for t, r in records.items()
                  if ".i" in t and t.endswith(".0001.Check")}
        assert records["0001.Each.i2.0002.Bad"].status is TaskStatus.FAILED
        # One item at a time: item 2 (3) failed, so items 3-7 never ran.
        assert [firsts[i].status for i in range(8)] == [TaskStatus.SUCCEEDED] * 3 + [
            TaskStatus.SKIPPED] * 5
        assert not [t for t in records if ".i" in t and t.split(".i")[1][0] in "34567"
                    and not t.endswith(".0001.Check")]
        assert records["0003.Caught"].status is TaskStatus.SUCCEEDED

        # Tolerating that failure: every item runs and the Map succeeds.
        job2, backend2 = _failing_map(tmp_path / "2", ToleratedFailureCount=1)
    finally:
        backend.bus.close()
        backend.close()
    try:
        tolerant = job2.execute({"xs": [1, 2, 3, 4, 5, 6, 7, 8]}, timeout=60)
        assert tolerant.status == "SUCCEEDED" and tolerant.output[3] is None or \
            tolerant.output == [1, 2, {"Error": "Three", "Cause": "3 is bad"}, 4, 5, 6, 7, 8]
        statuses = [r.status for r in job2.engine.store.get_tasks(job2.id)]
        assert TaskStatus.SKIPPED not in statuses
    finally:
        backend2.bus.close()
        backend2.close()


def test_a_failure_inside_a_parallel_inside_an_item_fails_the_map_and_stops_it(
        tmp_path: Any) -> None:
    branch = {"StartAt": "Check", "States": {
        "Check": {"Type": "Choice", "Choices": [
            {"Variable": "$", "NumericEquals": 3, "Next": "Bad"}], "Default": "Ok"},
        "Bad": {"Type": "Fail", "Error": "Three", "Cause": "3 is bad"},
        "Ok": {"Type": "Pass", "End": True}}}
    processor = {"StartAt": "Both", "States": {"Both": {
        "Type": "Parallel", "Branches": [branch], "End": True}}}
    job = StateMachine(_map(processor, MaxConcurrency=1))
    backend = embedded(str(tmp_path / "ff.db"), workers=4)
    job.use_backend(backend)
    try:
        outcome = job.execute({"xs": [1, 2, 3, 4, 5]}, timeout=60)
        records = {r.task_id: r for r in job.engine.store.get_tasks(job.id)}
    finally:
        backend.bus.close()
        backend.close()
    assert (outcome.status, outcome.error, outcome.cause) == ("FAILED", "Three", "3 is bad")
    assert [records[f"0001.Each.i{i}.0001.Both"].status for i in (3, 4)] == \
        [TaskStatus.SKIPPED] * 2


def test_a_map_runs_at_most_40_items_at_once_and_an_exceeded_tolerance_is_named(
        tmp_path: Any) -> None:
    """MaxConcurrency above AWS's 40 still runs 40 lanes; a Map that sets a
    tolerance and exceeds it fails with States.ExceedToleratedFailureThreshold."""
    job = StateMachine(_map(NOOP, MaxConcurrency=100))
    backend = embedded(str(tmp_path / "ff.db"), workers=4)
    job.use_backend(backend)
    try:
        outcome = job.execute({"xs": list(range(45))}, timeout=60)
        records = {r.task_id: r for r in job.engine.store.get_tasks(job.id)}
    finally:
        backend.bus.close()
        backend.close()
    assert outcome.status == "SUCCEEDED" and outcome.output == list(range(45))
    first = {i: records[f"0001.Each.i{i}.0001.Echo"] for i in (0, 39, 40, 44)}
    # Items 0-39 start with the Map; item 40 waits for the end of item 0, 44 of 4.
    assert first[0].deps == first[39].deps == ["0001.Each"]
    assert (first[40].deps, first[44].deps) == (["0001.Each.lane0"], ["0001.Each.lane4"])
    assert first[40].started_at >= records["0001.Each.i0.0001.Echo"].finished_at

    job2, backend2 = _failing_map(tmp_path / "2", ToleratedFailureCount=0)
    try:
        caught = job2.execute({"xs": [1, 2, 3, 4]}, timeout=60)
    finally:
        backend2.bus.close()
        backend2.close()
    assert caught.status == "SUCCEEDED"  # through the Catch
    assert caught.output["Error"] == "States.ExceedToleratedFailureThreshold"


@pytest.mark.parametrize("percentage, error", [(20, None),
                                               (10, "States.ExceedToleratedFailureThreshold")])
def test_a_tolerated_failure_percentage_of_the_items(tmp_path: Any, percentage: float,
                                                     error: Any) -> None:
    """One item of eight fails: 12.5%, within 20% and past 10%."""
    job, backend = _failing_map(tmp_path, ToleratedFailurePercentage=percentage)
    try:
        outcome = job.execute({"xs": [1, 2, 3, 4, 5, 6, 7, 8]}, timeout=60)
    finally:
        backend.bus.close()
        backend.close()
    assert outcome.status == "SUCCEEDED", outcome  # the Map's, or its Catch's
    if error is None:
        assert outcome.output[:2] == [1, 2] and outcome.output[3:] == [4, 5, 6, 7, 8]
    else:
        assert outcome.output["Error"] == error


def test_the_command_line_counts_a_map_of_many_items_in_one_row(tmp_path: Any) -> None:
    """More items than `run` and `status` list one by one: one row counts them."""
    import json

    from cli_runs import flow, run_id_of

    (tmp_path / "many.json").write_text(json.dumps(_map(NOOP)))
    items = ["item number %d, long enough to pass a terminal's width" % i for i in range(12)]
    ran = flow(tmp_path, "run", "many.json", "--input", json.dumps({"xs": items}))
    assert ran.returncode == 0, ran.stderr
    assert "0001.Each.i*.0001.Echo   12 SUCCEEDED" in ran.stdout, ran.stdout
    # One line of JSON, however long (stdout is a pipe here, as in scripts).
    assert ran.stdout.rstrip().splitlines()[-1] == "output: " + json.dumps(items)
    assert "results:" not in ran.stdout  # a visit's record is no result: the output says it
    shown = flow(tmp_path, "status", run_id_of(ran.stdout))
    assert shown.returncode == 0 and "0001.Each.i*.0001.Echo" in shown.stdout, shown.stderr
