"""Timeouts that stop: on the embedded backend a body with a timeout runs in a
forked child process, killed with its process group at the timeout.

Real runs, real processes: each test runs a workflow on a real embedded
backend (SQLite file, worker threads, forked children) and looks at what
the bodies left behind (marker files, PIDs) and at the records.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from functions_stack import wait_for
from processes import process_exists

from function_flow import backends, tasks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.local.child import ChildProcessExecutor
from function_flow.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def embedded(tmp_path):
    """A factory of real embedded backends, closed after the test."""
    made = []

    def make(workers: int = 4) -> backends.Backend:
        backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=workers)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def records(job: tasks.Job, run_id: str) -> dict:
    return {r.task_id: r for r in job.engine.task_records(run_id)}


def lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines()]


def append(path: Path, *words: object) -> None:
    with open(path, "a", encoding="utf-8") as out:
        out.write(" ".join(str(w) for w in words) + "\n")


# ------------------------------------------------------------- the issue


def test_a_timed_out_attempt_is_stopped_before_its_retry_starts(embedded, tmp_path):
    """timeout=1, a body of 2.5 s, retries=1: the attempts never overlap."""
    side = tmp_path / "side_effects.txt"
    job = tasks.Job(name="overrun")

    @job.task(task_id="slow", timeout=1, retries=1, retry_backoff=0.01)
    def slow(task, job):
        if task.attempt == 1:
            append(side, "start", task.attempt, os.getpid(), time.time())
            time.sleep(2.5)
            append(side, "end", task.attempt, os.getpid(), time.time())
            return "attempt 1 finished"
        first = lines(side)[0]
        append(side, "start", task.attempt, os.getpid(), time.time(),
               "first-alive" if process_exists(int(first[2])) else "first-dead")
        # What attempt 1 failed with, as the record holds it now.
        return job.engine.store.get_tasks(task.run_id, [task.id])[0].error

    job.use_backend(embedded())
    run = job.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    record = records(job, run.run_id)["slow"]
    assert record.attempt == 2
    assert "TimeoutError: attempt 1 of task 'slow' was stopped at its timeout of 1 s" \
        in record.result

    first, second = lines(side)[:2]
    assert first[:2] == ["start", "1"] and second[:2] == ["start", "2"], lines(side)
    assert second[4] == "first-dead"  # killed and reaped before the retry began
    assert int(first[2]) != os.getpid() and int(second[2]) != os.getpid()
    # Had attempt 1 lived on, it would have written 'end' by now.
    time.sleep(max(0.0, float(first[3]) + 3.0 - time.time()))
    assert [words[0] for words in lines(side)] == ["start", "start"], lines(side)


def test_every_worker_stuck_in_a_body_that_never_returns(embedded):
    """workers=2, both taken by hung bodies with timeout=1: the run still ends."""
    job = tasks.Job(name="stuck")

    @job.task(task_id="hang_a", timeout=1, retries=1, retry_backoff=0.1)
    def hang_a():
        threading.Event().wait()

    @job.task(task_id="hang_b", timeout=1, retries=1, retry_backoff=0.1)
    def hang_b():
        while True:
            time.sleep(0.1)

    @job.task(task_id="other")
    def other():
        return "done"

    job.use_backend(embedded(workers=2))
    # Were the hung bodies not stopped, `other` would never get a worker and
    # the run would not end: run() raises TimeoutError then (no timed assertion).
    run = job.run(timeout=60)
    assert run.status is RunStatus.FAILED
    assert "stopped at its timeout of 1 s" in run.error
    # The other hung task may still be in its last attempt: it is killed
    # at its own timeout, and then no worker is left inside a body.
    assert job.backend.bus.wait_idle(timeout=60)
    found = records(job, run.run_id)
    assert found["other"].status is TaskStatus.SUCCEEDED and found["other"].result == "done"
    for hung in ("hang_a", "hang_b"):
        assert found[hung].status in (TaskStatus.FAILED, TaskStatus.CANCELLED), found[hung]
    assert found["hang_a"].status is TaskStatus.FAILED or \
        found["hang_b"].status is TaskStatus.FAILED


def test_processes_a_body_started_die_with_it_at_the_timeout(embedded, tmp_path):
    pids = tmp_path / "pids.txt"
    job = tasks.Job(name="grandchild")

    @job.task(task_id="spawner", timeout=1)
    def spawner():
        sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        append(pids, os.getpid(), sleeper.pid)
        sleeper.wait()

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED and "stopped at its timeout" in run.error
    child, grandchild = (int(p) for p in lines(pids)[0])
    assert not process_exists(child)
    # Killed with the child's group; init reaps the orphan when it gets to it.
    wait_for(lambda: not process_exists(grandchild), "the grandchild to be gone")


# ------------------------------------------------- what bodies may end with


class CustomStop(BaseException):
    """Not an Exception: like KeyboardInterrupt, it bypasses `except Exception`."""


@pytest.mark.parametrize("timeout", [None, 60], ids=["inline", "child"])
@pytest.mark.parametrize("raised", [KeyboardInterrupt, GeneratorExit, CustomStop],
                         ids=lambda cls: cls.__name__)
def test_base_exceptions_fail_the_attempt_like_any_error(embedded, timeout, raised):
    job = tasks.Job(name="base_exc")

    @job.task(task_id="interrupts", timeout=timeout)
    def interrupts():
        raise raised("from the body")

    job.use_backend(embedded())
    # A worker thread killed by the exception would leave the attempt to its
    # lease: run() would raise TimeoutError (and no test times how long it took).
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    record = records(job, run.run_id)["interrupts"]
    assert record.status is TaskStatus.FAILED
    # The traceback names the line of the body that raised, child or not.
    assert 'raise raised("from the body")' in record.error, record.error
    assert record.error.strip().splitlines()[-1].endswith(f"{raised.__name__}: from the body")
    assert job.backend.bus.wait_idle(timeout=60)  # the worker threads survived


def test_an_exception_that_cannot_be_pickled_keeps_its_traceback(embedded):
    job = tasks.Job(name="local_exc")

    @job.task(task_id="raises", timeout=60)
    def raises():
        class LocalError(Exception):
            pass

        raise LocalError("defined inside the body")

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["raises"].error
    assert 'raise LocalError("defined inside the body")' in error
    assert "LocalError: defined inside the body" in error.strip().splitlines()[-1]


@pytest.mark.parametrize("death, words", [
    ("os._exit(3)", "exited with code 3"),
    ("os.kill(os.getpid(), signal.SIGKILL)", "was killed by SIGKILL (out of memory?)"),
])
def test_a_child_that_dies_fails_its_attempt_and_retries_apply(embedded, tmp_path,
                                                               death, words):
    runs = tmp_path / "attempts.txt"
    job = tasks.Job(name="dies")

    @job.task(task_id="dies", timeout=10, retries=1, retry_backoff=0.01)
    def dies(task):
        append(runs, task.attempt, os.getpid())
        exec(death, {"os": os, "signal": signal})

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    record = records(job, run.run_id)["dies"]
    assert record.attempt == 2 and record.status is TaskStatus.FAILED
    assert f"attempt 2 of task 'dies' ended without an answer: its process {words}" \
        in record.error
    assert [row[0] for row in lines(runs)] == ["1", "2"]
    assert all(int(row[1]) != os.getpid() for row in lines(runs))


def test_a_result_that_cannot_be_pickled_fails_with_a_clear_message(embedded):
    job = tasks.Job(name="unpicklable")

    @job.task(task_id="lock", timeout=60)
    def lock():
        return threading.Lock()

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    error = records(job, run.run_id)["lock"].error
    assert "UnpicklableResultError: attempt 1 of task 'lock' returned a lock" in error
    assert "cannot be sent back from the child process" in error


# ------------------------------------------------ what a body in a child sees


def test_a_body_in_a_child_reads_results_and_arguments(embedded):
    job = tasks.Job(name="reads")

    @job.task(task_id="upstream")
    def upstream():
        return {"rows": 3}

    @job.task(task_id="reader", deps=["upstream"], timeout=10)
    def reader(task, job):
        return {"upstream": job.get_task_result("upstream"), "args": job.get_arguments(),
                "pid": os.getpid()}

    job.use_backend(embedded())
    run = job.run({"day": "2024-01-31"}, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    result = records(job, run.run_id)["reader"].result
    assert result["upstream"] == {"rows": 3}
    assert result["args"] == {"day": "2024-01-31"}
    assert result["pid"] != os.getpid()


def test_a_body_in_a_child_cannot_write_the_store(embedded):
    job = tasks.Job(name="writes")

    @job.task(task_id="writer", timeout=10)
    def writer(task, job):
        job.engine.store.transact(lambda tx: None)

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.FAILED
    assert "store.transact() inside a task body with a timeout" in run.error


def test_a_task_without_a_timeout_runs_in_the_worker_thread(embedded):
    job = tasks.Job(name="inline")

    @job.task(task_id="inline")
    def inline():
        return [os.getpid(), threading.current_thread().name]

    @job.task(task_id="timed", timeout=10)
    def timed():
        return os.getpid()

    job.use_backend(embedded())
    run = job.run(timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    found = records(job, run.run_id)
    pid, thread = found["inline"].result
    assert pid == os.getpid()
    assert thread.startswith("function-flow-worker")
    assert found["timed"].result != os.getpid()


def test_the_embedded_backend_stops_bodies(embedded):
    backend = embedded()
    assert isinstance(backend.executor, ChildProcessExecutor)
    assert backend.executor.stops_bodies


# ------------------------------------------------------ the executor itself


def test_forks_while_other_threads_use_sqlite_never_hang(tmp_path):
    """A child must neither use nor free SQLite objects of its parent.

    Both take SQLite's process-wide mutexes, which a thread busy in SQLite
    may hold at the instant of the fork: the child would block until its
    timeout. Busy threads, idle threads holding connections, and garbage
    connections not yet collected, while children read the store and
    allocate enough to make the collector run.
    """
    path = str(tmp_path / "busy.db")
    store = SqliteStore(path)
    stop = threading.Event()

    def busy():
        while not stop.is_set():
            store.transact(lambda tx: tx.update_run("none", {"status": "RUNNING"}))
            store.list_runs(5)

    def idle():
        store.list_runs(1)  # this thread's connection, unused from now on
        stop.wait()

    def litter():
        while not stop.is_set():
            garbage = {"connection": sqlite3.connect(path)}
            garbage["cycle"] = garbage  # freed only by the collector
            del garbage
            time.sleep(0.001)

    threads = [threading.Thread(target=work, daemon=True)
               for work in [busy] * 3 + [idle] * 2 + [litter]]
    for thread in threads:
        thread.start()

    def body():
        _ = [[n] for n in range(20_000)]
        return store.list_runs(5)

    executor = ChildProcessExecutor(store)
    hung = 0
    try:
        for number in range(80):
            try:
                assert executor.run(body, 3, f"fork {number}") == []
            except TimeoutError:
                hung += 1
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        store.close()
    assert hung == 0


def test_output_of_the_parent_is_not_written_twice(tmp_path):
    """The child flushes only its own output and runs no atexit handler."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import atexit, sys
        from function_flow.local.child import ChildProcessExecutor

        atexit.register(lambda: print("atexit"))
        print("before")  # buffered: stdout is a pipe
        print(ChildProcessExecutor().run(lambda: print("in child") or "back", 5, "a"))
        print("after")
    """))
    done = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["before", "in child", "back", "after", "atexit"]
