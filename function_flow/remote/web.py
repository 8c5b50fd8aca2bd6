"""HTTP shared by the OpenFaaS and HTTP adapters, and by the callback that answers them.

One POST (`post`: the Function Flow payload as JSON, the run id header,
bounded in time and size) and one rule for what an answer means
(`result_of`): a 2xx body is the task's result, anything else fails the
attempt with the status and the start of the body. The OpenFaaS queue
worker's callback carries a function's answer the same way (status in
X-Function-Status), so cloud/callback.py applies the same rule.

What a 2xx body becomes: empty -> None; a body that parses as standard JSON
-> the decoded value (whatever its Content-Type says: OpenFaaS's Python
templates answer JSON as text/plain); any other UTF-8 body -> the text.
A body that is not UTF-8 (an image) fails the attempt: a result is JSON.

`requests` is imported on first use, so defining a workflow does not load it.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from function_flow import tracing
from function_flow.core.ports import Request

#: Names the run on every outgoing call, so a remote function can log it.
RUN_ID_HEADER = "X-Function-Flow-Run-Id"
#: How long a call may take when neither the call nor the task says.
DEFAULT_TIMEOUT_SECONDS = 300.0
#: How much of a failed answer's body the attempt's error quotes.
MAX_ERROR_BODY_CHARS = 500
#: Largest answer read; results are stored, and a store holds about 1 MB.
MAX_ANSWER_BYTES = 10 * 1024 * 1024


class RemoteCallError(RuntimeError):
    """A remote function failed, answered an error, or could not be reached.

    Raised inside the attempt, so it fails it (and retries apply); its
    message is what the task's error shows.
    """


@dataclasses.dataclass(frozen=True)
class Answer:
    """An HTTP answer: status, headers (case-insensitive lookups), body."""

    status: int
    headers: Any
    body: bytes

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


def payload(request: Request) -> bytes:
    """What every remote function receives: Function Flow's JSON payload."""
    return json.dumps(request.function_flow_payload()).encode("utf-8")


def post(what: str, url: str, request: Request, *, headers: dict[str, str] | None = None,
         auth: tuple[str, str] | None = None, timeout: float, keys: Any = None) -> Answer:
    """POST the request's payload to `url`; raise RemoteCallError if no answer comes.

    `what` names the remote function in errors. Redirects are not followed
    (requests would turn the POST into a GET): a 3xx is an answer, and
    result_of fails it. The body is read up to MAX_ANSWER_BYTES. `keys`
    (signing.Keys) sign it, so the function can check who called
    (signing.verify); None: unsigned (the embedded backend without a key).
    """
    body = payload(request)
    signed = keys.sign(body) if keys is not None else {}
    return post_bytes(what, url, body, request.run_id, headers={**signed, **(headers or {})},
                      auth=auth, timeout=timeout)


def post_bytes(what: str, url: str, data: bytes, run_id: str, *,
               headers: dict[str, str] | None = None,
               auth: tuple[str, str] | None = None, timeout: float) -> Answer:
    """POST JSON `data` as `post` does (also the completion callback's POST)."""
    import requests

    sent = tracing.inject({"Content-Type": "application/json", RUN_ID_HEADER: run_id,
                           **(headers or {})})  # and the current span's traceparent
    try:
        with requests.post(url, data=data, headers=sent, auth=auth,
                           timeout=timeout, allow_redirects=False, stream=True) as response:
            body = _read(response, what)
            return Answer(response.status_code, response.headers, body)
    except requests.Timeout:
        raise RemoteCallError(f"{what} did not answer within {timeout:g} s") from None
    except requests.RequestException as exc:
        if "timed out" in str(exc).lower():  # a read timeout in the body's stream
            raise RemoteCallError(f"{what} did not finish its answer within {timeout:g} s"
                                  ) from None
        raise RemoteCallError(f"cannot reach {what}: {_first_line(exc)}") from None


def _read(response: Any, what: str) -> bytes:
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_ANSWER_BYTES:
            raise RemoteCallError(
                f"{what} answered more than {MAX_ANSWER_BYTES:,} bytes; a task's result is "
                "stored, so return a reference (a gs:// path) to large data instead")
        chunks.append(chunk)
    return b"".join(chunks)


def result_of(what: str, status: int, body: bytes, content_type: str | None = None,
              hint: str = "") -> Any:
    """The task's result from an answer, or RemoteCallError saying why there is none.

    hint: what to check, added to the error of a non-2xx answer.
    """
    if not 200 <= status < 300:
        text = body.decode("utf-8", "replace").strip()
        head = text[:MAX_ERROR_BODY_CHARS] + ("..." if len(text) > MAX_ERROR_BODY_CHARS else "")
        said = f": {head}" if head else " with an empty body"
        raise RemoteCallError(f"{what} answered HTTP {status}{said}{hint}")
    if not body.strip():
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise RemoteCallError(
            f"{what} answered {len(body):,} bytes that are not UTF-8 text (Content-Type "
            f"{content_type or 'unset'}); a task's result must be JSON or text") from None
    try:
        # NaN and Infinity too: what Python's json.dumps writes (a result may
        # hold them), as a @remote.function's answer does; a BOM is no text.
        return json.loads(text.lstrip("\ufeff"))
    except (ValueError, RecursionError):
        return text


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__
