"""Delivery shapes: what Google Cloud hands a function, and what it wants back.

Modelled on functions-framework-python's event_conversion.py: one module
knows every shape, so the entry points (functions.py) see only a message's
bytes and attributes, or a rejection, and hand back an outcome. In:

- a 1st gen background function gets `fn(event, context)` with
  `event = {"data": base64, "attributes": {...}}`;
- a 2nd gen function gets a CloudEvent whose data is
  `{"message": {...}, "subscription": ...}`;
- an HTTP function behind a push subscription gets a flask request whose
  JSON body is that same push envelope;
- `start`, a plain HTTP function, gets a flask request whose JSON body is
  the run's arguments.

A push subscription may also target an event or cloudevent function:
functions-framework turns the push envelope into the first or second form.

Out: None for the event forms (returning acknowledges, raising asks for a
redelivery); a `(json, status)` pair for HTTP, where a 2xx acknowledges.

Every internal message is signed (signing.py); `check_signature` is the one
check every receiver makes, here for every carrier: Pub/Sub attributes
(`signed_pubsub_payload`), HTTP headers (`posted_object(..., signed_by=)`) and a
URL's query. A message it refuses (unsigned, forged, signed with another
key, stale) raises Unsigned, a Rejected: logged in one line saying why,
acknowledged, never acted on.

Why malformed messages are acknowledged: Pub/Sub delivers a message until
it is, so one answered with an error would come back forever (docs/design.md
invariant 6). The one exception is an HTTP body that is not a push envelope
at all (400): Pub/Sub never sends one, so a person or a misconfigured client
did, and should be told.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import time
from typing import Any, Callable

from function_flow import signing
from function_flow.errors import TransientBackendError, transient_google_errors

logger = logging.getLogger("function_flow.cloud.delivery")

#: Largest body `start` reads. The engine refuses arguments over
#: core.values.MAX_VALUE_BYTES (900,000 bytes of compact JSON); this leaves
#: room for whitespace, and a larger body is refused before it is parsed.
MAX_START_BODY_BYTES = 1024 * 1024
_READ_CHUNK_BYTES = 64 * 1024


class Rejected(ValueError):
    """The delivery is not a message we can act on; acknowledge and drop it."""


class NotAnEnvelope(Rejected):
    """An HTTP body that is not a Pub/Sub push envelope at all: answered 400."""


class Unsigned(Rejected):
    """A message whose signature is missing, malformed, wrong or stale."""


class HttpError(Exception):
    """An HTTP request that cannot be served as sent: its status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status

    def answer(self) -> tuple[dict[str, Any], int]:
        return {"error": str(self)}, self.status


def is_http_request(obj: Any) -> bool:
    """A flask (werkzeug) request, as opposed to an event dict or a CloudEvent."""
    return hasattr(obj, "get_json") and hasattr(obj, "headers")


def kind_of(value: Any) -> str:
    """A JSON value's kind, for messages that say what arrived instead."""
    if value is None:
        return "null"
    for types, name in ((bool, "a boolean"), ((int, float), "a number"), (str, "a string"),
                        ((bytes, bytearray), "bytes"), (list, "a list"), (dict, "an object")):
        if isinstance(value, types):
            return name
    return f"a {type(value).__name__}"


# ------------------------------------------------------------- JSON


class _NotStandardJSON(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NotStandardJSON(f"{name} is not standard JSON; send null or a string instead")


def parse_json(data: bytes | str, what: str, *, allow_nan: bool = True) -> Any:
    """json.loads whose every failure is a ValueError naming `what`.

    Python's parser raises RecursionError on deep nesting (`[[[[...`), which
    no caller expects; and it accepts NaN and Infinity, which other
    languages' JSON does not (allow_nan=False refuses them).
    """
    try:
        return json.loads(data, parse_constant=None if allow_nan else _refuse_constant)
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply to be parsed as JSON") from None
    except _NotStandardJSON as exc:
        raise ValueError(f"{what}: {exc}") from None
    except ValueError as exc:  # includes a UnicodeDecodeError of bytes not UTF-8
        raise ValueError(f"{what} is not JSON: {exc}") from exc


# ------------------------------------------------------ Pub/Sub forms


def pubsub_payload(event: Any) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the message in any Pub/Sub delivery form.

    Raises Rejected (NotAnEnvelope for an HTTP body that is no push
    envelope) when there is no usable message; never anything else.
    """
    message = _message_of(event)
    return _data_of(message), _attributes_of(message)


def signed_pubsub_payload(event: Any, context: Any = None, keys: signing.Keys | None = None
                          ) -> tuple[bytes, dict[str, str]]:
    """pubsub_payload, refused with Unsigned unless its attributes sign its data.

    The signature's age is measured at the time Pub/Sub accepted the message
    (its publishTime; now when the delivery does not say), so a message that
    waited in a backlog or is delivered again is not refused, while an old
    message published again is.
    """
    data, attributes = pubsub_payload(event)
    check_signature(data, attributes, signing.ATTRIBUTES, keys,
                    at=publish_time(event, context))
    return data, attributes


def receiver_keys(backend: Any, *, own_process: bool = False) -> signing.Keys:
    """The keys that check what reaches a backend's entry points.

    The backend's (backends.embedded and gcp set them), else the settings'
    (ConfigurationError when there are none). A process's own random key
    (embedded, without FUNCTION_FLOW_HMAC_KEY) checks only what this
    process sent itself: `own_process`, its callback server.
    """
    keys = getattr(backend, "keys", None)
    if keys is None or (keys.ephemeral and not own_process):
        return signing.Keys.from_env()
    return keys


def publish_time(event: Any, context: Any = None) -> float | None:
    """When Pub/Sub accepted the message (epoch seconds), if the delivery says.

    A time in the future (beyond a clock's error) is not believed: a sender
    that can reach an HTTP endpoint could write anything there.
    """
    try:
        message = _message_of(event)
    except Rejected:
        return None
    stamp = message.get("publishTime") or message.get("publish_time")
    if stamp is None and context is not None:  # 1st gen: the context's timestamp
        stamp = context.get("timestamp") if isinstance(context, dict) \
            else getattr(context, "timestamp", None)
    if not isinstance(stamp, str):
        return None
    try:
        parsed = datetime.datetime.fromisoformat(stamp.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:  # RFC 3339 always has a zone; assume UTC without one
        parsed = parsed.replace(tzinfo=datetime.timezone.utc)
    when = parsed.timestamp()
    return when if when <= time.time() + signing.DEFAULT_TOLERANCE_SECONDS else None


def check_signature(body: bytes, values: Any, names: tuple[str, str] = signing.HEADERS,
                    keys: signing.Keys | None = None, *, max_age: float | None = None,
                    at: float | None = None) -> None:
    """Raise Unsigned unless `values` (attributes, headers, a query) sign `body`.

    keys: the receiver's (default: the settings', ConfigurationError when
    FUNCTION_FLOW_HMAC_KEY is missing: the deployment's fault, so the
    message is not acknowledged and comes again once it is fixed).
    at: the time to measure the signature's age at (default: now).
    """
    keys = keys or signing.Keys.from_env()
    try:
        keys.verify(body, values, names, max_age=max_age, now=at)
    except signing.SignatureError as exc:
        raise Unsigned(str(exc)) from None


def _message_of(event: Any) -> dict[str, Any]:
    if is_http_request(event):
        message = push_envelope(event)["message"]
    elif isinstance(event, dict):
        # The message itself (1st gen), or a push envelope that reached an
        # event function unconverted.
        message = event if "data" in event or "message" not in event else event["message"]
    elif getattr(event, "data", None) is not None or hasattr(event, "get_attributes"):
        data = getattr(event, "data", None)  # a CloudEvent
        if not isinstance(data, dict) or "message" not in data:
            raise Rejected(f"CloudEvent carries no Pub/Sub message (its data is {kind_of(data)})")
        message = data["message"]
    else:
        raise Rejected(f"unsupported event type {type(event).__name__}")
    if not isinstance(message, dict):
        raise Rejected(f"the Pub/Sub message is {kind_of(message)}, not an object")
    return message


def push_envelope(request: Any) -> dict[str, Any]:
    """The JSON body of a push request: an object with a "message"."""
    try:
        envelope = parse_json(request.get_data(cache=True), "request body")
    except ValueError as exc:
        raise NotAnEnvelope(f"request body is not a Pub/Sub push envelope: {exc}") from exc
    if not isinstance(envelope, dict) or "message" not in envelope:
        raise NotAnEnvelope(
            f"request body is not a Pub/Sub push envelope (it is {kind_of(envelope)} "
            "without a \"message\"); point a Pub/Sub push subscription at this URL, "
            "or call `start` to start a run")
    return envelope


def _data_of(message: dict[str, Any]) -> bytes:
    raw = message.get("data")
    if raw is None:
        raise Rejected("the Pub/Sub message has no data")
    if isinstance(raw, (bytes, bytearray)):
        raw = bytes(raw).decode("ascii", "replace")
    if not isinstance(raw, str):
        raise Rejected(f"message data is {kind_of(raw)}, not a base64 string")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Rejected(f"message data is not base64: {exc}") from exc


def _attributes_of(message: dict[str, Any]) -> dict[str, str]:
    """Pub/Sub attributes are strings to strings; anything else is dropped."""
    attributes = message.get("attributes")
    if not isinstance(attributes, dict):
        return {}
    return {k: v for k, v in attributes.items() if isinstance(k, str) and isinstance(v, str)}


# --------------------------------------------------------- plain HTTP


def posted_object(request: Any, limit: int, example: str,
                  signed_by: Callable[[], signing.Keys] | None = None,
                  what: str = "this request") -> dict[str, Any]:
    """The JSON object a request POSTs: HttpError 405, 413 or 400 saying why not.

    `example` shows the body expected ('{"token": "..."}') in the errors.
    Standard JSON only (no NaN): the sender may be any language's client.
    signed_by: the body must be signed in its headers by these keys (asked
    for once the body is read): HttpError 401 when it is not. `what` names
    the body in the 413 ("an approval").
    """
    if request.method != "POST":
        raise HttpError(405, f"{request.method} is not allowed: POST a JSON body like "
                             f"{example}")
    raw = http_body(request, limit, what)
    if signed_by is not None:
        try:
            check_signature(raw, request.headers, signing.HEADERS, signed_by())
        except Unsigned as exc:
            raise HttpError(401, f"{exc}: sign the body with {signing.KEY_VARIABLE} "
                                 f"({signing.TIMESTAMP_HEADER} and "
                                 f"{signing.SIGNATURE_HEADER} headers); nothing was changed"
                            ) from None
    try:
        body = parse_json(raw, "request body", allow_nan=False)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc
    if not isinstance(body, dict):
        raise HttpError(400, f"the body must be a JSON object like {example}, got "
                             f"{kind_of(body)}")
    return body


def http_body(request: Any, limit: int = MAX_START_BODY_BYTES,
              what: str = "a run's arguments") -> bytes:
    """The request's body, refused with 413 before it is parsed when over `limit`.

    Content-Length is checked first, so a big upload is refused unread; the
    body is then read only up to one byte past the limit, since a chunked
    request has no Content-Length and a server may pass on more than it says.
    """
    declared = request.content_length
    if declared is not None and declared > limit:
        raise HttpError(413, _too_large(declared, limit, what))
    body = getattr(request, "_cached_data", None)  # someone read it with cache=True
    if body is None:
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = request.stream.read(min(_READ_CHUNK_BYTES, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
    if len(body) > limit:
        raise HttpError(413, _too_large(None, limit, what))
    return body


def _too_large(size: int | None, limit: int, what: str) -> str:
    said = f"{size:,} bytes, more than" if size is not None else "more than"
    return (f"request body is {said} the {limit:,} bytes {what} may take; "
            "store large data elsewhere (a gs:// object) and pass its location")


def run_arguments(request: Any) -> dict[str, Any]:
    """The arguments of a start request: its JSON object body (empty: none).

    Raises HttpError: 413 for a body too large, 400 for one that is not a
    standard JSON object (NaN, Infinity and deep nesting included).
    """
    if not is_http_request(request):
        raise HttpError(400, f"start is an HTTP function; it got {kind_of(request)}: deploy "
                             "it with --trigger-http")
    body = http_body(request)
    if not body.strip():
        return {}
    try:
        args = parse_json(body, "request body", allow_nan=False)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc
    if not isinstance(args, dict):
        raise HttpError(400, f"run arguments must be a JSON object, got {type(args).__name__}")
    return args


# ----------------------------------------------------------- outcomes


def acknowledge(event: Any, outcome: str) -> Any:
    """What to return when done (or dropped): JSON for HTTP, None otherwise."""
    if is_http_request(event):
        return {"outcome": outcome}, 200
    return None


def is_transient(exc: BaseException) -> bool:
    """Errors worth a redelivery: the store or Pub/Sub may answer next time."""
    return isinstance(exc, (TransientBackendError, *transient_google_errors()))


def not_done(event: Any, what: str, exc: Exception) -> Any:
    """Log an error that must not be acknowledged, and answer so.

    An event function raises (Pub/Sub, or functions-framework answering a
    push with 500, delivers again); an HTTP function answers 503 for a
    transient backend error and 500 for anything else, in JSON either way.
    Called from an `except` block with the exception it caught.
    """
    transient = is_transient(exc)
    if transient:
        logger.warning("%s: transient backend error, will be redelivered: %s", what, exc)
    else:
        logger.error("%s: unexpected error, will be redelivered", what, exc_info=exc)
    if not is_http_request(event):
        raise exc
    if transient:
        return {"error": f"backend unavailable, retry later: {exc}"}, 503
    return {"error": f"internal error ({type(exc).__name__}: {exc}); the function's "
                     "logs have the traceback"}, 500
