"""The run context: small key/values the task bodies of one run share.

    @job.task(task_id="extract")
    def extract(task, job):
        job.context.set("rows", 1200)

    @job.task(task_id="report", deps=["extract"])
    def report(task, job):
        return job.context.get("rows", 0)

faas-flow's context Set/Get/Del. The context belongs to the current run
(`job.id`: inside a body, the run it executes in) and is deleted with the
run (`delete_run`, `cleanup_expired_jobs`), not when the run ends, so it
can still be read afterwards. Each key is stored apart (ports.Store,
`set_context`), so bodies running at once that set different keys never
lose each other's values; for one key the last write wins. Values survive
a task's retries: nothing is rolled back when an attempt fails.

Values are JSON (tuples come back as lists) and small: a value is meant to
be a count, a name, a location, not data; large data belongs in a file or
a gs:// object whose location the context can hold.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Iterator

from function_flow.core.values import json_text
from function_flow.errors import ContextError

if TYPE_CHECKING:
    from function_flow.core.ports import Store
    from function_flow.tasks import Job

#: Longest key, in characters (Firestore document ids hold 1500 bytes).
MAX_KEY_LENGTH = 256
#: Largest value, in bytes of JSON.
MAX_VALUE_BYTES = 64 * 1024

_MISSING = object()


def check_key(key: Any) -> str:
    """`key` if it is a usable context key; else ContextError saying why."""
    if not isinstance(key, str):
        raise ContextError(f"run context key {key!r} is of type {type(key).__name__}; "
                           "keys are strings")
    if not key or len(key) > MAX_KEY_LENGTH:
        raise ContextError(f"run context key {key[:40]!r}{'...' if len(key) > 40 else ''} "
                           f"has {len(key)} characters; keys have 1 to {MAX_KEY_LENGTH}")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise ContextError(f"run context key {key!r} is not valid Unicode text "
                           "(it holds a lone surrogate)") from None
    return key


def value_text(key: str, value: Any) -> str:
    """The JSON text stored for `value`; ContextError naming the key if it cannot be."""
    what = f"run context value of key {key!r}"
    try:
        text = json_text(what, value)
    except (TypeError, ValueError) as exc:
        raise ContextError(str(exc)) from None
    if len(text) > MAX_VALUE_BYTES:
        raise ContextError(
            f"{what} is {len(text):,} bytes of JSON, more than the {MAX_VALUE_BYTES:,} a "
            "context value may hold; store large data elsewhere (a file, a gs:// object) "
            "and keep its location in the context")
    return text


class RunContext(Mapping[str, Any]):
    """`job.context`: the current run's key/values (see module docstring).

    A read-only Mapping (`ctx[key]`, `key in ctx`, `dict(ctx)`, `items()`)
    plus `set` and `delete`. Each call reads or writes the store at once;
    `items()`, `keys()`, `values()` and `len()` read the whole context in one
    query, `dict(ctx)` reads each key apart: prefer `dict(ctx.items())`.
    """

    def __init__(self, job: "Job") -> None:
        self._job = job

    def _where(self) -> tuple["Store", str]:
        run_id = self._job.id
        if run_id is None:
            raise ContextError(
                f"job {self._job.name!r} has no current run, and a context belongs to a "
                "run: use job.context inside a task body, or after job.start() for the "
                "run it started")
        return self._job.engine.store, run_id

    def set(self, key: str, value: Any) -> None:
        """Store `value` (JSON, at most MAX_VALUE_BYTES) under `key`, replacing it."""
        text = value_text(check_key(key), value)
        store, run_id = self._where()
        if not store.set_context(run_id, key, text):
            raise ContextError(f"cannot set run context key {key!r}: run {run_id!r} was "
                               "deleted, and its context with it")

    def get(self, key: str, default: Any = None) -> Any:
        """The value under `key`, or `default` when there is none."""
        store, run_id = self._where()
        text = store.get_context(run_id, check_key(key))
        return default if text is None else json.loads(text)

    def delete(self, key: str) -> None:
        """Delete `key`; nothing happens if it is not there (a retry may delete again)."""
        store, run_id = self._where()
        store.delete_context(run_id, check_key(key))

    def _all(self) -> dict[str, Any]:
        store, run_id = self._where()
        return {k: json.loads(v) for k, v in store.list_context(run_id).items()}

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key: object) -> bool:
        return self.get(key, _MISSING) is not _MISSING  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._all()))

    def __len__(self) -> int:
        return len(self._all())

    def items(self) -> list[tuple[str, Any]]:  # type: ignore[override]
        """Every (key, value), ordered by key, read in one query."""
        return list(self._all().items())

    def keys(self) -> list[str]:  # type: ignore[override]
        return list(self._all())

    def values(self) -> list[Any]:  # type: ignore[override]
        return list(self._all().values())

    def __repr__(self) -> str:
        return f"RunContext(job={self._job.name!r}, run={self._job.id!r})"


__all__ = ["RunContext", "ContextError", "MAX_KEY_LENGTH", "MAX_VALUE_BYTES"]
