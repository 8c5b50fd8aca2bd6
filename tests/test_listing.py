"""The order `status`, `logs` and the dashboard list a run's tasks in (core/listing.py)."""

from __future__ import annotations

import random

import pytest

from function_flow.core.listing import ordered_tasks
from function_flow.core.records import TaskRecord


def item(node: str, index: int, started: float) -> TaskRecord:
    return TaskRecord(f"{node}[{index}]", template=node, role="item", started_at=started)


def run_after_a_redrive() -> list[TaskRecord]:
    """src, then a foreach whose items started out of order (ten at once), of
    which item 3 failed and was redriven with the foreach, then a task after it."""
    records = [TaskRecord("src", started_at=1.0), TaskRecord("each", started_at=50.0),
               TaskRecord("after", started_at=60.0), TaskRecord("__end__", started_at=61.0),
               TaskRecord("__group__each[0]", role="group", template="each", started_at=2.0)]
    records += [item("each", i, started) for i, started in
                enumerate([2.3, 2.1, 2.4, 51.0, 2.2, 2.0])]
    random.Random(7).shuffle(records)
    return records


@pytest.mark.parametrize("order", [None, ["src", "each", "after"]])
def test_a_foreachs_items_follow_it_in_item_order_even_after_a_redrive(order) -> None:
    listed = [t.task_id for t in ordered_tasks(run_after_a_redrive(), order)]
    assert listed == ["src", "each", *(f"each[{i}]" for i in range(6)), "after"]


def test_without_the_definition_tasks_are_listed_as_they_started() -> None:
    records = [TaskRecord("b", started_at=2.0), TaskRecord("never"),
               TaskRecord("a", started_at=3.0), TaskRecord("q", queued_at=1.0)]
    assert [t.task_id for t in ordered_tasks(records)] == ["q", "b", "a", "never"]
