"""Who may act: actions refuse requests another site makes the browser send.

A dashboard on 127.0.0.1 is reachable from every page the browser opens,
so its buttons (POSTs) accept a request only when all of these hold:

- it carries this process's token (`csrf_token`, a form field, or the
  X-CSRF-Token header): a page of another origin cannot read it;
- `Sec-Fetch-Site`, when the browser sends it, is "same-origin" (or "none":
  typed by the user);
- `Origin`, when sent, is the dashboard's own scheme://host.

And every request, GET included, must name an allowed Host (Flask's
TRUSTED_HOSTS): only loopback names unless `--host` says otherwise, so a
site whose name resolves to 127.0.0.1 (DNS rebinding) cannot read pages,
token included. A refused request gets 403 and changes nothing.
"""

from __future__ import annotations

import hmac
from typing import Any, Sequence

from flask import Flask, request

from function_flow.dashboard import responses

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
TOKEN_FIELD = "csrf_token"
TOKEN_HEADER = "X-CSRF-Token"


def install(app: Flask, allowed_hosts: Sequence[str] | None) -> None:
    """Check every request of `app`, and give templates the token."""
    if allowed_hosts is not None:
        app.config["TRUSTED_HOSTS"] = list(allowed_hosts)

    @app.before_request
    def refuse_cross_site() -> Any:
        # A request no route takes (a wrong method or path) acts on nothing:
        # it gets its 404 or 405, which says more than a refusal would.
        if request.method in SAFE_METHODS or request.routing_exception is not None:
            return None
        from function_flow.dashboard.app import dashboard

        why = refusal(dashboard().csrf_token)
        if why is not None:
            return responses.error(403, f"refused: {why}; nothing was changed")
        return None

    @app.context_processor
    def token() -> dict[str, str]:
        from function_flow.dashboard.app import dashboard

        return {"csrf_token": dashboard().csrf_token}

    @app.after_request
    def headers(response: Any) -> Any:
        # No frames of this page on other sites (clickjacking), no scripts but ours.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
            "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
        return response


def refusal(token: str) -> str | None:
    """Why this POST is refused, or None when it may act."""
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"a {site} request (Sec-Fetch-Site); actions come from the dashboard's own pages"
    origin = request.headers.get("Origin")
    own = f"{request.scheme}://{request.host}"
    if origin is not None and origin != own:
        return f"a request from {origin[:100]!r}, not from the dashboard ({own})"
    sent = request.form.get(TOKEN_FIELD) if request.form else None
    sent = sent or request.headers.get(TOKEN_HEADER) or ""
    if not hmac.compare_digest(sent.encode(), token.encode()):
        return ("the request lacks this dashboard's token (reload the page: the token "
                "changes when the dashboard restarts)")
    return None
