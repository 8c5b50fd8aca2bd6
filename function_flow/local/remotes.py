"""Which function answers each remote topic of a workflow file, when run locally.

`function-flow run` hosts them in its own process (remote/hosting.py);
`function-flow dev` serves each with functions-framework behind a push
subscription from its topic, as `gcloud functions deploy NAME
--trigger-topic TOPIC` would. Found two ways:

- every `@remote.function(topic="T")` defined at module level in the file;
- `--remote T=NAME` for a function written for Function Flow, NAME(event,
  context), which publishes its own answer.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from function_flow.errors import FunctionFlowError
from function_flow.remote.functions import remote_function_of
from function_flow.remote.targets import PubSub, check
from function_flow.tasks import Job


class RemoteSetupError(FunctionFlowError):
    """A --remote option, or a remote topic nothing in the file answers."""


def parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    """`TOPIC=FUNCTION` options as {topic: function name}."""
    mapping: dict[str, str] = {}
    for pair in pairs:
        topic, sep, name = pair.partition("=")
        topic, name = topic.strip(), name.strip()
        if not sep or not topic or not name:
            raise RemoteSetupError(f"--remote {pair!r} must look like TOPIC=FUNCTION")
        try:
            check(PubSub(topic))
        except ValueError as exc:
            raise RemoteSetupError(f"--remote {pair!r}: {exc}") from None
        mapping[topic] = name
    return mapping


def remote_functions(module: ModuleType, path: str, pairs: tuple[str, ...] = ()
                     ) -> dict[str, str]:
    """{topic: name of the module-level function that answers it} for `module`."""
    found: dict[str, str] = {}
    namespace = vars(module)
    for name, value in namespace.items():
        remote = remote_function_of(value)
        if remote is None or remote.topic is None or name.startswith("_"):
            continue
        first = found.setdefault(remote.topic, name)
        if first != name and namespace[first] is not value:  # (an alias is the same one)
            raise RemoteSetupError(
                f"{first} and {name} in {path} both answer the topic {remote.topic!r}: only "
                "one function may; give the other a topic of its own")
    for topic, name in parse_pairs(pairs).items():
        function = getattr(module, name, None)
        if not callable(function):
            raise RemoteSetupError(f"--remote {topic}={name}: {path} defines no function "
                                   f"{name!r} at module level")
        found[topic] = name
    return found


def check_answered(job: Job, answered: dict[str, str], path: str,
                   pairs: tuple[str, ...] = ()) -> None:
    """Fail, naming the task, when a remote topic of `job` has no function here,
    when a --remote names a topic no task sends to, or when an OpenFaaS task
    has no gateway to call."""
    from function_flow.config import Settings

    # A state machine's remote Task states call from templates (asl/job.py).
    specs = [*job.dag.tasks.values(), *job.dag.templates.values()]
    topics = {spec.call.target for spec in specs
              if spec.call is not None and spec.call.kind == "pubsub"}
    for topic in parse_pairs(pairs):
        if topic not in topics:
            raise RemoteSetupError(
                f"--remote {topic}=...: no task of job {job.name!r} sends to {topic!r}; its "
                f"remote topics are: {', '.join(sorted(topics)) or 'none'}")
    gateway = Settings.from_env().openfaas_gateway
    for spec in specs:
        if spec.call is not None and spec.call.kind == "openfaas" and not gateway:
            raise RemoteSetupError(
                f"task {spec.task_id!r} calls the OpenFaaS function {spec.call.target!r}, "
                "and no gateway is set: set FUNCTION_FLOW_OPENFAAS_GATEWAY (and its "
                "password, see the README)")
    for spec in specs:
        call = spec.call
        if call is not None and call.kind == "pubsub" and call.target not in answered:
            raise RemoteSetupError(
                f"task {spec.task_id!r} sends to the Pub/Sub topic {call.target!r}, and "
                f"nothing in {path} answers it: define @remote.function(topic="
                f"{call.target!r}), or pass --remote {call.target}=FUNCTION for a function "
                "written for Function Flow")


def host_all(module: ModuleType, answered: dict[str, str]) -> None:
    """Answer each topic in this process (the embedded backend's hosting)."""
    from function_flow.remote import hosting

    for topic, name in answered.items():
        function: Any = getattr(module, name)
        hosting.host(topic, function)
