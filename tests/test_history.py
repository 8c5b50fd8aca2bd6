"""Every attempt of a task is kept, with what its body printed, on every store.

The engine runs here with the messages delivered in order (test_run_graph's
Outbox), on SQLite and on the Firestore emulator; the output capture runs
with real threads, a real child process (a task with a timeout) and the
embedded backend's worker threads.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import sys
import threading
import time

import pytest

from function_flow import backends, history
from function_flow.core import attempts, output
from function_flow.core.engine import Engine
from function_flow.core.records import RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job

from test_run_graph import Outbox, drain


def engine_on(job: Job, store) -> tuple[Engine, Outbox]:
    bus = Outbox()
    tick = itertools.count(1_700_000_000, 0.5)  # every look at the clock half a second on
    return Engine(job, store, bus, lease_check_messages=False, clock=lambda: next(tick)), bus


def task_of(store, run_id: str, task_id: str):
    return {t.task_id: t for t in store.get_tasks(run_id)}[task_id]


# ------------------------------------------------------------------ attempts


def test_retries_keep_every_attempts_times_outcome_error_and_output(store) -> None:
    job = Job("retrying")

    @job.task(task_id="flaky", retries=2, retry_backoff=0)
    def flaky(task, job):
        print(f"try {task.attempt}")
        if task.attempt < 3:
            raise ValueError(f"attempt {task.attempt} broke")
        return "ok"

    @job.task(task_id="quiet", deps=["flaky"])
    def quiet(task, job):
        return 1

    engine, bus = engine_on(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED

    record = task_of(store, run_id, "flaky")  # read back from the store
    kept = history.attempts(record)
    assert [(a.attempt, a.outcome) for a in kept] == [(1, "failed"), (2, "failed"),
                                                      (3, "succeeded")]
    assert "ValueError: attempt 1 broke" in kept[0].error
    assert "ValueError: attempt 2 broke" in kept[1].error and kept[2].error is None
    assert [a.output for a in kept] == ["try 1\n", "try 2\n", "try 3\n"]
    for a in kept:
        assert a.queued_at <= a.started_at <= a.finished_at
    assert kept[0].retry_at is not None and kept[2].retry_at is None
    assert kept[0].finished_at <= kept[1].queued_at
    assert record.error is None  # the task's own field keeps only the last attempt's

    # A silent attempt stores no output at all.
    quiet_entries = task_of(store, run_id, "quiet").attempts
    assert len(quiet_entries) == 1 and "output" not in quiet_entries[0]

    kinds = [(e.kind, e.task_id, e.attempt) for e in history.events(
        engine.run_status(run_id), store.get_tasks(run_id))]
    assert kinds == [("created", None, None), ("queued", "flaky", 1), ("claimed", "flaky", 1),
                     ("retried", "flaky", 1), ("claimed", "flaky", 2),
                     ("retried", "flaky", 2), ("claimed", "flaky", 3),
                     ("succeeded", "flaky", 3), ("queued", "quiet", 1),
                     ("claimed", "quiet", 1), ("succeeded", "quiet", 1),
                     ("ended", None, None)]


def test_pauses_resumes_and_redrives_are_events_and_attempts_survive_a_redrive(store) -> None:
    broken = {"load"}
    job = Job("etl")
    job.task(task_id="extract")(lambda task, job: print("extracted") or 3)

    @job.task(task_id="load", deps=["extract"])
    def load(task, job):
        print("loading")
        if "load" in broken:
            raise RuntimeError("the warehouse is down")
        return "loaded"

    engine, bus = engine_on(job, store)
    run_id, _ = engine.start({})
    engine.pause(run_id)
    drain(engine, bus)  # extract's claim is held: nothing runs while paused
    assert task_of(store, run_id, "extract").status is TaskStatus.QUEUED
    engine.unpause(run_id)
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.FAILED
    broken.clear()
    engine.redrive(run_id)
    drain(engine, bus)
    run = engine.run_status(run_id)
    assert run.status is RunStatus.SUCCEEDED

    found = history.events(run, store.get_tasks(run_id))
    run_kinds = [(e.kind, e.detail.split(":")[0]) for e in found if e.task_id is None]
    assert run_kinds == [("created", "job etl"), ("paused", ""), ("resumed", ""),
                         ("ended", "FAILED"), ("redriven", "the tasks that did not succeed "
                                                           "run again"),
                         ("ended", "SUCCEEDED")]
    loads = history.attempts(task_of(store, run_id, "load"), history.redrive_times(run))
    assert [(a.attempt, a.outcome, a.redrive, a.output) for a in loads] == [
        (1, "failed", 0, "loading\n"), (1, "succeeded", 1, "loading\n")]
    assert "RuntimeError: the warehouse is down" in loads[0].error


def test_a_cancelled_queued_attempt_and_an_interrupted_one_are_kept(tmp_path) -> None:
    from function_flow.core import control, transitions
    from function_flow.core.graph import RunGraph
    from function_flow.store.sqlite import SqliteStore

    job = Job("stops")
    job.task(task_id="never")(lambda task, job: 1)
    store = SqliteStore(str(tmp_path / "state.db"))
    try:
        engine, _ = engine_on(job, store)
        run_id, _ = engine.start({})  # its message is never delivered
        control.cancel(store, run_id, 1_800_000_000.0)
        run = engine.run_status(run_id)
        found = [(e.kind, e.task_id, e.detail) for e in history.events(
            run, store.get_tasks(run_id))]
        (entry,) = task_of(store, run_id, "never").attempts
    finally:
        store.close()
    assert (entry["attempt"], entry["outcome"], "started_at" in entry) == (1, "cancelled",
                                                                           False)
    assert found == [("created", None, "job stops"), ("queued", "never", ""),
                     ("cancelled", "never", ""),
                     ("ended", None, "CANCELLED: cancelled on request")]

    # `function-flow resume` after kill -9: the attempt its process died in.
    died = TaskRecord("never", TaskStatus.RUNNING, attempt=1, queued_at=1.0, started_at=2.0)
    graph = RunGraph(job.dag)
    step = transitions.interrupted(graph.spec("never"), died, "r", 3.0, run=None,
                                   retry_delay=0.0, graph=graph, has_end_task=False)
    assert step.writes[0].value["attempts"] == [
        {"attempt": 1, "queued_at": 1.0, "started_at": 2.0, "outcome": "interrupted",
         "finished_at": 3.0}]


def test_a_failure_and_what_it_left_unrun_are_events(store) -> None:
    job = Job("breaks")
    job.task(task_id="load")(lambda task, job: {}["region"])
    job.task(task_id="report", deps=["load"])(lambda task, job: 1)
    engine, bus = engine_on(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    found = [(e.kind, e.task_id) for e in history.events(engine.run_status(run_id),
                                                         store.get_tasks(run_id))]
    assert found == [("created", None), ("queued", "load"), ("claimed", "load"),
                     # The failing commit ends the run; what it left unrun is ended after.
                     ("failed", "load"), ("ended", None), ("upstream_failed", "report")]


def test_a_body_raising_base_exception_still_records_its_attempt(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    job = Job("exits")

    @job.task(task_id="quits", retries=1, retry_backoff=0)
    def quits(task, job):
        print(f"leaving on attempt {task.attempt}")
        raise SystemExit(3) if task.attempt == 1 else KeyboardInterrupt()

    store = SqliteStore(str(tmp_path / "state.db"))
    try:
        engine, bus = engine_on(job, store)
        run_id, _ = engine.start({})
        drain(engine, bus)
        kept = history.attempts(task_of(store, run_id, "quits"))
        assert [(a.outcome, a.output) for a in kept] == [
            ("failed", "leaving on attempt 1\n"), ("failed", "leaving on attempt 2\n")]
        assert "SystemExit: 3" in kept[0].error and "KeyboardInterrupt" in kept[1].error
    finally:
        store.close()


def test_huge_and_undecodable_output_is_kept_bounded_and_storable(store) -> None:
    job = Job("loud")

    @job.task(task_id="loud")
    def loud(task, job):
        for i in range(20_000):
            print(f"line {i:05d} " + "x" * 40)
        print("the end \udcff\udcfe of it")  # os.fsdecode of bytes that are not UTF-8
        sys.stdout.buffer.write(b"raw \xff bytes\n")
        return "done"

    engine, bus = engine_on(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    assert engine.run_status(run_id).status is RunStatus.SUCCEEDED
    entry = task_of(store, run_id, "loud").attempts[-1]
    assert len(entry["output"]) == output.MAX_OUTPUT_CHARS
    end = "the end \\udcff\\udcfe of it\nraw \\udcff bytes\n"  # as stored: escaped
    assert entry["output"].endswith("line 19999 " + "x" * 40 + "\n" + end)
    assert entry["output_cut"] == 20_000 * 52 + len(end) - output.MAX_OUTPUT_CHARS
    entry["output"].encode("utf-8")  # valid UTF-8: Firestore took it


def test_many_attempts_keep_the_first_and_the_last_within_bounds() -> None:
    # The README's numbers: a task keeps its first attempt and its last 24,
    # each with the last 16,000 characters of its output.
    assert (attempts.MAX_ENTRIES, output.MAX_OUTPUT_CHARS) == (1 + 24, 16_000)
    entries: list[dict] = []
    for n in range(1, 61):
        entries = attempts.appended(entries, {
            "attempt": n, "outcome": "failed", "finished_at": float(n),
            "error": "E" * 20_000, "output": "o" * output.MAX_OUTPUT_CHARS})
    assert len(entries) == attempts.MAX_ENTRIES + 1  # and the marker
    assert entries[0]["attempt"] == 1 and entries[-1]["attempt"] == 60
    assert entries[1] == {"dropped": 60 - attempts.MAX_ENTRIES}
    assert [e["attempt"] for e in entries[2:]] == list(range(60 - attempts.MAX_ENTRIES + 2, 61))
    assert history.dropped(TaskRecord("t", attempts=entries)) == 60 - attempts.MAX_ENTRIES
    assert len(json.dumps(entries)) <= 80_000
    assert len(entries[-1]["output"]) == output.MAX_OUTPUT_CHARS  # the latest keeps all
    assert len(entries[-1]["error"]) < attempts.MAX_ENTRY_ERROR_CHARS + 100


# -------------------------------------------------------------------- output


def test_output_comes_from_print_logging_and_threads_the_body_starts(tmp_path) -> None:
    job = Job("chatty")
    log = logging.getLogger("chatty.body")

    @job.task(task_id="chatty")
    def chatty(task, job):
        print("printed")
        log.warning("logged a warning")
        log.info("logged info %d", 42)
        logging.getLogger("function_flow.engine").info("engine chatter is not the body's")
        worker = threading.Thread(target=lambda: print("from my thread"))
        worker.start()
        worker.join()
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda i: print(f"from the pool {i}"), range(2)))
        own = logging.getLogger("chatty.own")  # a handler of the body's own, on stderr
        own.propagate = False
        handler = logging.StreamHandler(sys.stderr)
        own.addHandler(handler)
        own.warning("through my handler")  # captured once, as the record
        own.removeHandler(handler)
        print("to stderr", file=sys.stderr)
        return "ok"

    # With a timeout it runs in a forked child process; after chatty, whose
    # prints could hold a stream's lock at the instant of the fork (local/child.py).
    @job.task(task_id="in_child", deps=["chatty"], timeout=30)
    def in_child(task, job):
        print("printed in the child")
        log.warning("logged in the child")
        return "ok"

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    try:
        job.use_backend(backend)
        run = job.run({}, timeout=60)
        assert run.status is RunStatus.SUCCEEDED
        records = {t.task_id: t for t in backend.store.get_tasks(run.run_id)}
    finally:
        root.setLevel(level)
        backend.close()
    text = history.output_of(records["chatty"])
    assert text.startswith("printed\nWARNING chatty.body: logged a warning\n"
                           "INFO chatty.body: logged info 42\nfrom my thread\n")
    assert "from the pool 0" in text and "from the pool 1" in text  # print: 2 writes
    assert text.endswith("WARNING chatty.own: through my handler\nto stderr\n")
    assert text.count("through my handler") == 1 and "engine chatter" not in text
    assert history.output_of(records["in_child"]) == (
        "printed in the child\nWARNING chatty.body: logged in the child\n")


def test_concurrent_bodies_do_not_mix_their_output(tmp_path) -> None:
    job = Job("crowd")
    together = threading.Barrier(3, timeout=30)

    def body(name: str):
        def run(task, job):
            together.wait()  # all three are running at once from here on
            for i in range(200):
                print(f"{name} {i}")
                if i % 50 == 0:
                    time.sleep(0.001)
                    threading.Thread(target=print, args=(f"{name} thread {i}",)).start()
            return name
        return run

    for name in ("red", "green", "blue"):
        job.task(task_id=name)(body(name))
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=3)
    try:
        job.use_backend(backend)
        run = job.run({}, timeout=60)
        assert run.status is RunStatus.SUCCEEDED
        records = {t.task_id: t for t in backend.store.get_tasks(run.run_id)}
    finally:
        backend.close()
    for name in ("red", "green", "blue"):
        text = history.output_of(records[name])
        # A print is two writes, so a line of the body's own thread may be split
        # by one of the threads it started: count words, not lines.
        assert set(re.findall(r"red|green|blue", text)) == {name}
        assert re.findall(rf"{name} (\d+)", text) == [str(i) for i in range(200)]
        assert text.count(f"{name} thread") == 4


def test_a_body_killed_at_its_timeout_keeps_what_it_printed(tmp_path) -> None:
    job = Job("hangs")

    @job.task(task_id="hangs", timeout=1)
    def hangs(task, job):
        print("about to hang", flush=True)
        time.sleep(60)

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    try:
        job.use_backend(backend)
        run = job.run({}, timeout=60)
        record = task_of(backend.store, run.run_id, "hangs")
    finally:
        backend.close()
    (attempt,) = history.attempts(record)
    assert attempt.outcome == "failed" and "TimeoutError" in attempt.error
    assert attempt.output == "about to hang\n"


def test_a_waiting_attempt_keeps_its_output_until_its_event_completes_it(store) -> None:
    from function_flow.core.waiting import Pending

    class Wait(Pending):
        trigger_id = "job-42"

    job = Job("waits")

    @job.task(task_id="submit")
    def submit(task, job):
        print("submitted job 42")
        return Wait()

    engine, bus = engine_on(job, store)
    run_id, _ = engine.start({})
    drain(engine, bus)
    waiting = history.attempts(task_of(store, run_id, "submit"))
    assert [(a.outcome, a.output) for a in waiting] == [("waiting", "submitted job 42\n")]
    assert engine.complete_trigger("job-42", ok=True, value=1) == "succeeded"
    (done,) = history.attempts(task_of(store, run_id, "submit"))
    assert (done.outcome, done.output) == ("succeeded", "submitted job 42\n")
    assert done.waiting_at is not None and done.started_at <= done.waiting_at
    kinds = [e.kind for e in history.task_events(task_of(store, run_id, "submit"))]
    assert kinds == ["queued", "claimed", "waiting", "succeeded"]


def test_records_from_before_attempts_were_kept_still_read() -> None:

    old = TaskRecord("old", TaskStatus.FAILED, attempt=2, queued_at=1.0, started_at=2.0,
                     finished_at=3.0, error="Boom: x")
    (attempt,) = history.attempts(old)
    assert (attempt.attempt, attempt.outcome, attempt.error) == (2, "failed", "Boom: x")
    assert [e.kind for e in history.task_events(old)] == ["queued", "claimed", "failed"]
    skipped = TaskRecord("s", TaskStatus.SKIPPED, finished_at=4.0)
    assert [(e.kind, e.at) for e in history.task_events(skipped)] == [("skipped", 4.0)]


@pytest.fixture(autouse=True)
def _no_leftover_capture():
    yield
    assert output.current() is None
