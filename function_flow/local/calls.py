"""Calling the local stack's HTTP functions, as a client of the deployed ones would.

`function-flow dev` (local/stack.py) starts runs through `start`, ticks the
`poller` as Cloud Scheduler would, and pauses, resumes or cancels runs
through `control`: each is a JSON POST whose failure is one DevError line.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from typing import Any

from function_flow.local.processes import DevError


def post_json(url: str, body: Any, what: str, *, headers: dict[str, str] | None = None,
              timeout: float = 60.0) -> dict[str, Any]:
    """POST `body` as JSON to `url`; its JSON answer, or a DevError naming `what`."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json",
                                              **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise DevError(f"{what} answered {exc.code}: {detail}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DevError(f"{what} did not answer: {exc}") from None
    if not isinstance(answer, dict):
        raise DevError(f"{what} answered {answer!r}, not a JSON object")
    return answer
