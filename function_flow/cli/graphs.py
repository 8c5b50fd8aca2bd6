"""Write a workflow graph as text, Mermaid or Graphviz dot (`function-flow graph`).

The formats are a few lines each, so they are written here rather than
pulling in a library: Mermaid has no Python writer worth depending on, and
the `graphviz` package would only wrap the same string building.
"""

from __future__ import annotations

import json
import re
from typing import Iterable

from function_flow import subdags
from function_flow.core import hooks
from function_flow.core.graph import Dag, TaskSpec

FORMATS = ("text", "mermaid", "dot")

#: Words Mermaid's flowchart parser treats as keywords, not as node ids.
_MERMAID_RESERVED = {"end", "graph", "subgraph", "flowchart", "style", "class",
                     "classdef", "click", "linkstyle", "direction", "default"}


def levels(dag: Dag, scope: str = "") -> list[list[str]]:
    """Tasks grouped by depth: level 0 has no deps, level n waits for level n-1.

    A sub-DAG counts as one task at the level of its node (its join task).
    """
    depth: dict[str, int] = {}
    for task_id in members(dag, scope):
        depth[task_id] = 1 + max((depth.get(dep, -1) for dep in shown_deps(dag, task_id)),
                                 default=-1)
    grouped: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for task_id in depth:
        grouped[depth[task_id]].append(task_id)
    return grouped


def members(dag: Dag, scope: str) -> list[str]:
    """The tasks and sub-DAG nodes directly at `scope` ("" or "left/"), in order;
    in a foreach's node, the tasks each item's copy of its sub-DAG runs."""
    return [t for t in [*dag.order, *dag.templates] if subdags.scope_of(t) == scope]


def shown_deps(dag: Dag, task_id: str) -> tuple[str, ...]:
    """What `task_id` waits for, as drawn: a node waits for what its sub-DAG
    waits for from outside, and a dep inside a sub-DAG is shown as its node."""
    prefix, scope = task_id + subdags.SEPARATOR, subdags.scope_of(task_id)
    spec = _spec(dag, task_id)
    if not _is_node(dag, task_id) or spec.foreach is not None:
        deps: Iterable[str] = spec.deps
    else:
        deps = [d for t in dag.order if t.startswith(prefix)
                for d in dag.tasks[t].deps if not d.startswith(prefix)]
    shown = []
    for dep in deps:
        if dep.startswith(scope):
            dep = scope + dep[len(scope):].split(subdags.SEPARATOR)[0]
        if dep not in shown:
            shown.append(dep)
    return tuple(shown)


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
    """A layered listing: each task under its level, with what it waits for;
    a sub-DAG's tasks listed under its node, indented."""
    grouped = levels(dag)
    lines = [f"job {dag.name}: {len(dag.tasks)} tasks in {len(grouped)} levels"]
    for number, task_ids in enumerate(grouped, start=1):
        lines.append(f"level {number}")
        _text_lines(dag, task_ids, "  ", lines)
    if _hooks(dag):
        lines.append("after the run ends")
        lines += [f"  {name}" for name in _hooks(dag)]
    return "\n".join(lines)


def _hooks(dag: Dag) -> list[str]:
    """The job's hooks as drawn: "on_failure: notify()", in the order they run."""
    found = []
    for hook_id in hooks.ORDER:
        spec = dag.hooks.get(hook_id)
        if hook_id == hooks.CALLBACK:
            if found:  # every job may get one: listed beside the hooks it declares only
                found.append("callback: POST to the start's callback_url, if it gave one")
        elif spec is not None:
            func = getattr(spec.func, "__name__", None)
            found.append(hooks.NAMES[hook_id] + (f": {func}()" if func else ""))
    return found


def _text_lines(dag: Dag, task_ids: list[str], indent: str, lines: list[str]) -> None:
    width = max(len(t) for t in task_ids)
    for task_id in task_ids:
        deps = shown_deps(dag, task_id)
        note = _calls(dag, task_id) + (" " + _subdag_note(dag, task_id)).rstrip()
        suffix = f"  <- {', '.join(deps)}" if deps else ""
        line = f"{indent}{task_id.ljust(width) if deps or note else task_id}"
        lines.append(f"{line}{suffix}{note}".rstrip())
        if _is_node(dag, task_id):
            _text_lines(dag, members(dag, task_id + subdags.SEPARATOR), indent + "  ", lines)


def to_mermaid(dag: Dag) -> str:
    """`graph TD` flowchart; every node is declared with its task id as label,
    a sub-DAG as a `subgraph` holding its tasks and its node."""
    nodes = sorted(subdags.node_ids([*dag.tasks, *dag.templates]))
    ids = _mermaid_ids(dag.order + list(dag.templates)
                       + [n + subdags.SEPARATOR for n in nodes])
    lines = ["graph TD"]

    def declare(scope: str, indent: str) -> None:
        for task_id in members(dag, scope):
            label = (_label(dag, task_id) + _calls(dag, task_id)).replace('"', "#quot;")
            if not _is_node(dag, task_id):
                lines.append(f'{indent}{ids[task_id]}["{label}"]')
                continue
            title = (_label(dag, task_id) + _subdag_note(dag, task_id)).replace('"', "#quot;")
            lines.append(f'{indent}subgraph {ids[task_id + subdags.SEPARATOR]}["{title}"]')
            declare(task_id + subdags.SEPARATOR, indent + "    ")
            lines.append(f'{indent}    {ids[task_id]}(["{label}"])')
            lines.append(f"{indent}end")

    declare("", "    ")
    for task_id in [*dag.order, *dag.templates]:
        for dep in _spec(dag, task_id).deps:
            lines.append(f"    {ids[dep]} --> {ids[task_id]}")
    if _hooks(dag):
        lines.append('    subgraph after_the_run["after the run ends"]')
        lines += [f'        hook{n}{{{{"{name}"}}}}' for n, name in enumerate(_hooks(dag))]
        lines.append("    end")
    return "\n".join(lines)


def to_dot(dag: Dag) -> str:
    """A Graphviz digraph, left to right in dependency order; a sub-DAG is a
    `cluster_` subgraph holding its tasks and its node."""
    lines = [f"digraph {_dot_quote(dag.name)} {{", "    rankdir=TB;"]

    def declare(scope: str, indent: str) -> None:
        for task_id in members(dag, scope):
            text = _label(dag, task_id) + _calls(dag, task_id)
            if not _is_node(dag, task_id):
                label = f" [label={_dot_quote(text)}]" if text != task_id else ""
                lines.append(f"{indent}{_dot_quote(task_id)}{label};")
                continue
            title = _label(dag, task_id) + _subdag_note(dag, task_id)
            lines.append(f"{indent}subgraph {_dot_quote('cluster_' + task_id)} {{")
            lines.append(f"{indent}    label={_dot_quote(title)};")
            declare(task_id + subdags.SEPARATOR, indent + "    ")
            lines.append(f"{indent}    {_dot_quote(task_id)} "
                         f"[label={_dot_quote(text)}, shape=box, style=rounded];")
            lines.append(f"{indent}}}")

    declare("", "    ")
    for task_id in [*dag.order, *dag.templates]:
        for dep in _spec(dag, task_id).deps:
            lines.append(f"    {_dot_quote(dep)} -> {_dot_quote(task_id)};")
    if _hooks(dag):
        lines += ['    subgraph "cluster_after_the_run" {', '        label="after the run ends";']
        lines += [f"        {_dot_quote('hook: ' + name)} [shape=hexagon];"
                  for name in _hooks(dag)]
        lines.append("    }")
    lines.append("}")
    return "\n".join(lines)


def _spec(dag: Dag, task_id: str) -> TaskSpec:
    spec = dag.spec_of(task_id)
    assert spec is not None, task_id
    return spec


def _is_node(dag: Dag, task_id: str) -> bool:
    """Whether `task_id` is a sub-DAG's node (its join task, or a foreach over it)."""
    spec = _spec(dag, task_id)
    return subdags.is_join(spec) or (spec.foreach is not None and spec.foreach.dag is not None)


def _label(dag: Dag, task_id: str) -> str:
    """A drawn task's name: its id inside its sub-DAG (the group says which)."""
    return subdags.local_id(task_id)


def _subdag_note(dag: Dag, task_id: str) -> str:
    """" (sub-DAG of job J)" for a node, else ""."""
    if not _is_node(dag, task_id):
        return ""
    job = getattr(dag, "subdag_jobs", {}).get(task_id)
    if _spec(dag, task_id).foreach is not None:
        return f" (per item: a copy of job {job}, {task_id}[i]/...)"
    return f" (sub-DAG of job {job})" if job else " (sub-DAG)"


def _calls(dag: Dag, task_id: str) -> str:
    """What a task's id alone does not say: "  (calls Pub/Sub topic T)" for a
    remote task, "  (branch)" for a decision task, "  [one_failed]" for a
    trigger rule other than all_success; else ""."""
    spec = _spec(dag, task_id)
    notes = f"  (calls {spec.call.describe()})" if spec.call is not None else ""
    if spec.branch:
        notes += "  (branch)"
    if spec.trigger_rule != "all_success" and not _is_node(dag, task_id):
        notes += f"  [{spec.trigger_rule}]"
    if spec.foreach is not None:
        notes += f"  (foreach over {spec.foreach.over})"
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
