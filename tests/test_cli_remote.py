"""`function-flow run --remote`: which function answers each remote topic of a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cli_runs import assert_one_error_line, flow

WORKFLOW = str(Path(__file__).resolve().parent / "workflows_gcp" / "remote_round_trip.py")

pytestmark = pytest.mark.timeout(120)


def test_run_hosts_wrapped_functions_and_remote_options(tmp_path):
    result = flow(tmp_path, "run", WORKFLOW, "--arg", "n=2", "--remote",
                  "RT_CLASSIC=classic_remote",
                  env={"FUNCTION_FLOW_TEST_EXECUTIONS": str(tmp_path / "calls.jsonl")})
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r'combine: .*"product": 20', result.stdout), result.stdout


def test_a_topic_nothing_answers_is_one_error_naming_the_task(tmp_path):
    assert_one_error_line(flow(tmp_path, "run", WORKFLOW), "task 'classic'",
                          "'RT_CLASSIC'", "--remote RT_CLASSIC=FUNCTION")


@pytest.mark.parametrize("pair, fragment", [
    ("RT_CLASSIC", "must look like TOPIC=FUNCTION"),
    ("RT_CLASSIC=no_such_function", "defines no function 'no_such_function'"),
    ("goog=classic_remote", "is not a Pub/Sub topic name"),
])
def test_bad_remote_options_are_one_error(tmp_path, pair, fragment):
    assert_one_error_line(flow(tmp_path, "run", WORKFLOW, "--remote", pair), fragment)


def test_a_remote_option_for_a_topic_no_task_uses_is_refused(tmp_path):
    assert_one_error_line(
        flow(tmp_path, "run", WORKFLOW, "--remote", "RT_CLASSIC=classic_remote",
             "--remote", "RT_CLASIC=classic_remote"),
        "--remote RT_CLASIC=...: no task of job 'remote_round_trip' sends to 'RT_CLASIC'",
        "RT_CLASSIC, RT_WRAPPED")


def test_an_openfaas_task_without_a_gateway_is_refused_before_the_run(tmp_path):
    path = tmp_path / "faas.py"
    path.write_text("from function_flow import remote, tasks\n"
                    "job = tasks.Job(name='faas')\n"
                    "@job.task(task_id='score', call=remote.OpenFaaS('scorer'))\n"
                    "def score(task, job):\n    return 1\n")
    assert_one_error_line(flow(tmp_path, "run", str(path)), "task 'score'",
                          "FUNCTION_FLOW_OPENFAAS_GATEWAY")


@pytest.mark.parametrize("fmt", ["text", "mermaid", "dot"])
def test_graph_marks_remote_tasks_with_what_they_call(tmp_path, fmt):
    result = flow(tmp_path, "graph", WORKFLOW, "--format", fmt)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "classic" in line
             and "calls Pub/Sub topic RT_CLASSIC" in line]
    assert lines, result.stdout
    assert "calls" not in next(line for line in result.stdout.splitlines()
                               if "prepare" in line and "<-" not in line
                               and "-->" not in line and "->" not in line)
