"""The workflow shapes the Firestore benchmark runs, as plain data.

Both sides of the comparison build their jobs from these: our package in
bench/firestore_bench.py and Google's Function Flow 0.0.7 in
bench/upstream_driver.py (another process, another venv). So this module
imports nothing but the standard library.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Shape:
    """A DAG: task id -> its dependencies, in a valid declaration order."""

    name: str
    deps: dict[str, list[str]]
    max_parallel_tasks: int = 5

    @property
    def size(self) -> int:
        return len(self.deps)


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
                                                  sample())}
