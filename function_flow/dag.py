"""The workflow graph: task specifications, validation and graph facts.

A `Dag` is built once when the workflow module is imported and never changes
afterwards. Everything the engine needs to know about the shape of a
workflow (dependents, in-degrees, sinks, the bound on concurrency) is
computed here, once, so that the hot path of the engine is dictionary look-ups.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import inspect
import json
import random
from typing import Any, Callable, Iterable

from function_flow.errors import DefinitionError

#: Id of the virtual task that depends on every sink; its completion ends the
#: run. Having it makes "the run is done" an ordinary join instead of a
#: counter on the run record (see DESIGN.md, "No hot document").
END_TASK_ID = "__end__"


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


def _call_style(task_id: str, func: Callable[..., Any]) -> tuple[str, bool, bool]:
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
    name = getattr(func, "__name__", repr(func))

    def cannot_supply(missing: list[str], called_as: str) -> DefinitionError:
        return DefinitionError(
            f"task {task_id!r}: function {name}() requires parameter(s) "
            f"{', '.join(missing)} that function_flow cannot supply; it is called "
            f"as {called_as}; declare it as `def f(task, job)` or `def f(**context)`",
            task_id)

    if named or takes_kwargs:
        pass_task, pass_job = "task" in named or takes_kwargs, "job" in named or takes_kwargs
        unfillable = [p.name + (" (positional-only)" if p.kind == kinds.POSITIONAL_ONLY else "")
                      for p in params
                      if p.default is p.empty and p.name not in named
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


def make_spec(task_id: Any, deps: Any, func: Callable[..., Any] | None, *,
              retries: int = 0, retry_backoff: Backoff | float | None = None,
              timeout: float | None = None,
              task_args: dict[str, Any] | None = None) -> TaskSpec:
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
    style, pass_task, pass_job = ("none", False, False)
    if func is not None:
        if not callable(func):
            raise DefinitionError(f"task {task_id!r}: {func!r} is not callable", task_id)
        style, pass_task, pass_job = _call_style(task_id, func)
    return TaskSpec(task_id=task_id, deps=deps, func=func, retries=retries,
                    retry_backoff=retry_backoff, timeout=timeout,
                    task_args=dict(task_args or {}), call_style=style,
                    pass_task=pass_task, pass_job=pass_job)


class Dag:
    """An immutable, validated workflow graph plus facts derived from it."""

    def __init__(self, name: str, specs: Iterable[TaskSpec]) -> None:
        self.name = name
        self.tasks: dict[str, TaskSpec] = {}
        for spec in specs:
            if spec.task_id in self.tasks:
                raise DefinitionError(
                    f"task {spec.task_id!r} is defined twice in job {name!r}; "
                    "task ids must be unique", spec.task_id)
            self.tasks[spec.task_id] = spec
        if not self.tasks:
            # A run of nothing would never reach its end task: it would wait forever.
            raise DefinitionError(
                f"job {name!r} has no tasks: declare at least one with "
                "@job.task(task_id=...) before running or deploying it")
        for spec in self.tasks.values():
            for dep in spec.deps:
                if dep not in self.tasks:
                    raise DefinitionError(
                        f"task {spec.task_id!r} depends on unknown task {dep!r}"
                        f"{_did_you_mean(dep, self.tasks)}", spec.task_id)
        self.order = self._topological_order()
        self.dependents: dict[str, tuple[str, ...]] = {t: () for t in self.tasks}
        for spec in self.tasks.values():
            for dep in spec.deps:
                self.dependents[dep] += (spec.task_id,)
        self.roots = tuple(t for t in self.order if not self.tasks[t].deps)
        self.sinks = tuple(t for t in self.order if not self.dependents[t])
        self._width_bound: int | None = None

    def deps_of(self, task_id: str) -> tuple[str, ...]:
        """Dependencies of a task; the end node depends on every sink."""
        if task_id == END_TASK_ID:
            return self.sinks
        return self.tasks[task_id].deps

    def dependents_of(self, task_id: str) -> tuple[str, ...]:
        """Tasks (possibly the end node) that wait for `task_id`."""
        if task_id == END_TASK_ID:
            return ()
        return self.dependents[task_id] or (END_TASK_ID,)

    def _topological_order(self) -> list[str]:
        """Kahn's algorithm; on a cycle, report its path, not just 'a cycle'."""
        indegree = {t: len(s.deps) for t, s in self.tasks.items()}
        children: dict[str, list[str]] = {t: [] for t in self.tasks}
        for spec in self.tasks.values():
            for dep in spec.deps:
                children[dep].append(spec.task_id)
        ready = [t for t, d in indegree.items() if d == 0]
        order: list[str] = []
        while ready:
            node = ready.pop()
            order.append(node)
            for child in children[node]:
                indegree[child] -= 1
                if indegree[child] == 0:
                    ready.append(child)
        if len(order) != len(self.tasks):
            cycle = self._find_cycle({t for t, d in indegree.items() if d > 0})
            raise DefinitionError(
                f"job {self.name!r} has a dependency cycle: {' -> '.join(cycle)}",
                cycle[0])
        # Keep declaration order among independent tasks for stable output.
        position = {t: i for i, t in enumerate(self.tasks)}
        depth: dict[str, int] = {}
        for node in order:
            depth[node] = 1 + max((depth[d] for d in self.tasks[node].deps), default=-1)
        return sorted(order, key=lambda t: (depth[t], position[t]))

    def _find_cycle(self, candidates: set[str]) -> list[str]:
        """Walk dependencies inside the unsorted remainder until a node repeats."""
        node = min(candidates)
        path: list[str] = []
        seen: dict[str, int] = {}
        while node not in seen:
            seen[node] = len(path)
            path.append(node)
            node = next(d for d in self.tasks[node].deps if d in candidates)
        cycle = path[seen[node]:] + [node]
        return list(reversed(cycle))

    @property
    def width_bound(self) -> int:
        """An upper bound on how many tasks can ever run at the same time.

        Computed as the size of a minimum path cover over the graph's edges
        (nodes minus a maximum matching): each path runs one task at a time,
        so concurrency never exceeds the number of paths. When this bound is
        at most max_parallel_tasks, a run needs no slot bookkeeping at all.
        """
        if self._width_bound is None:
            self._width_bound = len(self.tasks) - _max_matching(self)
        return self._width_bound

    def digest(self) -> str:
        """A hash of the graph's shape, stored on each run.

        It lets a scheduler notice that a run was started with a different
        definition than the one deployed now.
        """
        shape = [[t, list(self.tasks[t].deps)] for t in sorted(self.tasks)]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def _max_matching(dag: Dag) -> int:
    """Size of a maximum matching of the edges parent -> child (Kuhn, BFS)."""
    match_of_child: dict[str, str] = {}
    match_of_parent: dict[str, str] = {}
    for root in dag.order:
        came_from: dict[str, str] = {}
        queue = collections.deque([root])
        while queue:
            parent = queue.popleft()
            free_child = None
            for child in dag.dependents[parent]:
                if child in came_from:
                    continue
                came_from[child] = parent
                if child not in match_of_child:
                    free_child = child
                    break
                queue.append(match_of_child[child])
            if free_child is not None:
                child = free_child
                while True:  # flip the alternating path back to the root
                    parent = came_from[child]
                    previous = match_of_parent.get(parent)
                    match_of_child[child] = parent
                    match_of_parent[parent] = child
                    if parent == root:
                        break
                    child = previous
                break
    return len(match_of_child)


def _did_you_mean(name: str, choices: Iterable[str]) -> str:
    import difflib
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
