"""Per-task overhead of the embedded backend, beside a plain in-process loop.

    .venv/bin/python bench/engine_bench.py [--sizes 1000 10000] [--workers 8] [--repeat 3]
    .venv/bin/python bench/engine_bench.py --synchronous full   # fsync per commit
    .venv/bin/python bench/engine_bench.py --profile fanout   # where the time goes
    .venv/bin/python bench/engine_bench.py --foreach-sizes 1000 10000 --markdown

Scenarios, for each size N (no-op task bodies everywhere):

* chain: t0 -> t1 -> ... -> t(N-1)
* fan-out: root -> N middle tasks -> join, with max_parallel_tasks = N (the
  graph never exceeds it, so the run needs no slot records)
* fan-out, max_parallel_tasks=50: the same graph with 50 concurrency slots,
  so every task also takes and hands over a slot record
* foreach 1->N->1: `root` returns list(range(N)), `@job.foreach` runs one
  item per element (all at once), and `join` gets every item's result with
  `job.get_task_result` (what an aggregator does); ms/task is per item
* foreach, max_concurrency=50: the same, 50 items at a time (lanes)

Foreach rows run for each --foreach-sizes N (default: the --sizes), so
`--foreach-sizes 1000 10000` shows whether an item's cost stays flat
beside the chain and fan-out rows of the same invocation.

Each scenario runs three ways per repeat: as a `graphlib.TopologicalSorter`
loop that calls the task functions in this process (no durability, no
threads); as the durable floor, a loop that commits per task the two WAL
transactions any durable engine needs (the claim before the body, the
outcome before its effects) at the same synchronous setting, in one thread
(`floor_loop`); and on the embedded backend (SqliteStore in a temp dir: WAL,
synchronous=NORMAL by default, survives kill -9; LocalBus worker pool)
through the public API (`tasks.Job(...).use_backend(embedded(...))`,
start, wait). The table shows the median of --repeat runs, the ratio of
the embedded figure to the floor, and to the figure before issue 11's work
(bench/engine_baseline.json, measured on the same machine).

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
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import tracemalloc
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sqlite_counting import counting_statements  # noqa: E402

#: Issue 11's target for chains and 1 -> N -> 1 fan-outs (no slots) at NORMAL.
TARGET_MS_PER_TASK = 0.12
TARGET_SHAPES = ("chain", "fanout")
SLOTTED_PARALLELISM = 50
#: ms/task before issue 11's work, per synchronous setting and Scenario.key().
BASELINE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "engine_baseline.json")
#: --profile NAME: (shape, limited to SLOTTED_PARALLELISM at once).
PROFILES = {"chain": ("chain", False), "fanout": ("fanout", False),
            "fanout-slots": ("fanout", True), "foreach": ("foreach", False),
            "foreach-lanes": ("foreach", True)}


def noop(task: Any, job: Any) -> None:
    """The task body of every benchmark task: Function Flow's signature, no work."""
    return None


# ------------------------------------------------------------------ graphs

def graph(shape: str, size: int) -> dict[str, list[str]]:
    """task id -> dependencies, in declaration order."""
    if shape == "chain":
        return {f"t{i}": ([f"t{i - 1}"] if i else []) for i in range(size)}
    if shape in ("fanout", "foreach"):  # the in-process floor of a foreach: a fan-out
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
        if self.shape == "foreach":
            label = f"foreach 1->{self.size:,}->1"
            if self.max_parallel < self.size:
                label += f", max_concurrency={self.max_parallel}"
            return label
        label = f"fan-out 1->{self.size}->1"
        if self.max_parallel < self.size:
            label += f", max_parallel={self.max_parallel}"
        return label

    @property
    def units(self) -> int:
        """What ms/task divides by: tasks in the DAG, or a foreach's items."""
        return self.size if self.shape == "foreach" else len(graph(self.shape, self.size))

    def key(self) -> str:
        return f"{self.shape}:{self.size}:{self.max_parallel}"

    @classmethod
    def parse(cls, key: str) -> "Scenario":
        shape, size, parallel = key.split(":")
        return cls(shape, int(size), int(parallel))


def scenarios(sizes: list[int], foreach_sizes: list[int] | None = None) -> list[Scenario]:
    rows = []
    for size in sizes:
        rows.append(Scenario("chain", size, size))
        rows.append(Scenario("fanout", size, size))
        rows.append(Scenario("fanout", size, min(size, SLOTTED_PARALLELISM)))
    for size in sizes if foreach_sizes is None else foreach_sizes:
        rows.append(Scenario("foreach", size, size))
        rows.append(Scenario("foreach", size, min(size, SLOTTED_PARALLELISM)))
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


def floor_loop(scenario: "Scenario", synchronous: str) -> float:
    """The durable floor: per task, the claim and the outcome, each one committed
    BEGIN IMMEDIATE transaction on a WAL database at `synchronous`. Returns the wall
    time of the loop (the rows are made first, untimed)."""
    directory = tempfile.mkdtemp(prefix="ff-floor-")
    try:
        conn = sqlite3.connect(os.path.join(directory, "floor.db"), isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
        conn.execute("CREATE TABLE tasks (run_id TEXT, task_id TEXT, status TEXT, "
                     "data TEXT, PRIMARY KEY (run_id, task_id)) WITHOUT ROWID")
        ids = list(graph(scenario.shape, scenario.size)) if scenario.shape != "foreach" \
            else [f"work[{i}]" for i in range(scenario.size)]
        data = json.dumps({"task_id": "x" * 8, "status": "SUCCEEDED", "result": None,
                           "attempts": [{"attempt": 1, "outcome": "succeeded"}]})
        conn.executemany("INSERT INTO tasks VALUES ('r', ?, 'QUEUED', ?)",
                         [(task_id, data) for task_id in ids])
        started = time.perf_counter()
        for number, task_id in enumerate(ids):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE tasks SET status = 'RUNNING' WHERE run_id = 'r' "
                         "AND task_id = ?", (task_id,))
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE tasks SET status = 'SUCCEEDED', data = ? WHERE run_id = 'r' "
                         "AND task_id = ?", (data, task_id))
            conn.execute("UPDATE tasks SET status = 'QUEUED' WHERE run_id = 'r' "
                         "AND task_id = ?", (ids[(number + 1) % len(ids)],))
            conn.execute("COMMIT")
        wall = time.perf_counter() - started
        conn.close()
        return wall
    finally:
        shutil.rmtree(directory, ignore_errors=True)


class EmbeddedRun:
    """One fresh embedded backend (own temp dir) and a job defined on it.

    Setup (imports, definition, DAG validation, backend threads) happens in
    the constructor, outside the timed part; `run` is what a user waits for.
    """

    def __init__(self, scenario: Scenario, workers: int,
                 wrap_handler: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
                 synchronous: str = "normal") -> None:
        from function_flow import tasks
        from function_flow.backends import embedded

        self.directory = tempfile.mkdtemp(prefix="ff-bench-")
        self.backend = embedded(db_path=os.path.join(self.directory, "bench.db"),
                                workers=workers, synchronous=synchronous)
        self.scenario = scenario
        self.job = tasks.Job(name=f"bench-{scenario.shape}",
                             max_parallel_tasks=scenario.max_parallel)
        if scenario.shape == "foreach":
            define_foreach(self.job, scenario)
        else:
            for task_id, task_deps in graph(scenario.shape, scenario.size).items():
                self.job.task(task_id, deps=task_deps or None)(noop)
        self.job.use_backend(self.backend)
        engine = self.job.engine  # validates the DAG and subscribes the bus
        if wrap_handler is not None:
            self.backend.bus.subscribe(wrap_handler(engine.handle))  # type: ignore[attr-defined]
        self.expected_tasks = len(self.job.dag.tasks) + (
            scenario.size if scenario.shape == "foreach" else 0)

    def run(self) -> None:
        # The store tells job.wait() of the run's end: no poll interval to round up to.
        self.job.start()
        record = self.job.wait(timeout=300)
        if record.status.value != "SUCCEEDED":
            raise RuntimeError(f"benchmark run ended {record.status.value}: {record.error}")

    def check(self) -> None:
        """Untimed: every task of the run (every foreach item) really succeeded
        exactly once; a foreach's group and collector records are not tasks."""
        done = [t for t in self.job.engine.task_records(self.job.id or "")
                if t.status.value == "SUCCEEDED" and t.attempt == 1
                and not t.task_id.startswith("__")]
        if len(done) != self.expected_tasks:
            raise RuntimeError(f"{len(done)} of {self.expected_tasks} tasks succeeded")
        if self.scenario.shape == "foreach" and \
                self.job.engine.store.get_tasks(self.job.id or "", ["join"])[0].result \
                != self.scenario.size:
            raise RuntimeError("the aggregator did not get every item's result")

    def close(self) -> None:
        self.backend.bus.wait_idle(timeout=10)  # type: ignore[attr-defined]
        self.backend.close()
        shutil.rmtree(self.directory, ignore_errors=True)


def define_foreach(job: Any, scenario: Scenario) -> None:
    """root -> foreach `work` over root's list(range(N)) -> join (the aggregator)."""
    size = scenario.size

    def root(task: Any, job: Any) -> list[int]:
        return list(range(size))

    def join(task: Any, job: Any) -> int:
        return len(job.get_task_result("work"))  # every item's result, in item order

    job.task("root")(root)
    job.foreach(task_id="work", over="root",
                max_concurrency=scenario.max_parallel if scenario.max_parallel < size
                else None)(noop)
    job.task("join", deps=["work"])(join)


def measure(scenario: Scenario, runner: str, workers: int, repeat: int,
            synchronous: str = "normal") -> dict[str, Any]:
    """Timed runs, then one untimed run under tracemalloc. Runs in a child."""
    deps = graph(scenario.shape, scenario.size)
    walls: list[float] = []
    cpus: list[float] = []  # the process's CPU time (every thread) per timed run
    if runner == "floor":
        return {"walls": [floor_loop(scenario, synchronous) for _ in range(repeat)]}
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
            embedded_run = EmbeddedRun(scenario, workers, synchronous=synchronous)
            started, cpu = time.perf_counter(), time.process_time()
            embedded_run.run()
            walls.append(time.perf_counter() - started)
            cpus.append(time.process_time() - cpu)
            embedded_run.check()
            embedded_run.close()
    rss_growth_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before

    embedded_run = None if runner == "in-process" else \
        EmbeddedRun(scenario, workers, synchronous=synchronous)
    tracemalloc.start()
    if embedded_run is None:
        run_in_process(deps)
    else:
        embedded_run.run()
    _, heap_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    statements = sql_seconds = None
    if embedded_run is not None:
        embedded_run.close()
        embedded_run = EmbeddedRun(scenario, workers, synchronous=synchronous)
        with counting_statements() as counted:
            embedded_run.run()
        embedded_run.close()
        statements, sql_seconds = counted
    return {"walls": walls, "cpus": cpus, "heap_peak": heap_peak,
            "rss_growth": rss_growth_kib * 1024, "statements": statements,
            "sql_seconds": sql_seconds}


def measure_in_child(scenario: Scenario, runner: str, workers: int,
                     repeat: int, synchronous: str = "normal") -> dict[str, Any]:
    command = [sys.executable, os.path.abspath(__file__), "--child", scenario.key(),
               runner, "--workers", str(workers), "--repeat", str(repeat),
               "--synchronous", synchronous]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"benchmark child failed: {scenario.label} ({runner})")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------- table

def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


COLUMNS = ("scenario", "tasks", "in-process\nms/task", "floor\nms/task",
           "embedded\nwall s", "embedded\nms/task", "embedded\nCPU ms/task",
           "embedded\nSQL/task", "embedded\nSQL ms/task", "x floor",
           "before\nms/task",
           "x before", "embedded\nheap", "embedded\nRSS growth", "target\nms/task", "met")


def baseline(synchronous: str) -> dict[str, float]:
    """ms/task before issue 11's work, by Scenario.key() ({} when not recorded)."""
    try:
        with open(BASELINE, encoding="utf-8") as file:
            return json.load(file).get(synchronous, {})
    except FileNotFoundError:
        return {}


Row = tuple[Scenario, dict[str, Any], dict[str, Any], dict[str, Any]]


def table_rows(rows: list[Row], synchronous: str = "normal") -> list[list[str]]:
    """The table's cells, one list per scenario ("met" is "yes", "no" or "-")."""
    before = baseline(synchronous)
    cells = []
    for scenario, local, floor, durable in rows:
        count = scenario.units
        local_wall = statistics.median(local["walls"])
        floor_per_task = statistics.median(floor["walls"]) * 1000 / count
        durable_wall = statistics.median(durable["walls"])
        per_task = durable_wall * 1000 / count
        previous = before.get(scenario.key())
        targeted = scenario.shape in TARGET_SHAPES and scenario.max_parallel == scenario.size \
            and synchronous == "normal"
        cells.append([
            scenario.label, f"{count:,}", f"{local_wall * 1000 / count:.4f}",
            f"{floor_per_task:.3f}", f"{durable_wall:.3f}", f"{per_task:.3f}",
            f"{statistics.median(durable['cpus']) * 1000 / count:.3f}",
            "-" if durable.get("statements") is None
            else f"{durable['statements'] / count:.1f}",
            "-" if durable.get("sql_seconds") is None
            else f"{durable['sql_seconds'] * 1000 / count:.3f}",
            f"{per_task / floor_per_task:.1f}",
            "-" if previous is None else f"{previous:.3f}",
            "-" if previous is None else f"{per_task / previous:.2f}",
            _size(durable["heap_peak"]), _size(durable["rss_growth"]),
            f"<= {TARGET_MS_PER_TASK:.2f}" if targeted else "-",
            ("yes" if per_task <= TARGET_MS_PER_TASK else "no") if targeted else "-"])
    return cells


def print_table(rows: list[Row], workers: int, repeat: int, markdown: bool = False,
                synchronous: str = "normal") -> None:
    title = (f"function_flow embedded backend vs in-process loop and durable floor "
             f"(synchronous={synchronous.upper()}, median of {repeat}, {workers} workers, "
             "no-op tasks)")
    caption = ("ms/task = wall / tasks in the DAG; foreach rows: wall / items. wall = "
               "job.start() until job.wait() returns the SUCCEEDED record. floor = two "
               "committed WAL transactions per task in one thread at the same synchronous "
               "setting (floor_loop); CPU = the process's CPU time (all threads) over the run, "
               "less sensitive than wall to other work on the machine; SQL/task = SQL "
               "statements per task of one extra untimed run (BEGIN and COMMIT included; "
               "the floor runs 6); SQL ms/task = time inside sqlite3's execute calls of that run "
               "(parsing, stepping, committing; all threads; the rest of a task's cost is "
               "Python; at FULL it holds the fsyncs, which vary from run to run); x floor = embedded / floor. before = the figure before "
               "issue 11's work (bench/engine_baseline.json); x before = embedded / before. "
               "heap = tracemalloc peak of one extra untimed run (all threads); RSS = "
               "resource.getrusage maxrss growth over the timed runs, each scenario in a "
               "fresh process. Embedded = SqliteStore (WAL, temp dir) + LocalBus. "
               f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end "
               "(other work on the machine inflates the embedded column).")
    cells = table_rows(rows, synchronous)
    if markdown:
        print(f"{title}\n")
        print("| " + " | ".join(c.replace("\n", " ") for c in COLUMNS) + " |")
        print("| --- |" + " ---: |" * (len(COLUMNS) - 2) + " :---: |")
        for row in cells:
            print("| " + " | ".join(row) + " |")
        print(f"\n{caption}")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, caption=caption)
    for column in COLUMNS:
        table.add_column(column, justify="left" if column == "scenario" else
                         "center" if column == "met" else "right")
    for row in cells:
        met = {"yes": "[green]yes[/]", "no": "[red]no[/]"}.get(row[-1], row[-1])
        table.add_row(*row[:-1], met)
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
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000],
                        help="task counts N (default 1000 10000: is the cost flat?)")
    parser.add_argument("--synchronous", choices=("normal", "full"), default="normal",
                        help="SQLite's synchronous setting for the embedded backend and "
                             "the floor (full: an fsync per commit)")
    parser.add_argument("--workers", type=int, default=8,
                        help="LocalBus worker threads (default 8, the embedded default)")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per cell (median)")
    parser.add_argument("--foreach-sizes", type=int, nargs="+", default=None,
                        help="item counts of the foreach rows (default: the first "
                             "--sizes); 10000 takes about a minute more")
    parser.add_argument("--markdown", action="store_true",
                        help="print the table as Markdown (for an issue or a README)")
    parser.add_argument("--profile", choices=list(PROFILES),
                        help="instead of the table, cProfile one embedded run of the "
                             "first size")
    parser.add_argument("--top", type=int, default=25, help="rows per profile listing")
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "RUNNER"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes + (args.foreach_sizes or [])) \
            or args.workers < 1 or args.repeat < 1:
        parser.error("--sizes, --foreach-sizes, --workers and --repeat must be positive")

    if args.child:
        result = measure(Scenario.parse(args.child[0]), args.child[1],
                         args.workers, args.repeat, args.synchronous)
        print(json.dumps(result))
        return 0
    if args.profile:
        shape, limited = PROFILES[args.profile]
        size = (args.foreach_sizes or args.sizes)[0] if shape == "foreach" else args.sizes[0]
        parallel = min(size, SLOTTED_PARALLELISM) if limited else size
        profile(Scenario(shape, size, parallel), args.workers, args.top)
        return 0

    rows = []
    for scenario in scenarios(args.sizes, args.foreach_sizes or args.sizes[:1]):
        local = measure_in_child(scenario, "in-process", args.workers, args.repeat)
        floor = measure_in_child(scenario, "floor", args.workers, args.repeat,
                                 args.synchronous)
        durable = measure_in_child(scenario, "embedded", args.workers, args.repeat,
                                   args.synchronous)
        rows.append((scenario, local, floor, durable))
    print_table(rows, args.workers, args.repeat, args.markdown, args.synchronous)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
