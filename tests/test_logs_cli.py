"""`function-flow logs` on both stores (--task, --follow, a big foreach), and the log
lines themselves: JSON that Cloud Logging parses, readable text in a terminal.

Runs are made in this process with the engine (messages delivered in order,
test_run_graph's Outbox), on SQLite or the Firestore emulator. The CLI runs
with the variables a user would set: in this process (its console script's
`main`, which turns errors into one line), and in a subprocess to --follow
a run while this process advances it.
"""

from __future__ import annotations

import io
import json
import logging
import os
import queue
import re
import subprocess
import sys
import threading
import time

import pytest

from function_flow import log_format
from function_flow.cli import main
from function_flow.core import output
from function_flow.errors import ConfigurationError
from function_flow.store.sqlite import SqliteStore
from function_flow.tasks import Job

from cli_runs import assert_one_error_line, flow, run_id_of
from test_history import engine_on
from test_run_graph import drain

EVENT = re.compile(r"^\d\d:\d\d:\d\d\.\d{3}  (\S+)\s+(\S+(?: #\d+)?(?: \(redrive \d+\))?)"
                   r"(?:  (.*))?$")


@pytest.fixture
def cli_env(store, tmp_path, request) -> dict[str, str]:
    """The variables that make the CLI read `store`."""
    if isinstance(store, SqliteStore):
        return {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": str(tmp_path / "state.db")}
    return dict(request.getfixturevalue("firestore_env"))


def report_job() -> Job:
    job = Job("report")

    @job.task(task_id="extract")
    def extract(task, job):
        print("read 3 rows")
        return 3

    @job.task(task_id="flaky", deps=["extract"], retries=1, retry_backoff=0)
    def flaky(task, job):
        print(f"flaky try {task.attempt}")
        if task.attempt == 1:
            raise ConnectionError("the API hung up")
        return "ok"

    @job.task(task_id="cleanup", deps=["flaky"], trigger_rule="all_failed")
    def cleanup(task, job):
        return None

    return job


@pytest.fixture
def cli(capsys, monkeypatch):
    """Run `function-flow ARGS` in this process with `env`: (exit code, stdout, stderr)."""
    root, package = logging.getLogger(), logging.getLogger("function_flow")
    saved = root.level, package.level, list(package.handlers)

    def run(env: dict[str, str], *args: str) -> tuple[int, str, str]:
        for key in [k for k in os.environ if k.startswith("FUNCTION_FLOW_")]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit:
            main(list(args))
        out, err = capsys.readouterr()
        return exit.value.code, out, err

    yield run
    root.setLevel(saved[0])
    package.setLevel(saved[1])
    package.handlers[:] = saved[2]


def one_error_line(result: tuple[int, str, str], *fragments: str) -> None:
    code, out, err = result
    assert_one_error_line(subprocess.CompletedProcess([], code, out, err), *fragments)


def events_of(text: str) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in map(EVENT.match, text.splitlines()) if m]


def test_logs_prints_a_runs_events_in_order_with_output_and_errors(store, cli_env,
                                                                    cli) -> None:
    engine, bus = engine_on(report_job(), store)
    run_id, _ = engine.start({})
    drain(engine, bus)

    code, text, err = cli(cli_env, "logs", run_id)
    assert code == 0, err
    header, day = text.splitlines()[:2]
    where = ("the embedded store " + cli_env["FUNCTION_FLOW_DB"]
             if "FUNCTION_FLOW_DB" in cli_env else "the Firestore emulator at ")
    assert header.startswith(f"run {run_id} (job report) in {where}"), header
    assert re.fullmatch(r"--- \d{4}-\d\d-\d\d ---", day), day
    assert events_of(text) == [
        ("created", "run"), ("queued", "extract #1"), ("claimed", "extract #1"),
        ("succeeded", "extract #1"), ("queued", "flaky #1"), ("claimed", "flaky #1"),
        ("retried", "flaky #1"), ("claimed", "flaky #2"), ("succeeded", "flaky #2"),
        ("skipped", "cleanup"), ("ended", "run")]
    assert re.search(r"retried\s+flaky #1  after \S+; retry in \S+; "
                     r"ConnectionError: the API hung up\n    output:\n    \| flaky try 1\n"
                     r"    error:\n    ! Traceback", text), text
    assert "    | read 3 rows\n" in text and "    | flaky try 2\n" in text
    assert re.search(r"ended\s+run  SUCCEEDED$", text, re.MULTILINE)

    assert events_of(cli(cli_env, "logs", run_id, "--task", "flaky")[1]) == [("queued", "flaky #1"), ("claimed", "flaky #1"),
                                      ("retried", "flaky #1"), ("claimed", "flaky #2"),
                                      ("succeeded", "flaky #2")]
    as_json = cli(cli_env, "logs", run_id, "--json", "--task", "extract")[1]
    lines = [json.loads(line) for line in as_json.splitlines()]
    assert [(e["kind"], e.get("output")) for e in lines] == [
        ("queued", None), ("claimed", None), ("succeeded", "read 3 rows\n")]

    one_error_line(cli(cli_env, "logs", run_id, "--task", "nope"),
                   f"run {run_id} has no task 'nope'", "extract, flaky")
    one_error_line(cli(cli_env, "logs", run_id, "--task", "flaki"),
                   f"run {run_id} has no task 'flaki' (did you mean 'flaky'?); its tasks: ")
    one_error_line(cli(cli_env, "logs", "no-such-run"), "no run with id 'no-such-run'")


@pytest.mark.parametrize("options", [(), ("--json",), ("--follow",)])
def test_logs_where_no_run_was_ever_stored_is_one_error_line(cli, tmp_path,
                                                              options) -> None:
    env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": str(tmp_path / "new.db")}
    one_error_line(cli(env, "logs", "x", *options), "no run with id 'x'")


def test_logs_follow_streams_events_until_the_run_ends(store, cli_env, tmp_path) -> None:
    engine, bus = engine_on(report_job(), store)
    run_id, _ = engine.start({})
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    env.update(cli_env, PYTHONUNBUFFERED="1")
    follower = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "logs", run_id,
                                 "--follow"], cwd=tmp_path, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    lines: queue.Queue = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout],
                              daemon=True)
    reader.start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not any("queued" in line and "extract #1" in line for line in seen):
            seen.append(lines.get(timeout=max(0.1, deadline - time.monotonic())))
        assert not any("succeeded" in line for line in seen)  # nothing had run yet
        drain(engine, bus)  # the run happens while the follower looks
        assert follower.wait(timeout=60) == 0, follower.stderr.read()
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    reader.join(60)  # it ends at the follower's end of output, with the last lines taken
    assert not reader.is_alive(), "the follower's output never ended"
    while not lines.empty():
        seen.append(lines.get())
    assert [e for e in events_of("".join(seen)) if e[0] != "queued"] == [
        ("created", "run"), ("claimed", "extract #1"), ("succeeded", "extract #1"),
        ("claimed", "flaky #1"), ("retried", "flaky #1"), ("claimed", "flaky #2"),
        ("succeeded", "flaky #2"), ("skipped", "cleanup"), ("ended", "run")]
    assert "    | flaky try 2\n" in seen


def test_a_big_foreach_shows_its_failed_items_and_counts_the_rest(tmp_path, cli) -> None:
    job = Job("fan")
    job.task(task_id="list")(lambda **_: list(range(30)))

    @job.foreach(task_id="work", over="list", tolerated_failures=5)
    def work(item, task, job):
        print(f"item {item}")
        if item in (7, 19):
            raise ValueError(f"item {item} is bad")
        return item

    store = SqliteStore(str(tmp_path / "state.db"))
    try:
        engine, bus = engine_on(job, store)
        run_id, _ = engine.start({})
        drain(engine, bus, limit=1000)
    finally:
        store.close()
    env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": str(tmp_path / "state.db")}

    shown = cli(env, "logs", run_id)[1]
    items = {who.split(" #")[0] for _, who in events_of(shown) if "[" in who}
    assert items == {"work[7]", "work[19]"}, shown
    assert "(28 items of work not shown: 28 SUCCEEDED; --items shows them, " \
           "--task 'work[N]' one of them)" in shown
    assert "    ! ValueError: item 7 is bad" in shown

    every = cli(env, "logs", run_id, "--items")[1]
    assert len({who for _, who in events_of(every) if "[" in who}) == 30
    one = cli(env, "logs", run_id, "--task", "work[3]")[1]
    assert events_of(one) == [("queued", "work[3] #1"), ("claimed", "work[3] #1"),
                              ("succeeded", "work[3] #1")]
    assert "    | item 3\n" in one


def test_a_foreach_over_a_sub_dag_is_shown_by_item_with_its_copys_tasks() -> None:
    from function_flow.cli.logs import View
    from function_flow.core.records import TaskRecord, TaskStatus

    records = [TaskRecord("work", TaskStatus.SUCCEEDED)]
    for i in range(12):
        failed = TaskStatus.FAILED if i == 4 else TaskStatus.SUCCEEDED
        records += [TaskRecord(f"work[{i}]", failed, role="item", template="work"),
                    TaskRecord(f"work[{i}]/clean", failed, role="member",
                               template="work/clean")]
    view = View((), False)
    assert [t.task_id for t in view.chosen(records)] == ["work", "work[4]", "work[4]/clean"]
    assert view.notes(records) == ["(11 items of work not shown: 11 SUCCEEDED; --items "
                                   "shows them, --task 'work[N]' one of them)"]
    assert len(View(("work[7]",), False).chosen(records)) == 2


def test_a_foreach_of_more_than_10_items_shows_5_of_its_failed_items() -> None:
    from function_flow.cli.logs import View
    from function_flow.core.records import TaskRecord, TaskStatus

    def foreach(count: int, failed: int) -> list[TaskRecord]:
        return [TaskRecord("work", TaskStatus.FAILED)] + [
            TaskRecord(f"work[{i}]", TaskStatus.FAILED if i < failed else TaskStatus.SUCCEEDED,
                       role="item", template="work") for i in range(count)]

    assert len(View((), False).chosen(foreach(10, 0))) == 11  # 10 items: all of them
    records = foreach(11, 7)
    assert [t.task_id for t in View((), False).chosen(records)] == [
        "work", "work[0]", "work[1]", "work[2]", "work[3]", "work[4]"]
    assert View((), False).notes(records) == [
        "(6 items of work not shown: 4 SUCCEEDED, 2 FAILED; --items shows them, "
        "--task 'work[N]' one of them)"]


def test_a_sub_dag_node_covers_its_tasks_and_a_redriven_attempt_says_so() -> None:
    from function_flow import history
    from function_flow.cli.logs import Printer, View
    from function_flow.core.records import TaskRecord

    records = [TaskRecord(t) for t in ("node", "node/a", "node/b", "nodes", "other")]
    assert [t.task_id for t in View(["node"], False).chosen(records)] == [
        "node", "node/a", "node/b"]
    printer = Printer(None, as_json=False)
    event = history.Event(1_700_000_000.0, "succeeded", "node/a", 1, "after 1.00s",
                          output="last words\n", output_cut=1234, redrive=2)
    lines = printer.lines(event)
    assert re.match(r"\d\d:\d\d:\d\d\.\d{3}  succeeded       node/a #1 \(redrive 2\)  after 1\.00s$",
                    lines[1]), lines
    assert lines[2:] == ["    output (its first 1,234 characters cut):", "    | last words"]


# ---------------------------------------------------------------- log lines


def test_json_log_lines_carry_severity_labels_and_the_current_trace(monkeypatch) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "analytics-prod")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(log_format.formatter("json"))
    logger = logging.getLogger("test_logs_cli.json")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.warning("no span, no labels")
        with output.labelled(job="etl"), output.capturing("r-0", "body", 1):
            logger.info("in a body")
        with output.labelled(run_id="r-1", task_id="t", attempt=2):
            tracer = TracerProvider().get_tracer("test")
            with tracer.start_as_current_span("claim") as span:
                logger.error("inside a span: %s", "\udcff")
                context = span.get_span_context()
    finally:
        logger.removeHandler(handler)
    plain, body, traced = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert body["logging.googleapis.com/labels"] == {"job": "etl", "run_id": "r-0",
                                                     "task_id": "body", "attempt": "1"}
    assert plain["severity"] == "WARNING" and plain["message"] == "no span, no labels"
    assert "logging.googleapis.com/trace" not in plain
    assert "logging.googleapis.com/labels" not in plain
    assert plain["logging.googleapis.com/sourceLocation"]["function"] == \
        "test_json_log_lines_carry_severity_labels_and_the_current_trace"
    assert isinstance(plain["logging.googleapis.com/sourceLocation"]["line"], str)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", plain["time"]), plain
    assert plain["logger"] == "test_logs_cli.json"
    assert traced["logging.googleapis.com/trace_sampled"] is True
    assert traced["severity"] == "ERROR" and traced["message"] == "inside a span: \\udcff"
    assert traced["logging.googleapis.com/labels"] == {"run_id": "r-1", "task_id": "t",
                                                       "attempt": "2"}
    assert traced["logging.googleapis.com/trace"] == \
        f"projects/analytics-prod/traces/{context.trace_id:032x}"
    assert traced["logging.googleapis.com/spanId"] == f"{context.span_id:016x}"
    assert log_format.current_trace() is None  # the span ended


def test_the_format_is_json_deployed_text_in_a_terminal_and_says_what_is_wrong() -> None:
    assert log_format.chosen_format({}) == "text"
    assert log_format.chosen_format({"FUNCTION_TARGET": "scheduler"}) == "json"
    assert log_format.chosen_format({"FUNCTION_FLOW_LOG_FORMAT": "json"}) == "json"
    assert log_format.chosen_format({"FUNCTION_TARGET": "scheduler",
                                     "FUNCTION_FLOW_LOG_FORMAT": "Text"}) == "text"
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_LOG_FORMAT='yaml' is not"):
        log_format.chosen_format({"FUNCTION_FLOW_LOG_FORMAT": "yaml"})
    record = logging.LogRecord("function_flow.engine", logging.WARNING, __file__, 1,
                               "run %s failed", ("r-1",), None)
    assert log_format.formatter("text").format(record) == \
        "WARNING function_flow.engine: run r-1 failed"


def test_the_cli_logs_json_lines_when_asked_and_refuses_an_unknown_format(
        cli, capsys, monkeypatch) -> None:
    logging.getLogger().setLevel(logging.WARNING)  # Python's default
    code, _, err = cli({"FUNCTION_FLOW_LOG_FORMAT": "json"}, "-v", "status", "no-such-run")
    assert code == 2  # the one error line; the handler the CLI installed stays
    assert logging.getLogger().level == logging.INFO  # a body's INFO records are made
    logging.getLogger("function_flow.engine").info("run %s started", "r-9")
    entry = json.loads(capsys.readouterr().err.splitlines()[-1])
    assert (entry["severity"], entry["message"], entry["logger"]) == (
        "INFO", "run r-9 started", "function_flow.engine")
    one_error_line(cli({"FUNCTION_FLOW_LOG_FORMAT": "yaml"}, "status"),
                   "FUNCTION_FLOW_LOG_FORMAT='yaml' is not a log format")


def test_function_flow_run_keeps_a_bodys_info_records_without_printing_them(tmp_path) -> None:
    (tmp_path / "chatty.py").write_text(
        "import logging\n"
        "from function_flow import tasks\n"
        "job = tasks.Job(name='chatty')\n"
        "@job.task(task_id='talks')\n"
        "def talks(task, job):\n"
        "    logging.getLogger('chatty.body').info('loaded %d rows', 3)\n"
        "    logging.getLogger('function_flow.mine').warning('careful')\n"
        "    logging.getLogger('function_flow.mine').info('chatter')\n")
    ran = flow(tmp_path, "run", "chatty.py")
    assert ran.returncode == 0, ran.stderr
    assert "loaded 3 rows" not in ran.stdout + ran.stderr  # the root logger has no handler
    assert "careful" not in ran.stderr  # without -v the command prints only errors
    shown = flow(tmp_path, "logs", run_id_of(ran.stdout))
    assert "    | INFO chatty.body: loaded 3 rows\n" in shown.stdout, shown.stdout
    # function_flow's own records are kept from WARNING up, also without -v.
    assert "    | WARNING function_flow.mine: careful\n" in shown.stdout
    assert "chatter" not in shown.stdout



def test_an_unknown_task_lists_the_first_task_ids_and_says_how_many_more() -> None:
    from function_flow.cli.common import CliError
    from function_flow.cli.logs import check_tasks
    from function_flow.core.records import TaskRecord

    tasks = [TaskRecord(task_id=f"t{i:02d}") for i in range(25)] + [TaskRecord("work[0]")]
    with pytest.raises(CliError) as refused:
        check_tasks("r-1", ["zzz"], tasks)
    assert str(refused.value.format_message()).endswith(
        "its tasks: " + ", ".join(f"t{i:02d}" for i in range(20)) + " and 5 more")
