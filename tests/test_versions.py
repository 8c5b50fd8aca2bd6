"""Versions: a run records its definition; a changed deployment does not guess.

A run is started with one definition of the job (a -> b -> c), then a
second Job object of the same name, as a redeployment would build it,
handles its messages. A change in a task the run has not finished blocks
the run (status says why, the message is acknowledged, nothing runs); a
change only in finished tasks does not; the original definition, deployed
again, finishes the run. Each on both stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from function_flow.backends import Backend
from function_flow.cli import cli
from function_flow.core import versions
from function_flow.core.engine import Engine
from function_flow.core.messages import Message, MessageKind
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import RunBlockedError, TransientBackendError
from function_flow.futures import GCSFuture
from function_flow.services.gcs import GcsWatcher
from test_functions import as_legacy, as_push, gcs_event
from signatures import KEYS
from test_run_graph import Outbox, drain
from versions_jobs import (RAN, Counting, _fresh_log, a_v2, a_waits, b_v2,  # noqa: F401
                           blocked_run, engine_of, job_of, started_then_a_done,
                           status_output)


# ----------------------------------------------------------------- blocked


def test_a_changed_task_the_run_has_not_finished_blocks_it(store) -> None:
    run_id, bus = blocked_run(store)

    assert RAN == ["a1"]  # neither version of b ran
    assert bus.sent == []  # nothing sent on: the message was acknowledged
    run = store.get_run(run_id)
    assert run.status is RunStatus.RUNNING  # not failed: the old definition may finish it
    assert "task 'b' changed (body)" in run.blocked
    b = store.get_tasks(run_id, ["b"])[0]
    assert b.status is TaskStatus.QUEUED and b.interrupted == 1  # the claim was undone
    shown = status_output(store, run_id)
    assert (f"BLOCKED: run {run_id} was started with a different definition: task 'b' "
            "changed (body). Deploy the definition it started with") in shown
    assert "redrive it on the new one" in shown
    assert f"{run_id} versioned RUNNING (blocked: its definition changed)" in \
        status_output(store, None)


def test_a_blocked_run_costs_one_read_per_message_and_its_poller_leaves_it(store) -> None:
    run_id, bus = blocked_run(store)
    counting = Counting(store)
    changed = Engine(job_of(b=b_v2), counting, bus, lease_check_messages=False)
    b = store.get_tasks(run_id, ["b"])[0]
    bus.publish(Message(run_id, b.task_id, b.attempt))  # as a poller would send it

    assert drain(changed, bus) == ["blocked"]
    assert counting.reads == {"get_run": 1, "get_tasks": 0}  # the block is on the run

    report = changed.poll(stale_after=0)
    assert (report.runs_checked, report.runs_blocked) == (1, 1)
    assert bus.sent == [] and RAN == ["a1"]


def test_deploying_the_definition_it_started_with_lets_the_run_finish(store) -> None:
    run_id, bus = blocked_run(store)
    again = engine_of(store, bus)  # the first definition, deployed again

    again.poll(stale_after=0)  # sends the withdrawn attempt of b
    drain(again, bus)

    run = store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.blocked is None
    assert RAN == ["a1", "b1", "c1"]
    assert "BLOCKED" not in status_output(store, run_id)


@pytest.mark.parametrize("change, expected", [
    ({"with_c": False}, "task 'c' was removed"),
    ({"c_deps": ("a",)}, "task 'c' changed (dependencies)"),
    ({"extra": ("d", ["b"])}, "task 'd' was added after 'b'"),
], ids=["removed", "dependencies", "added"])
def test_removed_rewired_and_added_tasks_the_run_would_reach_block_it(
        store, change: dict[str, Any], expected: str) -> None:
    run_id, bus = started_then_a_done(store)
    changed = engine_of(store, bus, **change)

    assert drain(changed, bus) == ["blocked"]
    assert expected in store.get_run(run_id).blocked
    assert RAN == ["a1"]


def test_a_message_for_a_task_the_new_definition_removed_is_not_just_dropped(store) -> None:
    run_id, bus = started_then_a_done(store)
    first = engine_of(store, bus)
    assert drain(first, bus, limit=1) == ["succeeded"]  # b; c's message is next
    without_c = engine_of(store, bus, with_c=False)

    assert drain(without_c, bus) == ["blocked"]
    assert "task 'c' was removed" in store.get_run(run_id).blocked


# ------------------------------------------------------------- not blocked


def test_a_change_only_in_finished_tasks_does_not_block_the_run(store) -> None:
    run_id, bus = started_then_a_done(store)
    counting = Counting(store)
    changed = Engine(job_of(a=a_v2, a_retries=3), counting, bus,
                     lease_check_messages=False)

    assert drain(changed, bus) == ["succeeded", "succeeded"]

    run = store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.blocked is None
    assert RAN == ["a1", "b1", "c1"]
    assert counting.reads["get_tasks"] == 1  # looked at once, then remembered


def test_the_check_adds_no_read_when_the_definition_is_the_runs(store, monkeypatch) -> None:
    def reads_of_a_run() -> dict[str, int]:
        counting = Counting(store)
        bus = Outbox()
        engine = Engine(job_of(), counting, bus, lease_check_messages=False)
        engine.start({})
        drain(engine, bus)
        return counting.reads

    with_check = reads_of_a_run()
    monkeypatch.setattr(versions, "check", lambda engine, run: None)
    assert with_check == reads_of_a_run()


# ------------------------------------------------------------------ events


def test_an_event_for_a_blocked_run_is_kept_until_its_definition_handles_it(store) -> None:
    bus = Outbox()
    first = engine_of(store, bus, a=a_waits)
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    changed = engine_of(store, bus, a=a_waits, b=b_v2)

    with pytest.raises(RunBlockedError, match="task 'b' changed") as refused:
        changed.complete_trigger(f"event-{run_id}", ok=True, value=5)
    assert isinstance(refused.value, TransientBackendError)  # not acknowledged
    assert store.get_trigger(f"event-{run_id}") is not None
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING

    assert first.complete_trigger(f"event-{run_id}", ok=True, value=5) == "succeeded"
    drain(first, bus)
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED
    assert RAN == ["a-waits", "b1", "c1"]


def test_an_expired_lease_of_a_blocked_run_is_left_to_its_own_definition(store) -> None:
    now = [1000.0]
    bus = Outbox()

    def engine(**definition: Any) -> Engine:
        job = job_of(a=a_waits, a_timeout=10.0, **definition)  # the wait's lease: 10 s
        return Engine(job, store, bus, lease_check_messages=False, clock=lambda: now[0])

    first = engine()
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    now[0] += 60  # the lease of a's wait has run out
    check = Message(run_id, "a", 1, MessageKind.CHECK_LEASE)

    assert engine(b=b_v2).handle(check) == "blocked"
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING
    assert first.handle(check) == "lease_expired"
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.FAILED


WATCHED: list[str] = []


def a_watches(task, job):
    RAN.append("a-watches")
    return GCSFuture(WATCHED[-1])


def test_an_object_a_blocked_run_waits_for_completes_it_under_its_own_definition(
        store, gcs_bucket: str) -> None:
    from google.cloud import storage

    bus = Outbox()

    def engine(**definition: Any) -> Engine:
        return Engine(job_of(a=a_watches, **definition), store, bus,
                      lease_check_messages=False, watcher=GcsWatcher(), watch_every=0)

    first, changed = engine(), engine(b=b_v2)
    WATCHED.append(f"gs://{gcs_bucket}/in/")
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    storage.Client().bucket(gcs_bucket).blob("in/x.csv").upload_from_string("1")

    report = changed.poll(stale_after=0)
    assert (report.watches_completed, report.runs_blocked) == (0, 1)
    with pytest.raises(RunBlockedError):  # a notification: not acknowledged
        changed.complete_watches(f"gs://{gcs_bucket}/in/x.csv")
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING

    assert first.poll(stale_after=0).watches_completed == 1
    drain(first, bus)
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED
    assert RAN == ["a-watches", "b1", "c1"]


# ------------------------------------------------- the Cloud Functions entry


def test_the_scheduler_function_acknowledges_a_message_of_a_blocked_run(store) -> None:
    run_id, bus = started_then_a_done(store)
    deployed = job_of(b=b_v2)
    deployed.use_backend(Backend(kind="gcp", store=store, bus=bus,
                                 lease_check_messages=False, keys=KEYS))
    scheduler = deployed.make_scheduler()
    message = bus.sent.pop(0)

    assert as_push(scheduler, message.to_json()) == ({"outcome": "blocked"}, 200)
    assert as_legacy(scheduler, message.to_json()) is None  # acknowledged, not raised
    assert "task 'b' changed (body)" in store.get_run(run_id).blocked
    assert RAN == ["a1"] and bus.sent == []


def a_watches_its_folder(task, job):
    RAN.append("a-watches")
    return GCSFuture(f"gs://bucket/{task.run_id}/")


def test_the_event_listener_keeps_back_an_event_of_a_blocked_run(store) -> None:
    """Only the event carries its outcome: Pub/Sub must deliver it again (the
    function raises), and an HTTP sender gets a 503 to send it again."""
    bus = Outbox()
    first = engine_of(store, bus, a=a_watches_its_folder)
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]

    def listener(**definition: Any):
        deployed = job_of(a=a_watches_its_folder, **definition)
        deployed.use_backend(Backend(kind="gcp", store=store, bus=bus,
                                     lease_check_messages=False, keys=KEYS))
        return deployed.make_external_event_listener()

    answer, status = as_push(listener(b=b_v2), gcs_event(run_id))
    assert status == 503 and "task 'b' changed (body)" in answer["error"], answer
    with pytest.raises(RunBlockedError):
        as_legacy(listener(b=b_v2), gcs_event(run_id))
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING

    assert as_push(listener(), gcs_event(run_id)) == ({"outcome": "succeeded"}, 200)
    drain(first, bus)
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED
    assert RAN == ["a-watches", "b1", "c1"]


def test_resume_on_google_cloud_refuses_a_definition_that_would_block_the_run(
        firestore_store, tmp_path: Path) -> None:
    run_id, _ = started_then_a_done(firestore_store)
    changed = tmp_path / "changed.py"
    changed.write_text(
        "from function_flow.tasks import Job\n"
        "job = Job(name='versioned')\n"
        "job.task(task_id='a')(lambda task, job: 1)\n"
        "job.task(task_id='b', deps=['a'])(lambda task, job: 'b, changed')\n"
        "job.task(task_id='c', deps=['b'])(lambda task, job: 3)\n")

    result = CliRunner().invoke(cli, ["resume", run_id, "--file", str(changed)],
                                env={"FUNCTION_FLOW_BACKEND": "gcp"})

    assert result.exit_code == 2, result.output
    assert f"run {run_id} was started with a different definition: task 'b' changed " \
           "(body); task 'c' changed (body)" in " ".join(result.output.split())
    assert firestore_store.get_run(run_id).blocked is None  # asking changes nothing
