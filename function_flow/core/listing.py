"""A run's task records in the order people read them (status, logs, the dashboard).

Graph order when the definition is known, a foreach's items (and their
copies of a sub-DAG) right after the foreach, in item order; never
function_flow's own records.
"""

from __future__ import annotations

from function_flow.core.records import ITEM_ROLES, TaskRecord


def ordered_tasks(records: list[TaskRecord], order: list[str] | None = None
                  ) -> list[TaskRecord]:
    """A run's task records for people: in graph order when the definition is
    known, else in the order they started; a foreach's items right after it,
    in item order; never function_flow's own records (ids starting with
    "__": the end task, a foreach's groups)."""
    tasks = [t for t in records if not t.task_id.startswith("__")]
    never = float("inf")
    if order is not None:
        position = {task_id: i for i, task_id in enumerate(order)}

        def rank(task_id: str) -> tuple:
            return (position.get(task_id, len(position)),)
    else:  # when each started; a redriven foreach's items still follow it
        began = {t.task_id: t.started_at or t.queued_at or never for t in tasks}

        def rank(task_id: str) -> tuple:
            return (began.get(task_id, never), task_id)

    def key(t: TaskRecord) -> tuple:
        if t.role in ITEM_ROLES and t.template is not None:
            node, _, index = t.task_id.partition("]")[0].rpartition("[")
            number = int(index) if index.isdigit() else 0
            return (*rank(node), 1, number, t.role == "member", t.queued_at or never,
                    t.task_id)
        return (*rank(t.task_id), 0, 0, False, t.queued_at or never, t.task_id)

    return sorted(tasks, key=key)
