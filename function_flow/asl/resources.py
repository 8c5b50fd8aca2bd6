"""Task resources: what a Task's `Resource` string runs, and its failures.

A resource is a Python function called with the effective input (after
InputPath and Parameters) whose return value is the result; an exception
it raises is the task's failure. An exception with `error` and `cause`
attributes (the corpus's `tasks.TaskFailed`, or `function_flow.asl.TaskFailed`)
fails with exactly that Error and Cause; any other with its class name and
message, as a Lambda function's error reaches Step Functions.

Or a remote function (the remote-task issue), declared either way:

- in the resources mapping, a `remote.PubSub(topic)`, `remote.OpenFaaS(name,
  asynchronous=)` or `remote.Http(url, audience=, timeout=)` as the value;
- by the Resource string itself, when the mapping does not name it:
  `pubsub:TOPIC`, `openfaas:NAME`, `openfaas-async:NAME`, `http://...` or
  `https://...`.

The engine makes the call (engine_states: a record of its own, so the
call's retries, timeouts, signing and answers are a remote task's): the
function gets Function Flow's request, whose `result` is the effective
input, and its answer is the Task's result. A failed call is the Task's
failure, `States.Timeout` when TimeoutSeconds passed, else
`States.TaskFailed` with the call's error as Cause; Retry and Catch apply.
TimeoutSecondsPath gives the limit per execution, read from the state's
input as InputPath selected it (the call's record carries it:
TaskRecord.timeout); a path that selects no positive integer fails the
state with States.Runtime. HeartbeatSecondsPath is checked the same way,
and applies to `.waitForTaskToken` resources (tokens.py) only.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

from function_flow.asl.errors import AslError
from function_flow.core.definition import Call
from function_flow.remote import targets

#: Resource string prefixes that name a remote function by themselves.
SCHEMES: dict[str, Callable[[str], Call]] = {
    "pubsub:": targets.PubSub, "openfaas:": targets.OpenFaaS,
    "openfaas-async:": lambda name: targets.OpenFaaS(name, asynchronous=True),
    "http://": lambda rest: targets.Http("http://" + rest),
    "https://": lambda rest: targets.Http("https://" + rest)}


def remote_of(resource: str, functions: Mapping[str, Any]) -> Call | None:
    """The remote call `resource` stands for, or None (a Python function, or nothing).

    Raises ValueError, saying why, for a target Pub/Sub, OpenFaaS or HTTP
    would refuse (targets.check)."""
    value = functions.get(resource)
    if value is None and not resource.endswith(".waitForTaskToken"):  # a worker's
        for prefix, make in SCHEMES.items():
            if resource.startswith(prefix):
                value = make(resource[len(prefix):])
                break
    if not isinstance(value, Call):
        return None
    targets.check(value)
    return value


#: What a `.waitForTaskToken` worker returns to leave the answer to someone
#: else: a person (`function-flow approve|reject TOKEN`, the callback's
#: /approve and /reject) or another system (`tokens.send_success`). The worker
#: has sent the token on (by mail, to a queue...); the Task waits for it.
ANSWER_LATER = object()


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
    sent with the token once the wait is recorded, unless it returns
    ANSWER_LATER (someone else answers).
    """

    def __init__(self, functions: Any) -> None:
        self.functions = dict(functions)

    def remote(self, resource: str) -> Call | None:
        """The remote call of a Task's Resource (validated when the machine was)."""
        return remote_of(resource, self.functions)

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
                if value is not ANSWER_LATER:
                    tokens.send_success(engine, token, value, wait=True)

        threading.Thread(target=work, name=f"asl-worker-{resource}", daemon=True).start()
