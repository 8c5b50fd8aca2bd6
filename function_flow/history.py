"""A run's history, read from its records: every attempt, and the events in order.

A view, with no I/O: give it the run record and its task records (any
store's `get_run` and `get_tasks`) and it answers what happened, which
`function-flow logs` prints and the dashboard draws. Nothing here is
stored apart: the events are derived from what the records keep anyway.

- the run record: created_at, finished_at and status (ended), and its
  `history` of pauses, resumes and redrives (core/attempts.run_event; a
  redrive keeps how the run had ended before it);
- each task record: its `attempts` (core/attempts.py: one entry per ended
  attempt, with its times, outcome, error and captured output), its
  current attempt (QUEUED or RUNNING, from the record's own fields), and
  for a task that ended without running (SKIPPED, UPSTREAM_FAILED,
  CANCELLED before it started) its status and finished_at.

Records written before attempts were kept have no entries: their last
attempt is rebuilt from the record's fields, so older runs still read.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

from function_flow.core.records import RunRecord, TaskRecord, TaskStatus

#: Event kinds, in the order they are listed when they happen at the same time
#: (an attempt's end queues its dependents in the same commit: it comes first).
KINDS = ("created", "resumed", "redriven", "succeeded", "retried", "interrupted", "failed",
         "skipped", "upstream_failed", "cancelled", "queued", "claimed", "waiting",
         "paused", "ended")
_RANK = {kind: i for i, kind in enumerate(KINDS)}
_LIVE = (TaskStatus.QUEUED, TaskStatus.RUNNING)


@dataclasses.dataclass(frozen=True)
class Attempt:
    """One attempt of a task: outcome "succeeded", "failed", "cancelled",
    "interrupted", "waiting" (for an event), or, for the current one,
    "queued" or "running"."""

    task_id: str
    attempt: int
    outcome: str
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    #: When the retry of this failed attempt may start (None: not retried).
    retry_at: float | None = None
    #: For the current attempt, QUEUED: when it may start (a retry's backoff).
    not_before: float | None = None
    waiting_at: float | None = None
    #: The tail of what the body printed and logged, and how much was cut.
    output: str = ""
    output_cut: int = 0
    #: How many redrives of the run came before this attempt (0: its first run).
    redrive: int = 0

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, self.finished_at - self.started_at)

    @property
    def retried(self) -> bool:
        return self.outcome == "failed" and self.retry_at is not None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Event:
    """One thing that happened in a run, at `at` (seconds since the epoch).

    task_id is None for the run's own events (created, paused, resumed,
    redriven, ended). `detail` is a short text ("retry in 2.0s",
    "SUCCEEDED"); the end of an attempt carries its `error` and `output`.
    """

    at: float
    kind: str
    task_id: str | None = None
    attempt: int | None = None
    detail: str = ""
    error: str | None = None
    output: str = ""
    output_cut: int = 0
    #: How many redrives of the run came before it (attempts start at 1 again).
    redrive: int = 0

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items()
                if v not in (None, "", 0) or k in ("at", "kind")}


def redrive_times(run: RunRecord) -> list[float]:
    """When the run was redriven, oldest first."""
    return sorted(e["at"] for e in run.history or ()
                  if e.get("event") == "redriven" and isinstance(e.get("at"), (int, float)))


def dropped(task: TaskRecord) -> int:
    """How many attempts between the first and the most recent were not kept."""
    return sum(e.get("dropped", 0) for e in task.attempts or () if "dropped" in e)


def attempts(task: TaskRecord, redrives: Iterable[float] = ()) -> list[Attempt]:
    """Every attempt of `task` that is known, oldest first, the current one last.

    `redrives`: redrive_times(run), to number each attempt's redrive.
    """
    times = sorted(redrives)
    found = [_attempt(task.task_id, e, times) for e in task.attempts or ()
             if "attempt" in e]
    live = _current(task, found, times)
    if live is not None:
        if found and found[-1].outcome == "waiting" and found[-1].attempt == live.attempt:
            found.pop()
        found.append(live)
    return found


def _attempt(task_id: str, entry: dict[str, Any], times: list[float]) -> Attempt:
    first = entry.get("queued_at") or entry.get("started_at") or entry.get("finished_at")
    return Attempt(task_id=task_id, attempt=int(entry["attempt"]),
                   outcome=str(entry.get("outcome", "")),
                   queued_at=entry.get("queued_at"), started_at=entry.get("started_at"),
                   finished_at=entry.get("finished_at"), error=entry.get("error"),
                   retry_at=entry.get("retry_at"), waiting_at=entry.get("waiting_at"),
                   output=entry.get("output") or "", output_cut=entry.get("output_cut") or 0,
                   redrive=_epoch(first, times))


def _epoch(at: float | None, times: list[float]) -> int:
    return 0 if at is None else sum(1 for t in times if t <= at)


def _current(task: TaskRecord, found: list[Attempt], times: list[float]) -> Attempt | None:
    """The attempt the record's own fields describe, when no entry holds it."""
    if task.attempt < 1:
        return None
    epoch = _epoch(task.queued_at or task.started_at or task.finished_at, times)
    if task.status in _LIVE:
        last = found[-1] if found else None
        if task.status is TaskStatus.RUNNING and last is not None \
                and last.outcome == "waiting" and last.attempt == task.attempt:
            return None  # the waiting entry is the current attempt
        return Attempt(task.task_id, task.attempt,
                       "running" if task.status is TaskStatus.RUNNING else "queued",
                       queued_at=task.queued_at,
                       started_at=task.started_at if task.status is TaskStatus.RUNNING
                       else None,
                       not_before=task.not_before if task.status is TaskStatus.QUEUED
                       else None,
                       redrive=epoch)
    if found or not task.status.is_final:
        return None
    # A record from before attempts were kept: its last attempt, from its fields.
    return Attempt(task.task_id, task.attempt, task.status.value.lower(),
                   queued_at=task.queued_at, started_at=task.started_at,
                   finished_at=task.finished_at,
                   error=task.error if task.status is TaskStatus.FAILED else None,
                   redrive=epoch)


def output_of(task: TaskRecord, attempt: int | None = None) -> str:
    """What attempt `attempt` (default: the last that printed anything) printed."""
    kept = [a for a in attempts(task) if a.output]
    if attempt is not None:
        kept = [a for a in kept if a.attempt == attempt]
    return kept[-1].output if kept else ""


# ------------------------------------------------------------------ events


def events(run: RunRecord, tasks: Iterable[TaskRecord]) -> list[Event]:
    """Everything that happened in the run, in order (function_flow's own
    records, whose ids start with "__", left out)."""
    found = run_events(run)
    times = redrive_times(run)
    for task in tasks:
        if not task.task_id.startswith("__"):
            found.extend(task_events(task, times))
    return ordered(found)


def ordered(found: list[Event]) -> list[Event]:
    return sorted(found, key=lambda e: (e.at, _RANK.get(e.kind, len(_RANK))))


def run_events(run: RunRecord) -> list[Event]:
    """created, each pause, resume and redrive (with the end before it), ended."""
    found = [Event(run.created_at, "created", detail=f"job {run.job_name}")] \
        if run.created_at else []
    noted = {(e.get("event"), e.get("at")) for e in run.history or ()}
    for entry in run.history or ():
        at, kind = entry.get("at"), entry.get("event")
        if not isinstance(at, (int, float)) or kind not in _RANK:
            continue
        if kind == "redriven":
            if isinstance(entry.get("ended_at"), (int, float)):
                found.append(Event(entry["ended_at"], "ended", detail=_ended(
                    entry.get("ended", "ended"), entry.get("error"))))
            found.append(Event(at, kind, detail="the tasks that did not succeed run again"))
        else:
            found.append(Event(at, kind))
    if run.paused_at is not None and ("paused", run.paused_at) not in noted:
        found.append(Event(run.paused_at, "paused"))
    if run.resumed_at is not None and ("resumed", run.resumed_at) not in noted:
        found.append(Event(run.resumed_at, "resumed"))
    if run.status.is_final and run.finished_at is not None:
        found.append(Event(run.finished_at, "ended", detail=_ended(run.status.value,
                                                                    run.error)))
    return found


def _ended(status: str, error: str | None) -> str:
    return f"{status}: {error}" if error else status


def task_events(task: TaskRecord, redrives: Iterable[float] = ()) -> list[Event]:
    """The events of one task: each attempt's, or how it ended without running."""
    found: list[Event] = []
    follows_retry = None
    times = sorted(redrives)
    for a in attempts(task, times):
        if a.queued_at is not None and a.queued_at != follows_retry:
            found.append(Event(a.queued_at, "queued", a.task_id, a.attempt,
                               _queued_detail(a), redrive=a.redrive))
        if a.started_at is not None:
            found.append(Event(a.started_at, "claimed", a.task_id, a.attempt,
                               redrive=a.redrive))
        if a.waiting_at is not None:
            found.append(Event(a.waiting_at, "waiting", a.task_id, a.attempt,
                               "its body returned; waiting for an event",
                               output="" if a.finished_at else a.output,
                               output_cut=0 if a.finished_at else a.output_cut,
                               redrive=a.redrive))
        follows_retry = None
        if a.finished_at is not None:
            kind = "retried" if a.retried else a.outcome
            found.append(Event(a.finished_at, kind, a.task_id, a.attempt, _end_detail(a),
                               error=a.error, output=a.output, output_cut=a.output_cut,
                               redrive=a.redrive))
            follows_retry = a.finished_at if kind in ("retried", "interrupted") else None
    if not found and task.status.is_final and task.finished_at is not None:
        found.append(Event(task.finished_at, task.status.value.lower(), task.task_id,
                           redrive=_epoch(task.finished_at, times)))
    return found


def _queued_detail(a: Attempt) -> str:
    if a.not_before is not None and a.queued_at is not None and a.not_before > a.queued_at:
        return f"starts after {seconds(a.not_before - a.queued_at)}"
    return ""


def seconds(value: float) -> str:
    """A duration for people: 0.012s, 2.50s, 3m07s, 1h02m."""
    if value < 1:
        return f"{value:.3f}s"
    if value < 60:
        return f"{value:.2f}s"
    minutes, rest = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _end_detail(a: Attempt) -> str:
    parts = []
    if a.duration is not None:
        parts.append(f"after {seconds(a.duration)}")
    if a.retried and a.finished_at is not None and a.retry_at is not None:
        parts.append(f"retry in {seconds(max(0.0, a.retry_at - a.finished_at))}")
    if a.outcome == "interrupted":
        parts.append("its process died; queued again")
    if a.error:
        lines = [line.strip() for line in a.error.strip().splitlines() if line.strip()]
        if lines:
            parts.append(lines[-1])
    return "; ".join(parts)


__all__ = ["Attempt", "Event", "KINDS", "attempts", "dropped", "events", "output_of",
           "redrive_times", "run_events", "task_events"]
