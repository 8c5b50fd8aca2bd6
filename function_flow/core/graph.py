"""The workflow graph: the validated definition, and the graph of one run.

A `Dag` is built once when the workflow module is imported and never changes
afterwards. Everything the engine needs to know about the shape of a
workflow (dependents, in-degrees, sinks, the bound on concurrency) is
computed here, once, so that the hot path of the engine is dictionary
look-ups. A `RunGraph` is what the engine asks: the definition plus
whatever one run added to it while it runs.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
from typing import Any, Iterable

from function_flow.core.definition import (EARLY_RULES, END_TASK_ID, FAILURE_HANDLING_RULES,
                                           RUNS_AFTER_ONE_SUCCESS, Backoff, TaskSpec,
                                           did_you_mean, make_spec)
from function_flow.errors import DefinitionError

__all__ = ["Dag", "RunGraph", "TaskRecordLike", "END_TASK_ID", "Backoff", "TaskSpec", "make_spec"]


class Dag:
    """An immutable, validated workflow graph plus facts derived from it."""

    def __init__(self, name: str, specs: Iterable[TaskSpec],
                 hooks: Iterable[TaskSpec] = ()) -> None:
        self.name = name
        #: What runs after a run ended, by reserved id (core/hooks.py); not tasks.
        self.hooks: dict[str, TaskSpec] = {spec.task_id: spec for spec in hooks}
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
                    node = dep.split("/", 1)[0]
                    inside = f" (a task inside a sub-DAG is not depended on from outside it: " \
                        f"depend on its node, {node!r})" if "/" in dep and node in self.tasks \
                        else ""
                    raise DefinitionError(
                        f"task {spec.task_id!r} depends on unknown task {dep!r}{inside}"
                        # Never the task itself: depending on it would be a cycle.
                        f"{did_you_mean(dep, (t for t in self.tasks if t != spec.task_id))}",
                        spec.task_id)
        self.order = self._topological_order()
        # Lists first: a tuple grown per dependent made a wide fan-out quadratic.
        dependents: dict[str, list[str]] = {t: [] for t in self.tasks}
        for spec in self.tasks.values():
            for dep in spec.deps:
                dependents[dep].append(spec.task_id)
        self.dependents: dict[str, tuple[str, ...]] = {
            t: tuple(d) for t, d in dependents.items()}
        #: Queued when a run starts: tasks without dependencies, and those
        #: whose trigger rule is `always` (Airflow: they run at any time).
        self.roots = tuple(t for t in self.order if not self.tasks[t].deps
                           or self.tasks[t].trigger_rule == "always")
        self.sinks = tuple(t for t in self.order if not self.dependents[t])
        #: Without a task that may run after a failure, the first task that
        #: fails for good ends the run (as Function Flow does); with one, the
        #: run goes on until every task has ended.
        self.fails_fast = not any(s.trigger_rule in FAILURE_HANDLING_RULES
                                  for s in self.tasks.values())
        self.end_deps = self._end_deps()
        self._to_end = frozenset(self.end_deps)
        self._width_bound: int | None = None
        #: The tasks a foreach over a sub-DAG runs per item, as `node/t`: the
        #: specs its item records `node[i]/t` run as. Not tasks of the graph.
        self.templates: dict[str, TaskSpec] = {
            f"{spec.task_id}/{t}": dataclasses.replace(
                inner, task_id=f"{spec.task_id}/{t}",
                deps=tuple(f"{spec.task_id}/{d}" for d in inner.deps))
            for spec in self.tasks.values() if spec.foreach and spec.foreach.dag
            for t, inner in spec.foreach.dag.tasks.items()}

    def spec_of(self, template: str) -> TaskSpec | None:
        """The spec a task id names: a task of the graph, or a foreach's template."""
        return self.tasks.get(template) or self.templates.get(template)

    def _end_deps(self) -> tuple[str, ...]:
        """What the run's end waits for: its sinks, and the dependencies of
        tasks that may run before all their dependencies are done (one_success,
        one_failed, always), since those may still be running when every sink
        has ended. Every other task ends only after all its dependencies."""
        ends = set(self.sinks)
        stack = [t for t, s in self.tasks.items() if s.trigger_rule in EARLY_RULES]
        seen = set(stack)
        while stack:
            for dep in self.tasks[stack.pop()].deps:
                ends.add(dep)
                if dep not in seen and self.tasks[dep].trigger_rule in EARLY_RULES:
                    seen.add(dep)
                    stack.append(dep)
        return tuple(t for t in self.order if t in ends)

    def deps_of(self, task_id: str) -> tuple[str, ...]:
        """Dependencies of a task; the end node depends on every sink."""
        if task_id == END_TASK_ID:
            return self.end_deps
        return self.tasks[task_id].deps

    def dependents_of(self, task_id: str) -> tuple[str, ...]:
        """Tasks (possibly the end node) that wait for `task_id`."""
        if task_id == END_TASK_ID:
            return ()
        if task_id in self._to_end:
            return self.dependents[task_id] + (END_TASK_ID,)
        return self.dependents[task_id]

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
            bound = len(self.tasks) - _max_matching(self)
            for spec in self.tasks.values():
                if spec.foreach is not None:  # one task of the graph, many at run time
                    bound += _foreach_width(spec) - 1
            self._width_bound = bound
        return self._width_bound

    def width_bound_with(self, task_id: str, items: int) -> int:
        """`width_bound` once foreach `task_id` is known to run over `items` items.

        The definition bounds a foreach by its max_items; its attempt knows
        how many it has. When even then the graph can never run more than
        max_parallel_tasks at once, its items need no concurrency slots
        (foreach.item_slots): the bound holds whoever else holds slots.
        """
        spec = self.tasks[task_id]
        return self.width_bound - _foreach_width(spec) + _foreach_width(spec, items)

    def digest(self) -> str:
        """A hash of the graph's shape, stored on each run.

        It lets a scheduler notice that a run was started with a different
        definition than the one deployed now.
        """
        shape = [[t, list(self.tasks[t].deps), self.tasks[t].trigger_rule,
                  self.tasks[t].branch] for t in sorted(self.tasks)]
        return hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]


def _foreach_width(spec: TaskSpec, items: int | None = None) -> int:
    """How many tasks foreach `spec`'s items can run at once (over `items` items
    when known): its lanes times its sub-DAG's own width."""
    assert spec.foreach is not None
    limit = spec.foreach.max_concurrency or spec.foreach.max_items
    inner = spec.foreach.dag.width_bound if spec.foreach.dag else 1
    lanes = limit if items is None else min(limit, items)
    return lanes * inner


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
                # A task that may start before this dependency ends (one_success,
                # one_failed, always) is not after it on a path of one-at-a-time.
                if child in came_from or dag.tasks[child].trigger_rule in EARLY_RULES:
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


class RunGraph:
    """The graph of one run: its definition, plus the tasks the run added.

    The engine asks this, never the `Dag`, for a task's spec, dependencies
    and dependents. A task added while the run runs (foreach items, the
    tasks of a sub-DAG) keeps its edges in its own record (`deps`,
    `dependents`) and names the declared task whose body and settings it
    uses (`template`); a declared task whose dependents grew keeps its new
    list in its record too. Every answer therefore needs at most the one
    record the engine already holds for that step, and a run that added
    nothing costs dictionary look-ups, as before.
    """

    def __init__(self, dag: Dag) -> None:
        self.dag = dag
        self._single: dict[str, tuple[str, ...]] = {}  # single_dependency_dependents
        self._lanes: dict[str, tuple[dict[str, int], tuple[str, ...]]] = {}  # slot_heir

    @property
    def name(self) -> str:
        return self.dag.name

    def spec(self, task_id: str, record: TaskRecordLike | None = None) -> TaskSpec | None:
        """The declared task that `task_id` runs as (None for the end task or unknown ids)."""
        template = getattr(record, "template", None) or task_id
        spec = self.dag.spec_of(template) or self.dag.hooks.get(task_id)
        own = getattr(record, "timeout", None)  # a timeout of its own (records.TaskRecord)
        if spec is not None and own is not None and own != spec.timeout:
            spec = dataclasses.replace(spec, timeout=float(own))
        return spec

    def knows(self, task_id: str, record: TaskRecordLike | None = None) -> bool:
        """Whether `task_id` is a task of this run (the end task included)."""
        return task_id == END_TASK_ID or self.spec(task_id, record) is not None

    def deps_of(self, task_id: str, record: TaskRecordLike | None = None) -> tuple[str, ...]:
        """Dependencies of a task; the end task depends on every sink."""
        own = getattr(record, "deps", None)
        if own is not None:
            return tuple(own)
        if task_id == END_TASK_ID:
            return self.dag.end_deps
        spec = self.dag.tasks.get(task_id)
        return spec.deps if spec is not None else ()

    def rule_of(self, task_id: str, record: TaskRecordLike | None = None) -> str:
        """The trigger rule of a task; the end task waits for all its dependencies."""
        own = getattr(record, "trigger_rule", None)
        if own is not None:
            return own
        spec = self.spec(task_id, record)
        return spec.trigger_rule if spec is not None else "all_done"

    def dependents_of(self, task_id: str, record: TaskRecordLike | None = None
                      ) -> tuple[str, ...]:
        """Tasks (possibly the end task) that wait for `task_id`."""
        if task_id == END_TASK_ID:
            return ()
        own = getattr(record, "dependents", None)
        if own is not None:
            return tuple(own) or (END_TASK_ID,)
        if task_id not in self.dag.tasks:
            return ()
        return self.dag.dependents_of(task_id)

    def single_dependency_dependents(self, task_id: str,
                                     record: TaskRecordLike | None = None) -> tuple[str, ...]:
        """Dependents that a success of `task_id` alone makes runnable.

        Trusted only when both edges come from the definition: a task whose
        record lists its own dependents (a graph the run grew) treats every
        dependent as a join, whose record is read after the commit. So does
        a branch task (its result decides), and a dependent whose trigger
        rule does not simply run after its one dependency succeeded.
        """
        if getattr(record, "dependents", None) is not None:
            return ()
        found = self._single.get(task_id)
        if found is None:
            spec = self.dag.tasks.get(task_id)
            found = () if spec is None or spec.branch else tuple(
                d for d in self.dependents_of(task_id)
                if d != END_TASK_ID and len(self.dag.tasks[d].deps) == 1
                and self.dag.tasks[d].trigger_rule in RUNS_AFTER_ONE_SUCCESS)
            self._single[task_id] = found  # the definition's edges never change
        return found


    def slot_heir(self, task_id: str, record: TaskRecordLike | None,
                  slots: int) -> str | None:
        """The sibling that takes `task_id`'s concurrency slot when it succeeds.

        A task's success makes all of its single-dependency dependents
        READY at once (the first takes its slot). Sorted by id, they form
        `slots` lanes: the i-th hands its slot to the (i + slots)-th, so
        the tasks running at once never compete for one READY successor
        (the first `slots` of them take the slots fill_slots hands out,
        which a store's READY query returns by id too). Only a hint: the
        hand-over checks that the heir is still READY.
        """
        if not slots or getattr(record, "deps", None) is not None:
            return None
        spec = self.dag.tasks.get(task_id)
        if spec is None or len(spec.deps) != 1:
            return None
        lane = self._lanes.get(spec.deps[0])
        if lane is None:
            siblings = tuple(sorted(self.single_dependency_dependents(spec.deps[0])))
            lane = self._lanes[spec.deps[0]] = (
                {t: i for i, t in enumerate(siblings)}, siblings)
        index = lane[0].get(task_id)
        if index is None or index + slots >= len(lane[1]):
            return None
        return lane[1][index + slots]

    def runs_after(self, record: Any, task_id: str) -> bool:
        """Whether WAITING `record` runs once `task_id`, its only dependency, succeeds."""
        return getattr(record, "status", None) == "WAITING" and not record.deps_done \
            and list(self.deps_of(record.task_id, record)) == [task_id] \
            and self.rule_of(record.task_id, record) in RUNS_AFTER_ONE_SUCCESS


class TaskRecordLike:
    """What RunGraph reads from a task record (records.TaskRecord has it all)."""

    template: str | None
    deps: list[str] | None
    dependents: list[str] | None
    trigger_rule: str | None
