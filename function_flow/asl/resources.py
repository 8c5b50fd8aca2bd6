"""Task resources: what a Task's `Resource` string runs, and its failures.

A resource is a Python function called with the effective input (after
InputPath and Parameters) whose return value is the result; an exception
it raises is the task's failure. An exception with `error` and `cause`
attributes (the corpus's `tasks.TaskFailed`, or `function_flow.asl.TaskFailed`)
fails with exactly that Error and Cause; any other with its class name and
message, as a Lambda function's error reaches Step Functions.
"""

from __future__ import annotations

from typing import Any

from function_flow.asl.errors import AslError


class TaskFailed(Exception):
    """Raise from a task function to fail with an ASL error name and cause."""

    def __init__(self, error: str, cause: str | None = None) -> None:
        super().__init__(f"{error}: {cause}")
        self.error = error
        self.cause = cause


def task_failure(exc: BaseException) -> AslError:
    """The ASL failure an exception raised by a task function stands for."""
    if isinstance(exc, AslError):
        return exc
    error = getattr(exc, "error", None)
    if isinstance(error, str) and error:
        cause = getattr(exc, "cause", None)
        return AslError(error, None if cause is None else str(cause))
    return AslError(type(exc).__name__, str(exc))
