"""State machine files for the command line: `machine.json`, and its resources.

`function-flow run|graph|validate machine.json` read the definition here.
The Python functions its Task states call come from `machine.py` beside it,
when there is one: its `RESOURCES` dict maps each Resource string to a
function (or a remote target). Every problem is one line (LoadError).
"""

from __future__ import annotations

import json
import os
from typing import Any

from function_flow.asl import validate
from function_flow.errors import FunctionFlowError


class MachineFileError(FunctionFlowError):
    """A state machine file that cannot be read or run; one line."""


def read(path: str) -> dict[str, Any]:
    if not os.path.exists(path):
        raise MachineFileError(f"no such file: {path}")
    try:
        with open(path, encoding="utf-8") as fh:
            definition = json.load(fh)
    except ValueError as exc:
        raise MachineFileError(f"{path} is not JSON: {exc}") from None
    return definition


def companion(path: str) -> str | None:
    """The Python file beside a state machine file (machine.json -> machine.py), if any:
    its RESOURCES, and the @remote.function(topic=...) functions that `run` hosts
    and `dev` serves."""
    beside = os.path.splitext(path)[0] + ".py"
    return beside if os.path.exists(beside) else None


def resources_for(path: str) -> dict[str, Any] | None:
    """RESOURCES of the Python file beside `path` (machine.json -> machine.py), if any."""
    from function_flow import loader

    beside = companion(path)
    if beside is None:
        return None
    module = loader.load_module(beside)
    found = getattr(module, "RESOURCES", {})  # none: it may hold only remote functions
    if not isinstance(found, dict):
        raise MachineFileError(f"{beside}: RESOURCES must be a dict (Resource string -> "
                               f"function) for the Task states of {path}, got "
                               f"{type(found).__name__}")
    return found


def load(path: str) -> Any:
    """The StateMachine job of `path`, validated (MachineFileError naming the state)."""
    from function_flow.asl.errors import AslDefinitionError
    from function_flow.asl.job import StateMachine

    definition = read(path)
    name = "".join(c if c.isalnum() or c in "-_" else "_"
                   for c in os.path.splitext(os.path.basename(path))[0]) or "state_machine"
    try:
        return StateMachine(definition, name, resources=resources_for(path) or {})
    except AslDefinitionError as exc:
        raise MachineFileError(f"invalid state machine in {path}: {exc}") from None


def problems(path: str) -> list[str]:
    """Every definition error of `path`, one line each (empty: it can run)."""
    definition = read(path)
    # What `run` would have: no machine.py beside it provides no Python Resource.
    return [message for _, message in validate.problems(definition, resources_for(path) or {})]


def render(definition: dict[str, Any], fmt: str = "text") -> str:
    """The states and their transitions: text lines, or a Mermaid or dot diagram."""
    edges: list[tuple[str, str, str]] = []

    def walk(machine: dict[str, Any], prefix: str) -> None:
        edges.append(("(start)" if not prefix else prefix.rstrip("/"),
                      prefix + machine["StartAt"], "start"))
        for name, state in machine["States"].items():
            for field, target in validate._targets(state):
                edges.append((prefix + name, prefix + str(target), field))
            if state.get("End") or state.get("Type") in ("Succeed",):
                edges.append((prefix + name, "(end)" if not prefix else prefix + "(end)",
                              "end"))
            for index, inner in enumerate(validate._machines(state)):
                if state["Type"] == "Parallel":  # the state runs each branch
                    edges.append((prefix + name, f"{prefix}{name}/{index}", f"Branches[{index}]"))
                walk(inner, f"{prefix}{name}/{index}/" if state["Type"] == "Parallel"
                     else f"{prefix}{name}/")

    walk(definition, "")
    if fmt == "mermaid":
        ids: dict[str, str] = {}
        node = lambda n: ids.setdefault(n, f"n{len(ids)}")  # noqa: E731
        lines = ["flowchart TD"]
        lines += [f'    {node(a)}["{a}"] -->|{label}| {node(b)}["{b}"]'
                  for a, b, label in edges]
        return "\n".join(lines)
    if fmt == "dot":
        return "digraph machine {\n" + "\n".join(
            f'  "{a}" -> "{b}" [label="{label}"];' for a, b, label in edges) + "\n}"
    return "\n".join(f"{a} -> {b}" + ("" if label in ("Next", "start", "end")
                                       else f"  ({label})") for a, b, label in edges)
