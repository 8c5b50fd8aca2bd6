"""`function-flow status` and `resume` on the backend the settings select.

The CLI runs in a subprocess, as in test_cli.py, with the emulator variables
a user would set (FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST,
GOOGLE_CLOUD_PROJECT, FUNCTION_FLOW_COLLECTION_PREFIX). Runs are made in
this process with the engine, on the Firestore emulator: finished ones by
running the bodies here, stalled ones with a bus that drops every message.
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

from emulators import PROJECT
from function_flow import loader
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.local.emulators import free_port
from function_flow.store.firestore import FirestoreStore
from functions_stack import Stack
from cli_runs import assert_one_error_line, flow, workflow

GCP_WORKFLOWS = Path(__file__).parent / "workflows_gcp"

pytestmark = pytest.mark.timeout(180)


class DroppingBus(Bus):
    """A bus that loses every message, like a publish that never arrived."""

    def __init__(self) -> None:
        self.dropped: list = []

    def publish(self, message, delay: float = 0.0) -> None:
        self.dropped.append(message)


def make_run(path: str, store: FirestoreStore, bus, args: dict | None = None) -> str:
    """Start a run of the workflow at `path` on `store`; with a LocalBus it also finishes."""
    job = loader.load_job(path, None)
    job.use_backend(Backend("gcp", store, bus, lease_check_messages=False))
    run_id = job.start(args or {}, source=path)
    if isinstance(bus, LocalBus):
        job.wait(run_id, timeout=60)
        bus.wait_idle(10)
    return run_id


@pytest.fixture
def store(firestore_env, firestore_store) -> FirestoreStore:
    return firestore_store


def emulator_place(env: dict) -> str:
    return (f"the Firestore emulator at {env['FIRESTORE_EMULATOR_HOST']} (project {PROJECT}, "
            f"database (default), collection prefix {env['FUNCTION_FLOW_COLLECTION_PREFIX']!r})")


# --------------------------------------------------------------------- status


def test_status_lists_and_shows_runs_in_the_firestore_emulator(tmp_path, firestore_env,
                                                                store) -> None:
    bus = LocalBus(2)
    try:
        done = make_run(workflow("simple"), store, bus, {"n": 7})
    finally:
        bus.close()
    stalled = make_run(workflow("failing"), store, DroppingBus())

    listed = flow(tmp_path, "status", env=firestore_env)
    assert listed.returncode == 0, listed.stderr
    assert f"runs in {emulator_place(firestore_env)}" in listed.stdout
    assert re.search(rf"{re.escape(done)}\s+simple\s+SUCCEEDED", listed.stdout), listed.stdout
    assert re.search(rf"{re.escape(stalled)}\s+failing\s+RUNNING\s", listed.stdout)
    assert "gone" not in listed.stdout  # runs on Google Cloud have no owner process
    assert not (tmp_path / ".function_flow").exists()  # the local store was not touched

    shown = flow(tmp_path, "status", done, env=firestore_env)
    assert shown.returncode == 0, shown.stderr
    assert f"run {done} SUCCEEDED" in shown.stdout
    for task in "abcd":
        assert re.search(rf"^\s*{task}\s+SUCCEEDED\s+1\s", shown.stdout, re.MULTILINE)
    assert '{"n": 7}' in shown.stdout

    waiting = flow(tmp_path, "status", stalled, env=firestore_env)
    assert waiting.stdout.startswith(f"run {stalled} RUNNING for "), waiting.stdout
    assert re.search(r"^\s*prepare\s+QUEUED\s", waiting.stdout, re.MULTILINE), waiting.stdout


def test_status_with_no_runs_names_the_emulator(tmp_path, firestore_env, store) -> None:
    result = flow(tmp_path, "status", env=firestore_env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"no runs yet in {emulator_place(firestore_env)}"


@pytest.mark.parametrize("command", ["status", "resume"])
def test_run_not_found_names_the_firestore_emulator(tmp_path, firestore_env, store,
                                                    command) -> None:
    result = flow(tmp_path, command, "no-such-run", env=firestore_env)
    assert_one_error_line(result, f"no run with id 'no-such-run' in "
                                  f"{emulator_place(firestore_env)}; list runs with "
                                  "function-flow status")


def test_run_not_found_in_firestore_but_in_the_local_store_says_where(
        tmp_path, firestore_env, store) -> None:
    local = flow(tmp_path, "run", workflow("simple"))
    run_id = re.search(r"function-flow status (\S+)", local.stdout).group(1)
    result = flow(tmp_path, "status", run_id, env=firestore_env)
    assert_one_error_line(result, f"no run with id {run_id!r} in the Firestore emulator",
                          "it is in the embedded store .function_flow/function_flow.db",
                          f"FUNCTION_FLOW_BACKEND=embedded function-flow status {run_id}")


@pytest.mark.parametrize("listening, args", [
    (False, ["status"]), (False, ["status", "some-run"]), (False, ["resume", "some-run"]),
    (True, ["status"])])
def test_unreachable_emulator_is_one_line_within_seconds(tmp_path, listening, args) -> None:
    silent = socket.socket()  # accepts connections (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    if listening:
        silent.listen(8)
        host = f"127.0.0.1:{silent.getsockname()[1]}"
    else:
        host = f"127.0.0.1:{free_port()}"
    try:
        result = flow(tmp_path, *args, env={"FIRESTORE_EMULATOR_HOST": host})
    finally:
        silent.close()
    assert_one_error_line(result, f"cannot read the Firestore emulator at {host}",
                          "is the emulator running?")
    # Within seconds: the command's own deadline says so (no timing here, under load).
    assert ("no answer within 5 s" if listening else "connection refused") in result.stderr


def test_no_credentials_for_firestore_is_one_line(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items()
           if "EMULATOR_HOST" not in k and not k.startswith("FUNCTION_FLOW_")}
    env.update(GOOGLE_CLOUD_PROJECT="some-project", CLOUDSDK_CONFIG=str(tmp_path),
               GOOGLE_APPLICATION_CREDENTIALS=str(tmp_path / "missing.json"))
    result = subprocess.run([sys.executable, "-m", "function_flow.cli", "status"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert_one_error_line(result, "cannot read Firestore (project some-project",
                          "no Google Cloud credentials", "gcloud auth application-default login")


# ------------------------------------------------------------- resume on gcp


@pytest.fixture
def executions(tmp_path) -> Path:
    return tmp_path / "executions.jsonl"


@pytest.fixture
def stack(gcp_env, executions):
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(executions)), PROJECT)
    try:
        yield stack
    finally:
        stack.close()


def test_resume_on_gcp_resends_a_lost_message_and_the_deployed_functions_finish(
        tmp_path, stack, store, executions) -> None:
    diamond = str(GCP_WORKFLOWS / "diamond.py")
    scheduler = stack.function(diamond, "scheduler", "event")
    stack.push(scheduler)
    bus = DroppingBus()
    run_id = make_run(diamond, store, bus, {"x": 5})
    assert [m.task_id for m in bus.dropped] == ["a"]  # the root's message is lost
    time.sleep(1.0)
    assert not executions.exists()  # so nothing runs until someone re-sends it

    # The CLI records its own executions too, if it ever ran a body itself.
    process = subprocess.Popen([sys.executable, "-m", "function_flow.cli", "resume", run_id],
                               cwd=tmp_path, env=dict(os.environ, **stack.env),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, out + err
    assert f"resuming run {run_id}" in out and "(a)" in out, out
    assert f"run {run_id} SUCCEEDED" in out
    assert "d: 25" in out  # 5 * 2 + 5 * 3

    ran = [json.loads(line) for line in executions.read_text().splitlines()]
    assert sorted(r["task_id"] for r in ran) == ["a", "b", "c", "d"]
    assert process.pid not in {r["pid"] for r in ran}  # the deployed scheduler ran them
    run = store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED
    assert all(t.status is TaskStatus.SUCCEEDED for t in store.get_tasks(run_id)
               if t.task_id != "__end__")


def test_ctrl_c_while_resume_follows_a_run_on_gcp_stops_following_only(tmp_path, stack,
                                                                       store) -> None:
    diamond = str(GCP_WORKFLOWS / "diamond.py")
    # A subscriber, but no scheduler behind it: the run waits as long as we look.
    stack.pubsub.push(stack.schedule_topic, f"http://127.0.0.1:{free_port()}/",
                      f"nobody-{stack.suffix}")
    run_id = make_run(diamond, store, DroppingBus())
    process = subprocess.Popen(
        [sys.executable, "-m", "function_flow.cli", "resume", run_id], cwd=tmp_path,
        env=dict(os.environ, **stack.env, PYTHONUNBUFFERED="1"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first = process.stdout.readline()
        assert first.startswith(f"resuming run {run_id}"), first + process.stderr.read()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert f"interrupted; run {run_id} goes on in the deployed functions" in err, err
    assert "Traceback" not in err
    assert store.get_run(run_id).status is RunStatus.RUNNING
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.QUEUED


@pytest.mark.parametrize("subscribed", [False, True])
def test_resume_on_gcp_refuses_a_topic_no_scheduler_hears(tmp_path, stack, store,
                                                          subscribed) -> None:
    diamond = str(GCP_WORKFLOWS / "diamond.py")
    run_id = make_run(diamond, store, DroppingBus())
    if subscribed:
        stack.ensure_topic()  # a topic, but nothing subscribes to it
    result = flow(tmp_path, "resume", run_id, env=stack.env)
    topic = f"projects/{PROJECT}/topics/{stack.schedule_topic}"
    assert_one_error_line(result, topic, "nothing subscribes" if subscribed
                          else "does not exist", "FUNCTION_FLOW_SCHEDULE_TOPIC")
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.QUEUED


def test_resume_on_the_firestore_emulator_needs_the_pubsub_emulator(tmp_path, firestore_env,
                                                                    store) -> None:
    run_id = make_run(str(GCP_WORKFLOWS / "diamond.py"), store, DroppingBus())
    result = flow(tmp_path, "resume", run_id, env=firestore_env)
    assert_one_error_line(result, "PUBSUB_EMULATOR_HOST is not")
