"""Every attempt of a task, kept in its record: times, outcome, error, output.

A task record holds its current attempt; `TaskRecord.attempts` keeps the
ones that ended (and one that waits for an event), as a bounded list of
plain dicts written in the very write that records the attempt's outcome
(transitions.succeed, fail, cancel, interrupted; waiting.await_event for a
wait): no document operation is added to any step. An entry:

    {"attempt": 2, "queued_at": t, "started_at": t, "finished_at": t,
     "outcome": "succeeded" | "failed" | "cancelled" | "interrupted" | "waiting",
     "error": "...", "retry_at": t, "output": "...", "output_cut": n,
     "waiting_at": t}

Keys without a value are left out, so a silent attempt that succeeds costs
about a hundred bytes. `retry_at` is when the retry of a failed attempt may
start; `output` is the tail of what the body printed and logged
(core/output.py), `output_cut` how many characters of its head were cut.

Bounds, so a record always fits a Firestore document (1 MiB, next to a
result of up to 900,000 bytes): each entry's error is cut to its head and
end (MAX_ENTRY_ERROR_CHARS), its output to its tail (output.MAX_OUTPUT_CHARS);
the list keeps MAX_ENTRIES attempts, the first and the most recent ones (a
marker entry {"dropped": n} after the first says how many were dropped); and when
all entries together exceed MAX_ATTEMPTS_CHARS of JSON, the outputs and then
the errors of the oldest entries are cut shorter first, to SHORT_CHARS each
(so the list never holds much more than 80,000 characters).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from function_flow.core import output
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus

if TYPE_CHECKING:
    from function_flow.core.step import Step

#: Longest error text kept for an attempt. A body can raise an exception
#: whose message is megabytes long; a record must stay storable (a Firestore
#: document holds 1 MiB), and the end of a traceback says the most.
MAX_ERROR_CHARS = 32_000
#: An error as kept in an attempt's entry (the task's `error` keeps the last
#: one at MAX_ERROR_CHARS).
MAX_ENTRY_ERROR_CHARS = 8_000
#: Attempts kept per task: the first and the most recent ones.
MAX_ENTRIES = 25
#: All entries of a task together, as JSON.
MAX_ATTEMPTS_CHARS = 64_000
#: What an older entry's output and error are cut to when the list is too big.
SHORT_CHARS = 1_000

_OUTCOMES = {TaskStatus.SUCCEEDED.value: "succeeded", TaskStatus.FAILED.value: "failed",
             TaskStatus.CANCELLED.value: "cancelled"}


def bounded_error(error: str, limit: int = MAX_ERROR_CHARS) -> str:
    """An attempt's error as stored: its head and its end, when it is too long."""
    if len(error) <= limit:
        return error
    keep = limit // 4
    cut = len(error) - limit
    return f"{error[:keep]}\n... ({cut:,} characters cut) ...\n{error[-(limit - keep):]}"


def record(step: "Step", task: TaskRecord, now: float) -> None:
    """Add the entry of the attempt `step` ends to its write of `task`'s own record.

    Called by the rules that end an attempt, after they wrote the task's new
    status. Nothing is added when the step ends no attempt (a hold puts the
    same attempt back, a task that never started is cancelled).
    """
    fields = _own_write(step, task.task_id)
    if fields is None or task.attempt < 1 or task.status not in (TaskStatus.RUNNING,
                                                                 TaskStatus.QUEUED):
        return
    status = fields.get("status")
    if status in _OUTCOMES:
        outcome = _OUTCOMES[status]
    elif status == TaskStatus.QUEUED.value and fields.get("attempt", task.attempt) \
            != task.attempt:
        outcome = "interrupted" if "interrupted" in fields else "failed"
    else:
        return
    entry: dict[str, Any] = {"attempt": task.attempt, "queued_at": task.queued_at,
                             "outcome": outcome, "finished_at": now}
    if task.status is TaskStatus.RUNNING:
        entry["started_at"] = task.started_at
    if outcome == "failed" and fields.get("error"):
        entry["error"] = fields["error"]
    if status == TaskStatus.QUEUED.value and fields.get("not_before"):
        entry["retry_at"] = fields["not_before"]
    fields["attempts"] = appended(task.attempts, entry)


def add_output(step: "Step", task_id: str, captured: Any) -> None:
    """Put what the attempt printed into the entry `record` added to the step."""
    text, cut = output.text_of(captured)
    fields = _own_write(step, task_id)
    if not text or fields is None or not fields.get("attempts"):
        return
    entries = list(fields["attempts"])
    entries[-1] = with_output(entries[-1], text, cut)
    fields["attempts"] = bounded(entries)


def waiting(task: TaskRecord, now: float, captured: Any) -> dict[str, Any]:
    """The fields that note an attempt waiting for its event (and what its body printed)."""
    entry: dict[str, Any] = {"attempt": task.attempt, "queued_at": task.queued_at,
                             "started_at": task.started_at, "outcome": "waiting",
                             "waiting_at": now}
    text, cut = output.text_of(captured)
    return {"attempts": appended(task.attempts, with_output(entry, text, cut))}


def with_output(entry: dict[str, Any], text: str, cut: int = 0) -> dict[str, Any]:
    entry = dict(entry)
    if text:
        entry["output"] = text
        if cut:
            entry["output_cut"] = cut
    return entry


def appended(entries: list[dict[str, Any]] | None,
             entry: dict[str, Any]) -> list[dict[str, Any]]:
    """`entries` with `entry` added; the entry of the same attempt waiting is
    replaced (its output kept)."""
    kept = list(entries or [])
    entry = {k: v for k, v in entry.items() if v is not None}
    if isinstance(entry.get("error"), str):
        entry["error"] = bounded_error(entry["error"], MAX_ENTRY_ERROR_CHARS)
    text = entry.get("output")
    if isinstance(text, str) and len(text) > output.MAX_OUTPUT_CHARS:
        entry["output"] = text[-output.MAX_OUTPUT_CHARS:]
        entry["output_cut"] = entry.get("output_cut", 0) + len(text) - output.MAX_OUTPUT_CHARS
    if kept and kept[-1].get("attempt") == entry["attempt"] \
            and kept[-1].get("outcome") == "waiting":
        waited = kept.pop()
        for key in ("output", "output_cut", "waiting_at"):
            if key in waited and key not in entry:
                entry[key] = waited[key]
    kept.append(entry)
    return bounded(kept)


def bounded(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At most MAX_ENTRIES entries and MAX_ATTEMPTS_CHARS of JSON (see module docstring)."""
    first, rest, dropped = entries[0], entries[1:], 0
    if rest and "dropped" in rest[0]:
        dropped, rest = rest[0]["dropped"], rest[1:]
    keep = MAX_ENTRIES - 1
    if len(rest) > keep:
        entries = [first, {"dropped": dropped + len(rest) - keep}] + rest[-keep:]
    texts = sum(len(e.get("output") or "") + len(e.get("error") or "") for e in entries)
    if texts * 6 + 400 * len(entries) <= MAX_ATTEMPTS_CHARS:
        return entries  # below the bound even with every character escaped
    sizes = [_size(e) for e in entries]
    total = sum(sizes) + len(entries) + 1  # with the commas and brackets
    for key in ("output", "error"):
        for i in range(len(entries) - 1):
            if total <= MAX_ATTEMPTS_CHARS:
                return entries
            text = entries[i].get(key)
            if not isinstance(text, str) or len(text) <= SHORT_CHARS:
                continue
            entries[i] = dict(entries[i])
            if key == "output":
                entries[i]["output"] = text[-SHORT_CHARS:]
                entries[i]["output_cut"] = entries[i].get("output_cut", 0) \
                    + len(text) - SHORT_CHARS
            else:
                entries[i]["error"] = bounded_error(text, SHORT_CHARS)
            size = _size(entries[i])
            total += size - sizes[i]
            sizes[i] = size
    return entries


def _size(entry: dict[str, Any]) -> int:
    return len(json.dumps(entry, separators=(",", ":")))


def _own_write(step: "Step", task_id: str) -> dict[str, Any] | None:
    """The fields `step` writes into the task's own record (with its status)."""
    for write in step.writes:
        if write.kind == "task" and write.key == task_id and "status" in write.value:
            return write.value
    return None


#: Run events kept in the run record (RunRecord.history): the most recent.
MAX_RUN_EVENTS = 100


def run_event(run: RunRecord, event: str, now: float, **details: Any) -> dict[str, Any]:
    """The field that adds `event` ("paused", "resumed", "redriven") to the run's
    history: merged into the write that pause, resume or redrive already makes."""
    entry = {"event": event, "at": now, **{k: v for k, v in details.items() if v is not None}}
    return {"history": (list(run.history or []) + [entry])[-MAX_RUN_EVENTS:]}


def headline(error: str) -> str:
    """The line that says what an error is: `Type: message`.

    In a traceback, the first line of its last exception (its frames are
    indented); else the first line. Not the last line: a message of several
    lines (an HTML error page a gateway answered) ended in `</html>`.
    """
    lines = [line.rstrip() for line in error.strip().splitlines()]
    starts = [i for i, line in enumerate(lines)
              if line.startswith("Traceback")]
    if starts:
        heads = [line for line in lines[starts[-1] + 1:] if line and not line[0].isspace()]
        if heads:
            return heads[0]
    return next((line.strip() for line in lines if line.strip()), "")
