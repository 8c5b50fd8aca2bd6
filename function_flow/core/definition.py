"""Task specifications: what one `@job.task(...)` declares, validated.

Errors name the task, because a workflow file can have dozens of them.
`graph.Dag` assembles the specs into a workflow graph.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import random
from typing import Any, Callable, Iterable

from function_flow.errors import DefinitionError

#: Id of the virtual task that depends on every sink; its completion ends the
#: run. Having it makes "the run is done" an ordinary join instead of a
#: counter on the run record (see docs/design.md, "No hot document").
END_TASK_ID = "__end__"

#: Airflow's trigger rules: when a task runs, given how its dependencies
#: ended. The rule itself is records.JoinProgress.verdict.
TRIGGER_RULES = ("all_success", "all_failed", "all_done", "one_success", "one_failed",
                 "none_failed", "none_failed_min_one_success", "always")
#: Rules that may run a task after a dependency failed: a graph with any of
#: them does not end its run at the first failure (see Dag.fails_fast).
FAILURE_HANDLING_RULES = frozenset({"all_failed", "all_done", "one_failed", "one_success",
                                    "always"})
#: Rules that may run a task before all its dependencies are done.
EARLY_RULES = frozenset({"one_success", "one_failed", "always"})
#: Rules under which one succeeded dependency is enough when it is the only one.
RUNS_AFTER_ONE_SUCCESS = frozenset({"all_success", "all_done", "one_success",
                                    "none_failed", "none_failed_min_one_success"})

@dataclasses.dataclass(frozen=True)
class Backoff:
    """Exponential backoff with jitter between the attempts of a task.

    The n-th retry waits a random time in [d/2, d] where
    d = min(maximum, initial * multiplier ** (n - 1)); the jitter keeps many
    failing tasks from retrying in lock step.
    """

    initial: float = 1.0
    maximum: float = 300.0
    multiplier: float = 2.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.multiplier < 1:
            raise DefinitionError(
                "retry_backoff needs 0 <= initial <= maximum and multiplier >= 1, "
                f"got {self}")

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `retry_number` (1-based)."""
        ceiling = min(self.maximum,
                      self.initial * self.multiplier ** max(0, retry_number - 1))
        return (rng or random).uniform(ceiling / 2, ceiling)


@dataclasses.dataclass(frozen=True)
class Call:
    """A remote function a task hands its body's result to (see function_flow.remote).

    Synchronous calls (OpenFaaS `/function/`, HTTP) answer with the task's
    result while the attempt runs; asynchronous ones (a Pub/Sub topic,
    OpenFaaS `/async-function/`) answer later, as an external event naming
    the request's job id, and the attempt stays RUNNING until then.
    """

    kind: str  # "pubsub", "openfaas" or "http"
    target: str  # the topic, the OpenFaaS function name, or the URL
    asynchronous: bool
    options: dict[str, Any] = dataclasses.field(default_factory=dict)

    def describe(self) -> str:
        """The call in words: "Pub/Sub topic T", "OpenFaaS function F (async)"."""
        what = {"pubsub": "Pub/Sub topic", "openfaas": "OpenFaaS function",
                "http": "HTTP endpoint"}.get(self.kind, self.kind)
        mode = " (async)" if self.asynchronous and self.kind != "pubsub" else ""
        return f"{what} {self.target}{mode}"


#: Most items a foreach fans out into, unless the task says otherwise.
DEFAULT_FOREACH_MAX_ITEMS = 100_000


@dataclasses.dataclass(frozen=True)
class ForEach:
    """A task that runs once per item of another task's result (core/foreach.py).

    `over` names the task whose result (a list, or a mapping) gives the
    items. At most `max_concurrency` items run at once (None: as many as
    the run's max_parallel_tasks allows). The foreach fails when more items
    failed than tolerated: `tolerated_failures` items, or
    `tolerated_failure_percentage` percent of them (Step Functions' Map).
    With `dag` (a graph.Dag), each item runs a whole sub-DAG instead of
    the task's body: item i's tasks are `node[i]/t` (core/foreach.py).
    """

    over: str
    max_concurrency: int | None = None
    tolerated_failures: int = 0
    tolerated_failure_percentage: float | None = None
    max_items: int = DEFAULT_FOREACH_MAX_ITEMS
    dag: Any = None

    def tolerates(self, failed: int, total: int) -> bool:
        """Whether `failed` failed items out of `total` still let the foreach succeed."""
        if failed <= self.tolerated_failures:
            return True
        percentage = self.tolerated_failure_percentage
        return percentage is not None and total > 0 and failed * 100.0 / total <= percentage


@dataclasses.dataclass
class TaskSpec:
    """One task of a workflow as the user declared it."""

    task_id: str
    deps: tuple[str, ...]
    func: Callable[..., Any] | None
    retries: int = 0
    retry_backoff: Backoff = dataclasses.field(default_factory=Backoff)
    timeout: float | None = None
    task_args: dict[str, Any] = dataclasses.field(default_factory=dict)
    #: How to call `func`: "keywords" (it names task/job or takes **kwargs),
    #: "positional" (upstream style func(task, job)) or "none".
    call_style: str = "keywords"
    pass_task: bool = True
    pass_job: bool = True
    #: The remote function the body's result goes to, if any.
    call: Call | None = None
    #: Exception types a failure is retried on (None: every failure).
    retry_on: tuple[type[BaseException], ...] | None = None
    #: When the task runs, given how its dependencies ended (TRIGGER_RULES).
    trigger_rule: str = "all_success"
    #: A decision task: its result names the dependents to follow; the
    #: others are SKIPPED (see branch_choice).
    branch: bool = False
    #: Set for a foreach: the body runs once per item (core/foreach.py).
    foreach: ForEach | None = None
    #: Whether the body takes the item as `item=` (a foreach's body).
    takes_item: bool = False

    def retries_on(self, cause: BaseException | None) -> bool:
        """Whether a failure with `cause` may be retried (retries permitting).

        `cause` is the exception the body raised, a TimeoutError for an
        attempt past its timeout, or None for a failure that an event or a
        remote function reported: that counts as errors.ReportedFailure.
        """
        if self.retry_on is None:
            return True
        if cause is None:
            from function_flow.errors import ReportedFailure

            cause = ReportedFailure()
        return isinstance(cause, self.retry_on)


def branch_choice(spec: TaskSpec, dependents: Iterable[str], value: Any,
                  task_id: str | None = None) -> frozenset[str]:
    """The dependents a decision task's result chooses; ValueError saying why not.

    The result is a dependent's task id, a list of them, or None/[] (take no
    branch: every dependent is SKIPPED). `task_id` is the deciding task's
    own id when it differs from its spec's (in a foreach's sub-DAG: `node[3]/t`).
    """
    dependents = [d for d in dependents if d != END_TASK_ID]
    chosen = [] if value is None else [value] if isinstance(value, str) else value
    if not isinstance(chosen, list) or not all(isinstance(c, str) for c in chosen):
        raise ValueError(
            f"branch task {spec.task_id!r} must return the id of the dependent to follow "
            f"or a list of them, got {type(value).__name__} {value!r}")
    # Inside a sub-DAG ("node/decide"), a body names its siblings by their own ids.
    scope = (task_id or spec.task_id).rpartition("/")[0]
    if scope:
        chosen = [f"{scope}/{c}" if c not in dependents and f"{scope}/{c}" in dependents
                  else c for c in chosen]
    unknown = [c for c in chosen if c not in dependents]
    if unknown:
        raise ValueError(
            f"branch task {spec.task_id!r} chose {', '.join(map(repr, unknown))}, which "
            f"{'is' if len(unknown) == 1 else 'are'} not among its dependents "
            f"({', '.join(dependents) or 'none'})")
    return frozenset(chosen)


def _foreach(task_id: str, deps: tuple[str, ...], foreach: ForEach | None) -> ForEach | None:
    """Check a foreach's settings; errors name the task."""
    if foreach is None:
        return None

    def bad(what: str) -> DefinitionError:
        return DefinitionError(f"task {task_id!r}: {what}", task_id)

    if not isinstance(foreach, ForEach):
        raise bad(f"foreach must be a ForEach, got {foreach!r}; declare a foreach with "
                  "@job.foreach(task_id=..., over='the task whose result it runs over')")

    if foreach.over not in deps:
        raise bad(f"foreach over {foreach.over!r} must also be one of its deps")
    whole = (int,)
    if foreach.max_concurrency is not None and (
            not isinstance(foreach.max_concurrency, whole)
            or isinstance(foreach.max_concurrency, bool) or foreach.max_concurrency < 1):
        raise bad(f"max_concurrency must be an integer >= 1, got {foreach.max_concurrency!r}")
    if not isinstance(foreach.tolerated_failures, whole) \
            or isinstance(foreach.tolerated_failures, bool) or foreach.tolerated_failures < 0:
        raise bad("tolerated_failures must be an integer >= 0, "
                  f"got {foreach.tolerated_failures!r}")
    percentage = foreach.tolerated_failure_percentage
    if percentage is not None and (not isinstance(percentage, (int, float))
                                   or isinstance(percentage, bool)
                                   or not 0 <= percentage <= 100):
        raise bad(f"tolerated_failure_percentage must be between 0 and 100, got {percentage!r}")
    if not isinstance(foreach.max_items, whole) or isinstance(foreach.max_items, bool) \
            or foreach.max_items < 1:
        raise bad(f"max_items must be an integer >= 1, got {foreach.max_items!r}")
    return foreach


def refuse_async(what: str, func: Callable[..., Any], task_id: str | None) -> None:
    """An `async def` would return a coroutine nobody awaits: refused now."""
    if inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func):
        name = getattr(func, "__name__", repr(func))
        raise DefinitionError(
            f"{what}: {name}() is an async function, and bodies are called as plain "
            f"functions; declare it with `def` and run its coroutine inside with "
            f"asyncio.run(...)", task_id)


def _takes_item(func: Callable[..., Any]) -> bool:
    params = inspect.signature(func).parameters.values()
    return any(p.name == "item" or p.kind == inspect.Parameter.VAR_KEYWORD for p in params)


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """` (did you mean 'x'?)` for the choice closest to a mistyped `name`, or ""."""
    close = closest(name, choices)
    return f" (did you mean {close!r}?)" if close else ""


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice a mistyped `name` most likely meant, if one is close enough."""
    close = difflib.get_close_matches(name, list(choices), n=1)
    return close[0] if close else None


def _trigger_rule(task_id: str, rule: Any) -> str:
    if rule not in TRIGGER_RULES:
        hint = did_you_mean(str(rule), TRIGGER_RULES)
        raise DefinitionError(
            f"task {task_id!r}: unknown trigger_rule {rule!r}{hint}; use one of "
            f"{', '.join(TRIGGER_RULES)}", task_id)
    return rule


def _call_style(task_id: str, func: Callable[..., Any],
                extra: frozenset[str] = frozenset()) -> tuple[str, bool, bool]:
    """Decide how to call `func` so that both upstream styles work.

    Function Flow calls `func(task, job)` positionally, while its README shows
    `def f(job, **context)`. We bind by name when the function names `task` or
    `job` or takes **kwargs, else positionally. Anything else cannot accept
    the call and is rejected now rather than when the task first runs.
    """
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError) as exc:
        raise DefinitionError(
            f"task {task_id!r}: cannot inspect the signature of {func!r}: {exc}",
            task_id) from exc
    kinds = inspect.Parameter
    takes_kwargs = any(p.kind == kinds.VAR_KEYWORD for p in params)
    takes_args = any(p.kind == kinds.VAR_POSITIONAL for p in params)
    # Positional-only parameters cannot receive task=/job= keywords.
    named = {p.name for p in params if p.name in ("task", "job")
             and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
    named_extra = {p.name for p in params if p.name in extra
                   and p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
    name = getattr(func, "__name__", repr(func))

    def cannot_supply(missing: list[str], called_as: str) -> DefinitionError:
        known = ["task", "job", *extra]
        close = [f"{m!r} for {c!r}" for m in missing
                 for c in [closest(m.split(" ")[0], known)] if c]
        hint = f" (a typo? {', '.join(close)})" if close else ""
        return DefinitionError(
            f"task {task_id!r}: function {name}() requires parameter(s) "
            f"{', '.join(missing)} that function_flow cannot supply{hint}; it is called "
            f"as {called_as}; declare it as `def f(task, job)` or `def f(**context)`",
            task_id)

    if named or named_extra or takes_kwargs:
        pass_task, pass_job = "task" in named or takes_kwargs, "job" in named or takes_kwargs
        unfillable = [p.name + (" (positional-only)" if p.kind == kinds.POSITIONAL_ONLY else "")
                      for p in params
                      if p.default is p.empty and p.name not in named and p.name not in extra
                      and p.kind in (kinds.POSITIONAL_OR_KEYWORD,
                                     kinds.KEYWORD_ONLY, kinds.POSITIONAL_ONLY)]
        if unfillable:
            keywords = [k for k, passed in (("task", pass_task), ("job", pass_job)) if passed]
            raise cannot_supply(unfillable, f"func({', '.join(k + '=...' for k in keywords)})")
        return "keywords", pass_task, pass_job
    positional = [p for p in params
                  if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    required_kw = [p.name for p in params
                   if p.kind == kinds.KEYWORD_ONLY and p.default is p.empty]
    if len(required) > 2 or required_kw:
        raise cannot_supply(required_kw or [p.name for p in required[2:]], "func(task, job)")
    if not positional and not takes_args:
        return "none", False, False
    if len(positional) < 2 and not takes_args:
        # e.g. `def f(context)`: func(task, job) would fail with a TypeError
        # on the first run; say so now, while the workflow is being defined.
        raise DefinitionError(
            f"task {task_id!r}: function {name}() takes one positional parameter "
            f"({positional[0].name}) but is called as func(task, job); "
            "declare it as `def f(task, job)` or `def f(**context)`", task_id)
    return "positional", True, True


def _retry_on(task_id: str, retry_on: Any) -> tuple[type[BaseException], ...] | None:
    """An exception type or a tuple of them, as `except` takes, else a DefinitionError."""
    if retry_on is None:
        return None
    types = retry_on if isinstance(retry_on, tuple) else (retry_on,)
    bad = [t for t in types if not (isinstance(t, type) and issubclass(t, BaseException))]
    if bad or not types:
        raise DefinitionError(
            f"task {task_id!r}: retry_on must be an exception type or a tuple of them "
            f"(as `except` takes), got {retry_on!r}", task_id)
    return types


def _check_task_args(task_id: str, task_args: Any) -> None:
    """task_args travel as JSON (to remote functions, into records): say so now."""
    if task_args is None:
        return
    if not isinstance(task_args, dict) or not all(isinstance(k, str) for k in task_args):
        raise DefinitionError(
            f"task {task_id!r}: task_args must be a dict with string keys, got "
            f"{type(task_args).__name__}", task_id)
    try:
        json.dumps(task_args, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        raise DefinitionError(
            f"task {task_id!r}: task_args must be JSON-serialisable ({exc})", task_id) from None


def make_spec(task_id: Any, deps: Any, func: Callable[..., Any] | None, *,
              retries: int = 0, retry_backoff: Backoff | float | None = None,
              timeout: float | None = None,
              task_args: dict[str, Any] | None = None,
              call: Call | None = None, retry_on: Any = None,
              trigger_rule: str = "all_success", branch: bool = False,
              foreach: ForEach | None = None) -> TaskSpec:
    """Validate one task's declaration and build its spec.

    Errors name the task, because a workflow file can have dozens of them.
    """
    if not isinstance(task_id, str) or not task_id:
        raise DefinitionError(f"task id must be a non-empty string, got {task_id!r}")
    if task_id == END_TASK_ID or "/" in task_id or task_id.startswith("__"):
        raise DefinitionError(
            f"task {task_id!r}: ids may not contain '/' or start with '__' "
            "(reserved for function_flow)", task_id)
    if deps is None:
        deps = ()
    if isinstance(deps, str) or not isinstance(deps, Iterable):
        raise DefinitionError(
            f"task {task_id!r}: deps must be a list of task ids, got {deps!r}", task_id)
    deps = tuple(deps)
    for dep in deps:
        if not isinstance(dep, str):
            raise DefinitionError(
                f"task {task_id!r}: dependency {dep!r} is not a task id string", task_id)
    if len(set(deps)) != len(deps):
        raise DefinitionError(f"task {task_id!r}: a dependency is listed twice", task_id)
    if task_id in deps:
        raise DefinitionError(
            f"task {task_id!r} depends on itself: cycle {task_id} -> {task_id}", task_id)
    if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
        raise DefinitionError(
            f"task {task_id!r}: retries must be an integer >= 0, got {retries!r}", task_id)
    if isinstance(retry_backoff, (int, float)) and not isinstance(retry_backoff, bool):
        if not 0 <= retry_backoff < float("inf"):
            raise DefinitionError(
                f"task {task_id!r}: retry_backoff must be a number of seconds >= 0, "
                f"got {retry_backoff!r}", task_id)
        retry_backoff = Backoff(initial=float(retry_backoff),
                                maximum=max(300.0, float(retry_backoff)))
    elif retry_backoff is None:
        retry_backoff = Backoff()
    elif not isinstance(retry_backoff, Backoff):
        raise DefinitionError(
            f"task {task_id!r}: retry_backoff must be seconds or a Backoff, "
            f"got {retry_backoff!r}", task_id)
    if timeout is not None and (not isinstance(timeout, (int, float))
                                or isinstance(timeout, bool) or not 0 < timeout < float("inf")):
        raise DefinitionError(
            f"task {task_id!r}: timeout must be a positive number of seconds, "
            f"got {timeout!r}", task_id)
    _check_task_args(task_id, task_args)
    retry_on = _retry_on(task_id, retry_on)
    trigger_rule = _trigger_rule(task_id, trigger_rule)
    if not isinstance(branch, bool):
        raise DefinitionError(f"task {task_id!r}: branch must be True or False, "
                              f"got {branch!r}", task_id)
    style, pass_task, pass_job = ("none", False, False)
    if func is not None:
        if not callable(func):
            raise DefinitionError(f"task {task_id!r}: {func!r} is not callable", task_id)
        refuse_async(f"task {task_id!r}", func, task_id)
        style, pass_task, pass_job = _call_style(
            task_id, func, frozenset({"item"}) if foreach is not None else frozenset())
    return TaskSpec(task_id=task_id, deps=deps, func=func, retries=retries,
                    retry_backoff=retry_backoff, timeout=timeout,
                    task_args=dict(task_args or {}), call_style=style,
                    pass_task=pass_task, pass_job=pass_job, call=call, retry_on=retry_on,
                    trigger_rule=trigger_rule, branch=branch,
                    foreach=_foreach(task_id, deps, foreach),
                    takes_item=foreach is not None and func is not None
                    and _takes_item(func))
