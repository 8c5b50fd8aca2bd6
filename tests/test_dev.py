"""`function-flow dev`: the deployed topology on this machine, run as a user runs it.

Each test starts the real Firestore and Pub/Sub emulators and one
functions-framework process per entry point (through the command, in a
subprocess), so a message takes the deployed path: Pub/Sub push ->
functions-framework -> Firestore. After the command exits, every process it
started (named with its PID in its log) must be gone, and its ports closed.

Each test takes 10-20 s (emulator start-up), so there are few of them; they
fail with an install hint when gcloud, its emulators or Java are missing.
"""

from __future__ import annotations

import json
import os
import re
import stat
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from callback_receiver import Receiver

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = Path(__file__).parent / "workflows"
WORKFLOWS_GCP = Path(__file__).parent / "workflows_gcp"
SAMPLE = ROOT / "samples" / "main.py"
SAMPLE_TASKS = ("task_1", "task_2", "task_3", "task_4", "taskr1", "taskr2", "task_5", "task_6")

pytestmark = pytest.mark.timeout(240)
needs_emulators = pytest.mark.usefixtures("gcloud_available")


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without settings that would point elsewhere."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("FUNCTION_FLOW_") and not k.endswith("_EMULATOR_HOST")
           and k not in ("GOOGLE_CLOUD_PROJECT", "COLUMNS")}
    env.update(extra)
    return env


def dev_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "function_flow.cli", "dev", *args]


def run_dev(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(dev_command(*args), cwd=cwd, env=clean_env(**env),
                          capture_output=True, text=True, timeout=200)


def dev_log(cwd: Path) -> str:
    """The log `dev` wrote under .function_flow/ (one per test directory)."""
    logs = sorted((cwd / ".function_flow").glob("dev-*.log"))
    assert len(logs) == 1, f"expected one dev log, found {logs}"
    return logs[0].read_text(encoding="utf-8")


def started_processes(log: str) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """What `dev` says it started, by name (emulators, functions): the last PID
    and 127.0.0.1 port logged for each (a function whose first port was taken
    logs "moved to", and the functions restarted to learn callback's new URL
    log their start again), and every PID it logged, for the liveness check."""
    latest: dict[str, tuple[int, int]] = {}
    every_pid = []
    for line in log.splitlines():
        started = re.match(r"\S+ dev +(\S+) .*127\.0\.0\.1:(\d+).*\(pid (\d+)\)", line)
        if started is None or re.search(r"\bstopped\b", line):
            continue
        name, port, pid = started.group(1), int(started.group(2)), int(started.group(3))
        latest[name] = (pid, port)
        every_pid.append(pid)
    return latest, every_pid


def live_members(pgid: int) -> list[int]:
    """Processes (not zombies) of process group `pgid`; `dev` made each child a group."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, group = fields[0], int(fields[2])
        if (group == pgid or int(entry) == pgid) and state != "Z":
            members.append(int(entry))
    return members


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def assert_all_stopped(log: str, remote_functions: int = 0, emulators: int = 3) -> None:
    """The emulators, every function and the remote functions were
    started, and nothing of them is left."""
    from function_flow.local.stack import FUNCTIONS

    latest, every_pid = started_processes(log)
    expected = emulators + len(FUNCTIONS) + remote_functions
    assert len(latest) == expected, (f"expected {emulators} emulators + {len(FUNCTIONS)} "
                                     f"functions + "
                                     f"{remote_functions} remote in the log:\n{log}")
    left = {pid: live_members(pid) for pid in every_pid if live_members(pid)}
    assert not left, f"process groups still alive after dev exited: {left}"
    assert not [port for _, port in latest.values() if port_open(port)], "a port is still open"


# ---------------------------------------------------------------------- tests


def test_the_stop_check_counts_a_moved_or_restarted_function_once(tmp_path: Path) -> None:
    """A function whose first port was taken logs its start twice; the check of
    the other tests counts it once and looks at its last port. The lines go
    through the stack's own DevLog, so they have its stamps and columns."""
    from function_flow.local.dev_log import DevLog

    log = DevLog(str(tmp_path / "dev.log"))
    log.open()
    log.event("firestore emulator on 127.0.0.1:9001 (pid 11)")
    log.event("callback (http function) on http://127.0.0.1:9002 (pid 12)")
    log.event("callback moved to http://127.0.0.1:9003 (pid 13)")
    log.event("stopped start (pid 14) to tell them callback's new URL")
    log.write("start", "Serving on http://127.0.0.1:9004 (pid 99)")  # a function's own line
    log.close()
    latest, every_pid = started_processes((tmp_path / "dev.log").read_text(encoding="utf-8"))
    assert latest == {"firestore": (11, 9001), "callback": (13, 9003)}
    assert every_pid == [11, 12, 13]


def test_a_local_stack_serves_the_files_remote_functions_as_dev_does() -> None:
    """README's `LocalStack("samples/main.py")` answers the sample's remote tasks:
    without remote_functions= it serves the file's own @remote.function ones."""
    from function_flow.local.stack import LocalStack

    assert LocalStack(str(SAMPLE)).remote_functions == {"PRICING_REQUESTS": "regional_pricing"}
    assert LocalStack(str(SAMPLE), remote_functions={}).remote_functions == {}


@needs_emulators
def test_dev_runs_the_sample_through_pubsub_and_functions_framework(tmp_path: Path) -> None:
    output_dir = tmp_path / "report"
    key = "dev-test-key-0123456789abcdef0123456789abcdef"  # dev keeps a key it finds
    (tmp_path / ".function_flow").mkdir()
    (tmp_path / ".function_flow" / "hmac.key").write_text(key)
    (tmp_path / ".function_flow" / "hmac.key").chmod(0o600)
    receiver = Receiver([200], key)
    try:
        result = run_dev(tmp_path, str(SAMPLE), "--arg", "region=EMEA",
                         "--arg", f"output_dir={output_dir}", "--callback-url", receiver.url)
    finally:
        receiver.close()
    assert result.returncode == 0, result.stdout + result.stderr
    # --callback-url: the run's results, POSTed once it ended, signed with dev's key.
    assert [(p["signature"], p["body"]["status"]) for p in receiver.posts] \
        == [("ok", "SUCCEEDED")], receiver.posts
    out = result.stdout
    for task_id in SAMPLE_TASKS:
        assert re.search(rf"^\s*{task_id}\s+SUCCEEDED\s+1\b", out, re.M), out
    assert re.search(r'^\s+task_6: .*"focus_region": "EMEA"', out, re.M), out
    assert re.search(r"^run sample_job-\S+ SUCCEEDED in ", out, re.M), out
    assert (output_dir / "sales_report.md").exists()
    log = dev_log(tmp_path)
    assert "function logs: .function_flow/dev-sample_job-" in out
    assert "function timeout 30 s (a request running longer is interrupted" in log, log
    assert re.search(r'^pause, resume or cancel the run: POST \{"action": "pause", "run_id": '
                     r'"sample_job-\S+"\} to http://127\.0\.0\.1:\d+/$', out, re.M), out
    assert re.search(r'^approve or reject an approval: POST a signed \{"token": \.\.\.\} to '
                     r'(http://127\.0\.0\.1:\d+/)approve or \1reject$', out, re.M), out
    # How to watch it with `logs --follow` or the dashboard: the emulator it runs on.
    firestore = re.search(r"Firestore emulator on (127\.0\.0\.1:\d+), project (\S+)$", out,
                          re.M)
    assert firestore, out
    assert re.search(rf"^watch it from another shell while it runs: FIRESTORE_EMULATOR_HOST="
                     rf"{firestore[1]} GOOGLE_CLOUD_PROJECT={firestore[2]} function-flow logs "
                     rf"sample_job-\S+ --follow \(or dashboard\)$", out, re.M), out
    # Every task ran in the scheduler process, delivered by a push subscription;
    # the remote tasks' answers came from their own function, through the
    # events topic and the listener.
    for task_id in SAMPLE_TASKS:
        if task_id in ("taskr1", "taskr2"):
            assert re.search(rf" scheduler .*task {task_id} attempt 1: sent to Pub/Sub topic "
                             "PRICING_REQUESTS as job ", log), log
            assert re.search(rf" external_event_listener .*task {task_id} attempt 1: "
                             "succeeded", log), log
        else:
            assert re.search(rf" scheduler .*task {task_id} attempt 1: succeeded", log), log
    assert len(re.findall(r" regional_pricing .*regional_pricing: job \w+ of run "
                          r"sample_job-\S+ answered \(ok\)", log)) == 2, log
    assert_all_stopped(log, remote_functions=1)
    # One key, made once beside the database, signed every message between them.
    key_file = tmp_path / ".function_flow" / "hmac.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600 and len(key_file.read_text()) > 32
    assert "messages are signed with the HMAC key of .function_flow/hmac.key" in out, out
    assert "rejected" not in log and "signature" not in log, log


@needs_emulators
def test_dev_exits_1_and_shows_the_log_when_the_workflow_fails(tmp_path: Path) -> None:
    # Also covers 2nd gen functions: CloudEvents built from the push.
    result = run_dev(tmp_path, str(WORKFLOWS / "failing.py"), "--signature-type", "cloudevent")
    assert result.returncode == 1, result.stdout + result.stderr
    assert re.search(r"^\s*prepare\s+SUCCEEDED", result.stdout, re.M), result.stdout
    assert re.search(r"^\s*explode\s+FAILED", result.stdout, re.M), result.stdout
    assert "error: task 'explode' failed: ValueError: boom happened with 1" in result.stderr
    assert "last lines of .function_flow/dev-failing-" in result.stderr
    assert "raise ValueError(f\"boom happened with {value}\")" in result.stderr
    assert_all_stopped(dev_log(tmp_path))


@needs_emulators
def test_dev_calls_the_poller_so_a_retry_after_backoff_runs(tmp_path: Path) -> None:
    result = run_dev(tmp_path, str(WORKFLOWS / "retry_once.py"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\s*a\s+SUCCEEDED\s+2\b", result.stdout, re.M), result.stdout
    assert re.search(r"^\s+b: 20$", result.stdout, re.M), result.stdout
    log = dev_log(tmp_path)
    assert re.search(r" poller .*[1-9]\d* due timer\(s\) published", log), log
    assert_all_stopped(log)


@needs_emulators
def test_an_overrun_is_interrupted_and_retried_after_the_local_function_timeout(
        tmp_path: Path) -> None:
    """FUNCTION_FLOW_FUNCTION_TIMEOUT=10: not 540 s until the retry, and attempt 1 is stopped.

    Attempt 1 loops in Python far past its 1 s timeout. Its lease expires,
    and the retry may start 10 s after it began; by then functions-framework
    has raised RequestTimeoutException in it (10 s after its request began).
    The timeout is every function's: under load the start function's first
    request (cold clients, a cold emulator) can take more than 5 s.
    """
    executions = tmp_path / "executions.jsonl"
    result = run_dev(tmp_path, str(WORKFLOWS_GCP / "overrun.py"),
                     FUNCTION_FLOW_FUNCTION_TIMEOUT="10",
                     FUNCTION_FLOW_TEST_EXECUTIONS=str(executions))
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\s*overrun\s+SUCCEEDED\s+2\b", result.stdout, re.M), result.stdout
    log = dev_log(tmp_path)
    assert "function timeout 10 s" in log, log
    first, interrupted, second = [json.loads(line) for line in
                                  executions.read_text().splitlines()]
    assert (first["attempt"], interrupted["attempt"], second["attempt"]) == (1, 1, 2)
    assert interrupted["interrupted_by"] == "RequestTimeoutException"
    assert second["at"] - first["at"] >= 10.0
    # Stopped before its retry began, and the retry did not wait for 540 s.
    assert interrupted["at"] <= second["at"] < first["at"] + 60
    assert_all_stopped(log)


@needs_emulators
def test_ctrl_c_mid_run_stops_every_process(tmp_path: Path) -> None:
    # Also covers plain HTTP functions reading the raw push envelope.
    markers, gate = tmp_path / "markers", tmp_path / "gate"
    # Ctrl-C as in a terminal: a suite started in the background of a script
    # (no job control) hands its children SIGINT ignored, and Python keeps that.
    process = subprocess.Popen(
        dev_command(str(WORKFLOWS / "durable.py"), "--signature-type", "http"),
        cwd=tmp_path, env=clean_env(FF_TEST_MARKERS=str(markers), FF_TEST_GATE=str(gate)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        # `blocker` runs inside the scheduler function until the gate exists,
        # which it never does: the run is deterministically mid-way.
        while process.poll() is None and not (
                markers.exists() and "blocker" in markers.read_text()):
            try:
                process.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, out + err
    assert "interrupted; stopping emulators and functions" in err
    assert "Traceback" not in err
    log = dev_log(tmp_path)
    assert re.search(r" scheduler .*task second attempt 1: succeeded", log), log
    assert_all_stopped(log)


@needs_emulators
def test_sigterm_stops_every_process(tmp_path: Path) -> None:
    markers, gate = tmp_path / "markers", tmp_path / "gate"
    process = subprocess.Popen(
        dev_command(str(WORKFLOWS / "durable.py")), cwd=tmp_path,
        env=clean_env(FF_TEST_MARKERS=str(markers), FF_TEST_GATE=str(gate)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while process.poll() is None and not (markers.exists() and "first" in markers.read_text()):
            try:
                process.wait(0.2)
            except subprocess.TimeoutExpired:
                pass
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 128 + signal.SIGTERM, out + err
    assert "terminated; stopping emulators and functions" in err
    assert_all_stopped(dev_log(tmp_path))


def test_missing_gcloud_is_one_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(dev_command(str(SAMPLE)), cwd=tmp_path,
                            env=clean_env(PATH=str(tmp_path)),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "gcloud" in lines[0] and "install" in lines[0], lines[0]
    assert not (tmp_path / ".function_flow").exists()


def test_a_local_function_keeps_its_connection_alive_under_the_request_timeout(
        tmp_path: Path) -> None:
    """With the request timeout on (dev's 30 s), functions-framework 3.10.2 alone
    closes the connection after each request, and each push from the emulator
    then stalls for 2 s; serve.py's fix keeps it open for the next request."""
    import http.client

    from function_flow.local import framework

    (tmp_path / "main.py").write_text("def hello(request):\n    return 'hello'\n")
    function = framework.start_function(tmp_path / "main.py", "hello", "http", {},
                                        log_path=str(tmp_path / "hello.log"))
    try:
        framework.wait_until_answering([function], 60)
        connection = http.client.HTTPConnection("127.0.0.1", function.port, timeout=30)
        answers, sockets = [], []
        for _ in range(3):
            connection.request("POST", "/", body=b"{}")
            response = connection.getresponse()
            answers.append((response.status, response.read()))
            sockets.append(connection.sock)
        connection.close()
        assert answers == [(200, b"hello")] * 3
        assert sockets[0] is not None and sockets.count(sockets[0]) == 3  # one connection
    finally:
        function.stop()


@needs_emulators
def test_dev_uses_the_storage_emulator_storage_emulator_host_names(
        tmp_path: Path, gcs_bucket: str, storage_env) -> None:
    """A GCSFuture under dev finds the user's objects: dev uses that emulator
    (it started its own, with none of the user's buckets, and the task waited
    out its timeout), says where it is, and leaves it running."""
    from google.cloud import storage

    storage.Client(project="p").bucket(gcs_bucket).blob("exports/x.csv").upload_from_string("a")
    (tmp_path / "gcsflow.py").write_text(
        "from function_flow import futures, tasks\n"
        "job = tasks.Job(name='gcsflow')\n"
        "@job.task(task_id='wait', timeout=60)\n"
        "def wait(task, job):\n"
        f"    return futures.GCSFuture('gs://{gcs_bucket}/exports/')\n")
    url = storage_env.env["STORAGE_EMULATOR_HOST"]
    result = run_dev(tmp_path, "gcsflow.py", STORAGE_EMULATOR_HOST=url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"storage emulator on {url} (large values, GCSFuture's poller)" in result.stdout
    assert re.search(rf'^\s+wait: "gs://{gcs_bucket}/exports/"$', result.stdout, re.M)
    assert storage.Client(project="p").bucket(gcs_bucket).blob("exports/x.csv").exists()
    assert_all_stopped(dev_log(tmp_path), emulators=2)  # not the user's


def test_dev_with_a_storage_emulator_host_that_does_not_answer_is_one_error(
        tmp_path: Path) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = run_dev(tmp_path, str(WORKFLOWS / "retry_once.py"),
                     STORAGE_EMULATOR_HOST=f"http://127.0.0.1:{port}")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: STORAGE_EMULATOR_HOST=http://127.0.0.1:{port} "
                                    "does not answer (")
    assert result.stderr.strip().endswith("or unset it and dev starts one of its own")
    assert len(result.stderr.strip().splitlines()) == 1


@needs_emulators
def test_dev_runs_a_file_that_builds_a_pubsub_client_at_module_level(tmp_path: Path) -> None:
    """The README's advice for such a file: dev's own import of it needed
    credentials this machine may not have (the functions got placeholders)."""
    (tmp_path / "ff2.py").write_text(
        "import base64, json\n"
        "from google.cloud import pubsub_v1\n"
        "from function_flow import tasks\n"
        "publisher = pubsub_v1.PublisherClient()\n"
        "job = tasks.Job(name='ff2')\n"
        "@job.task(task_id='r', remote_topic='TOPIC2', timeout=60)\n"
        "def r(task, job):\n"
        "    return 'x'\n"
        "def fn(event, context):\n"
        "    args = json.loads(base64.b64decode(event['data']).decode())\n"
        "    msg = {'status': {'code': 0, 'message': 'ok'}, 'resource': {\n"
        "        'type': 'remote_function_resource', 'labels': {'job_id': args['job_id']}}}\n"
        "    topic = publisher.topic_path('function-flow-dev', 'SCHEDULE_EXTERNAL_EVENTS')\n"
        "    publisher.publish(topic, json.dumps(msg).encode()).result()\n")
    env = {"CLOUDSDK_CONFIG": str(tmp_path / "no-gcloud")}  # no credentials here
    result = run_dev(tmp_path, "ff2.py", "--remote", "TOPIC2=fn", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r'^\s+r: \{"code": 0, "job_id": "\w+", "message": "ok"\}$',
                     result.stdout, re.M), result.stdout
    assert_all_stopped(dev_log(tmp_path), remote_functions=1)
