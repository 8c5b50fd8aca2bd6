"""kill -9 in the middle of `function-flow run`, then `function-flow resume`.

The workflow (tests/workflows/durable.py) appends "<task> <run> <pid>" to a
marker file on every execution, and its task `blocker` waits for a gate file.
So the kill happens at a known point, without sleeps: once `blocker` has
written its marker, `first`, `second` and `side` have succeeded and `blocker`
is running. The marker counts then prove what ran again after the resume.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from functions_stack import wait_for
from processes import process_exists

WORKFLOWS = Path(__file__).parent / "workflows"

pytestmark = pytest.mark.timeout(120)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Refusals are usage errors: exit 2, one `error:` line, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


class Scenario:
    """A temporary project directory with marker and gate files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.markers = root / "markers.txt"
        self.gate = root / "gate"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
        self.env.update(FF_TEST_MARKERS=str(self.markers), FF_TEST_GATE=str(self.gate))

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "function_flow.cli", *args]

    def flow(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(self.command(*args), cwd=self.root, env=self.env,
                              capture_output=True, text=True, timeout=100)

    def start(self, workflow: str) -> subprocess.Popen:
        log = open(self.root / "run.log", "w", encoding="utf-8")
        return subprocess.Popen(self.command("run", workflow), cwd=self.root, env=self.env,
                                stdout=log, stderr=subprocess.STDOUT)

    def marks(self) -> list[tuple[str, str, int]]:
        """(task, run id, pid) for every task execution so far."""
        if not self.markers.exists():
            return []
        rows = []
        for line in self.markers.read_text(encoding="utf-8").splitlines():
            task, run_id, pid = line.split()
            rows.append((task, run_id, int(pid)))
        return rows

    def wait_until_blocked(self, process: subprocess.Popen) -> str:
        """Wait for `blocker` to start; returns the run id. (pytest-timeout bounds it.)"""
        while not any(task == "blocker" for task, _, _ in self.marks()):
            assert process.poll() is None, (self.root / "run.log").read_text()
            time.sleep(0.02)
        return self.marks()[0][1]


def counts(marks: list[tuple[str, str, int]]) -> dict[str, int]:
    return dict(collections.Counter(task for task, _, _ in marks))


def kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def test_resume_after_kill_runs_only_unfinished_tasks(tmp_path: Path) -> None:
    scene = Scenario(tmp_path)
    process = scene.start(str(WORKFLOWS / "durable.py"))
    run_id = scene.wait_until_blocked(process)
    kill(process)
    assert process.returncode == -signal.SIGKILL
    before = scene.marks()
    assert counts(before) == {"first": 1, "second": 1, "side": 1, "blocker": 1}
    assert {pid for _, _, pid in before} == {process.pid}

    still = scene.flow("status", run_id)
    assert f"run {run_id} RUNNING" in still.stdout

    scene.gate.touch()
    resumed = scene.flow("resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"run {run_id} SUCCEEDED" in resumed.stdout

    after = scene.marks()
    # Nothing that had succeeded ran again; the interrupted task and the
    # one after it ran in the resuming process.
    assert counts(after) == {"first": 1, "second": 1, "side": 1, "blocker": 2, "last": 1}
    new = after[len(before):]
    assert [task for task, _, _ in new] == ["blocker", "last"]
    assert all(rid == run_id for _, rid, _ in after)
    assert all(pid != process.pid for _, _, pid in new)
    results = resumed.stdout.split("\nresults:\n", 1)[1]
    assert 'last: ["first", "second", "side", "unblocked"]' in results

    shown = scene.flow("status", run_id)
    assert f"run {run_id} SUCCEEDED" in shown.stdout
    assert "2 (1 interrupted)" in shown.stdout  # blocker's attempts

    again = scene.flow("resume", run_id)
    assert again.returncode == 0
    assert f"run {run_id} already ended: SUCCEEDED" in again.stdout
    assert scene.marks() == after


def test_logs_follow_says_the_process_is_gone_and_follows_the_resume(tmp_path: Path) -> None:
    scene = Scenario(tmp_path)
    process = scene.start(str(WORKFLOWS / "durable.py"))
    run_id = scene.wait_until_blocked(process)
    kill(process)
    follower = subprocess.Popen(scene.command("logs", run_id, "--follow"), cwd=scene.root,
                                env=scene.env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    try:
        note = follower.stderr.readline()
        assert note.startswith(f"note: the process that ran run {run_id} ("), note
        assert f"is gone, so nothing advances it until function-flow resume {run_id}; " \
            "still following" in note
        scene.gate.touch()
        assert scene.flow("resume", run_id).returncode == 0
        out, err = follower.communicate(timeout=60)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert re.search(r"ended\s+run  SUCCEEDED$", out, re.MULTILINE), out


def test_resume_leaves_a_run_to_the_process_that_still_runs_it(tmp_path: Path) -> None:
    """Harmless, as a repeated resume is: it says so, runs nothing, exits 0."""
    scene = Scenario(tmp_path)
    process = scene.start(str(WORKFLOWS / "durable.py"))
    try:
        run_id = scene.wait_until_blocked(process)
        left = scene.flow("resume", run_id)
        assert (left.returncode, left.stderr) == (0, ""), left.stderr
        assert f"run {run_id} is not paused, and its process " in left.stdout
        assert f":{process.pid} is still running it; nothing to resume" in left.stdout
        assert counts(scene.marks()) == {"first": 1, "second": 1, "side": 1, "blocker": 1}
    finally:
        scene.gate.touch()
        process.wait(timeout=100)
    assert process.returncode == 0, (tmp_path / "run.log").read_text()
    assert counts(scene.marks()) == {"first": 1, "second": 1, "side": 1, "blocker": 1,
                                     "last": 1}


def test_resume_finds_a_moved_workflow_with_file_option(tmp_path: Path) -> None:
    scene = Scenario(tmp_path)
    original = tmp_path / "pipeline.py"
    shutil.copy(WORKFLOWS / "durable.py", original)
    process = scene.start("pipeline.py")  # relative: the run records the absolute path
    run_id = scene.wait_until_blocked(process)
    kill(process)
    moved = tmp_path / "moved" / "pipeline.py"
    moved.parent.mkdir()
    original.rename(moved)
    scene.gate.touch()

    lost = scene.flow("resume", run_id)
    assert_one_error_line(lost, "no such file", str(original))

    resumed = scene.flow("resume", run_id, "--file", str(moved))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert counts(scene.marks()) == {"first": 1, "second": 1, "side": 1, "blocker": 2,
                                     "last": 1}


def test_resume_refuses_a_workflow_whose_graph_changed(tmp_path: Path) -> None:
    scene = Scenario(tmp_path)
    path = tmp_path / "pipeline.py"
    shutil.copy(WORKFLOWS / "durable.py", path)
    process = scene.start(str(path))
    run_id = scene.wait_until_blocked(process)
    kill(process)
    path.write_text(path.read_text() + (
        "\n\n@job.task(task_id='extra', deps=['last'])\n"
        "def extra(task, job):\n    mark(task)\n"))
    before = scene.flow("status", run_id, "--json").stdout
    changed = scene.flow("resume", run_id)
    assert_one_error_line(changed, "was started with a different definition", run_id)
    assert counts(scene.marks())["blocker"] == 1
    # Refused, it changed nothing: the run is still one whose process is gone.
    assert scene.flow("status", run_id, "--json").stdout == before
    assert json.loads(before)["note"] == "process gone"


def test_resume_accepts_a_workflow_changed_only_in_tasks_the_run_finished(
        tmp_path: Path) -> None:
    scene = Scenario(tmp_path)
    path = tmp_path / "pipeline.py"
    shutil.copy(WORKFLOWS / "durable.py", path)
    process = scene.start(str(path))
    run_id = scene.wait_until_blocked(process)
    kill(process)
    path.write_text(path.read_text().replace('return "side"', 'return "side, changed"'))
    scene.gate.touch()

    resumed = scene.flow("resume", run_id)

    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert counts(scene.marks()) == {"first": 1, "second": 1, "side": 1, "blocker": 2,
                                     "last": 1}


def test_a_body_that_kills_its_process_every_time_ends_failed(tmp_path: Path) -> None:
    """Interrupted attempts are free only MAX_INTERRUPTED_ATTEMPTS times.

    `suicidal` has no timeout, so it runs in the worker thread and its
    os._exit(17) ends the whole command, each time. Its one retry is used
    up only after the free interruptions, so it runs five times in all:
    attempt 1 under `run`, attempts 2-4 as free re-runs after the first
    three resumes, attempt 5 as its retry; the fifth resume fails it.
    """
    from function_flow.core.transitions import MAX_INTERRUPTED_ATTEMPTS

    assert MAX_INTERRUPTED_ATTEMPTS == 3  # the counts below follow from it
    scene = Scenario(tmp_path)

    def executions() -> list[tuple[str, int, int]]:
        if not scene.markers.exists():
            return []
        rows = [line.split() for line in scene.markers.read_text().splitlines()]
        return [(run, int(pid), int(attempt)) for _, run, pid, attempt in rows]

    died = scene.flow("run", str(WORKFLOWS / "dies_inline.py"))
    assert died.returncode == 17, died.stdout + died.stderr
    [(run_id, pid, attempt)] = executions()
    assert attempt == 1

    for resumed in range(1, 5):
        again = scene.flow("resume", run_id)
        assert again.returncode == 17, (resumed, again.stdout, again.stderr)
        assert [a for _, _, a in executions()] == list(range(1, resumed + 2))
    assert len({pid for _, pid, _ in executions()}) == 5  # a new process each time

    final = scene.flow("resume", run_id)
    assert final.returncode == 1, final.stdout + final.stderr
    assert "ProcessDied: attempt 5 of task 'suicidal' was interrupted: its process died " \
        "(kill -9, os._exit, out of memory), after 3 interrupted attempts; past 3, each one " \
        "counts against its retries" in " ".join(final.stderr.split())
    assert len(executions()) == 5  # the fifth resume ran nothing
    shown = scene.flow("status", run_id)
    assert f"run {run_id} FAILED" in shown.stdout
    assert "5 (3 interrupted)" in shown.stdout
    assert "ProcessDied" in shown.stdout


def test_a_killed_run_takes_the_bodies_of_its_child_processes_with_it(tmp_path: Path) -> None:
    """kill -9 of `function-flow run`: a body running in a child process
    (its task has a timeout) dies too, and so does the process it started,
    so neither can overlap the attempt that `resume` starts."""
    scene = Scenario(tmp_path)
    process = scene.start(str(WORKFLOWS / "timed_blocker.py"))
    run_id = scene.wait_until_blocked(process)
    [(_, _, body_pid)] = scene.marks()
    assert body_pid != process.pid  # the body runs in a child of the run
    spawned = tmp_path / "markers.txt.spawned"
    wait_for(lambda: spawned.exists() and spawned.read_text().endswith("\n"),
             "the body to start its process")
    [spawned_pid] = (int(pid) for pid in spawned.read_text().split())
    assert process_exists(spawned_pid)
    kill(process)
    wait_for(lambda: not process_exists(body_pid), "the body's process to die with the run")
    wait_for(lambda: not process_exists(spawned_pid), "the process the body started to die")

    scene.gate.touch()
    resumed = scene.flow("resume", run_id)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"run {run_id} SUCCEEDED" in resumed.stdout
    assert resumed.stdout.count("blocker saw the gate") == 1  # the child's stdout is ours
    assert counts(scene.marks()) == {"blocker": 2, "last": 1}
