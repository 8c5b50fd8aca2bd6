"""Timeouts on Cloud Functions: a body cannot be stopped, so its retry waits.

The scheduler function runs the body in its own request (here: in a thread,
through the 1st-gen event form), past its timeout; the poller function finds
the expired lease. The backend is the gcp one's shape: no lease-check
messages, bodies run inline, and FUNCTION_FLOW_FUNCTION_TIMEOUT (540 s by
default) as how long after an overrunning attempt began its retry may start.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import pytest
from functions_stack import wait_for
from signatures import KEYS, TEST_HMAC_KEY
from test_functions import Outbox, as_legacy

from function_flow import tasks
from function_flow.backends import Backend, from_settings
from function_flow.config import Settings
from function_flow.core.records import TaskStatus
from function_flow.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(120)


def started_in_a_function(job: tasks.Job, tmp_path,
                          retry_after_overrun: float) -> tuple[Outbox, Any, str, threading.Thread]:
    """Start a run on the gcp backend's shape and deliver its first message to
    the scheduler function in a thread (its request): the bus, the store, the
    run's id and that request."""
    bus = Outbox()
    job.use_backend(Backend(kind="gcp", store=SqliteStore(str(tmp_path / "runs.db")), bus=bus,
                            lease_check_messages=False, keys=KEYS,
                            retry_after_overrun=retry_after_overrun))
    run_id = job.start({})
    [first] = bus.take()
    request = threading.Thread(target=as_legacy,
                               args=(job.make_scheduler(), first.to_json(), first.attributes()))
    request.start()
    return bus, job.engine.store, run_id, request


def test_an_overrun_fails_at_its_timeout_and_its_retry_waits_for_the_function_timeout(
        tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FUNCTION_FLOW_FUNCTION_TIMEOUT", raising=False)
    released, ran = threading.Event(), []
    job = tasks.Job(name="overrun")

    @job.task(task_id="x", timeout=0.5, retries=1, retry_backoff=0.01)
    def x(task):
        ran.append(task.attempt)
        released.wait(60)  # far past its timeout: nothing can stop it
        return f"attempt {task.attempt}, late"

    settings = dataclasses.replace(Settings.from_env(), backend="gcp", hmac_key=TEST_HMAC_KEY)
    deployed = from_settings(settings, job)
    assert deployed.retry_after_overrun == 540  # the default function timeout
    bus, store, run_id, request = started_in_a_function(job, tmp_path,
                                                        deployed.retry_after_overrun)
    try:
        running = wait_for(lambda: next((t for t in store.get_tasks(run_id, ["x"])
                                         if t.status is TaskStatus.RUNNING
                                         and t.lease_until < time.time()), None),
                           "the attempt's lease to expire while its body runs")
        job.make_poller()(None, None)

        record = store.get_tasks(run_id, ["x"])[0]
        assert (record.status, record.attempt) == (TaskStatus.QUEUED, 2)
        assert record.error == (
            "TimeoutError: attempt 1 of task 'x' did not finish within its timeout (0.5 s); "
            "a retry starts no earlier than 540 s after it began, when the platform has "
            "stopped it")
        assert record.not_before == running.started_at + 540
        # Delivered now, the retry's message finds it too early: no second body.
        [retry] = [m for m in bus.take() if m.attempt == 2]
        assert as_legacy(job.make_scheduler(), retry.to_json(), retry.attributes()) is None
        assert ran == [1]
    finally:
        released.set()
        request.join(60)
    # The first body finished after all: its late result is ignored.
    record = store.get_tasks(run_id, ["x"])[0]
    assert (record.status, record.attempt, record.result) == (TaskStatus.QUEUED, 2, None)


def test_an_attempt_inside_its_lease_is_left_alone_by_the_poller_and_resume(tmp_path) -> None:
    """Its function may still be running: neither retried nor sent again."""
    released = threading.Event()
    job = tasks.Job(name="long")

    @job.task(task_id="x", timeout=3600)
    def x():
        released.wait(60)
        return "done"

    bus, store, run_id, request = started_in_a_function(job, tmp_path, 540)
    try:
        wait_for(lambda: store.get_tasks(run_id, ["x"])[0].status is TaskStatus.RUNNING,
                 "the attempt to start")
        job.make_poller()(None, None)
        job.engine.poll(stale_after=0, run_ids=[run_id])  # what resume does on Google Cloud
        record = store.get_tasks(run_id, ["x"])[0]
        assert (record.status, record.attempt, record.error) == (TaskStatus.RUNNING, 1, None)
        assert bus.take() == []
    finally:
        released.set()
        request.join(60)
    assert store.get_tasks(run_id, ["x"])[0].result == "done"
