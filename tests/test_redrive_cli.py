"""`function-flow redrive RUN_ID` as a user runs it, and the control endpoint's redrive."""

from __future__ import annotations

from pathlib import Path

from cli_runs import flow, run_id_of

FLAKY = '''
import os
from function_flow.tasks import Job

job = Job("fixable")

@job.task(task_id="extract")
def extract(**_):
    with open("extracted.txt", "a") as f:
        f.write("x")
    return 3

@job.task(task_id="load", deps=["extract"])
def load(job, **_):
    if not os.path.exists("fixed"):
        raise RuntimeError("the warehouse is down")
    return job.get_task_result("extract") * 2
'''


def test_redrive_runs_a_failed_run_again_from_the_failed_task(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(FLAKY)
    failed = flow(tmp_path, "run", "wf.py")
    assert failed.returncode == 1
    run_id = run_id_of(failed.stdout)
    (tmp_path / "fixed").write_text("")
    done = flow(tmp_path, "redrive", run_id)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"redriving run {run_id} (redrive 1)" in done.stdout
    assert "load: 6" in done.stdout and "SUCCEEDED" in done.stdout
    assert (tmp_path / "extracted.txt").read_text() == "x"  # extract did not run again
    shown = flow(tmp_path, "status", run_id)
    assert "redriven 1 time(s)" in shown.stdout


def test_redrive_refuses_a_run_that_succeeded_or_does_not_exist(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(FLAKY)
    (tmp_path / "fixed").write_text("")
    ok = flow(tmp_path, "run", "wf.py")
    assert ok.returncode == 0
    refused = flow(tmp_path, "redrive", run_id_of(ok.stdout))
    assert refused.returncode != 0
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and "is SUCCEEDED: only FAILED or CANCELLED runs can be redriven" \
        in lines[0]
    missing = flow(tmp_path, "redrive", "no-such-run")
    assert missing.returncode != 0 and "no run with id 'no-such-run'" in missing.stderr
