"""The workflow shapes the Firestore benchmark runs, as plain data.

Both sides of the comparison build their jobs from these: our package in
bench/firestore_bench.py and Google's Function Flow 0.0.7 in
bench/upstream_driver.py (another process, another venv). So this module
imports nothing but the standard library. Foreach shapes are ours only
(Function Flow has no foreach).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
    """A DAG: task id -> its dependencies, in a valid declaration order.

    foreach: task id -> item count, for tasks that run once per item of
    their first dependency's result (that task returns list(range(count)));
    the task that follows gets every item's result, as an aggregator does.
    """

    name: str
    deps: dict[str, list[str]]
    max_parallel_tasks: int = 5
    foreach: dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        """Tasks that run: a foreach counts as its items (so ops/task is per item)."""
        return len(self.deps) - len(self.foreach) + sum(self.foreach.values())

    @property
    def fan_outs(self) -> int:
        """Where the run fans out: tasks with several dependents, and foreach
        nodes (a `parallel` or a `for`/Map step in Cloud Workflows or Step Functions)."""
        dependents: dict[str, int] = {}
        for deps in self.deps.values():
            for dep in deps:
                dependents[dep] = dependents.get(dep, 0) + 1
        return sum(1 for n in dependents.values() if n > 1) + len(self.foreach)

    def items_returned(self, task_id: str) -> int | None:
        """How many items `task_id` returns for a foreach, or None (a no-op task)."""
        for node, count in self.foreach.items():
            if self.deps[node][0] == task_id:
                return count
        return None

    def aggregates(self, task_id: str) -> str | None:
        """The foreach whose results `task_id` reads, if it follows one."""
        return next((d for d in self.deps[task_id] if d in self.foreach), None)


def chain(length: int) -> Shape:
    deps = {f"t{i}": ([f"t{i - 1}"] if i > 1 else []) for i in range(1, length + 1)}
    return Shape(f"chain-{length}", deps)


def fan(width: int, parallel: int | None = None) -> Shape:
    """1 -> width -> 1; max_parallel_tasks = width (every branch may run)
    unless `parallel` is given, which makes the run hand concurrency slots
    from task to task."""
    deps: dict[str, list[str]] = {"root": []}
    for i in range(1, width + 1):
        deps[f"b{i}"] = ["root"]
    deps["join"] = [f"b{i}" for i in range(1, width + 1)]
    name = f"fan-1-{width}-1" + (f"-p{parallel}" if parallel else "")
    return Shape(name, deps, max_parallel_tasks=parallel or width)


def foreach(items: int) -> Shape:
    """root -> foreach `work` over root's list(range(items)) -> join, which gets
    every item's result; no max_concurrency (all items may run at once)."""
    return Shape(f"foreach-1-{items}-1", {"root": [], "work": ["root"], "join": ["work"]},
                 foreach={"work": items})


def sample() -> Shape:
    """The shape of samples/main.py (its bodies replaced by no-ops)."""
    deps = {
        "task_1": [],
        "task_2": ["task_1"],
        "task_3": ["task_1"],
        "task_4": ["task_2"],
        "task_5": ["task_3", "task_4"],
        "taskr1": ["task_4"],
        "taskr2": ["task_4"],
        "task_6": ["task_5", "taskr1", "taskr2"],
    }
    return Shape("sample", deps)


SHAPES: dict[str, Shape] = {s.name: s for s in (chain(10), chain(50), fan(50), fan(50, 5),
                                                  sample(), foreach(50), fan(1000),
                                                  foreach(1000), foreach(2000), foreach(4000),
                                                  foreach(10_000))}
#: What runs without --shapes: the 1,000-wide ones take minutes (--wide adds
#: them); foreach-1-10000-1 (half an hour) only when named with --shapes.
WIDE = ("fan-1-1000-1", "foreach-1-1000-1")
#: Sizes for checking that an item's cost stays flat (only when named with --shapes).
SCALING = ("foreach-1-2000-1", "foreach-1-4000-1", "foreach-1-10000-1")
DEFAULT_SHAPES = [name for name in SHAPES if name not in WIDE + SCALING]
