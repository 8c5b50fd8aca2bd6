"""The tests' HMAC key, and signing what a test delivers by hand (signing.py)."""

from __future__ import annotations

from function_flow import signing

#: The key of every test on the gcp backend (emulators.py's firestore_env and
#: gcp_env set it) and of the entry points tests drive in-process.
TEST_HMAC_KEY = "test-hmac-key-0123456789abcdef0123456789abcdef"
KEYS = signing.Keys(TEST_HMAC_KEY.encode())


def signed(data: bytes | str, attributes: dict[str, str] | None = None,
           key: str = TEST_HMAC_KEY, timestamp: int | None = None) -> dict[str, str]:
    """`attributes` plus the two that sign `data`, as a Topic publishes them."""
    raw = data.encode() if isinstance(data, str) else data
    return {**(attributes or {}),
            **signing.sign(raw, key, timestamp, signing.ATTRIBUTES)}


def signed_headers(body: bytes | str, key: str = TEST_HMAC_KEY,
                   timestamp: int | None = None) -> dict[str, str]:
    """The headers that sign an HTTP body."""
    raw = body.encode() if isinstance(body, str) else body
    return signing.sign(raw, key, timestamp)
