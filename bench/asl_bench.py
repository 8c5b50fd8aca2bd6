"""ms per state of Step Functions definitions on the embedded backend, beside Python DAGs.

    .venv/bin/python bench/asl_bench.py [--chain 1000] [--items 10000] [--repeat 1]

Scenarios (no-op work everywhere):

* ASL chain: 1,000 states alternating Pass and Task (a Python function that
  returns its input), each state visit one record the run adds as it goes;
* Python chain: the same 1,000 tasks as a `tasks.Job` chain t0 -> ... -> t999;
* ASL Map: one Map state over 10,000 items, each item a one-Pass machine
  (40 lanes, as AWS runs an inline Map), ms per item;
* Python foreach: `job.foreach` over the same 10,000 items, ms per item.

Every run uses a fresh SQLite file (WAL) and the in-process bus, through the
public API (StateMachine.execute / Job.run). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import logging  # noqa: E402

from function_flow import tasks  # noqa: E402
from function_flow.asl.job import StateMachine  # noqa: E402
from function_flow.backends import embedded  # noqa: E402

logging.disable(logging.WARNING)


def _backend(directory: str) -> Any:
    return embedded(os.path.join(directory, "bench.db"), workers=8)


def asl_chain(n: int) -> float:
    states = {}
    for i in range(n):
        state: dict[str, Any] = {"Type": "Task", "Resource": "noop"} if i % 2 else \
            {"Type": "Pass"}
        state.update({"Next": f"s{i + 1}"} if i < n - 1 else {"End": True})
        states[f"s{i}"] = state
    job = StateMachine({"StartAt": "s0", "States": states}, "asl_chain",
                       resources={"noop": lambda payload: payload})
    with tempfile.TemporaryDirectory() as directory:
        job.use_backend(_backend(directory))
        started = time.perf_counter()
        assert job.execute({"x": 1}, timeout=600).status == "SUCCEEDED"
        return time.perf_counter() - started


def python_chain(n: int) -> float:
    job = tasks.Job(name="py_chain", max_parallel_tasks=1)
    for i in range(n):
        job.task(task_id=f"t{i}", deps=[f"t{i - 1}"] if i else [])(lambda task, job: 1)
    with tempfile.TemporaryDirectory() as directory:
        job.use_backend(_backend(directory))
        started = time.perf_counter()
        job.wait(job.start({}), timeout=600)
        return time.perf_counter() - started


def asl_map(n: int) -> float:
    definition = {"StartAt": "M", "States": {"M": {
        "Type": "Map", "ItemsPath": "$.xs", "End": True,
        "ItemProcessor": {"StartAt": "P", "States": {"P": {"Type": "Pass", "End": True}}}}}}
    job = StateMachine(definition, "asl_map")
    with tempfile.TemporaryDirectory() as directory:
        job.use_backend(_backend(directory))
        started = time.perf_counter()
        assert job.execute({"xs": list(range(n))}, timeout=1200).status == "SUCCEEDED"
        return time.perf_counter() - started


def python_foreach(n: int) -> float:
    job = tasks.Job(name="py_foreach", max_parallel_tasks=1000)
    job.task(task_id="root")(lambda task, job: list(range(n)))
    job.foreach(task_id="each", over="root", deps=["root"], max_concurrency=40)(
        lambda item: item)
    with tempfile.TemporaryDirectory() as directory:
        job.use_backend(_backend(directory))
        started = time.perf_counter()
        job.wait(job.start({}), timeout=1200)
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chain", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    rows: list[tuple[str, int, Callable[[int], float]]] = [
        ("ASL chain (Pass/Task)", args.chain, asl_chain),
        ("Python chain (tasks.Job)", args.chain, python_chain),
        ("ASL Map (inline, 40 lanes)", args.items, asl_map),
        ("Python foreach (max_concurrency 40)", args.items, python_foreach)]
    print("| scenario | states or items | total s | ms per state/item |")
    print("| --- | ---: | ---: | ---: |")
    for label, n, function in rows:
        seconds = statistics.median(function(n) for _ in range(args.repeat))
        print(f"| {label} | {n:,} | {seconds:.2f} | {seconds * 1000 / n:.2f} |", flush=True)


if __name__ == "__main__":
    main()
