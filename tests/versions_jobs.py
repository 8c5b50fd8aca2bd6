"""What the versions tests share (tests/test_versions*.py).

The job `versioned` (a -> b -> c) as one deployment defines it, with bodies
that note in RAN what ran, so a test can build a second, changed definition
of the same name, as a redeployment would, and see which version did the work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from function_flow.cli import cli
from function_flow.core.engine import Engine
from function_flow.core.waiting import Pending
from function_flow.tasks import Job
from test_run_graph import Outbox, drain

WORKFLOWS = Path(__file__).parent / "workflows"
RAN: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    RAN.clear()


def a_v1(task, job):
    RAN.append("a1")
    return 1


def a_v2(task, job):
    RAN.append("a2")
    return 100


def b_v1(task, job):
    RAN.append("b1")
    return 2


def b_v2(task, job):
    RAN.append("b2")
    return 20


def c_v1(task, job):
    RAN.append("c1")
    return 3


def c_fails(task, job):
    RAN.append("c-fails")
    raise RuntimeError("c is broken")


def d_body(task, job):
    RAN.append("d")
    return 4


class Wait(Pending):
    def __init__(self, trigger_id: str) -> None:
        self.trigger_id = trigger_id


def a_waits(task, job):
    RAN.append("a-waits")
    return Wait(f"event-{task.run_id}")


def job_of(*, a=a_v1, b=b_v1, c=c_v1, c_deps=("b",), a_retries=0, a_timeout=None,
           with_c=True, extra: tuple[str, list[str]] | None = None) -> Job:
    """The job `versioned` as one deployment defines it."""
    job = Job(name="versioned")
    job.task(task_id="a", retries=a_retries, timeout=a_timeout)(a)
    job.task(task_id="b", deps=["a"])(b)
    if with_c:
        job.task(task_id="c", deps=list(c_deps))(c)
    if extra is not None:
        job.task(task_id=extra[0], deps=extra[1])(d_body)
    return job


def engine_of(store, bus: Outbox, **definition: Any) -> Engine:
    return Engine(job_of(**definition), store, bus, lease_check_messages=False)


class Counting:
    """The store, counting the reads the engine makes outside transactions."""

    def __init__(self, store) -> None:
        self._store = store
        self.reads = {"get_run": 0, "get_tasks": 0}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name in self.reads:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.reads[name] += 1
                return found(*args, **kwargs)
            return counted
        return found


def status_output(store, run_id: str | None) -> str:
    """`function-flow status [RUN_ID]` on the store under test."""
    if hasattr(store, "path"):
        env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": store.path}
    else:  # the Firestore emulator: firestore_env set its variables
        env = {"FUNCTION_FLOW_BACKEND": "gcp"}
    result = CliRunner().invoke(cli, ["status"] + ([run_id] if run_id else []), env=env)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def started_then_a_done(store) -> tuple[str, Outbox]:
    """A run of the first definition whose task a succeeded; b's message is on its way."""
    bus = Outbox()
    first = engine_of(store, bus)
    run_id, _ = first.start({})
    assert first.handle(bus.sent.pop(0)) == "succeeded"
    assert [m.task_id for m in bus.sent] == ["b"]
    return run_id, bus


def blocked_run(store) -> tuple[str, Outbox]:
    """That run, then b's message handled by a definition in which b changed."""
    run_id, bus = started_then_a_done(store)
    changed = engine_of(store, bus, b=b_v2)
    assert drain(changed, bus) == ["blocked"]
    return run_id, bus
