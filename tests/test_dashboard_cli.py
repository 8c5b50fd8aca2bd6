"""`function-flow dashboard` as a user starts it, on the embedded backend.

The command serves the store the settings select; a run that `function-flow
run` left FAILED is redriven from its page: the dashboard starts a
`function-flow redrive` process (the workflow file is the one the run
recorded), which executes the run to its end; a paused run whose process died
is resumed by a `function-flow resume` process the dashboard starts.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from function_flow.core.records import RunStatus
from function_flow.store.sqlite import SqliteStore
from functions_stack import wait_for
from cli_runs import flow, run_id_of
from test_redrive_cli import FLAKY
from test_control_cli import paused_and_orphaned, running  # noqa: F401  (a fixture)

pytestmark = pytest.mark.timeout(120)


def post(url: str, origin: str, token: str) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=f"csrf_token={token}".encode(), method="POST",
        headers={"Origin": origin, "Accept": "application/json",
                 "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def test_the_dashboard_command_redrives_a_failed_run(tmp_path: Path) -> None:
    (tmp_path / "wf.py").write_text(FLAKY)
    failed = flow(tmp_path, "run", "wf.py")
    assert failed.returncode == 1
    run_id = run_id_of(failed.stdout)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    server = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "dashboard",
                               "--port", "0"], cwd=tmp_path, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        line = server.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+)/ ", line)
        assert url, line
        base = url.group(1)
        assert "dashboard of the embedded store .function_flow/function_flow.db" in line
        with urllib.request.urlopen(f"{base}/api/runs?status=FAILED") as answer:
            assert [r["run_id"] for r in json.load(answer)["runs"]] == [run_id]
        with urllib.request.urlopen(f"{base}/runs/{run_id}") as answer:
            page = answer.read().decode()
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
        assert 'id="action-redrive"' in page

        (tmp_path / "fixed").write_text("")
        status, answer = post(f"{base}/runs/{run_id}/actions/redrive", base, token)
        assert status == 200, answer
        assert re.match(rf"(redrive of run {run_id}: process \d+ executes it|"
                        rf"function-flow redrive {run_id}: )", answer["message"]), answer
        store = SqliteStore(str(tmp_path / ".function_flow" / "function_flow.db"))
        # The end of the redrive, not the failure before it.
        run = wait_for(lambda: (r := store.get_run(run_id)).redrives and r.status.is_final
                       and r,
                       "the redriven run to end", timeout=60)
        assert run.status is RunStatus.SUCCEEDED and run.redrives == 1
        assert (tmp_path / "extracted.txt").read_text() == "x"  # extract did not run again
        store.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_port_in_use_is_one_error_line(tmp_path: Path, monkeypatch) -> None:
    import socket

    from function_flow.cli.common import CliError
    from function_flow.cli.dashboard import dashboard

    monkeypatch.chdir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(CliError) as refused:
            dashboard.main(["--port", str(port)], standalone_mode=False)
    assert refused.value.format_message() == (
        f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port "
        "(0 picks a free one)")


def test_resume_of_a_run_whose_process_died_starts_function_flow_resume(
        running, tmp_path: Path, monkeypatch) -> None:
    """README: a resume of an embedded run whose process is gone is carried out by
    a `function-flow resume` process the dashboard starts, which ends the run."""
    from function_flow.config import Settings
    from function_flow.dashboard import create_app

    run = running()
    paused_and_orphaned(run)
    for name, value in run.env.items():  # what the started process inherits
        if name.startswith("FF_TEST_"):
            monkeypatch.setenv(name, value)
    database = str(tmp_path / ".function_flow" / "function_flow.db")
    store = SqliteStore(database)
    client = create_app(lambda: store, kind="embedded",
                        settings=Settings(db_path=database)).test_client()
    try:
        page = client.get(f"/runs/{run.run_id}").text
        token = re.search(r'<meta name="csrf-token" content="([^"]+)"', page).group(1)
        answer = client.post(f"/runs/{run.run_id}/actions/resume", data={"csrf_token": token},
                             headers={"Accept": "application/json"})
        assert answer.status_code == 200, answer.text
        assert re.match(rf"(resume of run {run.run_id}: process \d+ executes it|"
                        rf"function-flow resume {run.run_id}: )", answer.json["message"]), \
            answer.json
        ended = wait_for(lambda: (r := store.get_run(run.run_id)).status.is_final and r,
                         "the resumed run to end", timeout=60)
        assert ended.status is RunStatus.SUCCEEDED and ended.paused_at is None
        assert len(run.ran("next")) == 1 and run.ran("next") != [run.process.pid]
    finally:
        store.close()


def test_on_a_non_loopback_host_it_warns_and_serves_any_name_but_still_guards_actions(
        tmp_path: Path) -> None:
    """`--host 0.0.0.0`: the warning the README promises, pages under the
    name the machine is reached by, and actions that still need the token."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    server = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "dashboard",
                               "--host", "0.0.0.0", "--port", "0"], cwd=tmp_path, env=env,
                              text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        first, note = server.stdout.readline(), server.stdout.readline()
        port = re.search(r"at http://0\.0\.0\.0:(\d+)/ ", first)
        assert port, first
        assert note.strip() == ("note: listening on 0.0.0.0: anyone who can reach this port "
                                "can pause, cancel and redrive runs")
        base = f"http://127.0.0.1:{port.group(1)}"
        named = urllib.request.Request(f"{base}/api/runs",
                                       headers={"Host": f"ops-box.internal:{port.group(1)}"})
        with urllib.request.urlopen(named, timeout=30) as answer:
            assert answer.status == 200 and json.load(answer)["runs"] == []
        status, refused = post(f"{base}/runs/nope/actions/cancel", base, "not-the-token")
        assert status == 403 and "nothing was changed" in refused["error"], refused
    finally:
        server.terminate()
        server.wait(timeout=30)
