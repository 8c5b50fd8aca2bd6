"""The invariants with a chain's next task claimed in its predecessor's commit
(core/chaining.py), under the property harness (tests/invariants/).

The harness's bus hands messages to whichever instance it picks, so the
engine never chains there; here it is told that the bus keeps a published
message for the publishing thread (as the embedded LocalBus does), so every
completion that queues one task claims it in the same commit: with crashes
inside and after those transactions, duplicates, and four instances at once.
"""

from __future__ import annotations

import os
from typing import Any

from hypothesis import HealthCheck, given, settings

from function_flow.core.engine import Engine
from invariants import Scenario, properties, sqlite_store
from invariants.strategies import scenarios

EXAMPLES = int(os.environ.get("FF_PROPERTY_EXAMPLES", "60")) // 3
CHAINED = settings(max_examples=max(1, EXAMPLES), deadline=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


class KeepingBus:
    """The harness's bus, saying (as LocalBus's workers do) that it keeps the next
    message for the thread that publishes it (ports.Bus.keeps_next; the rest,
    `beside` included, is the harness's PoolBus, a ports.Bus)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def keeps_next(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def chaining_engine(workflow: Any, store: Any, bus: Any, **options: Any) -> Engine:
    return Engine(workflow, store, KeepingBus(bus), **options)


@CHAINED
@given(scenarios(crashes=True))
def test_every_invariant_holds_when_chained_claims_crash(scenario: Scenario) -> None:
    properties.judge(scenario, sqlite_store, chaining_engine)


@settings(CHAINED, max_examples=max(1, EXAMPLES // 2))
@given(scenarios(crashes=True, threads=4, max_tasks=40))
def test_every_invariant_holds_with_chained_claims_on_four_instances(
        scenario: Scenario) -> None:
    properties.judge(scenario, sqlite_store, chaining_engine)
