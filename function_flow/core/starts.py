"""A start that names a run which already exists: the same start again, or a conflict.

A caller-chosen run id (the start function's X-Function-Flow-Run-Id, or
`job.start(run_id=...)`) makes starting idempotent: HTTP clients and
Pub/Sub retry, and a retried start must answer the run the first one
created, however often it arrives. A start with that id but other
arguments, or for another job, is a different request: answering it with
the old run would tell the caller that what it asked for started when it
did not. It is refused (RunConflictError; the start function answers 409)
and nothing is written. A start whose root messages could not be sent is
undone (`discard_failed`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import re
import socket
import uuid
from typing import TYPE_CHECKING, Any

from function_flow.core.messages import Message
from function_flow.core.payloads import REFERENCE_FIELD, is_reference
from function_flow.core.records import RunRecord, RunStatus, TaskStatus
from function_flow.core.values import json_text
from function_flow.errors import RunConflictError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine

logger = logging.getLogger("function_flow.engine")


def new_run_id(job_name: str) -> str:
    """Readable, sortable and unique: `<job>-<UTC time>-<random>`."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{job_name}-{stamp}-{uuid.uuid4().hex[:6]}"


def process_owner() -> str:
    """Identifies this process, for runs the embedded backend executes."""
    return f"{socket.gethostname()}:{os.getpid()}"

#: A caller-chosen run id: 1-200 letters, digits, '.', '_', ':' or '-', starting
#: with a letter or digit (a Firestore document id, a blob path component, and
#: never one of function_flow's own "__" ids).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")
RUN_ID_RULE = ("1-200 letters, digits, '.', '_', ':' or '-', starting with a letter "
               "or digit")

#: How much of each side's arguments the refusal quotes.
QUOTED_CHARS = 120


def repeated(engine: "Engine", existing: RunRecord, args: dict[str, Any],
             callback_url: str | None = None) -> tuple[str, bool]:
    """Answer a start naming `existing`: (run id, False), or RunConflictError.

    A retried start may follow one that died before publishing: the roots
    still queued are sent again (a duplicate is harmless). One asking for
    another callback than the run's is another start: its callback would
    never come.
    """
    refusal = conflict(engine, existing, args)
    if refusal is None and callback_url != existing.callback_url:
        refusal = (f"run {existing.run_id!r} already exists with "
                   f"{_callback(existing.callback_url)}; this start asks for "
                   f"{_callback(callback_url)}: start it the same way to get that run, or "
                   "choose another run id")
    if refusal is not None:
        raise RunConflictError(existing.run_id, refusal)
    if existing.status is RunStatus.RUNNING:
        for root in engine.store.get_tasks(existing.run_id, engine.dag.roots):
            if root.status is TaskStatus.QUEUED:
                engine.bus.publish(Message(existing.run_id, root.task_id, root.attempt))
    return existing.run_id, False


def _callback(url: str | None) -> str:
    return f"the callback URL {url}" if url else "no callback URL"


def conflict(engine: "Engine", existing: RunRecord, args: dict[str, Any]) -> str | None:
    """Why starting the engine's job with `args` is not the start `existing` was
    (a message for the caller), or None."""
    run = f"run {existing.run_id!r} already exists"
    if existing.job_name != engine.workflow.name:
        return (f"{run} as a run of job {existing.job_name!r}, not {engine.workflow.name!r}; "
                "choose another run id")
    text = json_text("the run's arguments", args, allow_nan=False)
    stored = existing.args
    if is_reference(stored):
        if stored[REFERENCE_FIELD].get("sha256") == hashlib.sha256(text.encode()).hexdigest():
            return None
        stored = engine.payloads.load(stored, f"the arguments of run {existing.run_id!r}")
    if canonical(stored) == canonical(json.loads(text)):
        return None
    return (f"{run} with other arguments ({quoted(stored)}; this start gives "
            f"{quoted(args)}); start it with the same arguments to get that run, or "
            "choose another run id")


def canonical(value: Any) -> str:
    """Equal for equal JSON whatever the key order; 1, 1.0 and true stay apart."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=repr)


def quoted(value: Any) -> str:
    text = canonical(value)
    return text if len(text) <= QUOTED_CHARS else text[:QUOTED_CHARS] + "..."


def discard_failed(engine: "Engine", run_id: str) -> None:
    """Delete what a start whose roots could not be sent wrote: a failed start leaves no run."""
    try:
        engine.payloads.delete_run(run_id)
        engine.store.delete_run(run_id)
    except Exception:  # the original error matters more; say what is left
        logger.exception("run %s: start failed and its records could not be "
                         "deleted; delete them with cleanup or retry the start "
                         "with the same run id", run_id)
