"""The dashboard's Flask app: `create_app(store_factory)`.

    from function_flow.dashboard import create_app
    app = create_app(lambda: SqliteStore(".function_flow/function_flow.db"))
    app.run(host="127.0.0.1", port=8765)

`function-flow dashboard` (cli/dashboard.py) builds it for the store the
settings select. The app holds one `Dashboard`: the store (opened on the
first request that needs it: an embedded database that does not exist yet
is "no runs yet", not an error), which backend it is, where jobs come from
(definitions.py), and the per-process token every action must carry
(guard.py). Pages are in views.py, JSON and actions in api.py.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from typing import Any, Callable, Mapping, Sequence

from flask import Flask, current_app, request
from werkzeug.exceptions import HTTPException, SecurityError

from function_flow.config import Settings
from function_flow.core.ports import Store
from function_flow.dashboard import guard, responses
from function_flow.errors import ConfigurationError, TransientBackendError
from function_flow.dashboard.definitions import Definitions
from function_flow.dashboard.live import LiveRecords

#: The key of the Dashboard in app.extensions.
EXTENSION = "function_flow_dashboard"
#: The largest request body an action takes (a form with an approval's data).
MAX_BODY_BYTES = 2 * 1024 * 1024


@dataclasses.dataclass
class Dashboard:
    """What every request of one dashboard shares."""

    store_factory: Callable[[], Store | None]
    #: "embedded" or "gcp": decides how actions reach the process running a run.
    kind: str
    description: str
    settings: Settings
    definitions: Definitions
    csrf_token: str = dataclasses.field(default_factory=lambda: secrets.token_urlsafe(32))
    _store: Store | None = None
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)
    #: Processes an action started (`function-flow redrive|resume`), reaped later.
    children: list[Any] = dataclasses.field(default_factory=list)
    #: The records of the runs shown, for live updates that read only changes.
    live: LiveRecords = dataclasses.field(default_factory=LiveRecords)

    def store(self) -> Store | None:
        """The store, opened on first use; None while there is none (no runs yet)."""
        with self._lock:
            if self._store is None:
                self._store = self.store_factory()
            return self._store

    def close(self) -> None:
        with self._lock:
            store, self._store = self._store, None
        if store is not None:
            store.close()


def create_app(store_factory: Callable[[], Store | None], *, kind: str = "embedded",
               description: str = "", settings: Settings | None = None,
               jobs: Mapping[str, Any] | None = None, files: Sequence[str] = (),
               allowed_hosts: Sequence[str] | None = guard.LOOPBACK_NAMES) -> Flask:
    """The dashboard app over the store `store_factory` opens.

    kind: the store's backend ("embedded" or "gcp"). jobs: Job objects by
    name, for runs this process executes (their actions use the job's own
    engine); files: workflow files to look jobs up in (definitions.py).
    allowed_hosts: the Host names requests may name (None: any); the
    default admits only loopback names, so a page of another site that
    resolves its name to 127.0.0.1 (DNS rebinding) is refused.
    """
    from function_flow.dashboard import api, views

    app = Flask(__name__, template_folder="templates", static_folder="static")
    app.config.update(SECRET_KEY=secrets.token_bytes(32), JSON_SORT_KEYS=False,
                      SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True,
                      MAX_CONTENT_LENGTH=MAX_BODY_BYTES)
    app.jinja_env.autoescape = True  # .svg and .html partials alike
    app.jinja_env.trim_blocks = app.jinja_env.lstrip_blocks = True
    app.extensions[EXTENSION] = Dashboard(
        store_factory=store_factory, kind=kind,
        description=description or f"the {kind} store", settings=settings or Settings.from_env(),
        definitions=Definitions(jobs, files))
    guard.install(app, allowed_hosts)
    app.context_processor(lambda: {"description": dashboard().description})
    app.register_blueprint(views.blueprint)
    app.register_blueprint(api.blueprint)

    @app.errorhandler(ConfigurationError)
    @app.errorhandler(TransientBackendError)
    def _unavailable(exc: Exception) -> Any:
        # The store cannot answer (an unreadable file, a missing index, an
        # unreachable Firestore): say why, once per request, no traceback.
        return responses.error(503, str(exc))

    @app.errorhandler(HTTPException)
    def _refused(exc: HTTPException) -> Any:
        # Flask's own refusals (no such path, a wrong method, a body over
        # MAX_CONTENT_LENGTH, a Host not trusted) in the dashboard's form:
        # JSON under /api/, else the error page, like every other error.
        if exc.code is None or exc.code < 400:
            return exc
        path = request.path[:200]
        message = {
            404: f"no page at {path!r} in this dashboard",
            405: f"{request.method} is not allowed on {path!r}: actions are POSTs from the "
                 "dashboard's pages; nothing was changed",
            413: f"the request body is over the dashboard's {MAX_BODY_BYTES:,} bytes; "
                 "nothing was changed",
        }.get(exc.code, exc.description or exc.name)
        if isinstance(exc, SecurityError):  # TRUSTED_HOSTS (guard.py): no page can link
            return responses.error(400, f"{exc.description} This dashboard answers only "
                                        "its loopback names (127.0.0.1, localhost) unless "
                                        "started with --host", page=False)
        return responses.error(exc.code, message)

    return app


def dashboard() -> Dashboard:
    """The Dashboard of the app handling the current request."""
    return current_app.extensions[EXTENSION]
