"""Write a workflow graph as text, Mermaid or Graphviz dot (`function-flow graph`).

The formats are a few lines each, so they are written here rather than
pulling in a library: Mermaid has no Python writer worth depending on, and
the `graphviz` package would only wrap the same string building.
"""

from __future__ import annotations

import json
import re

from function_flow.core.graph import Dag

FORMATS = ("text", "mermaid", "dot")

#: Words Mermaid's flowchart parser treats as keywords, not as node ids.
_MERMAID_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class",
                     "classdef", "click", "linkstyle", "direction", "default"}


def levels(dag: Dag) -> list[list[str]]:
    """Tasks grouped by depth: level 0 has no deps, level n waits for level n-1."""
    depth: dict[str, int] = {}
    for task_id in dag.order:
        depth[task_id] = 1 + max((depth[dep] for dep in dag.tasks[task_id].deps), default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task_id in dag.order:
        grouped[depth[task_id]].append(task_id)
    return grouped


def render(dag: Dag, fmt: str) -> str:
    """The graph in format `fmt` (one of FORMATS)."""
    if fmt == "text":
        return to_text(dag)
    if fmt == "mermaid":
        return to_mermaid(dag)
    if fmt == "dot":
        return to_dot(dag)
    raise ValueError(f"unknown graph format {fmt!r}; use one of {', '.join(FORMATS)}")


def to_text(dag: Dag) -> str:
    """A layered listing: each task under its level, with what it waits for."""
    grouped = levels(dag)
    lines = [f"job {dag.name}: {len(dag.tasks)} tasks in {len(grouped)} levels"]
    for number, task_ids in enumerate(grouped, start=1):
        lines.append(f"level {number}")
        width = max(len(t) for t in task_ids)
        for task_id in task_ids:
            deps = dag.tasks[task_id].deps
            suffix = f"  <- {', '.join(deps)}" if deps else ""
            line = f"  {task_id.ljust(width) if deps or _calls(dag, task_id) else task_id}"
            lines.append(f"{line}{suffix}{_calls(dag, task_id)}".rstrip())
    return "\n".join(lines)


def to_mermaid(dag: Dag) -> str:
    """`graph TD` flowchart; every node is declared with its task id as label."""
    ids = _mermaid_ids(dag.order)
    lines = ["graph TD"]
    for task_id in dag.order:
        label = (task_id + _calls(dag, task_id)).replace('"', "#quot;")
        lines.append(f'    {ids[task_id]}["{label}"]')
    for task_id in dag.order:
        for dep in dag.tasks[task_id].deps:
            lines.append(f"    {ids[dep]} --> {ids[task_id]}")
    return "\n".join(lines)


def to_dot(dag: Dag) -> str:
    """A Graphviz digraph, left to right in dependency order."""
    lines = [f"digraph {_dot_quote(dag.name)} {{", "    rankdir=TB;"]
    for task_id in dag.order:
        calls = _calls(dag, task_id)
        label = f" [label={_dot_quote(task_id + calls)}]" if calls else ""
        lines.append(f"    {_dot_quote(task_id)}{label};")
    for task_id in dag.order:
        for dep in dag.tasks[task_id].deps:
            lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(task_id)};")
    lines.append("}")
    return "\n".join(lines)


def _calls(dag: Dag, task_id: str) -> str:
    """What a task's id alone does not say: "  (calls Pub/Sub topic T)" for a
    remote task, "  (branch)" for a decision task, "  [one_failed]" for a
    trigger rule other than all_success; else ""."""
    spec = dag.tasks[task_id]
    notes = f"  (calls {spec.call.describe()})" if spec.call is not None else ""
    if spec.branch:
        notes += "  (branch)"
    if spec.trigger_rule != "all_success":
        notes += f"  [{spec.trigger_rule}]"
    return notes


def _mermaid_ids(task_ids: list[str]) -> dict[str, str]:
    """Task ids as Mermaid node ids: kept when safe, else `t<n>`."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for number, task_id in enumerate(task_ids):
        safe = task_id if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", task_id) \
            and task_id.lower() not in _MERMAID_RESERVED else f"t{number}"
        while safe in used:
            safe += "_"
        used.add(safe)
        ids[task_id] = safe
    return ids


def _dot_quote(name: str) -> str:
    """A dot ID string; JSON string escaping is valid dot escaping for our ids."""
    return json.dumps(name, ensure_ascii=False)
