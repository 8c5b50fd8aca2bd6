"""Per-task overhead of the embedded backend, beside a plain in-process loop.

    .venv/bin/python bench/engine_bench.py [--sizes 1000] [--workers 8] [--repeat 3]
    .venv/bin/python bench/engine_bench.py --profile fanout   # where the time goes

Scenarios, for each size N (no-op task bodies everywhere):

* chain: t0 -> t1 -> ... -> t(N-1)
* fan-out: root -> N middle tasks -> join, with max_parallel_tasks = N (the
  graph never exceeds it, so the run needs no slot records)
* fan-out, max_parallel_tasks=50: the same graph with 50 concurrency slots,
  so every task also takes and hands over a slot record

Each scenario runs twice per repeat: as a `graphlib.TopologicalSorter` loop
that calls the task functions in this process (the floor: no durability, no
threads), and on the embedded backend (SqliteStore in a temp dir: WAL,
synchronous=NORMAL, survives kill -9; LocalBus worker pool) through the
public API (`tasks.Job(...).use_backend(embedded(...))`, start, wait).
The table shows the median of --repeat runs.

Every scenario runs in its own child process, so that its peak RSS growth
(`resource.getrusage` maxrss after the timed runs minus maxrss before them)
is its own. The Python heap peak comes from one extra, untimed run under
tracemalloc (which traces every thread, and would slow the timed runs).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import graphlib
import json
import os
import pstats
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any, Callable

TARGET_MS_PER_TASK = 1.0
SLOTTED_PARALLELISM = 50


def noop(task: Any, job: Any) -> None:
    """The task body of every benchmark task: Function Flow's signature, no work."""
    return None


# ------------------------------------------------------------------ graphs

def graph(shape: str, size: int) -> dict[str, list[str]]:
    """task id -> dependencies, in declaration order."""
    if shape == "chain":
        return {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(size)}
    if shape == "fanout":
        middle = [f"m{i}" for i in range(size)]
        deps: dict[str, list[str]] = {"root": []}
        deps.update({m: ["root"] for m in middle})
        deps["join"] = middle
        return deps
    raise ValueError(f"unknown shape {shape!r}")


@dataclasses.dataclass(frozen=True)
class Scenario:
    """One row of the table."""

    shape: str
    size: int
    max_parallel: int

    @property
    def label(self) -> str:
        if self.shape == "chain":
            return f"chain of {self.size}"
        label = f"fan-out 1->{self.size}->1"
        if self.max_parallel < self.size:
            label += f", max_parallel={self.max_parallel}"
        return label

    def key(self) -> str:
        return f"{self.shape}:{self.size}:{self.max_parallel}"

    @classmethod
    def parse(cls, key: str) -> "Scenario":
        shape, size, parallel = key.split(":")
        return cls(shape, int(size), int(parallel))


def scenarios(sizes: list[int]) -> list[Scenario]:
    rows = []
    for size in sizes:
        rows.append(Scenario("chain", size, size))
        rows.append(Scenario("fanout", size, size))
        rows.append(Scenario("fanout", size, min(size, SLOTTED_PARALLELISM)))
    return list(dict.fromkeys(rows))


# ----------------------------------------------------------------- runners

def run_in_process(deps: dict[str, list[str]]) -> None:
    """The floor: topological order in one thread, nothing stored."""
    functions = {task_id: noop for task_id in deps}
    sorter = graphlib.TopologicalSorter(deps)
    sorter.prepare()
    while sorter.is_active():
        for task_id in sorter.get_ready():
            functions[task_id](None, None)
            sorter.done(task_id)


class EmbeddedRun:
    """One fresh embedded backend (own temp dir) and a job defined on it.

    Setup (imports, definition, DAG validation, backend threads) happens in
    the constructor, outside the timed part; `run` is what a user waits for.
    """

    def __init__(self, scenario: Scenario, workers: int,
                 wrap_handler: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None
                 ) -> None:
        from function_flow import tasks
        from function_flow.backends import embedded

        self.directory = tempfile.mkdtemp(prefix="ff-bench-")
        self.backend = embedded(db_path=os.path.join(self.directory, "bench.db"),
                                workers=workers)
        self.job = tasks.Job(name=f"bench-{scenario.shape}",
                             max_parallel_tasks=scenario.max_parallel)
        for task_id, task_deps in graph(scenario.shape, scenario.size).items():
            self.job.task(task_id, deps=task_deps or None)(noop)
        self.job.use_backend(self.backend)
        engine = self.job.engine  # validates the DAG and subscribes the bus
        if wrap_handler is not None:
            self.backend.bus.subscribe(wrap_handler(engine.handle))  # type: ignore[attr-defined]
        self.expected_tasks = len(self.job.dag.tasks)

    def run(self) -> None:
        # job.run() polls every 50 ms; poll every 1 ms so the measurement is
        # not rounded up to the poll interval (the reads cost microseconds).
        self.job.start()
        record = self.job.wait(timeout=300, poll_interval=0.001)
        if record.status.value != "SUCCEEDED":
            raise RuntimeError(f"benchmark run ended {record.status.value}: {record.error}")

    def check(self) -> None:
        """Untimed: every task of the run really succeeded exactly once."""
        done = [t for t in self.job.engine.task_records(self.job.id or "")
                if t.status.value == "SUCCEEDED" and t.attempt == 1]
        if len(done) != self.expected_tasks:
            raise RuntimeError(f"{len(done)} of {self.expected_tasks} tasks succeeded")

    def close(self) -> None:
        self.backend.bus.wait_idle(timeout=10)  # type: ignore[attr-defined]
        self.backend.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def measure(scenario: Scenario, runner: str, workers: int, repeat: int) -> dict[str, Any]:
    """Timed runs, then one untimed run under tracemalloc. Runs in a child."""
    deps = graph(scenario.shape, scenario.size)
    walls: list[float] = []
    if runner != "in-process":  # imports are not part of a run's memory
        import function_flow.backends  # noqa: F401
        import function_flow.tasks  # noqa: F401
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(repeat):
        if runner == "in-process":
            started = time.perf_counter()
            run_in_process(deps)
            walls.append(time.perf_counter() - started)
        else:
            embedded_run = EmbeddedRun(scenario, workers)
            started = time.perf_counter()
            embedded_run.run()
            walls.append(time.perf_counter() - started)
            embedded_run.check()
            embedded_run.close()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    embedded_run = None if runner == "in-process" else EmbeddedRun(scenario, workers)
    tracemalloc.start()
    if embedded_run is None:
        run_in_process(deps)
    else:
        embedded_run.run()
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    if embedded_run is not None:
        embedded_run.close()
    return {"walls": walls, "heap_peak": heap_peak, "rss_growth": rss_growth_kib * 1024}


def measure_in_child(scenario: Scenario, runner: str, workers: int,
                     repeat: int) -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", scenario.key(),
               runner, "--workers", str(workers), "--repeat", str(repeat)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"benchmark child failed: {scenario.label} ({runner})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- table

def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def print_table(rows: list[tuple[Scenario, dict[str, Any], dict[str, Any]]],
                workers: int, repeat: int) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"function_flow embedded backend vs in-process loop "
              f"(median of {repeat}, {workers} workers, no-op tasks)",
        caption="ms/task = wall / tasks in the DAG. wall = job.start() until the run "
                "record is SUCCEEDED. heap = tracemalloc peak of one extra untimed run "
                "(all threads); RSS = resource.getrusage maxrss growth over the timed runs, "
                "each scenario in a fresh process. Embedded = SqliteStore (WAL, "
                "synchronous=NORMAL, temp dir) + LocalBus. "
                f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end "
                "(other work on the machine inflates the embedded column).")
    table.add_column("scenario")
    table.add_column("tasks", justify="right")
    table.add_column("in-process\nwall s", justify="right")
    table.add_column("in-process\nms/task", justify="right")
    table.add_column("in-process\nheap", justify="right")
    table.add_column("embedded\nwall s", justify="right")
    table.add_column("embedded\nms/task", justify="right")
    table.add_column("embedded\nheap", justify="right")
    table.add_column("embedded\nRSS growth", justify="right")
    table.add_column("target\nms/task", justify="right")
    table.add_column("met", justify="center")
    for scenario, local, durable in rows:
        count = len(graph(scenario.shape, scenario.size))
        local_wall = statistics.median(local["walls"])
        durable_wall = statistics.median(durable["walls"])
        per_task = durable_wall * 1000 / count
        met = per_task <= TARGET_MS_PER_TASK
        table.add_row(
            scenario.label, str(count),
            f"{local_wall:.4f}", f"{local_wall * 1000 / count:.4f}", _size(local["heap_peak"]),
            f"{durable_wall:.3f}", f"{per_task:.3f}", _size(durable["heap_peak"]),
            _size(durable["rss_growth"]),
            f"<= {TARGET_MS_PER_TASK:.2f}", "[green]yes[/]" if met else "[red]no[/]")
    console = Console(width=max(150, shutil.get_terminal_size((150, 24)).columns))
    console.print(table)


# ----------------------------------------------------------------- profile

def profile(scenario: Scenario, workers: int, top: int) -> None:
    """cProfile every worker thread's message handling for one embedded run."""
    profiles: list[cProfile.Profile] = []
    local = threading.local()
    lock = threading.Lock()

    def wrap(handle: Callable[..., Any]) -> Callable[..., Any]:
        def profiled(message: Any) -> Any:
            profiler = getattr(local, "profiler", None)
            if profiler is None:
                profiler = local.profiler = cProfile.Profile()
                with lock:
                    profiles.append(profiler)
            profiler.enable()
            try:
                return handle(message)
            finally:
                profiler.disable()
        return profiled

    embedded_run = EmbeddedRun(scenario, workers, wrap_handler=wrap)
    main = cProfile.Profile()
    started = time.perf_counter()
    main.enable()
    embedded_run.run()
    main.disable()
    wall = time.perf_counter() - started
    embedded_run.close()
    print(f"{scenario.label}: {wall:.3f} s under the profiler, {workers} workers")
    print("\n== worker threads (message handling), by own time ==")
    pstats.Stats(*profiles).sort_stats("tottime").print_stats(top)
    print("\n== worker threads, cumulative ==")
    pstats.Stats(*profiles).sort_stats("cumulative").print_stats(top)
    print("\n== main thread (start + wait) ==")
    pstats.Stats(main).sort_stats("cumulative").print_stats(top // 2)


# -------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000],
                        help="task counts N (default 1000)")
    parser.add_argument("--workers", type=int, default=8,
                        help="LocalBus worker threads (default 8, the embedded default)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--profile", choices=["chain", "fanout", "fanout-slots"],
                        help="instead of the table, cProfile one embedded run of the "
                             "first size")
    parser.add_argument("--top", type=int, default=25, help="rows per profile listing")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "RUNNER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes) or args.workers < 1 or args.repeat < 1:
        parser.error("--sizes, --workers and --repeat must be positive")

    if args.child:
        result = measure(Scenario.parse(args.child[0]), args.child[1],
                         args.workers, args.repeat)
        print(json.dumps(result))
        return 0
    if args.profile:
        size = args.sizes[0]
        parallel = min(size, SLOTTED_PARALLELISM) if args.profile == "fanout-slots" else size
        profile(Scenario(args.profile.split("-")[0], size, parallel), args.workers, args.top)
        return 0

    rows = []
    for scenario in scenarios(args.sizes):
        local = measure_in_child(scenario, "in-process", args.workers, args.repeat)
        durable = measure_in_child(scenario, "embedded", args.workers, args.repeat)
        rows.append((scenario, local, durable))
    print_table(rows, args.workers, args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
