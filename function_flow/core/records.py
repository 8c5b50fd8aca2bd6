"""What the engine stores: run and task records, their statuses and join progress.

Records are plain dataclasses that every store adapter turns into rows or
documents with `to_dict`/`from_dict`. Times are seconds since the epoch
(floats), which every backend stores as-is.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from typing import Any, NamedTuple


class RunStatus(str, enum.Enum):
    """Status of a run (one execution of a job). Final ones never change."""

    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    # Function Flow's name for SUCCEEDED, kept so upstream code keeps working.
    FINISHED = "SUCCEEDED"

    @property
    def is_final(self) -> bool:
        return self is not RunStatus.RUNNING


class TaskStatus(str, enum.Enum):
    """Status of one task in one run.

    WAITING: some dependency is not done. READY: dependencies done, waiting
    for a concurrency slot. QUEUED: a message to run attempt `attempt` is on
    its way (or, after a failure, waiting out its backoff). RUNNING: claimed
    by an executor (or waiting for an external event) until `lease_until`.
    SKIPPED: its trigger rule says it does not run (a branch not taken).
    UPSTREAM_FAILED: it can no longer run because a dependency failed.
    CANCELLED: the run ended (cancelled, or failed elsewhere) before it ran.
    """

    WAITING = "WAITING"
    READY = "READY"
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    CANCELLED = "CANCELLED"

    FINISHED = "SUCCEEDED"  # Function Flow's name for SUCCEEDED

    @property
    def is_final(self) -> bool:
        return self in _FINAL_TASK_STATUSES


_FINAL_TASK_STATUSES = frozenset({TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.SKIPPED,
                                  TaskStatus.UPSTREAM_FAILED, TaskStatus.CANCELLED})


#: Status by value: a dict look-up, where TaskStatus(value) costs an enum call
#: per record read.
_TASK_STATUSES: dict[str, TaskStatus] = {s.value: s for s in TaskStatus}


@dataclasses.dataclass
class RunRecord:
    """`runs/{run_id}`: written at start and when the run ends, never per task."""

    run_id: str
    job_name: str
    dag_hash: str
    args: dict[str, Any]
    status: RunStatus = RunStatus.RUNNING
    #: Number of concurrency slots; 0 when the graph can never exceed
    #: max_parallel_tasks, so no slot bookkeeping is needed.
    slots: int = 0
    created_at: float = 0.0
    finished_at: float | None = None
    error: str | None = None
    #: Who executes the run on the embedded backend ("host:pid"), so that
    #: `resume` can refuse to resume a run that a live process still runs.
    owner: str | None = None
    #: Where the workflow was defined (the CLI stores the file's absolute
    #: path), so that `function-flow resume RUN_ID` can load it again.
    source: str | None = None
    hooks: list[str] | None = None  # hook ids in order; one to run yet; the callback's URL
    hooks_pending: bool = False
    callback_url: str | None = None
    redrives: int = 0  # how many times `redrive` restarted the run (core/redrive.py)
    #: Set while a redrive resets the ended run's tasks: what the end left
    #: unfinished is no longer the end's to retire (core/leftovers.py).
    redriving: bool = False
    #: The fingerprint of each task of the definition the run started with
    #: (JSON text {task: "deps.settings.body"}; `dag_hash` is their hash),
    #: see core/versions.py. Text, not a map: Firestore indexes no subfields.
    task_versions: str | None = None
    blocked: str | None = None  # why the deployed definition may not advance it (versions.py)
    blocked_by: str | None = None  # and that definition's hash; None when not blocked
    paused_at: float | None = None  # when paused (None: not), see core/control.py
    resumed_at: float | None = None  # its last resume: an embedded run's process re-sends
    traceparent: str | None = None  # W3C context of the run's root span (function_flow/tracing.py)
    history: list[dict[str, Any]] | None = None  # each pause, resume, redrive (history.py)

    def to_dict(self) -> dict[str, Any]:
        return _fields_of(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunRecord":
        fields = _field_names(cls)
        values = {k: v for k, v in data.items() if k in fields}
        values["status"] = RunStatus(values.get("status", "RUNNING"))
        return cls(**values)


#: The roles of the records a foreach adds per item (see TaskRecord.role):
#: their failures are the foreach's to judge, never the run's.
ITEM_ROLES = ("item", "member")


@dataclasses.dataclass
class TaskRecord:
    """`runs/{run_id}/tasks/{task_id}`: written only by its own transitions.

    `deps_done` maps each finished dependency to its final status; other
    tasks write into it with blind field writes that never read this record.
    """

    task_id: str
    status: TaskStatus = TaskStatus.WAITING
    attempt: int = 0
    deps_done: dict[str, str] = dataclasses.field(default_factory=dict)
    slot: int | None = None
    lease_until: float | None = None
    not_before: float | None = None
    queued_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    result: Any = None
    error: str | None = None
    trigger_id: str | None = None
    #: Attempts cut short by a dead process (kill -9, then `resume`); they
    #: do not count against the task's retries, up to a bound (see
    #: transitions.MAX_INTERRUPTED_ATTEMPTS).
    interrupted: int = 0
    #: For tasks a run adds while it runs (see graph.RunGraph): the declared
    #: task whose body and settings it uses, and its own edges. None means
    #: "as the definition says".
    template: str | None = None
    deps: list[str] | None = None
    dependents: list[str] | None = None
    #: For tasks a foreach adds (core/foreach.py): "item" (runs the body on
    #: `item`, whose index or key is `item_key`), "member" (a task of an
    #: item's copy of a sub-DAG), "group" (counts up to 100 items) or
    #: "collect" (ends the foreach task's attempt `node_attempt`).
    role: str | None = None
    item: Any = None
    item_key: Any = None
    node_attempt: int | None = None
    trigger_rule: str | None = None  # its own trigger rule (None: its template's)
    #: Its own timeout, s (None: its template's): known only at run time (ASL TimeoutSecondsPath).
    timeout: float | None = None
    attempts: list[dict[str, Any]] | None = None  # the ended ones: core/attempts.py

    def to_dict(self) -> dict[str, Any]:
        return _fields_of(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TaskRecord":
        fields = _field_names(cls)
        if cls is not TaskRecord or "task_id" not in data or not data.keys() <= fields.keys():
            values = {k: v for k, v in data.items() if k in fields}
            status = values.get("status", "WAITING")
            values["status"] = _TASK_STATUSES.get(status) or TaskStatus(status)
            values["deps_done"] = dict(values.get("deps_done") or {})
            return cls(**values)
        # Every record read takes this way (stores write only these fields):
        # the defaults, then the data, without __init__'s keyword matching.
        record = object.__new__(cls)
        values = dict(_TASK_DEFAULTS)
        values.update(data)
        status = values["status"]
        values["status"] = _TASK_STATUSES.get(status) or TaskStatus(status)
        values["deps_done"] = dict(values["deps_done"] or {})
        record.__dict__.update(values)
        return record

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


#: TaskRecord's defaults, for from_dict (deps_done's factory: it makes a dict of its own).
_TASK_DEFAULTS: dict[str, Any] = {
    f.name: None if f.name == "deps_done" else f.default
    for f in dataclasses.fields(TaskRecord) if f.name != "task_id"}


@dataclasses.dataclass(frozen=True)
class Trigger:
    """`triggers/{trigger_id}`: the task attempt an external event completes.

    Written in the transaction that records the wait, deleted in the one
    that records the event's outcome, so an event completes at most once.
    """

    trigger_id: str
    run_id: str
    task_id: str
    attempt: int
    #: A gs:// path prefix the poller watches for (GCSFuture), else None.
    watch: str | None = None
    #: What the attempt becomes when its lease runs out with no event:
    #: None fails it (then retries apply); {"result": value} succeeds it
    #: with that value (an approval's default).
    on_timeout: dict[str, Any] | None = None
    #: The hash of the definition that recorded the wait: an event handled
    #: by the same definition needs no look at the run (core/versions.py).
    definition: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Trigger":
        fields = _field_names(cls)
        values = {k: v for k, v in data.items() if k in fields}
        values["attempt"] = int(values["attempt"])
        return cls(**values)


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> dict[str, None]:
    """A record class's field names, in order (a dict: ordered, O(1) lookups)."""
    return dict.fromkeys(f.name for f in dataclasses.fields(cls))


def _fields_of(record: Any) -> dict[str, Any]:
    """A record as a plain dict, ready for JSON (maps copied, the status as text).

    Not dataclasses.asdict: it deep-copies every value, and every record
    written goes through here (a run of 1,000 tasks writes 1,000 at once).
    """
    data = {name: getattr(record, name) for name in _field_names(type(record))}
    data["status"] = record.status.value
    if "deps_done" in data:
        data["deps_done"] = dict(data["deps_done"])
    return data


class JoinProgress(NamedTuple):
    """How far a task with several dependencies is, counted by outcome.

    Every completer of a join asks; stores that keep deps_done entries apart
    (SQLite) answer from counters instead of reading the whole map. Trigger
    rules are functions of these counts, so a new rule needs no store code.
    """

    status: TaskStatus
    succeeded: int
    failed: int        # every final outcome but SUCCEEDED and SKIPPED
    skipped: int
    #: How many dependencies the task has, when its record says so (a task
    #: the run added); None: as the definition says.
    expected: int | None = None

    @property
    def done(self) -> int:
        return self.succeeded + self.failed + self.skipped

    @classmethod
    def of(cls, record: "TaskRecord") -> "JoinProgress":
        counts = {OUTCOME_SUCCEEDED: 0, OUTCOME_FAILED: 0, OUTCOME_SKIPPED: 0}
        for status in record.deps_done.values():
            counts[outcome_of(status)] += 1
        return cls(record.status, counts[OUTCOME_SUCCEEDED], counts[OUTCOME_FAILED],
                   counts[OUTCOME_SKIPPED],
                   len(record.deps) if record.deps is not None else None)

    def verdict(self, deps: int, rule: str) -> "Verdict":
        """What a WAITING task of `deps` dependencies becomes under trigger `rule`.

        Airflow's rules, with one difference in timing: a task is SKIPPED or
        UPSTREAM_FAILED only once all its dependencies are done, so that
        every task a final task depends on is final too (the run's end is
        then a join over its sinks; see docs/design.md, "Trigger rules").
        Only one_success and one_failed may run early, as in Airflow.
        Counting is enough: only a task's own dependencies write deps_done
        entries into it, so `deps` entries mean every one of them is done.
        """
        if self.status is not TaskStatus.WAITING:
            return Verdict.WAIT
        s, f, k = self.succeeded, self.failed, self.skipped
        if self.done < deps:
            if (rule == "one_success" and s) or (rule == "one_failed" and f) \
                    or rule == "always":  # (queued when the run starts, or redriven)
                return Verdict.RUN
            return Verdict.WAIT
        if rule == "all_success":
            return Verdict.RUN if s >= deps else Verdict.UPSTREAM_FAILED if f else Verdict.SKIP
        if rule == "all_failed":
            return Verdict.RUN if f >= deps else Verdict.SKIP
        if rule == "one_success":
            return Verdict.RUN if s else Verdict.SKIP if k >= deps else Verdict.UPSTREAM_FAILED
        if rule == "one_failed":
            return Verdict.RUN if f else Verdict.SKIP
        if rule in ("none_failed", "none_failed_min_one_success"):
            if f:
                return Verdict.UPSTREAM_FAILED
            return Verdict.RUN if s or rule == "none_failed" else Verdict.SKIP
        return Verdict.RUN  # all_done, always (and the end task)

    def complete(self, deps: int, rule: str = "all_success") -> bool:
        """Whether the join's rule has decided (it runs, or ends without running)."""
        return self.verdict(deps, rule) is not Verdict.WAIT


class Verdict(str, enum.Enum):
    """What a trigger rule makes of a join (JoinProgress.verdict)."""

    WAIT = "wait"
    RUN = "run"
    SKIP = "skip"
    UPSTREAM_FAILED = "upstream_failed"


OUTCOME_SUCCEEDED, OUTCOME_FAILED, OUTCOME_SKIPPED = "succeeded", "failed", "skipped"


def outcome_of(status: str) -> str:
    """The outcome a dependency's final status counts as in a join."""
    if status == TaskStatus.SUCCEEDED.value:
        return OUTCOME_SUCCEEDED
    if status == TaskStatus.SKIPPED.value:
        return OUTCOME_SKIPPED
    return OUTCOME_FAILED
