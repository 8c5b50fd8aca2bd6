"""The CLI where a newcomer stumbled: help, -v, the live view, status filters and JSON,
and a start whose run id names another start.

The entry point's own behaviour (help, one-line errors, exit codes) runs in
a subprocess; status reads records written here through the store, with
click's CliRunner; the live view is rendered from the records of a real
embedded run. The 409 of the deployed start function is in test_functions.py
and test_gcp_e2e.py.
"""

from __future__ import annotations

import io
import json
import math
import logging
import os
import re
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner
from rich.console import Console

from function_flow import backends, selection, tasks
from function_flow.cli import cli, items, progress, run_json
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.errors import RunConflictError
from function_flow.store.sqlite import SqliteStore
from functions_stack import wait_for
from cli_runs import assert_one_error_line, flow, run_id_of, workflow

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def quiet_cli(monkeypatch) -> Iterator[CliRunner]:
    """CliRunner on a clean environment; the CLI's logging setup undone afterwards."""
    for name in [k for k in os.environ if k.startswith("FUNCTION_FLOW_")]:
        monkeypatch.delenv(name)
    for name in ("GOOGLE_CLOUD_PROJECT", "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("function_flow")
    level, handlers = logger.level, list(logger.handlers)
    yield CliRunner()
    logger.setLevel(level)
    logger.handlers[:] = handlers


# ----------------------------------------------------------- help and -v


def test_no_arguments_prints_the_help_as_click_does_for_groups(tmp_path: Path) -> None:
    result = flow(tmp_path)
    assert result.returncode == 2  # click's exit code for a group without a command
    lines = result.stderr.splitlines()
    assert lines[0].startswith("Usage: function-flow [OPTIONS] COMMAND"), result.stderr
    assert "Commands:" in lines and "error:" not in result.stderr
    assert any(re.match(r"\s+status\s+List recent runs", line) for line in lines)


def test_verbose_after_the_command_shows_the_traceback_of_a_failed_import(
        tmp_path: Path) -> None:
    plain = flow(tmp_path, "run", workflow("broken_import"))
    assert_one_error_line(plain, "broken_import.py", "NameError: name 'foo' is not defined",
                          "run with -v to see the traceback")

    for args in (["run", "-v", workflow("broken_import")],
                 ["-v", "graph", workflow("broken_import")]):
        verbose = flow(tmp_path, *args)
        assert verbose.returncode == 2, verbose.stderr
        lines = verbose.stderr.strip().splitlines()
        assert lines[0] == "Traceback (most recent call last):", verbose.stderr
        # From the workflow's own frame on: not the loader's or importlib's.
        assert lines[1].startswith(f'  File "{workflow("broken_import")}", line 7'), lines
        assert "importlib" not in verbose.stderr and "loader.py" not in verbose.stderr
        assert lines[-1].startswith("error: cannot import") and "-v" not in lines[-1]

    assert flow(tmp_path, "status", "-v").returncode == 0  # every command takes it


# --------------------------------------------------------------- status


def add_run(store: SqliteStore, run_id: str, job_name: str, created_at: float,
            **fields: object) -> None:
    store.create_run(RunRecord(run_id=run_id, job_name=job_name, dag_hash="h",
                               args={"day": run_id}, created_at=created_at),
                     [TaskRecord(task_id="load")], {})
    if fields:
        store.transact(lambda tx: tx.update_run(run_id, dict(fields)))


def strict_json(text: str) -> object:
    """json.loads refusing NaN and Infinity, as jq and JSON.parse do."""
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON: {text}")

    return json.loads(text, parse_constant=refuse)


def test_status_filters_by_job_and_status_and_prints_stable_json(tmp_path: Path,
                                                                 quiet_cli) -> None:
    db = tmp_path / "ff.db"
    store = SqliteStore(str(db))
    add_run(store, "etl-1", "etl", 10.0, status="FAILED", error="task 'load' failed: E",
            finished_at=12.0)
    add_run(store, "etl-2", "etl", 20.0, status="SUCCEEDED", finished_at=21.5)
    add_run(store, "etl-3", "etl", 30.0, status="FAILED", finished_at=31.0)
    add_run(store, "report-1", "report", 40.0, status="FAILED", finished_at=41.0)
    add_run(store, "etl-4", "etl", 50.0, paused_at=51.0)
    store.transact(lambda tx: tx.update_task("etl-1", "load", {
        "status": "FAILED", "attempt": 2, "error": "Traceback ...\nValueError: E",
        "started_at": 11.0, "finished_at": 12.0,
        "result": {"loss": math.nan, "bounds": [-math.inf, math.inf, 1.5]}}))
    store.close()
    env = {"FUNCTION_FLOW_DB": str(db)}

    def status(*args: str) -> str:
        result = quiet_cli.invoke(cli, ["status", *args], env=env)
        assert result.exit_code == 0, result.output
        return result.output

    table = status("--job", "etl", "--status", "FAILED")
    assert "runs of job etl in status FAILED" in table
    assert re.findall(r"^ (\S+) ", table, re.MULTILINE)[1:] == ["etl-3", "etl-1"], table
    assert "report-1" not in table and "etl-2" not in table

    listed = json.loads(status("--json"))
    assert [r["run_id"] for r in listed["runs"]] == [
        "etl-4", "report-1", "etl-3", "etl-2", "etl-1"]
    assert all(tuple(r) == run_json.RUN_KEYS for r in listed["runs"])
    assert listed["runs"][0]["status"] == "PAUSED"
    assert listed["runs"][3] == {
        "run_id": "etl-2", "job": "etl", "status": "SUCCEEDED",
        "created_at": "1970-01-01T00:00:20.000Z", "finished_at": "1970-01-01T00:00:21.500Z",
        "duration_seconds": 1.5, "error": None, "args": {"day": "etl-2"}, "redrives": 0,
        "note": None}
    failed = json.loads(status("--json", "--job", "etl", "--status", "failed"))
    assert [r["run_id"] for r in failed["runs"]] == ["etl-3", "etl-1"]
    paused = json.loads(status("--json", "--status", "PAUSED"))
    assert [r["run_id"] for r in paused["runs"]] == ["etl-4"]
    assert json.loads(status("--json", "--job", "nope")) == {"runs": []}
    assert "no runs of job nope in" in status("--job", "nope")

    one = strict_json(status("etl-1", "--json"))
    assert tuple(one) == run_json.RUN_KEYS + ("tasks",)
    assert one["error"] == "task 'load' failed: E"
    assert one["tasks"] == [{
        "task_id": "load", "status": "FAILED", "attempts": 2, "interrupted": 0,
        "started_at": "1970-01-01T00:00:11.000Z", "finished_at": "1970-01-01T00:00:12.000Z",
        "duration_seconds": 1.0, "not_before": None,
        "error": "Traceback ...\nValueError: E",
        # Standard JSON has no NaN or infinities: they are written as strings.
        "result": {"loss": "NaN", "bounds": ["-Infinity", "Infinity", 1.5]}}]

    refused = quiet_cli.invoke(cli, ["status", "etl-1", "--job", "etl"], env=env)
    assert refused.exit_code == 2 and "without RUN_ID" in refused.output


def test_status_lists_the_50_newest_runs_unless_limit_says_otherwise(tmp_path: Path,
                                                                    quiet_cli) -> None:
    db = tmp_path / "ff.db"
    store = SqliteStore(str(db))
    for n in range(52):
        add_run(store, f"r-{n:02d}", "etl", float(n))
    store.close()

    def listed(*args: str) -> list[str]:
        result = quiet_cli.invoke(cli, ["status", "--json", *args],
                                  env={"FUNCTION_FLOW_DB": str(db)})
        assert result.exit_code == 0, result.output
        return [r["run_id"] for r in json.loads(result.output)["runs"]]

    assert listed() == [f"r-{n:02d}" for n in range(51, 1, -1)]  # 50, newest first
    assert listed("--limit", "3") == ["r-51", "r-50", "r-49"]


# ------------------------------------------------------------ live view


def fake_tasks(now: float) -> list[TaskRecord]:
    """42 tasks: 23 done, 4 running, 1 failed, 1 retrying, 13 waiting; and a
    foreach `work` of 500 items under one of them."""
    records = [TaskRecord(task_id=f"ok{i:02d}", status=TaskStatus.SUCCEEDED, attempt=1,
                          started_at=now - 5, finished_at=now - 4) for i in range(23)]
    records += [TaskRecord(task_id=f"run{i}", status=TaskStatus.RUNNING, attempt=1,
                           started_at=now - 2) for i in range(2)]
    records.append(TaskRecord(task_id="run2", status=TaskStatus.RUNNING, attempt=2,
                              started_at=now - 1, error="Traceback\nOSError: flaky disk"))
    records.append(TaskRecord(task_id="work", status=TaskStatus.RUNNING, attempt=1,
                              started_at=now - 3))
    records += [TaskRecord(task_id=f"work[{i}]", role="item", template="work",
                           status=TaskStatus.SUCCEEDED if i < 400 else TaskStatus.RUNNING,
                           attempt=1) for i in range(500)]
    records.append(TaskRecord(task_id="broken", status=TaskStatus.FAILED, attempt=3,
                              error="Traceback\nKeyError: 'x'"))
    records.append(TaskRecord(task_id="flaky", status=TaskStatus.QUEUED, attempt=2,
                              not_before=now + 30, error="Traceback\nTimeoutError: slow"))
    records += [TaskRecord(task_id=f"later{i:02d}") for i in range(13)]
    return records


def rendered(run: RunRecord, records: list[TaskRecord], height: int) -> list[str]:
    console = Console(file=io.StringIO(), width=140, height=height)
    console.print(progress.render_progress(run, records, height))
    return console.file.getvalue().splitlines()  # type: ignore[attr-defined]


def test_the_live_view_counts_and_summarises_a_wide_dag_to_fit_the_terminal() -> None:
    now = time.time()
    run = RunRecord(run_id="r", job_name="wide", dag_hash="h", args={}, created_at=now - 9)
    records = fake_tasks(now)

    small = rendered(run, records, 20)
    assert len(small) <= 20, small
    assert small[1] == "23/42 done, 4 running, 1 failed, 1 retrying"
    text = "\n".join(small)
    assert "ok00" not in text and "later00" not in text  # counted, not listed
    assert small[-1] == "not shown: 23 SUCCEEDED, 13 WAITING"
    assert re.search(r"broken\s+FAILED\s+3 .*KeyError: 'x'", text), text
    assert re.search(r"flaky\s+QUEUED\s+2 .*retry in (29|30)\.\d\ds after TimeoutError: "
                     r"slow", text), text
    assert re.search(r"work\[0\.\.499\]\s+400 SUCCEEDED, 100 RUNNING", text), text
    assert all(f"run{i}" in text for i in range(3))
    assert re.search(r"run2\s+RUNNING\s+2 .*attempt 1 failed: OSError: flaky disk", text), text

    tiny = "\n".join(rendered(run, records, 8))  # not even those fit: failed first
    assert "broken" in tiny and "flaky" in tiny and "more RUNNING" in tiny

    tall = "\n".join(rendered(run, records, 100))  # every row fits: all shown
    assert "ok00" in tall and "later12" in tall and "not shown" not in tall
    assert len(items.collapse(records)) + 6 <= 100


def test_the_live_view_shows_a_real_retry_its_error_and_its_wait(tmp_path: Path) -> None:
    job = tasks.Job(name="retrying")

    @job.task(task_id="flaky", retries=1, retry_backoff=600)
    def flaky(task, job):
        raise RuntimeError(f"attempt {task.attempt} failed")

    backend = backends.embedded(str(tmp_path / "ff.db"), workers=1)
    job.use_backend(backend)
    try:
        run_id = job.start({})
        wait_for(lambda: job.engine.task_records(run_id)[0].attempt == 2, "the retry")
        records = job.engine.task_records(run_id)
        view = "\n".join(rendered(job.engine.run_status(run_id), records, 30))
        assert "0/1 done, 0 running, 0 failed, 1 retrying" in view
        assert re.search(r"flaky\s+QUEUED\s+2 .*retry in \d+m\d\ds after RuntimeError: "
                         r"attempt 1 failed", view), view
        line = progress.describe_change(records[0])  # what a log (not a tty) gets
        assert re.fullmatch(r"flaky: QUEUED \(attempt 2, retry in \d+m\d\ds after "
                            r"RuntimeError: attempt 1 failed\)", line), line
    finally:
        job.engine.cancel(run_id)
        backend.close()


# ---------------------------------------------------- run ids that conflict


def test_a_start_with_an_existing_run_id_and_other_arguments_is_refused(tmp_path) -> None:
    job = tasks.Job(name="nightly")
    job.task(task_id="t")(lambda task, job: None)
    other = tasks.Job(name="weekly")
    other.task(task_id="t")(lambda task, job: None)
    backend = backends.embedded(str(tmp_path / "ff.db"), workers=1)
    job.use_backend(backend)
    other.use_backend(backend)
    try:
        assert job.run({"day": 1, "tags": ["a"]}, run_id="n-1").status is RunStatus.SUCCEEDED
        # Same arguments (in another key order): the same run, idempotently.
        assert job.start({"tags": ["a"], "day": 1}, run_id="n-1") == "n-1"
        for args in ({"day": 2, "tags": ["a"]}, {"day": True, "tags": ["a"]}, {}):
            with pytest.raises(RunConflictError) as refused:
                job.start(args, run_id="n-1")
            assert "already exists with other arguments" in str(refused.value)
            assert "\n" not in str(refused.value)
        with pytest.raises(RunConflictError, match="already exists with other arguments"):
            job.run({"day": 2, "tags": ["a"]}, run_id="n-1")
        assert job.run({"tags": ["a"], "day": 1}, run_id="n-1").run_id == "n-1"
        with pytest.raises(RunConflictError, match="as a run of job 'nightly', not 'weekly'"):
            other.start({"day": 1, "tags": ["a"]}, run_id="n-1")
        assert job.engine.store.get_run("n-1").args == {"day": 1, "tags": ["a"]}
        # What --run-id and the start function refuse, Python refuses too (a run
        # "a/b" could not be controlled over HTTP; "" started a new run each time).
        for bad in ("a/b", "a b", "../x", "x" * 201, "", "__end__", 123):
            with pytest.raises(ValueError, match=r"^run_id .* must be 1-200 letters"):
                job.start({}, run_id=bad)
        assert [r.run_id for r in job.engine.store.list_runs()] == ["n-1"]
    finally:
        backend.close()


def test_run_with_an_existing_run_id_and_other_arguments_is_one_error_line(
        tmp_path: Path) -> None:
    first = flow(tmp_path, "run", workflow("simple"), "--run-id", "daily-1", "--arg", "n=1")
    assert first.returncode == 0 and run_id_of(first.stdout) == "daily-1"
    again = flow(tmp_path, "run", workflow("simple"), "--run-id", "daily-1", "--arg", "n=1")
    assert again.returncode == 0
    assert "already started: run daily-1" in again.stdout
    assert_one_error_line(
        flow(tmp_path, "run", workflow("simple"), "--run-id", "daily-1", "--arg", "n=2"),
        "cannot start job 'simple'", "run 'daily-1' already exists with other arguments",
        '{"n":1}', '{"n":2}')
    assert_one_error_line(flow(tmp_path, "run", workflow("simple"), "--run-id", "a/b"),
                          "--run-id 'a/b' must be")


def test_status_without_the_composite_index_lists_unordered_with_a_warning(
        tmp_path: Path, capsys) -> None:
    """Production Firestore refuses a filtered list newest first until its index
    exists (the emulator never does): status then sorts an unordered read."""
    from function_flow.cli import inspect
    from function_flow.store.indexes import MissingIndexError

    class Unindexed(SqliteStore):
        def list_runs(self, *args: Any, newest_first: bool = False, **kwargs: Any) -> Any:
            if newest_first and (kwargs.get("job_name") or kwargs.get("status")):
                raise MissingIndexError("listing runs by job_name newest first needs a "
                                        "composite index on runs")
            return super().list_runs(*args, **kwargs)

    store = Unindexed(str(tmp_path / "ff.db"))
    for n, created in enumerate((30.0, 10.0, 20.0)):
        add_run(store, f"etl-{n}", "etl", created)
    selected = selection.SelectedStore("embedded", store, "a test store")
    assert [r.run_id for r in inspect.matching_runs(selected, 5, "etl", None)] == \
        ["etl-0", "etl-2", "etl-1"]
    warning = capsys.readouterr().err
    assert warning.startswith("warning: listing runs by job_name newest first needs")
    assert "the newest runs may be missing past --limit" in warning
    assert [r.run_id for r in inspect.matching_runs(selected, 5, None, None)] == \
        ["etl-0", "etl-2", "etl-1"] and capsys.readouterr().err == ""
    store.close()
