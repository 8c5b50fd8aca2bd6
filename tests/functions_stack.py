"""Test conveniences over function_flow.local: what one e2e test starts, and cleanup.

The servers, topics and push subscriptions are made by the same building
blocks `function-flow dev` uses (local/framework.py, local/pubsub.py,
local/processes.py); this module only adds what tests need on top: a
per-test topic, a log file per function, and `close()` for everything a
test started. Workflow files are served directly (`--source=FILE`), as a
deployment would serve them. FUNCTION_FLOW_TEST_KEEP_LOGS=1 keeps each
function's log file after the test, to read after a failure.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from function_flow.local import framework
from function_flow.local.framework import FunctionProcess
from function_flow.local.pubsub import EmulatorPubSub
from signatures import TEST_HMAC_KEY

__all__ = ["Stack", "FunctionProcess", "post", "http_client", "wait_for"]


class Stack:
    """Functions, a topic and push subscriptions of one test, on the session's emulators."""

    def __init__(self, env: dict[str, str], project: str) -> None:
        self.suffix = uuid.uuid4().hex[:8]
        self.schedule_topic = f"SCHEDULE-{self.suffix}"
        #: Environment of every function process: emulators, prefix, topic.
        self.env = dict(env, FUNCTION_FLOW_BACKEND="gcp", GOOGLE_CLOUD_PROJECT=project,
                        FUNCTION_FLOW_SCHEDULE_TOPIC=self.schedule_topic)
        # Every message between the functions is signed (signing.py).
        self.env.setdefault("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
        self.project = project
        self.pubsub = EmulatorPubSub(env["PUBSUB_EMULATOR_HOST"], project)
        self.functions: list[FunctionProcess] = []

    def function(self, source: str | os.PathLike, target: str, signature_type: str,
                 **options: Any) -> FunctionProcess:
        """Start functions-framework for `target` and wait until it answers.

        options: workers, threads, function_timeout (see framework.start_function).
        """
        handle, log_path = tempfile.mkstemp(prefix=f"ff-{target}-", suffix=".log")
        os.close(handle)
        function = framework.start_function(source, target, signature_type, self.env,
                                            log_path=log_path, **options)
        self.functions.append(function)
        framework.wait_until_answering([function], 60)
        return function

    def ensure_topic(self, topic: str | None = None) -> str:
        return self.pubsub.ensure_topic(topic or self.schedule_topic)

    def push(self, function: FunctionProcess, topic: str | None = None,
             name: str | None = None) -> str:
        """A push subscription delivering the topic to `function`; returns its path."""
        name = name or f"{function.target}-{self.suffix}-{len(self.pubsub.subscriptions)}"
        return self.pubsub.push(topic or self.schedule_topic, function.url, name)

    def publish(self, data: bytes, topic: str | None = None, **attributes: str) -> str:
        return self.pubsub.publish(topic or self.schedule_topic, data, **attributes)

    def logs(self) -> str:
        return "\n".join(f.log() for f in self.functions)

    def close(self) -> None:
        # Subscriptions first, so nothing pushes to a stopped function.
        self.pubsub.close()
        framework.stop_functions(self.functions)
        if os.environ.get("FUNCTION_FLOW_TEST_KEEP_LOGS"):  # to debug a failure
            return
        for function in self.functions:
            if function.log_path:
                try:
                    os.unlink(function.log_path)
                except OSError:
                    pass


def post(url: str, body: bytes | str | dict | list | None = None,
         headers: dict[str, str] | None = None, timeout: float = 120.0
         ) -> tuple[int, Any]:
    """POST and return (status, parsed JSON body or text)."""
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    data = body.encode() if isinstance(body, str) else (body or b"")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def http_client(function: Any, name: str) -> Any:
    """A Flask test client of an HTTP `function`, served at every path and method
    as functions-framework serves it (in-process: no server process)."""
    import flask

    app = flask.Flask(name)

    @app.route("/", defaults={"path": ""}, methods=["GET", "POST", "PUT"])
    @app.route("/<path:path>", methods=["GET", "POST", "PUT"])
    def serve(path: str) -> Any:
        return function(flask.request)

    return app.test_client()


def wait_for(condition: Any, what: str, timeout: float = 120.0, interval: float = 0.2) -> Any:
    """Poll `condition()` until it returns something truthy; fail after `timeout`.

    The timeout only stops a broken run from hanging the suite; no assertion
    depends on how long anything took.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")
        time.sleep(interval)
