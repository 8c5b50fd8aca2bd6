"""HMAC-SHA256 signatures of what function_flow sends: `sign` and `verify`.

A signature covers the timestamp and the exact body bytes:

    X-Function-Flow-Timestamp: 1767225600
    X-Function-Flow-Signature: sha256=<hex HMAC-SHA256 of b"1767225600." + body>

with the key in FUNCTION_FLOW_HMAC_KEY, shared with the receiver. The
timestamp lets a receiver refuse a replay of an old request
(`verify(..., tolerance=300)`). There is no built-in key: without one,
nothing is signed and whoever needs a signature says so (callbacks are
refused at start).

A receiver in Python checks a request with `verify(body, headers, key)`;
in any other language, compute the same HMAC and compare in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Mapping

from function_flow.errors import ConfigurationError, FunctionFlowError

KEY_VARIABLE = "FUNCTION_FLOW_HMAC_KEY"
SIGNATURE_HEADER = "X-Function-Flow-Signature"
TIMESTAMP_HEADER = "X-Function-Flow-Timestamp"
#: A shorter key can be guessed; `openssl rand -hex 32` makes a good one.
MIN_KEY_CHARS = 32
#: How old (or how far in the future) a signed request may be, by default.
DEFAULT_TOLERANCE_SECONDS = 300


class SignatureError(FunctionFlowError):
    """A request's signature is missing, malformed, too old or wrong."""


def check_key(key: str | bytes | None, where: str = KEY_VARIABLE) -> bytes:
    """The key as bytes; ConfigurationError saying what to do when it is unusable."""
    if key is None or not key:
        raise ConfigurationError(
            f"{where} is not set: it is the HMAC key that signs callbacks (their receiver "
            f"checks the {SIGNATURE_HEADER} header); set it to at least {MIN_KEY_CHARS} "
            "random characters, e.g. the output of `openssl rand -hex 32`, in every "
            "process that starts or runs the job")
    raw = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    if len(raw) < MIN_KEY_CHARS:
        raise ConfigurationError(
            f"{where} is {len(raw)} characters; use at least {MIN_KEY_CHARS} random "
            "characters, e.g. the output of `openssl rand -hex 32`")
    return raw


def signature(body: bytes, key: str | bytes, timestamp: int) -> str:
    """`sha256=<hex>` over `<timestamp>.<body>`."""
    mac = hmac.new(check_key(key), f"{int(timestamp)}.".encode("ascii") + body,
                   hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def sign(body: bytes, key: str | bytes, timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign `body` now (or at `timestamp`, epoch seconds)."""
    stamp = int(time.time() if timestamp is None else timestamp)
    return {TIMESTAMP_HEADER: str(stamp), SIGNATURE_HEADER: signature(body, key, stamp)}


def verify(body: bytes, headers: Mapping[str, str], key: str | bytes, *,
           tolerance: float = DEFAULT_TOLERANCE_SECONDS, now: float | None = None) -> None:
    """Raise SignatureError unless `headers` sign `body` with `key` within `tolerance`.

    `headers` may be any mapping; lookups try the header names as written and
    in lower case (a plain dict of a server's headers).
    """
    def header(name: str) -> str | None:
        return headers.get(name) or headers.get(name.lower())

    stamp, given = header(TIMESTAMP_HEADER), header(SIGNATURE_HEADER)
    if not stamp or not given:
        raise SignatureError(f"the request has no {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} "
                             "header: it is not signed")
    try:
        timestamp = int(stamp)
    except ValueError:
        raise SignatureError(f"{TIMESTAMP_HEADER} {stamp!r} is not a number") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise SignatureError(f"the request was signed at {timestamp}, more than "
                             f"{tolerance:g} s from now ({int(current)}): refused as a replay")
    if not hmac.compare_digest(given.strip(), signature(body, key, timestamp)):
        raise SignatureError("the signature does not match the body (wrong key, or the "
                             "body was changed)")
