"""Hooks: what a run does once, after it ended (on_failure, on_end, the callback).

Each hook of a run is a task record of that run under a reserved id
(`__on_failure__`, `__on_end__`, `__callback__`), created WAITING with the
run, and only when the job has that hook (or the start gave a callback
URL); the run record lists them in `hooks`, in the order they run. Why
records and not a call after the run's end: a process may die right after
the commit that ends the run, and the hook must still run, once.

- The transaction that ends the run (every one goes through
  `transitions.end`) queues the first hook that applies (a blind write
  WAITING -> QUEUED, attempt 1; its message is sent after the commit) and
  sets `hooks_pending` on the run record in that same write. A hook that
  does not apply (on_failure after a success) ends SKIPPED there. The run
  ends exactly once, so each hook is queued exactly once.
- A queued hook runs through the ordinary claim path (claims of an ended
  run's tasks cancel them; hooks are exempt): duplicates, leases, retries
  with backoff and `resume` apply as to any task. The poller also looks at
  ended runs whose `hooks_pending` is set (Store.list_runs).
- When a hook ends (succeeded, or failed after its retries), the same
  transaction queues the next one, or clears `hooks_pending`. Hooks run one
  after the other: on_failure, on_end, then the callback, which therefore
  reports a run whose own clean-up is done.

Hooks take no concurrency slot (max_parallel_tasks counts the run's tasks).
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import urllib.parse
from typing import TYPE_CHECKING, Any, Callable

from function_flow.core import foreach, values
from function_flow.core.definition import Backoff, TaskSpec, make_spec, refuse_async
from function_flow.core.messages import Message
from function_flow.core.records import RunRecord, RunStatus, TaskStatus
from function_flow.errors import DefinitionError

if TYPE_CHECKING:
    from function_flow.core.engine import Engine
    from function_flow.core.step import Step

logger = logging.getLogger("function_flow.engine")

ON_FAILURE = "__on_failure__"
ON_END = "__on_end__"
CALLBACK = "__callback__"
#: The order hooks run in, and the names people see.
ORDER = (ON_FAILURE, ON_END, CALLBACK)
NAMES = {ON_FAILURE: "on_failure", ON_END: "on_end", CALLBACK: "callback"}
#: At most this many failed tasks are named to a hook (a foreach may fail thousands).
MAX_FAILED_LISTED = 100


def is_hook(task_id: str) -> bool:
    return task_id in NAMES


def applies(hook_id: str, status: RunStatus) -> bool:
    """on_failure runs after a FAILED run only; the others after every end."""
    return hook_id != ON_FAILURE or status is RunStatus.FAILED


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a hook function receives: the run as it ended.

    results: the result of each sink task that succeeded (its id -> value).
    failed_tasks: ids of tasks that FAILED (at most MAX_FAILED_LISTED).
    redrives: how many times the run was redriven before this end: each
    end runs the hooks, so (run_id, redrives) names one end.
    """

    run_id: str
    job_name: str
    status: RunStatus
    error: str | None
    results: dict[str, Any]
    failed_tasks: list[str]
    args: dict[str, Any]
    created_at: float
    finished_at: float | None
    callback_url: str | None = None
    redrives: int = 0


# ------------------------------------------------------------ definition


def hook_spec(hook_id: str, func: Callable[..., Any], *, job_name: str, retries: int = 0,
              retry_backoff: Backoff | float | None = None,
              timeout: float | None = None, retry_on: Any = None) -> TaskSpec:
    """A hook's spec: `func(run)` with the task's retry and timeout settings.

    Raises DefinitionError naming the hook (and the job) when `func` cannot be
    called with one argument or a setting is invalid.
    """
    what = f"job {job_name!r}: the {NAMES[hook_id]} hook"
    if not callable(func):
        raise DefinitionError(f"{what} must be a function, got {func!r}", hook_id)
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise DefinitionError(f"{what}: cannot inspect {func!r}: {exc}", hook_id) from None
    refuse_async(what, func, hook_id)
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(func, "__name__", repr(func))
        raise DefinitionError(
            f"{what}: {name}{signature} must take exactly one argument, the run as it "
            f"ended; declare it as `def {name}(run): ...`", hook_id) from None
    try:
        spec = make_spec(NAMES[hook_id], (), None, retries=retries,
                         retry_backoff=retry_backoff, timeout=timeout, retry_on=retry_on)
    except DefinitionError as exc:
        raise DefinitionError(f"{what}: {str(exc).split(': ', 1)[-1]}", hook_id) from None
    return dataclasses.replace(spec, task_id=hook_id, func=func, call_style="hook",
                               pass_task=False, pass_job=False)


def check_callback_url(url: Any) -> str:
    """An http(s) URL with a host, else ValueError saying what is wrong."""
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"callback_url must be an http:// or https:// URL, got {url!r}")
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"callback_url must be an http:// or https:// URL with a host, "
                         f"got {url!r}")
    try:
        parts.port  # noqa: B018 -- urllib checks the port when asked for it
    except ValueError as exc:  # each POST would fail, retried for a day
        raise ValueError(f"callback_url {url!r} has a bad port ({exc})") from None
    return url.strip()


def for_start(dag: Any, callback_url: str | None) -> tuple[list[str], str | None]:
    """The hook records a new run of `dag` gets (the job's hooks, and the callback
    if asked for), and the callback URL checked (ValueError if it is not http(s))."""
    if callback_url is not None:
        callback_url = check_callback_url(callback_url)
        if CALLBACK not in dag.hooks:
            raise ValueError(f"workflow {dag.name!r} cannot deliver callbacks")
    return [h for h in ORDER if h in dag.hooks and (h != CALLBACK or callback_url)], \
        callback_url


# ------------------------------------------------------------ transitions


def on_end(step: "Step", run: RunRecord, status: RunStatus, now: float) -> dict[str, Any]:
    """The run ends in `step`: queue its first hook that applies. Returns the run
    record's fields to write with the end (`hooks_pending`)."""
    if not run.hooks:
        return {}
    return {"hooks_pending": _queue_next(step, run, None, status, now)}


def after_hook(step: "Step", task_id: str, run: RunRecord | None, now: float) -> None:
    """A hook's attempt ended in `step`: once the hook itself has ended, queue the
    next one, or clear `hooks_pending` (in the same commit)."""
    if run is None or not run.hooks or not is_hook(task_id):
        return
    ended = any(w.kind == "task" and w.key == task_id and w.value.get("status") in
                (TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value) for w in step.writes)
    if ended:
        step.run(hooks_pending=_queue_next(step, run, task_id, run.status, now))


def _queue_next(step: "Step", run: RunRecord, after: str | None, status: RunStatus,
                now: float) -> bool:
    hooks = list(run.hooks or ())
    following = hooks[hooks.index(after) + 1:] if after in hooks else hooks
    for hook_id in following:
        if applies(hook_id, status):
            step.task(hook_id, status=TaskStatus.QUEUED.value, attempt=1, queued_at=now)
            step.messages.append(Message(run.run_id, hook_id, 1))
            return True
        step.task(hook_id, status=TaskStatus.SKIPPED.value, finished_at=now)
    return False


# ------------------------------------------------------------- execution


def body(engine: "Engine", run: RunRecord, spec: TaskSpec) -> Callable[[], Any]:
    """What an attempt of hook `spec` executes: its function, given the run.

    The run is read now, in the engine's process, so a body that runs in a
    child process (a hook with a timeout) needs no store of its own.
    """
    info = run_info(engine, run, load=spec.task_id != CALLBACK)

    def call() -> Any:
        assert spec.func is not None
        value = spec.func(info)
        if hasattr(value, "trigger_id"):
            raise TypeError(f"the {NAMES[spec.task_id]} hook returned a Future; hooks "
                            "run after the run ended and cannot wait for events")
        try:
            values.json_text(f"what the {NAMES[spec.task_id]} hook returned", value)
        except (TypeError, ValueError) as exc:
            # Its work is done and nothing reads the value but `status`:
            # failing (and retrying) the hook would do that work again.
            logger.warning("run %s: %s; it is not kept", run.run_id, exc)
            return None
        return value

    return call


def run_info(engine: "Engine", run: RunRecord, *, load: bool = True) -> RunInfo:
    """The run as a hook sees it. load=False keeps large values as their
    references (what the callback sends, see payloads.py)."""
    run_id = run.run_id
    results = {}
    for record in engine.store.get_tasks(run_id, engine.dag.sinks):
        if record.status is not TaskStatus.SUCCEEDED:
            continue
        value = engine.payloads.load(
            record.result, f"the result of task {record.task_id!r} of run {run_id!r}") \
            if load else record.result
        if foreach.is_summary_of(record.task_id, value):  # its items' results
            value = foreach.results(engine, run_id, record.task_id, value, load=load)
        results[record.task_id] = value
    # Not a hook that failed before this one: the run's own tasks only.
    failed = sorted(t.task_id for t in engine.store.find_tasks(
        run_id, TaskStatus.FAILED, MAX_FAILED_LISTED + len(NAMES)) if not is_hook(t.task_id))
    failed = failed[:MAX_FAILED_LISTED]
    args = engine.payloads.with_args(run).args if load else run.args
    return RunInfo(run_id=run_id, job_name=run.job_name, status=run.status, error=run.error,
                   results=results, failed_tasks=failed, args=dict(args or {}),
                   created_at=run.created_at, finished_at=run.finished_at,
                   callback_url=run.callback_url, redrives=run.redrives)


def pending(run: RunRecord | None) -> bool:
    """Whether an ended run still has hooks to run (the poller and resume look)."""
    return run is not None and run.status.is_final and bool(run.hooks_pending)
