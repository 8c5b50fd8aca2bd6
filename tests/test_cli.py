"""The `function-flow` command line, run as a user runs it: in a subprocess.

Each test runs in its own temporary working directory, so the embedded
backend's database (.function_flow/function_flow.db) is private to it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

WORKFLOWS = Path(__file__).parent / "workflows"

pytestmark = pytest.mark.timeout(120)


def flow(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `function-flow ARGS` in `cwd` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "function_flow.cli", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=100)


def workflow(name: str) -> str:
    return str(WORKFLOWS / f"{name}.py")


def run_id_of(output: str) -> str:
    match = re.search(r"function-flow status (\S+)", output)
    assert match, f"no status hint in output:\n{output}"
    return match.group(1)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Usage and definition errors: exit 2, exactly one `error:` line, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr


# ------------------------------------------------------------------------ run


def test_run_succeeds_shows_tasks_results_and_hint(tmp_path: Path) -> None:
    result = flow(tmp_path, "run", workflow("simple"),
                  "--arg", "n=3", "--arg", "name=bob", "--arg", "ids=[1,2]",
                  "--arg", "dry=true", "--arg", "label=[not json")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for task in "abcd":
        assert re.search(rf"^\s*{task}\s+SUCCEEDED\s+1\s", out, re.MULTILINE), out
    # The sink's result, as JSON, with the --arg values typed as JSON when they parse.
    results = out.split("\nresults:\n", 1)[1].splitlines()
    assert results[0].startswith("  d: "), out
    value = json.loads(results[0].split(": ", 1)[1])
    assert value["args"] == {"n": 3, "name": "bob", "ids": [1, 2], "dry": True,
                             "label": "[not json"}
    assert value["parts"] == ["from b", "from c"]
    run_id = run_id_of(out)
    assert run_id.startswith("simple-")
    assert (tmp_path / ".function_flow" / "function_flow.db").exists()


def test_run_database_location_follows_env(tmp_path: Path) -> None:
    db = tmp_path / "elsewhere" / "runs.db"
    result = flow(tmp_path, "run", workflow("simple"), env={"FUNCTION_FLOW_DB": str(db)})
    assert result.returncode == 0, result.stderr
    assert db.exists()
    assert not (tmp_path / ".function_flow").exists()
    listed = flow(tmp_path, "status", env={"FUNCTION_FLOW_DB": str(db)})
    assert run_id_of(result.stdout) in listed.stdout


def test_run_hints_select_the_embedded_store_when_settings_select_google_cloud(
        tmp_path: Path) -> None:
    cloud = {"GOOGLE_CLOUD_PROJECT": "some-project"}  # status would read Firestore
    result = flow(tmp_path, "run", workflow("simple"), env=cloud)
    assert result.returncode == 0, result.stderr
    run_id = run_id_of(result.stdout)
    assert f"details: FUNCTION_FLOW_BACKEND=embedded function-flow status {run_id}" \
        in result.stdout
    shown = flow(tmp_path, "status", run_id, env=dict(cloud, FUNCTION_FLOW_BACKEND="embedded"))
    assert f"run {run_id} SUCCEEDED" in shown.stdout
    plain = flow(tmp_path, "run", workflow("simple"))
    assert f"details: function-flow status {run_id_of(plain.stdout)}" in plain.stdout


def test_run_prints_one_line_per_state_change_when_not_a_tty(tmp_path: Path) -> None:
    result = flow(tmp_path, "run", workflow("simple"))
    assert result.returncode == 0
    assert re.search(r"^d: SUCCEEDED in \d", result.stdout, re.MULTILINE), result.stdout
    assert "\x1b[" not in result.stdout  # no terminal control codes in logs


def test_run_failing_task_exits_1_and_status_shows_traceback(tmp_path: Path) -> None:
    result = flow(tmp_path, "run", workflow("failing"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert re.search(r"explode\s+FAILED", result.stdout)
    assert re.search(r"prepare\s+SUCCEEDED", result.stdout)
    assert "task 'explode' failed: ValueError: boom happened with 1" in result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    run_id = run_id_of(result.stderr)

    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0
    assert "FAILED" in shown.stdout
    assert "Traceback (most recent call last)" in shown.stdout
    # The traceback is the task's own, down to the helper that raised.
    assert "in helper_that_breaks" in shown.stdout
    assert "ValueError: boom happened with 1" in shown.stdout


def test_failed_run_exits_without_waiting_for_leftover_tasks(tmp_path: Path) -> None:
    # slow sleeps 600 s and flaky waits out a 600 s retry backoff when explode
    # fails the run; the command ends then (flow() would time out waiting).
    result = flow(tmp_path, "run", workflow("leftovers"))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "task 'explode' failed: ValueError: boom" in result.stderr
    # What it did not wait for is cancelled, not left running in an ended run.
    shown = flow(tmp_path, "status", run_id_of(result.stderr))
    assert re.search(r"^\s*explode\s+FAILED", shown.stdout, re.MULTILINE), shown.stdout
    for task in ("slow", "flaky"):
        assert re.search(rf"^\s*{task}\s+CANCELLED", shown.stdout, re.MULTILINE), shown.stdout


def test_run_picks_job_with_job_option(tmp_path: Path) -> None:
    result = flow(tmp_path, "run", workflow("two_jobs"), "--job", "second_job")
    assert result.returncode == 0, result.stderr
    assert 'two: "second"' in result.stdout
    assert re.search(r"^\s*two\s+SUCCEEDED", result.stdout, re.MULTILINE)
    assert not re.search(r"^\s*one\s", result.stdout, re.MULTILINE)


def test_job_option_also_accepts_the_variable_name(tmp_path: Path) -> None:
    result = flow(tmp_path, "graph", workflow("two_jobs"), "--job", "first")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("job first_job: 1 tasks")


@pytest.mark.parametrize("args, fragments", [
    (["run", "missing.py"], ["no such file: missing.py"]),
    (["run", workflow("broken_import")],
     ["cannot import", "broken_import.py", "NameError: name 'foo' is not defined"]),
    (["run", workflow("two_jobs")], ["several jobs", "first_job, second_job", "--job"]),
    (["run", workflow("two_jobs"), "--job", "nope"],
     ["no job named 'nope'", "first_job, second_job"]),
    (["run", workflow("no_job")], ["defines no Job"]),
    (["run", workflow("simple"), "--arg", "novalue"], ["--arg 'novalue'", "key=value"]),
    (["run", workflow("simple"), "--arg", "=3"], ["key=value"]),
    (["run", workflow("cycle")], ["dependency cycle", "x -> y -> z -> x"]),
    (["run", workflow("duplicate")], ["task 'same' is defined twice"]),
    (["run", workflow("empty")], ["job 'empty' has no tasks", "@job.task(task_id=...)"]),
    (["graph", workflow("cycle")], ["dependency cycle"]),
    (["graph", "missing.py"], ["no such file"]),
    (["status", "no-such-run"], ["no run with id 'no-such-run' in the embedded store "
                                 ".function_flow/function_flow.db", "function-flow status"]),
    (["resume", "no-such-run"], ["no run with id 'no-such-run' in the embedded store "
                                 ".function_flow/function_flow.db", "function-flow status"]),
    (["run"], ["Missing argument"]),
    (["run", workflow("simple"), "--workers", "0"], ["--workers"]),
    (["graph", workflow("simple"), "--format", "svg"], ["svg"]),
    (["no-such-command"], ["no-such-command"]),
])
def test_bad_input_is_one_error_line_and_exit_2(tmp_path: Path, args: list[str],
                                                fragments: list[str]) -> None:
    assert_one_error_line(flow(tmp_path, *args), *fragments)


@pytest.mark.parametrize("args", [["run", workflow("simple")], ["status"],
                                  ["status", "some-run"], ["resume", "some-run"]])
def test_database_that_is_not_sqlite_is_one_error_line(tmp_path: Path, args: list[str]) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database\n")
    result = flow(tmp_path, *args, env={"FUNCTION_FLOW_DB": str(notes)})
    assert_one_error_line(result, str(notes), "not a SQLite database", "FUNCTION_FLOW_DB")
    assert notes.read_text() == "not a database\n"


def test_database_path_that_cannot_be_created_is_one_error_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    db = blocker / "runs.db"
    result = flow(tmp_path, "run", workflow("simple"), env={"FUNCTION_FLOW_DB": str(db)})
    assert_one_error_line(result, str(db), "set FUNCTION_FLOW_DB to a file in a writable")


def test_bad_input_creates_no_run(tmp_path: Path) -> None:
    flow(tmp_path, "run", workflow("cycle"))
    listed = flow(tmp_path, "status")
    assert listed.returncode == 0
    assert "no runs yet" in listed.stdout


def test_version(tmp_path: Path) -> None:
    result = flow(tmp_path, "--version")
    assert result.returncode == 0
    from function_flow import __version__
    assert __version__ in result.stdout


# --------------------------------------------------------------------- status


def test_status_lists_runs(tmp_path: Path) -> None:
    ok = run_id_of(flow(tmp_path, "run", workflow("simple")).stdout)
    bad = run_id_of(flow(tmp_path, "run", workflow("failing")).stderr)
    listed = flow(tmp_path, "status")
    assert listed.returncode == 0
    assert re.search(rf"{re.escape(ok)}\s+simple\s+SUCCEEDED", listed.stdout), listed.stdout
    assert re.search(rf"{re.escape(bad)}\s+failing\s+FAILED", listed.stdout), listed.stdout


def test_status_of_a_run_shows_its_tasks(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("simple"), "--arg", "n=1").stdout)
    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0
    assert f"run {run_id} SUCCEEDED" in shown.stdout
    for task in "abcd":
        assert re.search(rf"^\s*{task}\s+SUCCEEDED\s+1\s", shown.stdout, re.MULTILINE)
    assert '{"n": 1}' in shown.stdout
    assert "Traceback" not in shown.stdout


def test_status_without_database_creates_none(tmp_path: Path) -> None:
    result = flow(tmp_path, "status")
    assert result.returncode == 0
    assert "no runs yet in the embedded store .function_flow/function_flow.db" in result.stdout
    assert not (tmp_path / ".function_flow").exists()


def test_not_found_after_runs_names_the_store_it_read(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    env = {"FUNCTION_FLOW_DB": str(db)}
    assert flow(tmp_path, "run", workflow("simple"), env=env).returncode == 0
    for command in ("status", "resume"):
        assert_one_error_line(flow(tmp_path, command, "simple-nope", env=env),
                              f"no run with id 'simple-nope' in the embedded store {db}")


def stalled_run(db: Path, owner: str) -> str:
    """A RUNNING run in the SQLite file `db`, executed by `owner`, whose messages were lost."""
    from function_flow import loader
    from function_flow.backends import Backend
    from function_flow.store.sqlite import SqliteStore

    from function_flow.core.ports import Bus

    class DroppingBus(Bus):
        def publish(self, message, delay=0.0): pass

    job = loader.load_job(workflow("simple"), None)
    store = SqliteStore(str(db))
    try:
        engine = Backend("embedded", store, DroppingBus()).engine(job)
        run_id, _ = engine.start({}, owner=owner, source=workflow("simple"))
    finally:
        store.close()
    return run_id


def test_status_of_a_run_owned_on_another_host_says_it_cannot_tell(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    run_id = stalled_run(db, "other-host:1234")
    env = {"FUNCTION_FLOW_DB": str(db)}
    shown = flow(tmp_path, "status", run_id, env=env)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert first.startswith(f"run {run_id} RUNNING for "), first
    assert "run by other-host:1234" in first and "cannot be checked" in first, first
    assert "gone" not in shown.stdout
    listed = flow(tmp_path, "status", env=env)
    assert re.search(rf"{re.escape(run_id)}\s+simple\s+RUNNING \(run by other-host:1234\)",
                     listed.stdout), listed.stdout


def test_status_says_when_the_process_of_a_run_is_gone(tmp_path: Path) -> None:
    (tmp_path / "sleepy.py").write_text(
        "import time\n"
        "from function_flow import tasks\n"
        "job = tasks.Job(name='sleepy')\n"
        "@job.task(task_id='nap')\n"
        "def nap(task, job):\n"
        "    open('napping', 'w').close()\n"
        "    time.sleep(600)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    process = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "run", "sleepy.py"],
                               cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while not (tmp_path / "napping").exists():
            assert process.poll() is None, "the run ended early"
            time.sleep(0.05)
        listed = flow(tmp_path, "status")
        run_id = re.search(r"(sleepy-\S+)", listed.stdout).group(1)
        alive = flow(tmp_path, "status", run_id)
        assert f"run {run_id} RUNNING for " in alive.stdout, alive.stdout
        assert "gone" not in alive.stdout and f":{process.pid}" in alive.stdout
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    owner = f"{socket.gethostname()}:{process.pid}"
    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[0] == (
        f"run {run_id} RUNNING, but its process {owner} is gone; continue it with "
        f"function-flow resume {run_id}"), shown.stdout
    listed = flow(tmp_path, "status")
    row = next(line for line in listed.stdout.splitlines() if run_id in line)
    assert re.search(r"RUNNING \(process gone\)\s.*\s-\s*$", row), row
    assert "continue one with function-flow resume RUN_ID" in listed.stdout


# ---------------------------------------------------------------------- graph


def test_graph_text_lists_levels_and_deps(tmp_path: Path) -> None:
    result = flow(tmp_path, "graph", workflow("simple"))
    assert result.returncode == 0
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines.index("level 1") < lines.index("a") < lines.index("level 2")
    assert "b  <- a" in lines and "c  <- a" in lines
    assert lines.index("level 3") < lines.index("d  <- b, c")


def test_graph_mermaid_has_every_edge(tmp_path: Path) -> None:
    result = flow(tmp_path, "graph", workflow("simple"), "--format", "mermaid")
    assert result.returncode == 0
    lines = [line.strip() for line in result.stdout.splitlines()]
    assert lines[0] == "graph TD"
    edges = {line for line in lines if "-->" in line}
    assert edges == {"a --> b", "a --> c", "b --> d", "c --> d"}


def test_graph_dot_has_every_edge(tmp_path: Path) -> None:
    result = flow(tmp_path, "graph", workflow("two_jobs"), "--job", "first_job",
                  "--format", "dot")
    assert result.returncode == 0
    assert result.stdout.startswith('digraph "first_job" {')
    assert '"one";' in result.stdout and "->" not in result.stdout
    diamond = flow(tmp_path, "graph", workflow("simple"), "--format", "dot").stdout
    edges = {line.strip() for line in diamond.splitlines() if "->" in line}
    assert edges == {'"a" -> "b";', '"a" -> "c";', '"b" -> "d";', '"c" -> "d";'}
    assert diamond.rstrip().endswith("}")


def test_graph_mermaid_escapes_awkward_task_ids(tmp_path: Path) -> None:
    (tmp_path / "odd.py").write_text(
        "from function_flow import tasks\n"
        "job = tasks.Job(name='odd')\n"
        "@job.task(task_id='end')\n"
        "def f1(task, job): pass\n"
        "@job.task(task_id='load data', deps=['end'])\n"
        "def f2(task, job): pass\n")
    result = flow(tmp_path, "graph", "odd.py", "--format", "mermaid")
    assert result.returncode == 0, result.stderr
    assert '["end"]' in result.stdout and '["load data"]' in result.stdout
    edge = next(line.strip() for line in result.stdout.splitlines() if "-->" in line)
    source, target = edge.split(" --> ")
    assert source != "end" and " " not in target  # reserved word and space replaced


# --------------------------------------------------------------------- resume


def test_resume_of_a_finished_run_reports_it(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("simple")).stdout)
    result = flow(tmp_path, "resume", run_id)
    assert result.returncode == 0, result.stderr
    assert f"run {run_id} already ended: SUCCEEDED" in result.stdout


def test_resume_of_a_failed_run_reports_it_and_exits_1(tmp_path: Path) -> None:
    run_id = run_id_of(flow(tmp_path, "run", workflow("failing")).stderr)
    result = flow(tmp_path, "resume", run_id)
    assert result.returncode == 1
    assert f"run {run_id} already ended: FAILED" in result.stdout


def test_the_exit_of_a_failed_run_leaves_no_attempt_to_a_bus_worker(tmp_path: Path) -> None:
    """`run`'s exit path (follow.settle) queues a still-running attempt again and
    cancels it. A bus worker must not take that attempt: the exit would cut it
    off between its claim and its cancel, leaving the task RUNNING in an ended
    run. The store here holds such a worker inside that window until the test
    has looked."""
    import threading

    from function_flow import backends, tasks
    from function_flow.cli.follow import settle
    from function_flow.core.records import RunStatus, TaskStatus
    from function_flow.store.sqlite import SqliteStore

    exiting, looked, body_done = threading.Event(), threading.Event(), threading.Event()
    claimed = threading.Event()

    class WorkerHeldAfterClaim(SqliteStore):
        def get_run(self, run_id):  # what a claim reads once it committed
            if exiting.is_set() and threading.current_thread().name.startswith(
                    "function-flow-worker"):
                claimed.set()
                looked.wait(60)
            return super().get_run(run_id)

        def find_tasks(self, *args, **kwargs):  # the exit path's look for queued ones
            if exiting.is_set() and threading.current_thread() is threading.main_thread():
                claimed.wait(2)  # lets a worker claim first, if one takes the message
            return super().find_tasks(*args, **kwargs)

    job = tasks.Job(name="exit_path")

    @job.task(task_id="slow")
    def slow(task, job):
        body_done.wait(60)  # still running when the run fails

    @job.task(task_id="explode")
    def explode(task, job):
        while job.engine.store.get_tasks(task.run_id, ["slow"])[0].status \
                is not TaskStatus.RUNNING:
            time.sleep(0.01)
        raise ValueError("boom")

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    backend.store.close()
    backend.store = WorkerHeldAfterClaim(str(tmp_path / "runs.db"))
    job.use_backend(backend)
    try:
        run = job.run(timeout=60)
        assert run.status is RunStatus.FAILED
        exiting.set()
        settle(job, backend, run.run_id)
        slow_record = job.engine.store.get_tasks(run.run_id, ["slow"])[0]
    finally:
        looked.set()
        body_done.set()
        backend.close()
    assert slow_record.status is TaskStatus.CANCELLED, slow_record
