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


class Resources:
    """The functions a definition's Task states call, by Resource string.

    A `.waitForTaskToken` resource gets the payload (which carries
    `$$.Task.Token`) and its visit waits for SendTaskSuccess/SendTaskFailure
    (`function_flow.asl.tokens`). A Python function given for one plays the
    worker: it runs beside the run, and its return value (or TaskFailed) is
    sent with the token once the wait is recorded.
    """

    def __init__(self, functions: Any) -> None:
        self.functions = dict(functions)

    def provides(self, resource: str) -> bool:
        return resource in self.functions

    def function(self, resource: str) -> Any:
        try:
            return self.functions[resource]
        except KeyError:
            raise AslError("States.Runtime", f"nothing provides the resource {resource!r}; "
                           "pass it in resources={...}") from None

    def call(self, call: Any, context: Any) -> Any:
        function = self.function(call.resource)
        try:
            return function(call.payload)
        except Exception as exc:  # the task's own failure, as Retry/Catch see it
            raise task_failure(exc) from None

    def worker(self, engine: Any, resource: str, token: str, payload: Any) -> None:
        """Run a Python worker for a callback resource, in a thread of its own."""
        import threading

        from function_flow.asl import tokens

        function = self.function(resource)

        def work() -> None:
            try:
                value = function(payload)
            except Exception as exc:  # the worker's SendTaskFailure
                failure = task_failure(exc)
                tokens.send_failure(engine, token, failure.error, failure.cause, wait=True)
            else:
                tokens.send_success(engine, token, value, wait=True)

        threading.Thread(target=work, name=f"asl-worker-{resource}", daemon=True).start()
