"""The scheduling message: what Pub/Sub and the in-process bus carry.

A message names its target (run, task, attempt) and never carries results;
`from_json` is the one place a delivered body is checked, so every entry
point rejects a malformed message the same way.
"""

from __future__ import annotations

import dataclasses
import enum
import json


#: Longest run or task id a message may name. Firestore allows document ids
#: of 1,500 bytes; anything near that is garbage, not an id we created.
MAX_ID_LENGTH = 500


class MessageKind(str, enum.Enum):
    """What a scheduling message asks for."""

    RUN_TASK = "run_task"          # claim and execute attempt `attempt`
    CHECK_LEASE = "check_lease"    # has attempt `attempt` overrun its lease?


@dataclasses.dataclass(frozen=True)
class Message:
    """A scheduling message. It names its target; it never says "schedule something"."""

    run_id: str
    task_id: str
    attempt: int
    kind: MessageKind = MessageKind.RUN_TASK

    def to_json(self) -> bytes:
        return json.dumps({"run_id": self.run_id, "task_id": self.task_id,
                           "attempt": self.attempt,
                           "kind": self.kind.value}).encode()

    def attributes(self) -> dict[str, str]:
        """Pub/Sub attributes, so a message is meaningful in logs."""
        return {"run_id": self.run_id, "task_id": self.task_id,
                "attempt": str(self.attempt), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: bytes | str) -> "Message":
        """Parse a message; raises ValueError with a readable reason."""
        try:
            payload = json.loads(data)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"message is not JSON: {exc}") from exc
        if not isinstance(payload, dict):
            raise ValueError("message is not a JSON object")
        try:
            run_id, task_id, attempt = payload["run_id"], payload["task_id"], payload["attempt"]
        except KeyError as exc:
            raise ValueError(f"message lacks field {exc.args[0]!r}") from exc
        if not isinstance(run_id, str) or not isinstance(task_id, str) \
                or not isinstance(attempt, int) or isinstance(attempt, bool):
            raise ValueError("message fields have the wrong types")
        for name, value in (("run_id", run_id), ("task_id", task_id)):
            if not value or len(value) > MAX_ID_LENGTH:
                raise ValueError(f"message {name} must be 1 to {MAX_ID_LENGTH} characters")
        try:
            kind = MessageKind(payload.get("kind", MessageKind.RUN_TASK.value))
        except ValueError as exc:
            raise ValueError(f"unknown message kind {payload.get('kind')!r}") from exc
        return cls(run_id=run_id, task_id=task_id, attempt=attempt, kind=kind)
