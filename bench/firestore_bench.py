"""Benchmark the GCP backend on the real Firestore and Pub/Sub emulators.

    .venv/bin/python bench/firestore_bench.py                      # ours only
    .venv/bin/python bench/firestore_bench.py --compare-upstream   # and Function Flow 0.0.7
    .venv/bin/python bench/firestore_bench.py --wide --workers 8 --markdown   # 1 -> 1,000 -> 1

For a chain of 10 and of 50 tasks, a 1 -> 50 -> 1 fan-out (max_parallel_tasks
50, and 5), the sample workflow's shape and a foreach over 50 items (no-op
bodies; the foreach's aggregator reads every item's result), and with
--wide 1 -> 1,000 -> 1 as a fan-out and as a foreach, each with 1 and with 8
concurrent scheduler workers, it prints wall time, Firestore document reads
and writes per task, Pub/Sub messages per task, scheduler invocations per
task and transaction failures, and with --compare-upstream the same for
Google's Function Flow 0.0.7 and the ratios ours/upstream. With --cost it
also prices what it counted: dollars per 1,000 runs on Google Cloud, beside
Cloud Workflows and Step Functions Standard (bench/prices.py).

Driven the way Cloud Functions would (bench/harness.py): every scheduling
message goes through the Pub/Sub emulator; N worker threads, each standing
for one function instance with its own Job, pull from a subscription on the
run's SCHEDULE topic, call the real `job.make_scheduler()` entry point with a
legacy event dict, and ack when it returns or nack when it raises. The
poller runs every --poll-every seconds in its own thread; its operations are
reported apart (they cost per second of run time, not per task).

The script starts both emulators on free ports (function_flow/local/emulators.py)
and stops them by process group at the end, also on Ctrl-C. Upstream runs in
a separate process from a throwaway venv (default /tmp/ff-upstream-venv,
made on first use with `pip install function-flow==0.0.7`), because its
module is also called `function_flow` (bench/upstream_driver.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import uuid
from typing import Any

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH_DIR)

import baseline  # noqa: E402
import harness  # noqa: E402
import instrument  # noqa: E402
from firestore_report import Result, render  # noqa: E402
from shapes import DEFAULT_SHAPES, SHAPES, WIDE, Shape  # noqa: E402

PROJECT = "function-flow-bench"
UPSTREAM_PACKAGE = "function-flow==0.0.7"
DEFAULT_VENV = os.path.join(tempfile.gettempdir(), "ff-upstream-venv")
#: Innermost frames to charge operations to, in priority order (--by-site).
OUR_SITES = ("function_flow/core/", "function_flow/store/firestore_timers.py",
             "function_flow/cloud/", "function_flow/store/firestore.py")
# ---------------------------------------------------------------- our side


class _OutcomeLog(logging.Handler):
    """Collects the scheduler's outcome per message ("succeeded", "duplicate"...)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.outcomes: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("scheduler: run") and record.args:
            outcome = str(record.args[-1])
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1


def _our_job(shape: Shape, name: str, topic: str) -> Any:
    from function_flow import tasks

    job = tasks.Job(name=name, schedule_topic=topic, project=PROJECT,
                    max_parallel_tasks=shape.max_parallel_tasks)
    for task_id, deps in shape.deps.items():
        if task_id in shape.foreach:
            job.foreach(task_id=task_id, over=deps[0], deps=list(deps))(_noop)
        else:
            job.task(task_id=task_id, deps=list(deps))(_body(shape, task_id))
    job.use_backend(_our_backend(job, topic))
    return job


def _noop(task: Any, job: Any) -> None:
    return None


def _body(shape: Shape, task_id: str) -> Any:
    """A no-op, except the list a foreach runs over and the aggregator after it."""
    count, node = shape.items_returned(task_id), shape.aggregates(task_id)
    if count is not None:
        return lambda task, job: list(range(count))
    if node is not None:
        return lambda task, job: len(job.get_task_result(node))
    return _noop


def _our_backend(job: Any, topic: str) -> Any:
    """The GCP backend as deployed functions build it (function_flow/backends.py)."""
    from function_flow.config import Settings

    settings = dataclasses.replace(Settings.from_env(), backend="gcp", project=PROJECT,
                                   schedule_topic=topic)
    from function_flow import backends

    return backends.gcp(settings, job)


def run_ours(shape: Shape, workers: int, timeout: float, poll_every: float,
             counters: instrument.Counters) -> Result:
    suffix = uuid.uuid4().hex[:6]
    name = f"ours-{shape.name}-w{workers}"
    topic = f"SCHEDULE-{name}-{suffix}"
    with instrument.uncounted():
        subscription = harness.create_subscription(PROJECT, topic, f"sub-{name}-{suffix}")
        starter = _our_job(shape, name, topic)
        jobs = [_our_job(shape, name, topic) for _ in range(workers)]
        schedulers = [job.make_scheduler() for job in jobs]
        poller_job = _our_job(shape, name, topic)
        poller = poller_job.make_poller() if poll_every > 0 else None
        monitor = _our_job(shape, name, topic)
    stores = [job.backend.store for job in [starter, *jobs]]
    for store in stores:
        store.reset_counts()
    counters.reset()
    log = _OutcomeLog()
    functions_logger = logging.getLogger("function_flow.cloud.functions")
    functions_logger.addHandler(log)
    functions_logger.setLevel(logging.INFO)

    def status() -> str | None:
        if starter.id is None:
            return None
        run = monitor.backend.store.get_run(starter.id)
        return run.status.value if run is not None and run.status.is_final else None

    try:
        outcome = harness.drive(subscription, schedulers, starter.start, status, timeout,
                                poller=poller, poll_every=poll_every)
    finally:
        functions_logger.removeHandler(log)
    counts = counters.snapshot()
    for job in [starter, *jobs, poller_job, monitor]:
        job.backend.close()
    return Result("ours", shape.name, shape.size, workers, outcome.finished, outcome.status,
                  outcome.seconds, outcome.invocations, outcome.errors,
                  outcome.error_samples, counts,
                  store_reads=sum(s.reads for s in stores),
                  store_writes=sum(s.writes for s in stores),
                  outcomes=dict(log.outcomes), poller_calls=outcome.poller_calls,
                  billed_units=outcome.billed_units)


# ----------------------------------------------------------- upstream side


def ensure_upstream_venv(path: str) -> str:
    """The venv's python, with Function Flow 0.0.7 installed (made once)."""
    python = os.path.join(path, "bin", "python")
    probe = [python, "-c", "import function_flow.tasks"]
    if os.path.exists(python) and subprocess.run(probe, capture_output=True).returncode == 0:
        return python
    print(f"creating {path} with {UPSTREAM_PACKAGE} (once)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", path], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", UPSTREAM_PACKAGE], check=True)
    subprocess.run(probe, check=True)
    return python


def run_upstream(python: str, shape: Shape, workers: int, timeout: float,
                 by_site: bool, env: dict[str, str]) -> Result:
    command = [python, os.path.join(BENCH_DIR, "upstream_driver.py"), "--shape", shape.name,
               "--workers", str(workers), "--project", PROJECT, "--timeout", str(timeout)]
    if by_site:
        command.append("--by-site")
    # Never inherit our package's location: upstream's module has the same name.
    env = {k: v for k, v in env.items() if k != "PYTHONPATH"}
    try:
        done = subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=timeout + 120)
        lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
        data = json.loads(lines[-1]) if lines else {"error": done.stderr[-2000:]}
    except subprocess.TimeoutExpired:
        data = {"error": f"driver did not exit within {timeout + 120:.0f} s"}
    if "error" in data:
        return Result("upstream", shape.name, shape.size, workers, False, "driver error",
                      0.0, 0, {"driver": 1}, [str(data["error"])[-500:]], {})
    return Result("upstream", shape.name, shape.size, workers, data["finished"],
                  data["status"], data["seconds"], data["invocations"], data["errors"],
                  data["error_samples"], data["counts"])


# -------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Benchmark the GCP backend on the Firestore and Pub/Sub emulators.")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help=f"comma-separated, from {', '.join(SHAPES)} (default: all "
                             f"but {' and '.join(WIDE)})")
    parser.add_argument("--wide", action="store_true",
                        help=f"also run {' and '.join(WIDE)} (several minutes)")
    parser.add_argument("--markdown", action="store_true",
                        help="also print the main table as Markdown")
    parser.add_argument("--workers", default="1,8",
                        help="comma-separated scheduler worker counts (default: 1,8)")
    parser.add_argument("--timeout", type=float, default=180.0,
                        help="seconds before one of our runs counts as not finished")
    parser.add_argument("--compare-upstream", action="store_true",
                        help=f"also run Google's {UPSTREAM_PACKAGE} (separate process)")
    parser.add_argument("--upstream-timeout", type=float, default=60.0,
                        help="seconds before an upstream run is reported as DNF (default 60; "
                             "upstream needs 99-152 s for chain-50 with 8 workers)")
    parser.add_argument("--upstream-venv", default=DEFAULT_VENV,
                        help=f"venv for upstream, made on first use (default {DEFAULT_VENV})")
    parser.add_argument("--poll-every", type=float, default=1.0,
                        help="seconds between poller calls; 0 turns the poller off")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per case; the one with the median wall time is shown")
    parser.add_argument("--by-site", action="store_true",
                        help="break operations down by engine function (call site)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--cost", action="store_true",
                        help="also print the dollars per 1,000 runs of each shape on Google "
                             "Cloud at list prices, beside Cloud Workflows and Step Functions "
                             "(bench/prices.py)")
    parser.add_argument("--baseline", default=baseline.PATH,
                        help="previous figures to print this run's ratio to (default "
                             "bench/firestore_baseline.json)")
    parser.add_argument("--save-baseline", metavar="NOTE",
                        help="write this run's figures to --baseline, with NOTE saying "
                             "which code and when (merged into the figures there)")
    parser.add_argument("--verbose", action="store_true",
                        help="print each case's scheduler outcomes (claimed, duplicate...)")
    args = parser.parse_args(argv)
    args.shape_list = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if args.wide:
        args.shape_list += [s for s in WIDE if s not in args.shape_list]
    unknown = [s for s in args.shape_list if s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}; use {', '.join(SHAPES)}")
    try:
        args.worker_list = [int(w) for w in args.workers.split(",") if w.strip()]
    except ValueError:
        parser.error(f"--workers must be comma-separated integers, got {args.workers!r}")
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if not args.worker_list or min(args.worker_list) < 1:
        parser.error("--workers needs at least one count, each >= 1")
    return args


def _median(runs: list[Result]) -> Result:
    """The run with the median wall time, the slower one of the middle two for
    an even count (runs that did not finish count as slowest)."""
    ordered = sorted(runs, key=lambda r: (not r.finished, r.seconds))
    return ordered[len(ordered) // 2]


def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from function_flow.local import emulators

    try:
        emulators.check_requirements()
    except emulators.EmulatorError as exc:
        print(f"firestore_bench: {exc}", file=sys.stderr)
        return 2
    log_path = os.path.join(tempfile.gettempdir(), f"firestore-bench-{os.getpid()}.log")
    logging.basicConfig(filename=log_path, level=logging.WARNING,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")
    upstream_python = ensure_upstream_venv(args.upstream_venv) \
        if args.compare_upstream else None
    signal.signal(signal.SIGTERM, _terminate)
    started: list[Any] = []
    results: list[Result] = []
    every_run: list[Result] = []
    try:
        firestore = emulators.start("firestore", PROJECT)
        started.append(firestore)
        pubsub = emulators.start("pubsub", PROJECT)
        started.append(pubsub)
        os.environ.update(firestore.env)
        os.environ.update(pubsub.env)
        os.environ.update(GOOGLE_CLOUD_PROJECT=PROJECT, FUNCTION_FLOW_BACKEND="gcp")
        # Every message is signed (signing.py): a key of this benchmark's own.
        os.environ.setdefault("FUNCTION_FLOW_HMAC_KEY", secrets.token_hex(32))
        counters = instrument.install(OUR_SITES if args.by_site else ())
        # A cold emulator (JVM) makes the first case look slow: warm it up.
        print("warming up the emulators...", file=sys.stderr, flush=True)
        run_ours(SHAPES["sample"], 2, args.timeout, 0, counters)
        emulators.reset_firestore(firestore.host, PROJECT)
        for shape_name in args.shape_list:
            shape = SHAPES[shape_name]
            for workers in args.worker_list:
                runs: dict[str, list[Result]] = {"ours": [], "upstream": []}
                for attempt in range(args.repeat):
                    print(f"{shape.name}, {workers} worker(s), run {attempt + 1}: ours...",
                          file=sys.stderr, flush=True)
                    runs["ours"].append(run_ours(shape, workers, args.timeout,
                                                 args.poll_every, counters))
                    emulators.reset_firestore(firestore.host, PROJECT)
                    if upstream_python is None or shape.foreach:  # upstream has no foreach
                        continue
                    print(f"{shape.name}, {workers} worker(s), run {attempt + 1}: "
                          "upstream...", file=sys.stderr, flush=True)
                    runs["upstream"].append(run_upstream(
                        upstream_python, shape, workers, args.upstream_timeout,
                        args.by_site, dict(os.environ)))
                    emulators.reset_firestore(firestore.host, PROJECT)
                results.extend(_median(side_runs) for side_runs in runs.values()
                               if side_runs)
                every_run.extend(r for side_runs in runs.values() for r in side_runs)
    except KeyboardInterrupt:
        print("interrupted; stopping the emulators", file=sys.stderr)
        return 130
    finally:
        for emulator in reversed(started):
            emulator.stop()
    render(results, {"ours": args.timeout, "upstream": args.upstream_timeout}, args)
    previous = baseline.load(args.baseline)
    print(baseline.table(results, previous))
    if args.save_baseline:
        baseline.save(results, args.save_baseline, args.baseline, keep=previous)
    print(f"(warnings and errors of the run are logged in {log_path})")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump({"shown": [dataclasses.asdict(r) for r in results],
                       "every_run": [dataclasses.asdict(r) for r in every_run]}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
