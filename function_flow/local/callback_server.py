"""The embedded backend's callback endpoint: a small HTTP server in this process.

Deployed, asynchronous answers (the OpenFaaS queue worker's POST) arrive at
the `callback` Cloud Function. The embedded backend has none, so when
FUNCTION_FLOW_CALLBACK_URL is not set, the first asynchronous OpenFaaS call
starts this server on 127.0.0.1 (a free port, a daemon thread) serving the
same handler (cloud/callback.py) for every job of the backend. It lives as
long as the process, or until the backend is closed: a gateway on this
machine (faasd, a port-forwarded cluster) can reach it, a remote one cannot
(give it a reachable FUNCTION_FLOW_CALLBACK_URL, e.g. `function-flow dev`).
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from function_flow.backends import Backend
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Store

logger = logging.getLogger("function_flow.local.callback_server")

#: The methods handed to cloud/callback.py, which answers each path's wrong
#: ones in its own words; any other gets the 405 of `not_allowed`.
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


class BackendSite:
    """callback.Site over every engine of one backend (one per job it runs)."""

    def __init__(self, backend: "Backend") -> None:
        self.backend = backend

    @property
    def store(self) -> "Store":
        return self.backend.store

    def engine_for(self, job_name: str) -> "Engine | None":
        return self.backend.engines.get(job_name)

    @property
    def keys(self) -> Any:
        """The backend's keys: configured, or this process's own (signing.Keys.for_process)."""
        from function_flow.cloud.delivery import receiver_keys

        return receiver_keys(self.backend, own_process=True)

    def describe(self) -> str:
        names = ", ".join(repr(name) for name in sorted(self.backend.engines)) or "none"
        return f"the jobs of this process ({names})"


class LocalCallbackServer:
    """Serves cloud/callback.py on 127.0.0.1, started on first use of `url()`."""

    def __init__(self, backend: "Backend", host: str = "127.0.0.1") -> None:
        self.site = BackendSite(backend)
        self.host = host
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def url(self) -> str:
        """The server's base URL ("http://127.0.0.1:PORT/"), starting it if needed."""
        with self._lock:
            if self._server is None:
                self._start()
            return f"http://{self.host}:{self._server.server_port}/"

    def _start(self) -> None:
        import flask
        from werkzeug.serving import WSGIRequestHandler, make_server

        from function_flow.cloud import callback, delivery

        app = flask.Flask("function_flow_callback")
        site = self.site

        @app.errorhandler(405)
        def not_allowed(error: Any) -> Any:  # a method no route takes: JSON, as the rest
            return delivery.HttpError(405, f"{flask.request.method} is not allowed: "
                                           "callbacks and approvals are POSTed").answer()

        @app.route("/", defaults={"path": ""}, methods=METHODS)
        @app.route("/<path:path>", methods=METHODS)
        def serve(path: str) -> Any:
            del path
            # An answer completes its attempt on this server's thread: the
            # in-process bus counts that as its work, so that job.wait sees
            # all of a run's end that an answer caused (Bus.beside).
            answers: list[Any] = []
            site.backend.bus.beside(
                lambda: answers.append(callback.handle(site, flask.request)))()
            return answers[0]

        class Quiet(WSGIRequestHandler):
            """No access line on the command's stderr (werkzeug's own handler
            writes one, colour codes and signed URL included): -v logs it."""

            def log_request(self, code: Any = "-", size: Any = "-") -> None:
                logger.debug("callback server: %s %s", self.requestline, code)

        self._server = make_server(self.host, 0, app, threaded=True, request_handler=Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="function-flow-callback", daemon=True)
        self._thread.start()
        logger.info("callbacks of asynchronous calls served on http://%s:%d/",
                    self.host, self._server.server_port)

    def close(self) -> None:
        """Stop serving; a later `url()` starts a new server."""
        with self._lock:
            server, thread = self._server, self._thread
            self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(5)
