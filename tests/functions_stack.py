"""Run workflow files under functions-framework, wired to the emulators, as deployed.

Deployed, `scheduler` is a function behind a subscription on the SCHEDULE
topic and `start`/`poller` are HTTP functions. Here each is a
`functions-framework --source=FILE --target=NAME --signature-type=TYPE`
process on a free port of 127.0.0.1 (in its own process group, stopped by
its id), and the Pub/Sub emulator's push subscriptions deliver the SCHEDULE
topic to the scheduler's URL, the way Pub/Sub invokes a function.

`Stack` owns everything a test starts (processes, topics, subscriptions)
and removes it in `close()`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

from function_flow.local.emulators import free_port

FUNCTIONS_FRAMEWORK = str(pathlib.Path(sys.executable).with_name("functions-framework"))


@dataclasses.dataclass
class FunctionProcess:
    """One functions-framework server: `url` is where to POST."""

    target: str
    signature_type: str
    port: int
    process: subprocess.Popen
    log_path: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def log(self) -> str:
        return pathlib.Path(self.log_path).read_text(encoding="utf-8", errors="replace")

    def json_logs(self) -> list[dict[str, Any]]:
        """The JSON log lines function_flow wrote (see functions._log_like_a_cloud_function)."""
        entries = []
        for line in self.log().splitlines():
            if line.startswith("{"):
                try:
                    entries.append(json.loads(line))
                except ValueError:
                    pass
        return entries

    def stop(self) -> None:
        """End the server's process group (gunicorn and its workers).

        SIGINT is gunicorn's quick shutdown; SIGTERM would wait for idle
        keep-alive connections of the emulator's push client.
        """
        for sig, wait in ((signal.SIGINT, 10.0), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        try:  # workers can outlive the master for a moment after SIGTERM
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_function(source: str | os.PathLike, target: str, signature_type: str,
                   env: dict[str, str], workers: int = 1, threads: int = 8,
                   timeout: float = 60.0) -> FunctionProcess:
    """Start functions-framework and wait until it accepts connections.

    workers: gunicorn worker processes (functions-framework reads WORKERS);
    each is a separate Python process, like separate function instances.
    """
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix=f"ff-{target}-", suffix=".log", delete=False)
    process_env = dict(os.environ, **env, WORKERS=str(workers), THREADS=str(threads),
                       PYTHONUNBUFFERED="1")
    with log:
        process = subprocess.Popen(
            [FUNCTIONS_FRAMEWORK, f"--source={source}", f"--target={target}",
             f"--signature-type={signature_type}", "--host=127.0.0.1", f"--port={port}"],
            env=process_env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)
    function = FunctionProcess(target, signature_type, port, process, log.name)
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"functions-framework for {target} exited with code "
                               f"{process.returncode}:\n{function.log()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return function
        except OSError:
            if time.monotonic() > deadline:
                function.stop()
                raise RuntimeError(f"functions-framework for {target} did not listen "
                                   f"within {timeout:.0f} s:\n{function.log()[-3000:]}")
            time.sleep(0.1)


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


class Stack:
    """Functions, topics and push subscriptions of one test, on the emulators."""

    def __init__(self, env: dict[str, str], project: str) -> None:
        #: Environment of every function process: emulators, prefix, topic.
        self.suffix = uuid.uuid4().hex[:8]
        self.schedule_topic = f"SCHEDULE-{self.suffix}"
        self.env = dict(env, FUNCTION_FLOW_BACKEND="gcp", GOOGLE_CLOUD_PROJECT=project,
                        FUNCTION_FLOW_SCHEDULE_TOPIC=self.schedule_topic)
        self.project = project
        self.functions: list[FunctionProcess] = []
        self.subscriptions: list[str] = []
        self._publisher: Any = None
        self._subscriber: Any = None

    # ---------------------------------------------------------------- Pub/Sub

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            from google.cloud import pubsub_v1

            self._publisher = pubsub_v1.PublisherClient()
        return self._publisher

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            from google.cloud import pubsub_v1

            self._subscriber = pubsub_v1.SubscriberClient()
        return self._subscriber

    def topic_path(self, topic: str | None = None) -> str:
        return self.publisher.topic_path(self.project, topic or self.schedule_topic)

    def ensure_topic(self, topic: str | None = None) -> str:
        from google.api_core.exceptions import AlreadyExists

        path = self.topic_path(topic)
        try:
            self.publisher.create_topic(request={"name": path})
        except AlreadyExists:
            pass
        return path

    def push(self, function: FunctionProcess, topic: str | None = None,
             name: str | None = None) -> str:
        """A push subscription delivering `topic` to `function`, as Pub/Sub
        invokes a deployed function. Returns the subscription path."""
        topic_path = self.ensure_topic(topic)
        name = name or f"{function.target}-{self.suffix}-{len(self.subscriptions)}"
        path = self.subscriber.subscription_path(self.project, name)
        self.subscriber.create_subscription(request={
            "name": path, "topic": topic_path, "ack_deadline_seconds": 60,
            "push_config": {"push_endpoint": function.url}})
        self.subscriptions.append(path)
        return path

    def publish(self, data: bytes, topic: str | None = None, **attributes: str) -> str:
        return self.publisher.publish(self.topic_path(topic), data, **attributes).result(30)

    # ------------------------------------------------------------- functions

    def function(self, source: str | os.PathLike, target: str, signature_type: str,
                 **options: Any) -> FunctionProcess:
        function = start_function(source, target, signature_type, self.env, **options)
        self.functions.append(function)
        return function

    def logs(self) -> str:
        return "\n".join(f.log() for f in self.functions)

    def close(self) -> None:
        # Subscriptions first, so nothing pushes to a stopped function.
        for path in self.subscriptions:
            try:
                self.subscriber.delete_subscription(request={"subscription": path})
            except Exception:  # the emulator may already be gone at session end
                pass
        for function in self.functions:
            function.stop()
            try:
                os.unlink(function.log_path)
            except OSError:
                pass
        for client in (self._publisher, self._subscriber):
            if client is not None:
                try:
                    (getattr(client, "stop", None) or client.close)()
                except Exception:
                    pass


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
