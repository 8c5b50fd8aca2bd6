"""Answers in the form the client asked for: an HTML page, or JSON for scripts.

A request wants JSON when its path is under /api/ or it says
`Accept: application/json` (the page's script does). Errors are
`{"error": message}` with the status, or the error page with the same
message; neither ever shows a traceback, and a message is text, escaped
like everything else a template shows.
"""

from __future__ import annotations

from typing import Any

from flask import jsonify, make_response, render_template, request


def wants_json() -> bool:
    if request.path.startswith("/api/"):
        return True
    accept = request.accept_mimetypes
    return accept.best_match(["application/json", "text/html"]) == "application/json" \
        and accept["application/json"] > accept["text/html"]


def error(status: int, message: str, *, page: bool = True, **extra: Any) -> Any:
    """An error answer: nothing was done, and the message says why.

    page=False: JSON even for a browser (the error page links to the
    dashboard, which cannot be done for a Host it does not trust).
    """
    if wants_json() or not page:
        response = jsonify({"error": message, **extra})
        response.status_code = status
        return response
    return make_response(render_template("error.html", status=status, message=message,
                                         **extra), status)
