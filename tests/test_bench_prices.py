"""The price arithmetic of `bench/firestore_bench.py --cost` (bench/prices.py).

The counts come from a benchmark run on the emulators (too slow for the
suite); this checks that what was counted is priced as the cited pages say.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

import prices  # noqa: E402
from shapes import SHAPES  # noqa: E402


def counted(**fields: int) -> prices.Counted:
    values = dict(tasks=0, fan_outs=0, reads=0, writes=0, deletes=0, messages=0,
                  message_bytes=0, invocations=0, billed_units=0)
    values.update(fields)
    return prices.Counted(**values)


def test_each_count_is_priced_as_its_page_says() -> None:
    assert prices.cost(counted(reads=100_000)).firestore == pytest.approx(0.06)
    assert prices.cost(counted(writes=100_000)).firestore == pytest.approx(0.18)
    # Deletes are writes to the instrument, but priced apart.
    assert prices.cost(counted(writes=100_000, deletes=100_000)).firestore == \
        pytest.approx(0.02)
    # A message is billed when published and again when pushed: 2 TiB for 1 TiB sent.
    assert prices.cost(counted(message_bytes=2 ** 40)).pubsub == pytest.approx(80.0)
    assert prices.cost(counted(invocations=1_000_000)).functions == pytest.approx(0.40)
    assert prices.cost(counted(billed_units=1)).functions == pytest.approx(0.000000463,
                                                                           rel=2e-3)


def test_the_orchestrators_charge_a_step_per_task_and_per_fan_out() -> None:
    fan = SHAPES["fan-1-50-1"]
    assert (SHAPES["chain-50"].fan_outs, fan.fan_outs, SHAPES["foreach-1-50-1"].fan_outs) \
        == (0, 1, 1)
    cost = prices.cost(counted(tasks=fan.size, fan_outs=fan.fan_outs))
    assert cost.workflows_steps == 53
    assert cost.workflows == pytest.approx(53 * 0.01 / 1000)
    assert cost.step_functions == pytest.approx(53 * 0.025 / 1000)
    assert cost.bodies == pytest.approx(52 * (0.40e-6 + 0.000000463), rel=2e-3)
    assert cost.ours == 0.0  # nothing of ours was counted


def test_counts_from_the_instrument_and_the_printed_amounts() -> None:
    c = prices.Counted.from_counts({"reads": 3, "writes": 4, "deletes": 1, "publishes": 2,
                                    "publish_billed_bytes": 2000},
                                   tasks=2, fan_outs=0, invocations=3, billed_units=3)
    assert (c.reads, c.writes, c.deletes, c.messages, c.message_bytes) == (3, 4, 1, 2, 2000)
    assert prices.dollars(0.5486) == "$0.5486" and prices.dollars(0.003638) == "$0.003638"
    assert prices.dollars(1.2545) == "$1.25" and prices.dollars(0) == "$0"
    assert all("https://" in line and prices.LOOKED_UP in line for line in prices.sources())
    assert math.isclose(prices.poller_per_month(0), 43_200 * (0.40e-6 + 0.0000004625))
