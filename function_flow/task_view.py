"""What a task body sees of its task (`Task`), and how a task's remote call is declared.

Function Flow passes a `Task` to each body; `tasks.Task` re-exports it.
"""

from __future__ import annotations

from typing import Any, Callable

from function_flow import remote
from function_flow.core.definition import Call
from function_flow.core.records import TaskStatus
from function_flow.errors import DefinitionError
from function_flow.remote import targets as remote_targets


class Task:
    """A task as its function sees it: `task.id`, `task.deps`, `task.task_args`,
    `task.remote_topic`.

    Arguments in Function Flow's order, `Task(task_id, deps, remote_topic,
    task_args, func)`; its first releases took `Task(task_id, deps, func)`,
    which still works. During execution a task also carries `run_id` and
    `attempt` (1 for the first try), which Function Flow did not have.
    """

    def __init__(self, task_id: str, deps: list[str] | None = None,
                 remote_topic: str | Callable[..., Any] | None = None,
                 task_args: dict[str, Any] | None = None,
                 func: Callable[..., Any] | None = None) -> None:
        if callable(remote_topic) and func is None:  # Task(task_id, deps, func)
            remote_topic, func = None, remote_topic
        self.id = task_id
        self.deps = list(deps or [])
        self.remote_topic = remote_topic
        self.func = func
        self.task_args = dict(task_args or {})
        self.status = TaskStatus.WAITING
        self.run_id: str | None = None
        self.attempt = 0

    def __repr__(self) -> str:
        return f"Task(id={self.id!r}, deps={self.deps!r})"


def topic_of(call: Call | None) -> str | None:
    return call.target if call is not None and call.kind == "pubsub" else None


def remote_call(task_id: Any, remote_topic: str | None, call: Call | None) -> Call | None:
    """The task's Call from `remote_topic=` or `call=`; errors name the task."""
    if remote_topic is not None and call is not None:
        raise DefinitionError(f"task {task_id!r}: give remote_topic or call, not both",
                              task_id)
    if call is not None and not isinstance(call, Call):
        raise DefinitionError(
            f"task {task_id!r}: call must come from function_flow.remote (PubSub, OpenFaaS "
            f"or Http), got {call!r}", task_id)
    if remote_topic is not None:
        call = remote.PubSub(remote_topic)
    if call is not None:
        try:
            remote_targets.check(call)
        except ValueError as exc:
            raise DefinitionError(f"task {task_id!r}: {exc}", task_id) from None
    return call
