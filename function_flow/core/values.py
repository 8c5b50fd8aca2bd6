"""What a stored value may be: JSON, within the size a record or message holds.

One rule for every backend (docs/design.md, "Large payloads"), so a workflow
that runs locally also runs deployed.
"""

from __future__ import annotations

import json
from typing import Any


#: Largest result or argument set a record holds, as compact JSON text. A
#: Firestore document holds at most 1 MiB; results never travel in
#: messages. The same limit on every backend, so a workflow that runs
#: locally also runs deployed. Larger values are stored as blobs the record
#: references (core/payloads.py), where the backend has a blob store.
MAX_VALUE_BYTES = 900_000


def json_text(what: str, value: Any, *, allow_nan: bool = True) -> str:
    """`value` as compact JSON (ASCII, so its length is its size in bytes).

    Raises TypeError or ValueError saying what to return instead. Results
    may hold NaN and infinities (a model's loss can be NaN), which Python's
    json round-trips; arguments come from clients of other languages and
    must be standard JSON (allow_nan=False).
    """
    try:
        return json.dumps(value, allow_nan=allow_nan, separators=(",", ":"))
    except RecursionError:
        raise ValueError(
            f"{what} is nested too deeply (Python's json writes about 1,000 levels) and "
            "cannot be stored; return a flatter value (a list of rows, a dict of "
            "lists)") from None
    except (TypeError, ValueError) as exc:
        kind = type(value).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise TypeError(
            f"{what} is {article} {kind} that cannot be stored ({exc}); use "
            "JSON-compatible data (dict, list, str, number, bool, None)") from exc


#: Largest JSON value a remote request or answer may carry: a Pub/Sub
#: message holds 10 MB, and its envelope and attributes need some of it.
MAX_MESSAGE_VALUE_BYTES = 9_000_000


def storable(what: str, value: Any, *, allow_nan: bool = True,
             limit: int = MAX_VALUE_BYTES) -> Any:
    """Results and arguments must survive every backend: JSON, at most `limit` bytes
    (what a record holds; MAX_MESSAGE_VALUE_BYTES for what travels in a message).

    Returns the value as JSON gives it back (tuples become lists). Raises
    TypeError or ValueError saying what to return instead.
    """
    text = json_text(what, value, allow_nan=allow_nan)
    if len(text) > limit:
        raise ValueError(too_large(what, len(text), limit))
    return json.loads(text)


def too_large(what: str, size: int, limit: int = MAX_VALUE_BYTES) -> str:
    """Why a value of `size` bytes of JSON cannot be kept in a record (or message)."""
    holder = "a record" if limit == MAX_VALUE_BYTES else "a Pub/Sub message"
    return (f"{what} is {size:,} bytes of JSON, more than the {limit:,} {holder} can "
            "hold; store large data elsewhere (a file, a gs:// object) and return its "
            "location")
