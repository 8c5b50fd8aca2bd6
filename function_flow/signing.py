"""HMAC-SHA256 signatures of every message function_flow sends itself.

A signature covers a timestamp and the exact body bytes, as faas-flow signs
its requests:

    X-Function-Flow-Timestamp: 1767225600
    X-Function-Flow-Signature: sha256=<hex HMAC-SHA256 of b"1767225600." + body>

Over HTTP (completion callbacks, approvals, calls of remote functions) the
two values travel as those headers; on Pub/Sub (scheduling messages, remote
requests and their answers) as the attributes `function_flow_timestamp` and
`function_flow_signature`, over the message's data. The key is
FUNCTION_FLOW_HMAC_KEY (its UTF-8 bytes, as `openssl dgst -hmac "$KEY"`
uses it); during a rotation FUNCTION_FLOW_HMAC_PREVIOUS_KEY verifies too.
A message signed more than FUNCTION_FLOW_HMAC_TOLERANCE seconds (300) from
now is refused as a replay. There is no built-in key: the gcp backend and
`function-flow dev` refuse to start without one (ConfigurationError), and
only the embedded backend, whose messages never leave the process, makes a
random one for itself (`Keys.for_process`).

A receiver in Python checks a request with `verify(body, headers, key)`;
in any other language, compute the same HMAC and compare in constant time.
function_flow's own receivers all go through `Keys.verify`
(cloud/delivery.py's `check_signature`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
import time
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from function_flow.errors import ConfigurationError, FunctionFlowError

if TYPE_CHECKING:
    from function_flow.config import Settings

KEY_VARIABLE = "FUNCTION_FLOW_HMAC_KEY"
PREVIOUS_KEY_VARIABLE = "FUNCTION_FLOW_HMAC_PREVIOUS_KEY"
TOLERANCE_VARIABLE = "FUNCTION_FLOW_HMAC_TOLERANCE"
SIGNATURE_HEADER = "X-Function-Flow-Signature"
TIMESTAMP_HEADER = "X-Function-Flow-Timestamp"
#: The same two values where there are no headers: Pub/Sub attributes, URL queries.
SIGNATURE_ATTRIBUTE = "function_flow_signature"
TIMESTAMP_ATTRIBUTE = "function_flow_timestamp"
HEADERS = (TIMESTAMP_HEADER, SIGNATURE_HEADER)
ATTRIBUTES = (TIMESTAMP_ATTRIBUTE, SIGNATURE_ATTRIBUTE)
#: A shorter key can be guessed; `openssl rand -hex 32` makes a good one.
MIN_KEY_CHARS = 32
#: How old (or how far in the future) a signed request may be, by default.
DEFAULT_TOLERANCE_SECONDS = 300
_STAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(r"sha256=[0-9a-f]{64}")


class SignatureError(FunctionFlowError):
    """A request's signature is missing, malformed, too old or wrong."""


def check_key(key: str | bytes | None, where: str = KEY_VARIABLE) -> bytes:
    """The key as bytes; ConfigurationError saying what to do when it is unusable."""
    if key is None or not key:
        raise ConfigurationError(
            f"{where} is not set: it is the HMAC key that signs function_flow's messages "
            f"(scheduling messages, remote calls, callbacks) and lets their receivers check "
            f"them; set it to at least {MIN_KEY_CHARS} random characters, e.g. the output "
            "of `openssl rand -hex 32`, in every process that starts or runs the job (on "
            "Cloud Functions: --set-secrets "
            f"{KEY_VARIABLE}=SECRET:latest from Secret Manager)")
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


def _bytes(body: Any) -> bytes:
    """The body as sent: bytes. A str would be encoded by whoever sends it
    (and http.client does not use UTF-8), so it is refused, saying so."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return bytes(body)
    raise TypeError(f"the body to sign or verify must be the bytes sent, got "
                    f"{type(body).__name__}; pass body.encode() and send those bytes")


def sign(body: bytes, key: str | bytes, timestamp: int | None = None,
         names: tuple[str, str] = HEADERS) -> dict[str, str]:
    """The headers (or, with names=ATTRIBUTES, attributes) that sign `body` now."""
    body = _bytes(body)
    stamp = int(time.time() if timestamp is None else timestamp)
    return {names[0]: str(stamp), names[1]: signature(body, key, stamp)}


def verify(body: bytes, headers: Mapping[str, str], key: str | bytes, *,
           tolerance: float | None = None, now: float | None = None) -> None:
    """Raise SignatureError unless `headers` sign `body` with `key` within `tolerance`
    seconds (default: FUNCTION_FLOW_HMAC_TOLERANCE, else 300).

    `headers` may be any mapping; lookups try the header names as written and
    in lower case (a plain dict of a server's headers).
    """
    if tolerance is None:
        from function_flow.config import Settings

        tolerance = Settings.from_env().hmac_tolerance
    _verify(_bytes(body), headers, HEADERS, [check_key(key)], tolerance, now)


def is_signed(values: Mapping[str, str], names: tuple[str, str] = ATTRIBUTES) -> bool:
    """Whether `values` carry a signature at all (right or wrong)."""
    return any(_lookup(values, name) is not None for name in names)


@dataclasses.dataclass(frozen=True)
class Keys:
    """The keys of one process: `current` signs and verifies, `previous` only verifies.

    `ephemeral`: made at random for this process (the embedded backend
    without FUNCTION_FLOW_HMAC_KEY); nobody else can sign for it.
    """

    current: bytes = dataclasses.field(repr=False)
    previous: bytes | None = dataclasses.field(default=None, repr=False)
    tolerance: float = DEFAULT_TOLERANCE_SECONDS
    ephemeral: bool = False

    @classmethod
    def from_settings(cls, settings: "Settings") -> "Keys":
        """The configured keys; ConfigurationError naming the variable when missing."""
        previous = settings.hmac_previous_key
        return cls(check_key(settings.hmac_key),
                   check_key(previous, PREVIOUS_KEY_VARIABLE) if previous else None,
                   settings.hmac_tolerance)

    @classmethod
    def from_env(cls) -> "Keys":
        from function_flow.config import Settings

        return cls.from_settings(Settings.from_env())

    @classmethod
    def for_process(cls, settings: "Settings") -> "Keys":
        """The configured keys, or a random key of this process when none is set.

        Only for the embedded backend: its bus never leaves the process, and
        its callback server (OpenFaaS answers, approvals) then accepts only
        what this process signed.
        """
        if not settings.hmac_key:
            return cls(secrets.token_hex(32).encode("ascii"), None,
                       settings.hmac_tolerance, ephemeral=True)
        return cls.from_settings(settings)

    def sign(self, body: bytes, names: tuple[str, str] = HEADERS,
             timestamp: int | None = None) -> dict[str, str]:
        """The two values that sign `body` now, under `names` (HEADERS or ATTRIBUTES)."""
        return sign(body, self.current, timestamp, names)

    def verify(self, body: bytes, values: Mapping[str, str],
               names: tuple[str, str] = HEADERS, *, max_age: float | None = None,
               now: float | None = None) -> None:
        """Raise SignatureError unless `values` sign `body` with one of the keys.

        max_age: how old the signature may be (default: the tolerance);
        math.inf for a URL that stays valid as long as what it names waits.
        """
        keys = [self.current] + ([self.previous] if self.previous else [])
        try:
            _verify(body, values, names, keys, self.tolerance,
                    now, self.tolerance if max_age is None else max_age)
        except SignatureError as exc:
            if self.ephemeral and "does not match" in str(exc):
                raise SignatureError(
                    f"{exc}; this process has no {KEY_VARIABLE}, so only it can sign "
                    f"(set {KEY_VARIABLE} to sign requests for it)") from None
            raise


def _lookup(values: Mapping[str, str], name: str) -> str | None:
    value = values.get(name)
    return value if value is not None else values.get(name.lower())


def _verify(body: bytes, values: Mapping[str, str], names: tuple[str, str],
            keys: Iterable[bytes], tolerance: float, now: float | None,
            max_age: float | None = None) -> None:
    """The one check: present, well-formed, recent, and made by one of `keys`."""
    stamp_name, signature_name = names
    stamp, given = _lookup(values, stamp_name), _lookup(values, signature_name)
    if not stamp or not given:
        missing = " and ".join(name for name, value in zip(names, (stamp, given))
                               if not value)
        raise SignatureError(f"not signed: it has no {missing}")
    if not _STAMP.fullmatch(stamp.strip()):
        raise SignatureError(f"signature malformed: {stamp_name} {stamp[:40]!r} is not a "
                             "time in epoch seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    oldest = tolerance if max_age is None else max_age
    if current - timestamp > oldest:
        raise SignatureError(
            f"signature too old: signed {current - timestamp:.0f} s ago, more than the "
            f"{oldest:g} s of {TOLERANCE_VARIABLE} (a replay, or a wrong clock)")
    if timestamp - current > tolerance:
        raise SignatureError(
            f"signature from the future: signed {timestamp - current:.0f} s from now, more "
            f"than the {tolerance:g} s of {TOLERANCE_VARIABLE} (a wrong clock)")
    if not _SIGNATURE.fullmatch(given.strip()):
        raise SignatureError(f"signature malformed: {signature_name} is not "
                             "sha256=<64 hex digits>")
    given_bytes = given.strip().encode("ascii")
    if not any(hmac.compare_digest(given_bytes, signature(body, key, timestamp).encode())
               for key in keys):
        raise SignatureError("the signature does not match (forged, signed with another "
                             "key, or the body was changed)")

