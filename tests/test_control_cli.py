"""`function-flow pause|resume|cancel RUN_ID` on the embedded backend, as a user runs them.

A run of tests/workflows/pausable.py executes in its own `function-flow run`
process (with -v, its log in a file); its tasks wait for gate files the
test creates. Other `function-flow` processes pause, resume and cancel it:
they change records only, and the run's own process acts on them. On
Google Cloud (the emulators) see test_control_http.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from function_flow.core.records import RunStatus, TaskStatus
from function_flow.store.sqlite import SqliteStore
from functions_stack import wait_for
from cli_runs import WORKFLOWS, assert_one_error_line, flow

pytestmark = pytest.mark.timeout(240)

PAUSABLE = str(WORKFLOWS / "pausable.py")


class Run:
    """A `function-flow -v run` of pausable.py in its own process."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.markers = cwd / "markers.txt"
        self.gate = cwd / "gate"
        self.log = cwd / "run.log"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
        self.env.update(FF_TEST_MARKERS=str(self.markers), FF_TEST_GATE=str(self.gate))
        with open(self.log, "w", encoding="utf-8") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "function_flow.cli", "-v", "run", PAUSABLE],
                cwd=cwd, env=self.env, stdout=subprocess.PIPE, stderr=log, text=True)
        wait_for(lambda: self.ran("first") and self.ran("long"), "first and long to run")
        self.run_id = self.marks()[0][1]

    def marks(self) -> list[tuple[str, str, int]]:
        if self.process.poll() is not None and self.process.returncode not in (0, 1, -9):
            raise AssertionError(self.finish())
        if not self.markers.exists():
            return []
        return [(t, r, int(p)) for t, r, p in
                (line.split() for line in self.markers.read_text().splitlines())]

    def ran(self, task_id: str) -> list[int]:
        """PIDs of the processes that executed `task_id`."""
        return [pid for task, _, pid in self.marks() if task == task_id]

    def open(self, gate: str) -> None:
        (self.cwd / f"gate.{gate}").touch()

    def flow(self, *args: str) -> subprocess.CompletedProcess:
        return flow(self.cwd, *args, env={k: v for k, v in self.env.items()
                                          if k.startswith("FF_TEST_")})

    def records(self) -> dict:
        store = SqliteStore(str(self.cwd / ".function_flow" / "function_flow.db"))
        try:
            return {t.task_id: t for t in store.get_tasks(self.run_id)}, \
                store.get_run(self.run_id)
        finally:
            store.close()

    def status(self, task_id: str) -> TaskStatus:
        return self.records()[0][task_id].status

    def finish(self) -> subprocess.CompletedProcess:
        out, _ = self.process.communicate(timeout=120)
        return subprocess.CompletedProcess(self.process.args, self.process.returncode, out,
                                           self.log.read_text())

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()


@pytest.fixture
def running(tmp_path: Path):
    runs: list[Run] = []

    def start() -> Run:
        runs.append(Run(tmp_path))
        return runs[-1]

    yield start
    for run in runs:
        if run.process.poll() is None:
            run.kill()


def held_or_ran(run: Run, task_id: str) -> bool:
    """The run's process either held `task_id` (its log says so) or executed it."""
    return bool(run.ran(task_id)) or \
        re.search(rf"task {task_id} attempt \d+: held", run.log.read_text()) is not None


def paused_and_orphaned(run: Run) -> None:
    """Pauses the run, lets `first` end and `next` be held, then kills its
    process: a paused run nobody executes, with `long` free to end when asked."""
    assert run.flow("pause", run.run_id).returncode == 0
    run.open("first")
    wait_for(lambda: held_or_ran(run, "next"), "next to be held")
    run.kill()
    run.open("long")


def test_pause_and_resume_from_other_processes(running) -> None:
    run = running()

    paused = run.flow("pause", run.run_id)

    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.splitlines()[0] == \
        f"paused run {run.run_id}: nothing new starts; still running (they finish): first, long"
    assert f"resume it with function-flow resume {run.run_id}" in paused.stdout
    assert re.search(rf"^\s*{run.run_id}\s+pausable\s+PAUSED\s", run.flow("status").stdout,
                     re.MULTILINE)
    shown = run.flow("status", run.run_id).stdout
    assert shown.startswith(f"run {run.run_id} PAUSED for ")
    assert f"nothing new starts until function-flow resume {run.run_id}" in shown
    run.open("first")
    wait_for(lambda: held_or_ran(run, "next"), "next to be held (or, wrongly, to run)")
    assert run.ran("next") == []
    assert run.status("first") is TaskStatus.SUCCEEDED
    assert run.status("next") is TaskStatus.QUEUED
    again = run.flow("pause", run.run_id)
    assert again.returncode == 0 and "is already paused" in again.stdout

    resumed = run.flow("resume", run.run_id)

    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed run {run.run_id}: its process" in resumed.stdout
    assert "starts its held tasks again" in resumed.stdout
    repeated = run.flow("resume", run.run_id)  # harmless: the run is its process's
    assert (repeated.returncode, repeated.stderr) == (0, ""), repeated.stderr
    assert f"run {run.run_id} is not paused, and its process" in repeated.stdout
    # `long` still runs, so its process is busy: it saw the resume anyway.
    wait_for(lambda: run.ran("next"), "next to run after the resume")
    assert run.status("long") is TaskStatus.RUNNING
    run.open("long")
    finished = run.finish()
    assert finished.returncode == 0, finished.stderr
    assert run.ran("next") == [run.process.pid]  # not the resuming command
    assert "next: \"first then next\"" in finished.stdout
    records, record = run.records()
    assert record.status is RunStatus.SUCCEEDED and records["next"].attempt == 1


def test_cancel_from_another_process_ends_the_run_and_its_tasks(running) -> None:
    run = running()

    cancelled = run.flow("cancel", run.run_id)

    assert cancelled.returncode == 0, cancelled.stderr
    lines = cancelled.stdout.splitlines()
    assert lines[0] == f"cancelled run {run.run_id}: 3 unfinished task(s) marked CANCELLED"
    assert "bodies still executing (first, long) finish in their process" in lines[1]
    resumed = run.flow("resume", run.run_id)  # its process is still alive
    assert resumed.returncode == 1, resumed.stderr
    assert resumed.stdout.startswith(f"run {run.run_id} already ended: CANCELLED")
    finished = run.finish()
    assert finished.returncode == 1
    assert finished.stderr.endswith("error: cancelled on request\n"
                                    f"see its tasks with: function-flow status {run.run_id}\n")
    records, record = run.records()
    assert record.status is RunStatus.CANCELLED
    assert {t: r.status for t, r in records.items() if t != "__end__"} == \
        {"first": TaskStatus.CANCELLED, "long": TaskStatus.CANCELLED,
         "next": TaskStatus.CANCELLED}
    assert run.ran("next") == []
    shown = run.flow("status", run.run_id)
    assert f"run {run.run_id} CANCELLED" in shown.stdout
    assert "run error: cancelled on request" in shown.stdout


def test_cancel_of_a_run_whose_process_died_says_nothing_still_executes(running) -> None:
    run = running()
    run.kill()  # first and long were RUNNING in it

    cancelled = run.flow("cancel", run.run_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.splitlines() == [
        f"cancelled run {run.run_id}: 3 unfinished task(s) marked CANCELLED"]


def test_resume_of_a_paused_run_whose_process_died_continues_it_here(running) -> None:
    run = running()
    paused_and_orphaned(run)

    resumed = run.flow("resume", run.run_id)

    assert resumed.returncode == 0, resumed.stderr
    assert "is gone, so this command continues it" in resumed.stdout
    assert "next: \"first then next\"" in resumed.stdout
    assert len(run.ran("next")) == 1 and run.ran("next") != [run.process.pid]
    assert run.ran("first") == [run.process.pid]  # it succeeded before: not run again
    records, record = run.records()
    assert record.status is RunStatus.SUCCEEDED and record.paused_at is None


HOOK_HELD = """
import os, time
from function_flow import tasks
job = tasks.Job(name="held_hook")
job.task(task_id="a")(lambda **_: 1)

@job.on_end
def clean_up(run):
    open("hook.started", "w").close()
    deadline = time.monotonic() + 120
    while not os.path.exists("hook.gate") and time.monotonic() < deadline:
        time.sleep(0.02)
"""


def test_resume_of_an_ended_run_whose_process_still_runs_its_hooks_reports_it(
        tmp_path) -> None:
    (tmp_path / "held_hook.py").write_text(HOOK_HELD)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    process = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "run",
                                "held_hook.py"], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (tmp_path / "hook.started").exists(), "the on_end hook to start")
        run_id = json.loads(flow(tmp_path, "status", "--json").stdout)["runs"][0]["run_id"]
        resumed = flow(tmp_path, "resume", run_id)
        assert (resumed.returncode, resumed.stderr) == (0, ""), resumed.stderr
        assert resumed.stdout.startswith(
            f"run {run_id} already ended: SUCCEEDED; its process ")
        assert "is still running its hooks; nothing to resume" in resumed.stdout
    finally:
        (tmp_path / "hook.gate").touch()
        out, err = process.communicate(timeout=100)
    assert process.returncode == 0, err
    assert "on_end: SUCCEEDED (attempt 1)" in out


def test_actions_on_unknown_or_ended_runs_are_one_error_line(running, tmp_path) -> None:
    for action in ("pause", "cancel", "resume"):
        assert_one_error_line(flow(tmp_path, action, "no-such-run"),
                              "no run with id 'no-such-run'")
    run = running()
    run.open("first")
    run.open("long")
    assert run.finish().returncode == 0
    before = run.records()

    for action in ("pause", "cancel"):
        result = run.flow(action, run.run_id)
        assert_one_error_line(result, f"run {run.run_id} already ended (SUCCEEDED)",
                              "nothing was changed")
    resumed = run.flow("resume", run.run_id)  # resume keeps its meaning: it reports
    assert resumed.returncode == 0 and "already ended: SUCCEEDED" in resumed.stdout

    assert run.records() == before
