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


#: Deepest nesting of lists and dicts a stored value may have. Python's
#: json and pickle give up near 1,000 and 500 levels, less the stack in
#: use where they run, and a record wraps its values in a few levels more:
#: a fixed limit well below both is the same wherever a value is checked
#: and written (a value that passed near the edge failed later, in the
#: store, again and again).
MAX_DEPTH = 256


def json_text(what: str, value: Any, *, allow_nan: bool = True) -> str:
    """`value` as compact JSON (ASCII, so its length is its size in bytes).

    Raises TypeError or ValueError saying what to return instead. Results
    may hold NaN and infinities (a model's loss can be NaN), which Python's
    json round-trips; arguments come from clients of other languages and
    must be standard JSON (allow_nan=False).
    """
    try:
        text = json.dumps(value, allow_nan=allow_nan, separators=(",", ":"))
    except RecursionError:
        raise ValueError(too_deep(what)) from None
    except (TypeError, ValueError) as exc:
        kind = type(value).__name__
        article = "an" if kind[:1].lower() in "aeiou" else "a"
        raise TypeError(
            f"{what} is {article} {kind} that cannot be stored ({exc}); use "
            "JSON-compatible data (dict, list, str, number, bool, None)") from exc
    # Only a text with that many brackets can be that deep: most values are
    # not walked at all.
    if text.count("[") + text.count("{") > MAX_DEPTH and nesting(value) > MAX_DEPTH:
        raise ValueError(too_deep(what))
    return text


def _is(what: str) -> str:
    return "are" if what.endswith("arguments") else "is"


def too_deep(what: str) -> str:
    return (f"{what} {_is(what)} nested more than {MAX_DEPTH} levels deep (lists and dicts) and "
            "cannot be stored; return a flatter value (a list of rows, a dict of lists)")


def nesting(value: Any) -> int:
    """How deep lists and dicts nest in `value` (1 for [1, 2]), walked without
    recursion; it stops counting past MAX_DEPTH."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_DEPTH:
            break
        pending.extend((child, depth + 1) for child in children)
    return deepest


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
    return (f"{what} {_is(what)} {size:,} bytes of JSON, more than the {limit:,} {holder} can "
            "hold; store large data elsewhere (a file, a gs:// object) and return its "
            "location")
