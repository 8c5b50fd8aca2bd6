"""What a run costs on Google Cloud at list prices, from what the benchmark counted.

firestore_bench.py --cost prints, per shape, the dollars per 1,000 runs:
ours from the counted Firestore reads, writes and deletes, Pub/Sub volume
and function calls (bench/instrument.py, bench/harness.py), beside what
Cloud Workflows and AWS Step Functions Standard would charge to orchestrate
the same tasks. Standard library only, so it can be tested alone.

Every price below is a list price beyond the free tier (free tiers are
per month and per billing account, not per run, so they are left out),
in USD, with the page it comes from and the day it was read. The choices
that matter:

- Firestore: the multi-region (nam5/eur3) prices; a regional database
  (e.g. us-central1) costs half ($0.03 / $0.09 / $0.01 per 100,000).
- Functions: Cloud Run functions 1st gen at 256 MB / .167 vCPU (400 MHz),
  the tier function_flow's deployment uses, billed per call and per 100 ms
  rounded up. The 2nd gen (Cloud Run) bills per vCPU-second and
  GiB-second instead; at these durations the 1st gen figure is the
  simpler, comparable one.
- Pub/Sub: $40 per TiB of throughput, at least 1,000 bytes per publish
  and per push request: each scheduling message is published alone and
  pushed alone to the scheduler, so it is billed 2 x 1,000 bytes at least.
- The orchestrators: one step or state transition per task body (a call
  of its function), plus one per fan-out (a `parallel` branch set or a
  `for`/Map over the items): a lower bound for both. The task bodies
  would still run as functions; "with bodies" adds one call of 100 ms
  per task at the same function price, so that only the orchestration
  differs from ours (whose bodies run inside the scheduler's calls).

Not counted: the poller (Cloud Scheduler calls it once a minute, whatever
the number of runs: printed apart, per month), storage, network egress.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

#: When the prices below were looked up (in stored copies of the pages cited).
LOOKED_UP = "2026-12-01"


@dataclasses.dataclass(frozen=True)
class Price:
    """One list price: dollars per `unit`, as the page quotes it, and the page."""

    dollars: float
    unit: str
    quoted: str
    source: str
    note: str = ""


_FIRESTORE = ("https://cloud.google.com/firestore/pricing (multi-region; the figures as "
              "the Firebase copy of the page lists them, "
              "https://firebase.google.com/docs/firestore/pricing)")
FIRESTORE_READ = Price(0.06 / 100_000, "document read", "$0.06 per 100,000 documents",
                       _FIRESTORE)
FIRESTORE_WRITE = Price(0.18 / 100_000, "document write", "$0.18 per 100,000 documents",
                        _FIRESTORE)
FIRESTORE_DELETE = Price(0.02 / 100_000, "document delete", "$0.02 per 100,000 documents",
                         _FIRESTORE)
PUBSUB_BYTE = Price(40.0 / 2 ** 40, "byte of throughput (publish or delivery)",
                    "$40 per TiB", "https://cloud.google.com/pubsub/pricing",
                    "a minimum of 1000 bytes per publish, push or pull request")
FUNCTION_CALL = Price(0.40 / 1_000_000, "function invocation", "$0.40 per million",
                      "https://cloud.google.com/functions/pricing-1stgen")
#: 256 MB at $0.0000025 per GB-second plus 400 MHz at $0.0000100 per GHz-second.
FUNCTION_100MS = Price(0.25 * 0.1 * 0.0000025 + 0.4 * 0.1 * 0.0000100,
                       "100 ms of a 256 MB / .167 vCPU (400 MHz) function",
                       "$0.0000025 per GB-second + $0.0000100 per GHz-second "
                       "(= $0.000000463 per 100 ms)",
                       "https://cloud.google.com/functions/pricing-1stgen (rates as quoted "
                       "on https://modal.com/blog/google-cloud-function-pricing-guide; "
                       "tiers: https://cloud.google.com/functions/1stgendocs/configuring/memory)")
WORKFLOWS_STEP = Price(0.01 / 1_000, "internal step (a Cloud Run functions call, a "
                       "parallel or for step)", "$0.01 per 1,000 internal steps",
                       "https://cloud.google.com/workflows/pricing",
                       "beyond 5,000 a month; the stored copies of the page list Cloud Run "
                       "functions calls as internal steps but cut off its price table: "
                       "check this figure there before relying on it")
STEP_FUNCTIONS_TRANSITION = Price(0.025 / 1_000, "state transition (Standard, us-east-1)",
                                  "$0.025 per 1,000 state transitions",
                                  "https://aws.amazon.com/step-functions/pricing/",
                                  "beyond 4,000 a month")

PRICES = (FIRESTORE_READ, FIRESTORE_WRITE, FIRESTORE_DELETE, PUBSUB_BYTE, FUNCTION_CALL,
          FUNCTION_100MS, WORKFLOWS_STEP, STEP_FUNCTIONS_TRANSITION)
#: A scheduling message is published once and pushed once to the scheduler.
DELIVERIES_PER_MESSAGE = 1


@dataclasses.dataclass(frozen=True)
class Counted:
    """What one run used, as the benchmark counted it (poller excluded)."""

    tasks: int  # task bodies run (a foreach counts its items)
    fan_outs: int  # parallel branch sets and foreach nodes
    reads: int
    writes: int  # including deletes
    deletes: int
    messages: int
    message_bytes: int  # billed: each message at least 1,000 bytes
    invocations: int  # start + scheduler calls
    billed_units: int  # 100 ms units over those calls

    @classmethod
    def from_counts(cls, counts: Mapping[str, Any], *, tasks: int, fan_outs: int,
                    invocations: int, billed_units: int) -> "Counted":
        return cls(tasks=tasks, fan_outs=fan_outs, reads=counts.get("reads", 0),
                   writes=counts.get("writes", 0), deletes=counts.get("deletes", 0),
                   messages=counts.get("publishes", 0),
                   message_bytes=counts.get("publish_billed_bytes", 0),
                   invocations=invocations, billed_units=billed_units)


@dataclasses.dataclass(frozen=True)
class Cost:
    """Dollars for one run, by what is billed."""

    firestore: float
    pubsub: float
    functions: float
    workflows_steps: int
    workflows: float  # the steps only
    step_functions: float  # the transitions only
    bodies: float  # the task bodies as functions, for the two orchestrators

    @property
    def ours(self) -> float:
        return self.firestore + self.pubsub + self.functions


def cost(counted: Counted) -> Cost:
    """One run's cost on Google Cloud, and the orchestrators' for the same tasks."""
    firestore = (counted.reads * FIRESTORE_READ.dollars
                 + (counted.writes - counted.deletes) * FIRESTORE_WRITE.dollars
                 + counted.deletes * FIRESTORE_DELETE.dollars)
    pubsub = counted.message_bytes * (1 + DELIVERIES_PER_MESSAGE) * PUBSUB_BYTE.dollars
    functions = (counted.invocations * FUNCTION_CALL.dollars
                 + counted.billed_units * FUNCTION_100MS.dollars)
    steps = counted.tasks + counted.fan_outs
    bodies = counted.tasks * (FUNCTION_CALL.dollars + FUNCTION_100MS.dollars)
    return Cost(firestore=firestore, pubsub=pubsub, functions=functions,
                workflows_steps=steps, workflows=steps * WORKFLOWS_STEP.dollars,
                step_functions=steps * STEP_FUNCTIONS_TRANSITION.dollars, bodies=bodies)


def poller_per_month(reads_per_call: float, calls_per_month: int = 30 * 24 * 60) -> float:
    """The poller's Firestore reads and calls for a month of one call a minute."""
    per_call = (reads_per_call * FIRESTORE_READ.dollars + FUNCTION_CALL.dollars
                + FUNCTION_100MS.dollars)
    return per_call * calls_per_month


def dollars(amount: float) -> str:
    """$0.0123 / $1.23 / $123: four significant figures below a dollar."""
    if amount == 0:
        return "$0"
    if amount < 1:
        digits = max(2, 3 - int(math.floor(math.log10(amount))))
        return f"${amount:.{digits}f}"
    return f"${amount:,.2f}"


def sources() -> list[str]:
    """One line per price: what it is, the figure, where it is from, when looked up."""
    lines = []
    for price in PRICES:
        note = f" ({price.note})" if price.note else ""
        lines.append(f"{price.unit}: {price.quoted}{note} -- {price.source}, "
                     f"looked up {LOOKED_UP}")
    return lines
