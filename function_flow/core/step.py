"""What one decision commits, and what the engine does once it has committed.

A rule in transitions.py (or foreach.py, control.py, ...) returns a `Step`
instead of writing: the writes are applied in order through one
`ports.Transaction`, and the messages, joins and slots are seen to after
the commit, so nothing is sent for a write that did not happen.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from function_flow.core.messages import Message
from function_flow.core.records import RunStatus

if TYPE_CHECKING:
    from function_flow.core.ports import Transaction


@dataclasses.dataclass(frozen=True)
class Write:
    """One write of a step: `kind` is "task", "run" or "slot"."""

    kind: str
    key: Any          # task id, None for the run, slot number
    value: Any        # fields to merge, or the slot's new holder


@dataclasses.dataclass
class Step:
    """What one decision commits, and what the engine does after the commit."""

    verdict: str = ""
    writes: list[Write] = dataclasses.field(default_factory=list)
    #: Published after the commit, each `delay` seconds later.
    messages: list[Message] = dataclasses.field(default_factory=list)
    delay: float = 0.0
    #: Joins whose deps_done this step wrote: looked at after the commit.
    joins: tuple[str, ...] = ()
    fill_slots: bool = False
    run_ended: RunStatus | None = None
    #: A foreach's items are all done: (foreach task, its attempt) to end.
    collect: tuple[str, int] | None = None

    def task(self, task_id: str, **fields: Any) -> None:
        self.writes.append(Write("task", task_id, fields))

    def run(self, **fields: Any) -> None:
        self.writes.append(Write("run", None, fields))

    def slot(self, slot: int, holder: str | None) -> None:
        self.writes.append(Write("slot", slot, holder))

    def write_to(self, tx: Transaction, run_id: str) -> None:
        """Make the writes through a transaction, in order (the engine calls it)."""
        for write in self.writes:
            if write.kind == "task":
                tx.update_task(run_id, write.key, write.value)
            elif write.kind == "run":
                tx.update_run(run_id, write.value)
            else:
                tx.set_slot(run_id, write.key, write.value)
