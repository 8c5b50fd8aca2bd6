"""Remote functions behind a Pub/Sub topic (Function Flow's `remote_topic`), deployed.

The request is Function Flow's JSON (`Request.function_flow_payload`); its
attributes name the run, task, attempt and job id, so that a request means
something in Cloud Logging and a remote function can tell which run it
serves; two more sign it (bus/pubsub.py's Topic signs whatever it
publishes). The answer comes back on the external events topic (see
futures.RemoteFunctionFuture).
"""

from __future__ import annotations

import json
import threading
from typing import Any, NoReturn

from function_flow.bus.pubsub import Topic
from function_flow.core.definition import Call
from function_flow.core.ports import Request


def request_attributes(request: Request) -> dict[str, str]:
    """Pub/Sub attributes of a request (strings only, as Pub/Sub wants)."""
    return {"run_id": request.run_id, "task_id": request.task_id,
            "attempt": str(request.attempt), "job_id": request.job_id}


def request_data(request: Request) -> bytes:
    return json.dumps(request.function_flow_payload(), separators=(",", ":")).encode()


def answers_later(call: Call) -> NoReturn:
    """A Pub/Sub remote function's answer arrives as an event: it has no synchronous call."""
    raise TypeError(f"a Pub/Sub remote function answers later; {call.describe()} "
                    "cannot be called synchronously")


class PubSubSender:
    """ports.Caller for `Call.kind == "pubsub"`: publishes each request to its topic."""

    def __init__(self, project: str | None = None, keys: Any = None) -> None:
        self._project = project
        #: signing.Keys of the requests (None: the settings', on first send).
        self._keys = keys
        self._topics: dict[str, Topic] = {}
        self._lock = threading.Lock()

    def _topic(self, name: str) -> Topic:
        with self._lock:
            if name not in self._topics:
                # Not created when missing: nobody would receive the request.
                self._topics[name] = Topic(name, self._project, create=False,
                                           keys=self._keys)
            return self._topics[name]

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        answers_later(call)

    def send(self, call: Call, request: Request) -> None:
        self._topic(call.target).publish(
            request_data(request), request_attributes(request),
            f"job {request.job_id} of task {request.task_id!r}")
