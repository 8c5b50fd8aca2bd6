"""The `function-flow` command line, run as a user runs it: in a subprocess.

Each test runs in its own temporary working directory, so the embedded
backend's database (.function_flow/function_flow.db) is private to it.
Here: `run`, `graph` and bad input; `status` and `resume` are in
tests/test_cli_status.py.
"""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from cli_runs import assert_one_error_line, flow, run_id_of, workflow

pytestmark = pytest.mark.timeout(120)


# ------------------------------------------------------------------------ run


def test_run_succeeds_shows_tasks_results_and_hint(tmp_path: Path) -> None:
    result = flow(tmp_path, "run", workflow("simple"),
                  "--arg", "n=3", "--arg", "name=bob", "--arg", "ids=[1,2]",
                  "--arg", "dry=true", "--arg", "label=[not json", "--arg", "x=NaN",
                  "--arg", "big=1e400", "--arg", "ratio=0.5")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for task in "abcd":
        assert re.search(rf"^\s*{task}\s+SUCCEEDED\s+1\s", out, re.MULTILINE), out
    # The sink's result, as JSON, with the --arg values typed as JSON when they parse.
    results = out.split("\nresults:\n", 1)[1].splitlines()
    assert results[0].startswith("  d: "), out
    value = json.loads(results[0].split(": ", 1)[1])
    assert value["args"] == {"n": 3, "name": "bob", "ids": [1, 2], "dry": True,
                             "label": "[not json", "x": "NaN", "big": "1e400", "ratio": 0.5}
    assert value["parts"] == ["from b", "from c"]
    run_id = run_id_of(out)
    assert run_id.startswith("simple-")
    db = tmp_path / ".function_flow" / "function_flow.db"
    with contextlib.closing(sqlite3.connect(db)) as conn:  # WAL stays set in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_run_shows_a_foreach_sinks_results_as_its_items_results(tmp_path: Path) -> None:
    (tmp_path / "fe.py").write_text(
        "from function_flow import tasks\n"
        "job = tasks.Job(name='fe')\n"
        "job.task(task_id='src')(lambda **_: ['a', 'b'])\n"
        "job.foreach(task_id='each', over='src')(lambda task, job: task.item.upper())\n")
    result = flow(tmp_path, "run", "fe.py")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\nresults:\n", 1)[1].splitlines()[0] == '  each: ["A", "B"]'
    shown = json.loads(flow(tmp_path, "status", run_id_of(result.stdout), "--json").stdout)
    assert [(t["task_id"], t["result"]) for t in shown["tasks"]] == [
        ("src", ["a", "b"]), ("each", ["A", "B"]), ("each[0]", "A"), ("each[1]", "B")]


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


def test_run_counts_one_task_in_the_singular(tmp_path: Path) -> None:
    (tmp_path / "one.py").write_text("from function_flow import tasks\n"
                                     "job = tasks.Job(name='one')\n"
                                     "job.task(task_id='a')(lambda **_: object())\n")
    result = flow(tmp_path, "run", "one.py")
    assert result.returncode == 1
    assert "(job one, 1 task)" in result.stdout.splitlines()[0]
    assert "the result of task 'a' is an object that cannot be stored" in result.stdout
