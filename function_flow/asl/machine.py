"""A state machine definition compiled for the engine: machines and templates.

Parallel branches and Map processors are machines of their own; each
state of each machine becomes one template (`s<n>`), the spec its visits
run as. A visit's record id is readable and unique in the run:
`<scope><seq>.<state>`, where the scope names the branch or item a record
belongs to (`0003.Fan.b1.` is branch 1 of the Parallel visit `0003.Fan`)
and seq counts the visits in that scope (a Choice may loop back).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclasses.dataclass
class Compiled:
    """Every machine of a definition and every state's template id."""

    definition: dict[str, Any]
    #: Machine index -> {"StartAt", "States"}; 0 is the definition itself.
    machines: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    #: Template id -> (machine index, state name).
    templates: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)
    template_of: dict[tuple[int, str], str] = dataclasses.field(default_factory=dict)
    #: (machine, Parallel or Map state) -> the machines it runs (branches, processor).
    children: dict[tuple[int, str], list[int]] = dataclasses.field(default_factory=dict)

    def spec(self, template: str) -> tuple[int, str, dict[str, Any]]:
        machine, name = self.templates[template]
        return machine, name, self.machines[machine]["States"][name]


def compile_machine(definition: dict[str, Any]) -> Compiled:
    """Index a (validated) definition's machines and states."""
    compiled = Compiled(definition)
    pending = [definition]
    while pending:
        machine = pending.pop(0)
        index = len(compiled.machines)
        compiled.machines.append(machine)
        for name, state in machine["States"].items():
            template = f"s{len(compiled.templates)}"
            compiled.templates[template] = (index, name)
            compiled.template_of[(index, name)] = template
            inner = list(state.get("Branches") or [])
            if state.get("Type") == "Map":
                inner = [state.get("ItemProcessor") or state["Iterator"]]
            if inner:
                first = len(compiled.machines) + len(pending)
                compiled.children[(index, name)] = list(range(first, first + len(inner)))
                pending += inner
    return compiled


def safe(name: str) -> str:
    """A state name as it appears in record ids ('/' and '[' are reserved there)."""
    return _UNSAFE.sub("_", name)[:40] or "_"


def record_id(scope: str, seq: int, name: str) -> str:
    return f"{scope}{seq:04d}.{safe(name)}"
