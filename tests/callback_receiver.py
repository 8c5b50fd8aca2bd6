"""A completion-callback receiver for tests: a real HTTP server on 127.0.0.1.

It answers each POST with the next status of its script (the last one
repeats), records what arrived, and checks every signature with
function_flow.signing.verify, as a receiver would. With `hold_first`, it
answers its first POST only once `close()` is called or that many seconds
passed (a receiver too slow for the sender's timeout).
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

from function_flow import signing


class Receiver:
    def __init__(self, statuses: list[int], key: str, hold_first: float = 0.0) -> None:
        self.statuses = list(statuses)
        self.released = threading.Event()
        self.key = key
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 -- http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    signing.verify(body, dict(self.headers.items()), receiver.key)
                    signed = "ok"
                except signing.SignatureError as exc:
                    signed = str(exc)
                with receiver.lock:
                    index = len(receiver.posts)
                    status = receiver.statuses[min(index, len(receiver.statuses) - 1)]
                    receiver.posts.append({"body": json.loads(body), "raw": body,
                                           "headers": dict(self.headers.items()),
                                           "signature": signed, "answered": status})
                if index == 0 and hold_first:
                    receiver.released.wait(hold_first)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"received" if status < 300 else b"try again later")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook?x=1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def wait_for(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.posts) >= count:
                    return list(self.posts)
            time.sleep(0.02)
        raise AssertionError(f"{count} callback POST(s) expected, got {len(self.posts)}")

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
