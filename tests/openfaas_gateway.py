"""A local OpenFaaS gateway and queue worker, following their documented contract.

    with Gateway(user="admin", password="secret") as gateway:
        gateway.register("echo", lambda call: {"got": call.json()})

What it does, as OpenFaaS does (docs.openfaas.com/reference/async/, the
nats-queue-worker's main.go):

- POST /function/NAME calls the function and answers with its status,
  body and Content-Type; a function that is not deployed is a 404.
- POST /async-function/NAME answers 202 with an X-Call-Id at once, even
  for a function that is not deployed (then nothing else happens, ever).
  A "queue worker" thread then calls the function with the request's
  headers (X-Call-Id added) and, when the request had an X-Callback-Url,
  POSTs the function's body there with the function's response headers,
  X-Function-Status (its HTTP status), X-Function-Name, X-Call-Id and
  X-Duration-Seconds. The callback's own answer is only recorded: the
  queue worker never retries a callback.
- With credentials, every request without the right basic auth gets 401.

Knobs for faults: `lose_callbacks` (names whose answers the queue worker
drops, e.g. a callback URL it cannot reach) and `callback_copies` (post
every callback that many times).
"""

from __future__ import annotations

import base64
import dataclasses
import http.server
import json
import threading
import time
import uuid
from typing import Any, Callable

from functions_stack import post


@dataclasses.dataclass
class Reply:
    """What a function answers: status, body, Content-Type."""

    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"


@dataclasses.dataclass
class Invocation:
    """One request the gateway received (or one call of a function)."""

    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclasses.dataclass
class Callback:
    """One callback the queue worker posted, and how it was answered."""

    url: str
    headers: dict[str, str]
    status: int
    answer: Any


class Gateway:
    """The gateway plus queue worker on 127.0.0.1; `url` is its base URL."""

    def __init__(self, user: str | None = None, password: str | None = None) -> None:
        self.user, self.password = user, password
        self.functions: dict[str, Callable[[Invocation], Any]] = {}
        self.requests: list[Invocation] = []
        self.calls: list[Invocation] = []
        self.callbacks: list[Callback] = []
        self.lose_callbacks: set[str] = set()
        self.callback_copies = 1
        self._lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        gateway = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                gateway._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def register(self, name: str, function: Callable[[Invocation], Any]) -> None:
        """Deploy `function`: it gets an Invocation and returns a Reply or a JSON value."""
        self.functions[name] = function

    def invocations(self, name: str) -> list[Invocation]:
        return [c for c in self.calls if c.path == name]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        for worker in self._workers:
            worker.join(10)

    def __enter__(self) -> "Gateway":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------- serving

    def _serve(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length)
        headers = dict(handler.headers.items())
        with self._lock:
            self.requests.append(Invocation(handler.path, headers, body))
        if not self._authorized(headers):
            self._answer(handler, 401, b"Unauthorized\n",
                         {"WWW-Authenticate": 'Basic realm="Restricted"'})
            return
        kind, _, name = handler.path.lstrip("/").partition("/")
        name = name.split("?")[0].strip("/")
        if kind == "function":
            if name not in self.functions:
                self._answer(handler, 404, f"error finding function {name}.openfaas-fn: "
                                           "not found\n".encode())
                return
            reply = self._invoke(name, headers, body)
            self._answer(handler, reply.status, _bytes(reply.body),
                         {"Content-Type": reply.content_type})
        elif kind == "async-function":
            call_id = str(uuid.uuid4())
            self._answer(handler, 202, b"", {"X-Call-Id": call_id,
                                             "X-Start-Time": str(time.time_ns())})
            worker = threading.Thread(target=self._queue_worker,
                                      args=(name, dict(headers, **{"X-Call-Id": call_id}),
                                            body), daemon=True)
            self._workers.append(worker)
            worker.start()
        else:
            self._answer(handler, 404, b"404 page not found\n")

    def _authorized(self, headers: dict[str, str]) -> bool:
        if self.password is None:
            return True
        expected = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return headers.get("Authorization") == f"Basic {expected}"

    def _invoke(self, name: str, headers: dict[str, str], body: bytes) -> Reply:
        call = Invocation(name, headers, body)
        with self._lock:
            self.calls.append(call)
        try:
            reply = self.functions[name](call)
        except Exception as exc:  # the function crashed: the watchdog answers 500
            return Reply(500, f"exit status 1\n{type(exc).__name__}: {exc}\n")
        if isinstance(reply, Reply):
            return reply
        return Reply(200, json.dumps(reply), "application/json")

    def _queue_worker(self, name: str, headers: dict[str, str], body: bytes) -> None:
        if name not in self.functions:
            return  # nothing is deployed under that name: no answer, ever
        started = time.monotonic()
        reply = self._invoke(name, headers, body)
        callback_url = headers.get("X-Callback-Url")
        if not callback_url or name in self.lose_callbacks:
            return
        sent = {"Content-Type": reply.content_type, "X-Function-Status": str(reply.status),
                "X-Function-Name": name, "X-Call-Id": headers["X-Call-Id"],
                "X-Duration-Seconds": f"{time.monotonic() - started:f}"}
        for _ in range(self.callback_copies):
            self._post_callback(callback_url, sent, _bytes(reply.body))

    def _post_callback(self, url: str, headers: dict[str, str], body: bytes) -> None:
        try:
            status, answer = post(url, body, headers=headers, timeout=30)
        except OSError as exc:  # unreachable: the queue worker logs it and moves on
            status, answer = 0, str(exc)
        with self._lock:
            self.callbacks.append(Callback(url, headers, status, answer))

    @staticmethod
    def _answer(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes,
                headers: dict[str, str] | None = None) -> None:
        handler.send_response(status)
        for key, value in (headers or {}).items():
            handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def _bytes(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def post_callback(url: str, body: bytes | str = b"", **headers: str) -> tuple[int, Any]:
    """POST to a callback URL as a forger (or a person with curl) would.

    Header names are keywords with "_" for "-": X_Function_Status="200".
    """
    return post(url, body, headers={k.replace("_", "-"): v for k, v in headers.items()},
                timeout=30)
