"""Which graph a run page draws: the run's definition, or what its records say.

The definition (a `Dag`) is known when the dashboard could load the run's
workflow (dashboard/definitions.py). A run on Google Cloud records no
workflow file, so without `--file` the graph is rebuilt from the records
alone: a task the run added keeps its edges in its record (`deps`), and
every other task's record names each dependency that finished
(`deps_done`). Edges into tasks that have not run yet are then unknown,
and the page says so. Either way the result is a `Dag`, so the layout
reuses the grouping `function-flow graph` draws with (cli/graphs.py:
levels by depth, a sub-DAG as one node of its scope).

What is not drawn as a node: function_flow's own records (ids starting
with "__") and the records a foreach adds (its items, `node[i]`, and
whatever runs inside one, `node[i]/t`): they are counted under their
foreach node (`members_of`).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from function_flow import subdags
from function_flow.core.definition import make_spec
from function_flow.core.graph import Dag, TaskSpec
from function_flow.core.records import TaskRecord
from function_flow.errors import DefinitionError

_INSTANCE = re.compile(r"^(?P<node>.+?)\[(?P<index>\d+)\]$")


def foreach_node(record: TaskRecord) -> str | None:
    """The foreach node an added record belongs to ("work" for "work[3]" and
    "work[3]/clean", "outer/work" for "outer/work[3]"), else None."""
    if record.role == "item" and record.template:
        return record.template
    return _instance_of(record.task_id)[0]


def is_item(record: TaskRecord) -> bool:
    """Whether `record` is one item of a foreach (`node[i]`), counted under its node."""
    if record.role == "item":
        return True
    node, rest = _instance_of(record.task_id)
    return node is not None and not rest


def _instance_of(task_id: str) -> tuple[str | None, str]:
    """(the foreach node of the first `name[i]` segment, what follows it)."""
    parts = task_id.split(subdags.SEPARATOR)
    for position, part in enumerate(parts):
        match = _INSTANCE.match(part)
        if match:
            node = subdags.SEPARATOR.join(parts[:position] + [match.group("node")])
            return node, subdags.SEPARATOR.join(parts[position + 1:])
    return None, ""


def drawn(records: Iterable[TaskRecord]) -> list[TaskRecord]:
    """The records that are nodes of the drawing (not items, not function_flow's own)."""
    return [r for r in records if not r.task_id.startswith("__") and foreach_node(r) is None]


def from_records(name: str, records: list[TaskRecord]) -> Dag:
    """The graph of a run whose definition is not at hand, from its records.

    Dependencies: a record's own `deps` when it has them, else the
    dependencies that finished (`deps_done`); ids that are not drawn are
    left out. Sub-DAG nodes are found by their ids (`left` of `left/t`); a
    node waits for its tasks.
    """
    shown = drawn(records)
    known = {r.task_id for r in shown}
    nodes = subdags.node_ids(known)
    specs = []
    never = float("inf")  # tasks not queued yet come last, as `status` lists them
    for record in sorted(shown, key=lambda r: (r.queued_at or r.started_at or never,
                                                r.task_id)):
        deps = record.deps if record.deps is not None else list(record.deps_done)
        func = None
        if record.task_id in nodes:  # a join waits for its sub-DAG (its sinks, in fact)
            func = subdags.join_results
            prefix = record.task_id + subdags.SEPARATOR
            deps = deps + [t for t in known if subdags.scope_of(t) == prefix]
        base = make_spec("t", None, func)
        specs.append(dataclasses.replace(
            base, task_id=record.task_id, deps=tuple(d for d in deps if d in known)))
    try:
        return Dag(name, specs or [make_spec("(no tasks)", None, None)])
    except DefinitionError:  # a cycle from inconsistent records: draw without edges
        return Dag(name, [dataclasses.replace(s, deps=()) for s in specs])


def spec_of(dag: Dag, task_id: str) -> TaskSpec | None:
    return dag.tasks.get(task_id)


def is_subdag(dag: Dag, task_id: str) -> bool:
    spec = dag.tasks.get(task_id)
    return spec is not None and subdags.is_join(spec)


def is_foreach(dag: Dag, task_id: str, records: dict[str, list[TaskRecord]]) -> bool:
    """A foreach node: so declared, or (from records) a node that added items."""
    spec = dag.tasks.get(task_id)
    return (spec is not None and spec.foreach is not None) or task_id in records


def members_of(records: Iterable[TaskRecord]) -> dict[str, list[TaskRecord]]:
    """Each foreach node's items, in item order."""
    found: dict[str, list[TaskRecord]] = {}
    for record in records:
        node = foreach_node(record)
        if node is not None and is_item(record):
            found.setdefault(node, []).append(record)
    for items in found.values():
        items.sort(key=item_index)
    return found


def item_index(record: TaskRecord) -> int:
    match = _INSTANCE.match(record.task_id)
    return int(match.group("index")) if match else 0
