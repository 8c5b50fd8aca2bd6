"""Large values by reference: results and arguments over a threshold live in blobs.

A record keeps a value of up to `inline_limit` bytes of compact JSON itself
(a Firestore document holds at most 1 MiB, and every record is read whole
by each step that touches it). A larger value is written to the backend's
`ports.Blobs` (Cloud Storage, or a local directory) and the record keeps a
small reference instead:

    {"function_flow_blob": {"key": ..., "bytes": ..., "sha256": ..., "location": ...}}

Readers (`job.get_task_result`, `job.get_arguments`, what a remote task
sends) get the value back through `Payloads.load`; people reading a record
(`function-flow status`) see `describe`'s summary.

Order is what keeps this safe. The blob is written before the transaction
that records its reference, under a key no other write uses (a new random
id each time, inside the attempt's own folder), so a committed reference
always names a complete blob, and a retried or duplicated attempt never
overwrites what another attempt's record references. A blob whose
reference never committed is garbage: deleted at once when that is
certain (`discard`), else with its run. Every blob of a run lives under
`run_prefix(run_id)`, and whatever deletes a run deletes that prefix.

A value that looks like a reference (a dict whose only key is
REFERENCE_FIELD) is always stored as a blob, so a record holding that shape
always holds a reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import urllib.parse
import uuid
from typing import Any, Callable

from function_flow.core.ports import BlobNotFoundError, Blobs
from function_flow.core.records import RunRecord
from function_flow.core.values import MAX_VALUE_BYTES, json_text
from function_flow.errors import PayloadMissingError

#: The key of a reference, in place of the value in a record.
REFERENCE_FIELD = "function_flow_blob"
#: Values up to this many bytes of compact JSON stay in their record.
DEFAULT_INLINE_LIMIT_BYTES = 256 * 1024
#: What to set when a value is too large for a record and there is no blob store.
BUCKET_SETTING = "FUNCTION_FLOW_BUCKET"
#: Values `store` keeps without measuring them: they are JSON as they are,
#: and at most _SHORT_JSON bytes of it (a character is at most 6 bytes of JSON).
_SMALL_INT, _SHORT_TEXT = 2 ** 63, 1024
_SHORT_JSON = 6 * _SHORT_TEXT + 2

#: Longest id kept readable in a key; longer ones are hashed (file names
#: have at most 255 bytes).
_MAX_COMPONENT = 120


def run_prefix(run_id: str) -> str:
    """The folder of every blob of a run: `runs/<run_id>/`."""
    return f"runs/{_component(run_id)}/"


def args_key(run_id: str) -> str:
    """A new key for a run's arguments."""
    return f"{run_prefix(run_id)}args/{uuid.uuid4().hex}.json"


def result_key(run_id: str, task_id: str, attempt: int) -> str:
    """A new key for a result of one attempt; never the key of another write."""
    return (f"{run_prefix(run_id)}tasks/{_component(task_id)}/"
            f"{int(attempt)}-{uuid.uuid4().hex}.json")


def _component(text: str) -> str:
    """An id as one path segment: no '/', never '.' or '..', not too long.

    Deterministic, so a run's prefix is the same at every write and at its
    deletion; distinct ids give distinct segments (quoting is injective,
    and hashed ones carry a marker quoting never produces).
    """
    quoted = urllib.parse.quote(text, safe="")
    if quoted in (".", "..") or len(quoted) > _MAX_COMPONENT:
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return f"{quoted[:40].strip('.')}%%{digest}"
    return quoted


def is_reference(value: Any) -> bool:
    """Whether a stored value is a reference to a blob."""
    return isinstance(value, dict) and len(value) == 1 and REFERENCE_FIELD in value \
        and isinstance(value[REFERENCE_FIELD], dict)


def describe(value: Any) -> str:
    """A reference for people: its size and where it is."""
    blob = value[REFERENCE_FIELD]
    size = blob.get("bytes")
    size_text = f"{size:,} bytes of JSON" if isinstance(size, int) else "JSON"
    return f"<{size_text} in {blob.get('location') or blob.get('key')}>"


class Payloads:
    """Decides where each value lives: in its record, or in a blob the record references.

    blobs: the backend's blob store; None where it has none (Google Cloud
    without a bucket): values then stay in their record up to the record
    limit (MAX_VALUE_BYTES), and larger ones are refused, naming the
    setting that gives a blob store.
    """

    def __init__(self, blobs: Blobs | None = None,
                 inline_limit: int = DEFAULT_INLINE_LIMIT_BYTES) -> None:
        if not 0 <= inline_limit <= MAX_VALUE_BYTES:
            raise ValueError(f"the inline limit must be 0 to {MAX_VALUE_BYTES:,} bytes "
                             f"(what a record can hold), got {inline_limit!r}")
        self.blobs = blobs
        self.inline_limit = inline_limit

    def store(self, what: str, value: Any, key: str | Callable[[], str], *,
              allow_nan: bool = True) -> Any:
        """What a record keeps for `value`: the value itself, or a reference to a
        blob just written under `key` (or the key `key()` makes, only then).

        Measures the value once (its compact JSON text, which is also what
        the blob holds). Raises TypeError or ValueError saying what to do
        when the value cannot be stored; the blob store's own errors pass.
        """
        if self.inline_limit >= _SHORT_JSON and (
                value is None or value is True or value is False
                or (type(value) is int and -_SMALL_INT < value < _SMALL_INT)
                or (type(value) is str and len(value) <= _SHORT_TEXT)):
            return value  # what most bodies return: stays as it is, in the record
        text = json_text(what, value, allow_nan=allow_nan)
        size = len(text)  # ASCII: characters are bytes
        shaped = is_reference(value)
        if size <= self.inline_limit and not shaped:
            return json.loads(text)
        if self.blobs is None:
            if size <= MAX_VALUE_BYTES and not shaped:
                return json.loads(text)
            raise ValueError(
                f"{what} is {size:,} bytes of JSON, more than the {MAX_VALUE_BYTES:,} a "
                f"record can hold, and this backend has no blob store for larger values: "
                f"set {BUCKET_SETTING} to a Cloud Storage bucket (or store the data "
                "elsewhere, a gs:// object, and return its location)")
        data = text.encode("ascii")
        if not isinstance(key, str):
            key = key()
        self.blobs.put(key, data)
        return {REFERENCE_FIELD: {"key": key, "bytes": size,
                                  "sha256": hashlib.sha256(data).hexdigest(),
                                  "location": self.blobs.location(key)}}

    def load(self, value: Any, what: str) -> Any:
        """The value a record keeps: `value` itself, or the blob it references.

        `what` names the value ("the result of task 'a' of run R"); a
        missing or damaged blob raises PayloadMissingError saying so.
        """
        if not is_reference(value):
            return value
        blob = value[REFERENCE_FIELD]
        key = str(blob.get("key"))
        if self.blobs is None:
            raise PayloadMissingError(
                f"{what} is stored in a blob ({describe(value)}), and this backend has no "
                f"blob store to read it from: set {BUCKET_SETTING} to the bucket it was "
                "written to", key)
        try:
            data = self.blobs.get(key)
        except BlobNotFoundError:
            raise PayloadMissingError(
                f"{what} is stored in blob {key!r}, which is missing from "
                f"{self.blobs.location(key)}: it was deleted (cleanup_expired_jobs deletes "
                "a run's blobs with it), or the blob store settings point elsewhere than "
                "when it was written", key) from None
        digest = blob.get("sha256")
        if digest is not None and hashlib.sha256(data).hexdigest() != digest:
            raise PayloadMissingError(
                f"{what} is stored in blob {key!r} at {self.blobs.location(key)}, whose "
                "content is not what was written (its SHA-256 differs)", key)
        return json.loads(data)

    def with_args(self, run: RunRecord) -> RunRecord:
        """`run` with its arguments themselves, read from their blob if need be."""
        if not is_reference(run.args):
            return run
        return dataclasses.replace(
            run, args=self.load(run.args, f"the arguments of run {run.run_id!r}"))

    def discard(self, value: Any) -> None:
        """Delete the blob a value references: one whose reference never committed."""
        if self.blobs is not None and is_reference(value):
            self.blobs.delete(str(value[REFERENCE_FIELD].get("key")))

    def references(self, value: Any, key: str) -> bool:
        """Whether a stored value is the reference to blob `key`."""
        return is_reference(value) and value[REFERENCE_FIELD].get("key") == key

    def delete_run(self, run_id: str) -> None:
        """Delete every blob of a run (before its records: a failure is retried
        by deleting the run again, and no blob outlives its run unseen)."""
        if self.blobs is not None:
            self.blobs.delete_run(run_id)
