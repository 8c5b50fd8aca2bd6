"""`function-flow run --remote`: which function answers each remote topic of a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from test_cli import assert_one_error_line, flow

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
