"""What firestore_bench.py measured: one Result per side, shape and worker count,
the table (rich, or Markdown with --markdown), per call site, and the issue's
targets with whether each was met. Imports no function_flow code.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any


#: Exception names that mean "a transaction gave up" on either side.
GAVE_UP = ("TransientBackendError", "ValueError", "Aborted", "RetryError")


@dataclasses.dataclass
class Result:
    """One side's numbers for one shape and worker count."""

    side: str
    shape: str
    tasks: int
    workers: int
    finished: bool
    status: str
    seconds: float
    invocations: int
    errors: dict[str, int]
    error_samples: list[str]
    counts: dict[str, Any]
    store_reads: int | None = None
    store_writes: int | None = None
    outcomes: dict[str, int] = dataclasses.field(default_factory=dict)
    poller_calls: int = 0
    billed_units: int = 0  # 100 ms units of function time (harness.Outcome)

    def per_task(self, key: str) -> float:
        return self.counts.get(key, 0) / self.tasks

    @property
    def doc_ops_per_task(self) -> float:
        return self.per_task("reads") + self.per_task("writes")

    @property
    def gave_up(self) -> int:
        return sum(n for name, n in self.errors.items() if name in GAVE_UP)


def _seconds(result: Result, timeout: float) -> str:
    if result.status == "driver error":
        return "error"
    if not result.finished:
        return f"DNF (>{timeout:.0f})"
    return f"{result.seconds:.2f}"


def _ratio(ours: float, theirs: float, ours_ok: bool = True, theirs_ok: bool = True) -> str:
    if not theirs_ok and ours_ok:
        return "< 1 (DNF)"
    if theirs == 0:
        return "-"
    return f"{ours / theirs:.2f}"


def render(results: list[Result], timeouts: dict[str, float], args: argparse.Namespace) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=200)
    table = Table(
        title="function_flow on the Firestore + Pub/Sub emulators (no-op task bodies)",
        caption=(
            "Counted at the Firestore RPC layer, the same way for both sides "
            "(bench/instrument.py): a get = 1 read per document asked for, a query = "
            "documents returned (min 1), every set/update/create/delete = 1 write, "
            "inside or outside transactions (a transaction attempt that aborts still "
            "counts what it read and sent). 'store r/w' is our FirestoreStore's own "
            "counters (transaction writes counted once, on success). Includes starting "
            "the run; excludes the poller (shown apart). msgs = Pub/Sub publishes; "
            "calls = scheduler invocations; tx aborted/gave up = commits the emulator "
            "aborted (retried by the client) / invocations that raised because a "
            "transaction gave up (redelivered). Ratios are ours/upstream."),
        box=box.SIMPLE_HEAVY, caption_justify="left")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("shape", "side") else "right")
    by_key: dict[tuple[str, int], dict[str, Result]] = {}
    for result in results:
        by_key.setdefault((result.shape, result.workers), {})[result.side] = result
    for (shape, workers), sides in by_key.items():
        for side in ("ours", "upstream"):
            r = sides.get(side)
            if r is None:
                continue
            table.add_row(*_cells(r, timeouts[side]),
                          style=None if side == "ours" else "dim")
        ours, theirs = sides.get("ours"), sides.get("upstream")
        if ours is not None and theirs is not None and theirs.status != "driver error":
            table.add_row(
                "", "", "", "ratio", _ratio(ours.seconds, theirs.seconds,
                                            ours.finished, theirs.finished),
                _ratio(ours.per_task("reads"), theirs.per_task("reads")),
                _ratio(ours.per_task("writes"), theirs.per_task("writes")),
                _ratio(ours.doc_ops_per_task, theirs.doc_ops_per_task),
                _ratio(ours.per_task("publishes"), theirs.per_task("publishes")),
                _ratio(ours.invocations, theirs.invocations), "", "", "",
                style="bold cyan", end_section=True)
        else:
            table.rows[-1].end_section = True
    console.print(table)
    if args.markdown:
        console.print(_markdown(results, timeouts), markup=False, highlight=False,
                      soft_wrap=True)
    if args.by_site:
        _render_sites(console, results)
    for result in results:
        if result.error_samples:
            console.print(f"[yellow]{result.side} {result.shape} w{result.workers} errors "
                          f"{result.errors}:[/] " + " | ".join(result.error_samples[:2]))
        if result.outcomes and args.verbose:
            console.print(f"{result.side} {result.shape} w{result.workers} outcomes: "
                          f"{result.outcomes}")
    _render_targets(console, results)
    if getattr(args, "cost", False):
        render_cost(console, results)


def render_cost(console: Any, results: list[Result]) -> None:
    """Dollars per 1,000 runs of each shape on Google Cloud (bench/prices.py), beside
    what Cloud Workflows and Step Functions Standard would charge for its tasks."""
    from rich import box
    from rich.table import Table

    import prices
    from shapes import SHAPES

    table = Table(
        title="What 1,000 runs cost at list prices (USD, beyond free tiers)",
        caption="Counted on the emulators (bench/instrument.py, bench/harness.py); "
                "priced by bench/prices.py, whose prices cite their pages. Ours = "
                "Firestore + Pub/Sub (each message billed >= 1,000 bytes when published "
                "and again when pushed) + functions (start and scheduler calls, each "
                "rounded up to 100 ms). Workflows and Step Functions: one step or state "
                "transition per task and per fan-out, a lower bound; 'with bodies' adds "
                "a 100 ms function call per task, which ours includes.",
        box=box.SIMPLE_HEAVY, caption_justify="left")
    for column in ("shape", "workers", "tasks", "reads", "writes", "deletes", "msgs",
                   "calls", "100 ms", "Firestore", "Pub/Sub", "functions", "ours",
                   "Workflows", "with bodies", "Step Functions", "with bodies "):
        table.add_column(column, justify="left" if column == "shape" else "right")
    poller_reads: list[float] = []
    for r in results:
        if r.side != "ours" or not r.finished:
            continue
        shape = SHAPES[r.shape]
        counted = prices.Counted.from_counts(r.counts, tasks=r.tasks, fan_outs=shape.fan_outs,
                                             invocations=r.invocations + 1,
                                             billed_units=r.billed_units)
        c = prices.cost(counted)
        per = 1000
        table.add_row(r.shape, str(r.workers), str(r.tasks), str(counted.reads),
                      str(counted.writes), str(counted.deletes), str(counted.messages),
                      str(counted.invocations), str(counted.billed_units),
                      prices.dollars(c.firestore * per), prices.dollars(c.pubsub * per),
                      prices.dollars(c.functions * per), prices.dollars(c.ours * per),
                      prices.dollars(c.workflows * per),
                      prices.dollars((c.workflows + c.bodies) * per),
                      prices.dollars(c.step_functions * per),
                      prices.dollars((c.step_functions + c.bodies) * per))
        poller = r.counts.get("categories", {}).get("poller", {})
        if r.poller_calls:
            poller_reads.append(poller.get("reads", 0) / r.poller_calls)
    console.print(table)
    if poller_reads:
        reads = max(poller_reads)
        console.print(f"Not per run: the poller, once a minute, read {reads:.1f} documents "
                      f"per call at most while these runs ran: "
                      f"{prices.dollars(prices.poller_per_month(reads))} a month.")
    console.print("Prices:", markup=False)
    for line in prices.sources():
        console.print(f"  {line}", markup=False, soft_wrap=True)


COLUMNS = ("shape", "tasks", "workers", "side", "wall s", "reads/task", "writes/task",
           "ops/task", "msgs/task", "calls/task", "tx aborted / gave up",
           "store r/w per task", "poller r")


def _cells(r: Result, timeout: float) -> list[str]:
    """One row of the table (a foreach counts its items as tasks)."""
    store = (f"{r.store_reads / r.tasks:.1f} / {r.store_writes / r.tasks:.1f}"
             if r.store_reads is not None else "")
    poller = r.counts.get("categories", {}).get("poller", {}).get("reads", 0)
    return [r.shape, str(r.tasks), str(r.workers), r.side, _seconds(r, timeout),
            f"{r.per_task('reads'):.1f}", f"{r.per_task('writes'):.1f}",
            f"{r.doc_ops_per_task:.1f}", f"{r.per_task('publishes'):.2f}",
            f"{r.invocations / r.tasks:.2f}",
            f"{r.counts.get('commit_failures', 0)} / {r.gave_up}", store,
            f"{poller} ({r.poller_calls} polls)" if r.side == "ours" else ""]


def _markdown(results: list[Result], timeouts: dict[str, float]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "| --- | ---: | ---: | --- |" + " ---: |" * (len(COLUMNS) - 4)]
    lines += ["| " + " | ".join(_cells(r, timeouts[r.side])) + " |" for r in results]
    return "\n".join(lines)


def _render_sites(console: Any, results: list[Result]) -> None:
    from rich.table import Table

    for result in results:
        sites = result.counts.get("by_site", {})
        if not sites:
            continue
        table = Table(title=f"{result.side} {result.shape}, {result.workers} workers: "
                            "per call site, per task",
                      caption="Each operation is charged to the innermost function of "
                              "the engine (upstream: of its tasks.py) on the stack. A "
                              "transaction's reads go to the function run inside it "
                              "(claim, finish, queue, _take_slot), its commit to the "
                              "function that opened it (execute, complete, _check_join, "
                              "fill_slots).",
                      caption_justify="left")
        for column in ("site", "reads", "writes", "queries", "transactions",
                       "commits", "aborted", "msgs"):
            table.add_column(column, justify="left" if column == "site" else "right")
        ordered = sorted(sites.items(), key=lambda kv: -(kv[1].get("reads", 0)
                                                         + kv[1].get("writes", 0)))
        for site, c in ordered:
            table.add_row(site, *(f"{c.get(k, 0) / result.tasks:.2f}" for k in (
                "reads", "writes", "queries", "transactions", "commits",
                "commit_failures", "publishes")))
        console.print(table)


#: The issue's shapes, which its targets (at most 8 document operations per
#: task, faster than upstream) are set for. A run with concurrency slots
#: (fan-1-50-1-p5) also writes slot records and looks for READY tasks, and
#: upstream with one worker starts 5 tasks per invocation there: its numbers
#: are shown, with no target.
OPS_TARGET_SHAPES = ("chain-10", "chain-50", "fan-1-50-1", "sample")
#: Issue 11: document operations per task, at most (chains 5, fan-outs 6).
OPS_TARGETS = {"chain-10": 5, "chain-50": 5, "fan-1-50-1": 6, "sample": 6}


def check_targets(results: list[Result]) -> list[tuple[bool | None, str]]:
    """The issue's targets, each with whether this run met it (None: no target)."""
    checks: list[tuple[bool | None, str]] = []
    ours = {(r.shape, r.workers): r for r in results if r.side == "ours"}
    for workers in sorted({w for _, w in ours}):
        small, big = ours.get(("chain-10", workers)), ours.get(("chain-50", workers))
        if small and big and small.finished and big.finished:
            spread = abs(big.doc_ops_per_task - small.doc_ops_per_task) \
                / small.doc_ops_per_task
            checks.append((spread <= 0.10,
                           f"doc ops/task independent of size, {workers} worker(s): chain-10 "
                           f"{small.doc_ops_per_task:.2f} vs chain-50 "
                           f"{big.doc_ops_per_task:.2f} ({spread:.0%}, target <= 10%)"))
    for r in ours.values():
        target = OPS_TARGETS.get(r.shape)
        if r.shape == "fan-1-50-1-p5" and r.workers == 8:
            target = 10  # issue 11: with max_parallel_tasks 5 and 8 schedulers
        if target is not None:
            checks.append((r.finished and r.doc_ops_per_task <= target,
                           f"{r.shape} w{r.workers}: {r.doc_ops_per_task:.2f} doc ops/task "
                           f"(target <= {target})"))
        else:
            why = "with concurrency slots" if r.shape.endswith("-p5") else "per item" \
                if r.shape.startswith("foreach") else "wide"
            checks.append((None, f"{r.shape} w{r.workers}: {r.doc_ops_per_task:.2f} doc "
                                 f"ops/task ({why}; no target)"))
    checks += _foreach_checks(ours)
    for shape in ("chain-50", "fan-1-50-1", "fan-1-50-1-p5", "foreach-1-50-1",
                  "fan-1-1000-1", "foreach-1-1000-1"):
        r = ours.get((shape, 8))
        if r is not None:
            if "1000" not in shape:
                checks.append((r.finished and r.seconds < 10,
                               f"{shape} with 8 workers: {_seconds(r, 0)} s (target < 10 s)"))
            checks.append((r.gave_up == 0,
                           f"{shape} with 8 workers: {r.gave_up} transactions gave up "
                           f"(target 0; {r.counts.get('commit_failures', 0)} aborted "
                           "commits were retried)"))
    for r in results:
        if r.side != "upstream" or r.status == "driver error":
            continue
        mine = ours.get((r.shape, r.workers))
        if mine is not None:
            faster = mine.finished and (not r.finished or mine.seconds < r.seconds)
            text = f"{r.shape} w{r.workers}: ours {_seconds(mine, 0)} s vs " \
                   f"upstream {_seconds(r, r.seconds)} s"
            if r.shape in OPS_TARGET_SHAPES:
                checks.append((faster, text))
            else:  # not one of the shapes: shown, no target
                checks.append((None, text + (" (faster)" if faster else " (not faster)")))
    return checks


def _foreach_checks(ours: dict[tuple[str, int], Result]) -> list[tuple[bool | None, str]]:
    """The issue's foreach target: cost per item flat in the number of items; and
    a foreach's cost per item beside a plain fan-out of the same width (info)."""
    checks: list[tuple[bool | None, str]] = []
    for workers in sorted({w for _, w in ours}):
        small, big = ours.get(("foreach-1-50-1", workers)), ours.get(("foreach-1-1000-1",
                                                                      workers))
        if small and big and small.finished and big.finished:
            spread = (big.doc_ops_per_task - small.doc_ops_per_task) / small.doc_ops_per_task
            checks.append((spread <= 0.10,
                           f"foreach doc ops/item flat in items, {workers} worker(s): 50 items "
                           f"{small.doc_ops_per_task:.2f} vs 1,000 items "
                           f"{big.doc_ops_per_task:.2f} ({spread:+.0%}, target <= +10%)"))
        for width in (50, 1000):
            each, fan = ours.get((f"foreach-1-{width}-1", workers)), \
                ours.get((f"fan-1-{width}-1", workers))
            if each and fan and each.finished and fan.finished:
                checks.append((None, f"1 -> {width} -> 1, {workers} worker(s): foreach "
                                     f"{each.doc_ops_per_task:.2f} doc ops/item, "
                                     f"{each.seconds:.1f} s vs fan-out "
                                     f"{fan.doc_ops_per_task:.2f} ops/task, {fan.seconds:.1f} s"))
    return checks


def _render_targets(console: Any, results: list[Result]) -> None:
    for ok, text in check_targets(results):
        label = "[dim]info[/]  " if ok is None else "[green]met[/]   " if ok else "[red]MISSED[/]"
        console.print(f"{label} {text}")
