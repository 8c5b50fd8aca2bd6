"""The control entry point (cloud/control.py), and pause/resume/cancel on Google Cloud.

In-process first: the control function behind Flask (what
functions-framework serves a function with), on the embedded store, for
every kind of good and bad request. Then the deployed topology on the
emulators: `start`, `scheduler` behind a Pub/Sub push subscription and
`control`, each a functions-framework process, controlled over HTTP and
with `function-flow pause|resume|cancel` reading Firestore (a resume sends
the held tasks on the schedule topic, so the deployed scheduler runs them).
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import threading
from typing import Any

import pytest

from emulators import PROJECT
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.core import control
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.store.sqlite import SqliteStore
from function_flow.tasks import Job
from functions_stack import Stack, http_client, post, wait_for

pytestmark = pytest.mark.timeout(240)

WORKFLOW = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "pausable.py"


# ------------------------------------------------------------ in-process


@pytest.fixture
def served(tmp_path):
    """(job, client, run_id, gate): a run whose task `a` blocks on gate; control served."""
    store = SqliteStore(str(tmp_path / "state.db"))
    bus = LocalBus(2)
    gate = threading.Event()
    job = Job("controlled")

    @job.task("a")
    def a(task, job):
        assert gate.wait(60)
        return "a"

    @job.task("b", deps=["a"])
    def b(task, job):
        return "b"

    job.use_backend(Backend("embedded", store, bus))
    client = http_client(job.make_control(), "control-test")
    run_id = job.start()
    wait_for(lambda: store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING, "a to run")
    yield job, client, run_id, gate
    gate.set()
    bus.close()
    store.close()


def records(job: Job, run_id: str) -> tuple[Any, dict]:
    return job.engine.store.get_run(run_id), \
        {t.task_id: t for t in job.engine.store.get_tasks(run_id)}


def test_post_pause_resume_and_cancel(served) -> None:
    job, client, run_id, gate = served

    answer = client.post("/", json={"action": "pause", "run_id": run_id})

    assert (answer.status_code, answer.json) == (200, {
        "action": "pause", "run_id": run_id, "outcome": "paused", "run_status": "PAUSED"})
    again = client.post("/", json={"action": "pause", "run_id": run_id})
    assert again.status_code == 200 and again.json["outcome"] == "already_paused"
    gate.set()
    wait_for(lambda: records(job, run_id)[1]["a"].status is TaskStatus.SUCCEEDED, "a to end")
    job.backend.bus.wait_idle(30)
    assert records(job, run_id)[1]["b"].status is TaskStatus.QUEUED

    answer = client.post("/", json={"action": "resume", "run_id": run_id})

    assert answer.status_code == 200
    assert answer.json == {"action": "resume", "run_id": run_id, "outcome": "resumed",
                           "run_status": "RUNNING", "tasks_sent": 1}
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    ended = client.post("/", json={"action": "cancel", "run_id": run_id})
    assert ended.status_code == 409, ended.json
    assert ended.json["run_status"] == "SUCCEEDED" and "already ended" in ended.json["error"]

    gate.clear()
    other = job.start()
    wait_for(lambda: records(job, other)[1]["a"].status is TaskStatus.RUNNING, "a to run")
    answer = client.post("/", json={"action": "cancel", "run_id": other})
    assert answer.status_code == 200, answer.json
    assert (answer.json["outcome"], answer.json["run_status"]) == ("cancelled", "CANCELLED")
    assert answer.json["tasks_cancelled"] == 2
    again = client.post("/", json={"action": "cancel", "run_id": other})
    assert again.status_code == 409 and again.json["run_status"] == "CANCELLED"


def test_post_redrive_restarts_a_cancelled_run_and_refuses_a_running_one(served) -> None:
    job, client, run_id, gate = served
    refused = client.post("/", json={"action": "redrive", "run_id": run_id})
    assert refused.status_code == 409
    assert "is RUNNING: only FAILED or CANCELLED runs can be redriven" in refused.json["error"]
    assert client.post("/", json={"action": "cancel", "run_id": run_id}).status_code == 200
    gate.set()
    job.backend.bus.wait_idle(30)

    answer = client.post("/", json={"action": "redrive", "run_id": run_id})

    assert answer.status_code == 200, answer.json
    assert (answer.json["outcome"], answer.json["redrives"]) == ("redriven", 1)
    assert job.wait(run_id, timeout=60).status is RunStatus.SUCCEEDED
    assert job.engine.store.get_run(run_id).redrives == 1


@pytest.mark.parametrize("method, path, body, status, fragment", [
    ("POST", "/", b"{not json", 400, "not JSON"),
    ("POST", "/", b"", 400, "not JSON"),
    ("POST", "/", b'["pause"]', 400, "JSON object"),
    ("POST", "/", b'{"run_id": "RUN"}', 400, "\\\"action\\\" must be one of pause, resume, "
                                             "cancel"),
    ("POST", "/", b'{"action": "stop", "run_id": "RUN"}', 400, "got 'stop'"),
    ("POST", "/", b'{"action": ["pause"], "run_id": "RUN"}', 400, "must be one of"),
    ("POST", "/", b'{"action": "pause"}', 400, "\\\"run_id\\\" must be a run id"),
    ("POST", "/", b'{"action": "pause", "run_id": 7}', 400, "must be a run id"),
    ("POST", "/", b'{"action": "pause", "run_id": "../x"}', 400, "must be a run id"),
    ("POST", "/", b'{"action": "pause", "run_id": "RUN", "x": NaN}', 400, "NaN"),
    ("POST", "/", b'{"action": "pause", "run_id": "nope"}', 404, "no run 'nope' of job"),
    ("POST", "/", b'{"action": "pause", "run_id": "RUN", "pad": "' + b"x" * 70_000 + b'"}',
     413, "bytes a control request may take"),
    ("POST", "/runs/RUN:pause", b'{"action": "pause", "run_id": "RUN"}', 404,
     "no control route"),
    ("GET", "/", b"", 405, "POST"),
    ("PUT", "/", b'{"action": "pause", "run_id": "RUN"}', 405, "POST"),
])
def test_bad_requests_get_a_4xx_json_error_and_change_nothing(served, method, path, body,
                                                              status, fragment) -> None:
    job, client, run_id, gate = served
    before = records(job, run_id)

    answer = client.open(path.replace("RUN", run_id), method=method,
                         data=body.replace(b"RUN", run_id.encode()),
                         content_type="application/json")

    assert answer.status_code == status, answer.get_data(as_text=True)[:300]
    assert fragment in json.dumps(answer.json["error"]), answer.json
    assert records(job, run_id) == before


def test_a_run_of_another_job_is_not_this_functions_to_control(served) -> None:
    job, client, run_id, gate = served
    stranger = Job("stranger")

    @stranger.task("s")
    def s(task, job):
        assert gate.wait(60)  # the run stays as it is while the test looks
        return 1

    stranger.use_backend(Backend("embedded", job.engine.store, LocalBus(1)))
    other = stranger.engine.start({}, run_id="stranger-run")[0]
    wait_for(lambda: records(job, other)[1]["s"].status is TaskStatus.RUNNING, "s to run")
    before = records(job, other)

    answer = client.post("/", json={"action": "cancel", "run_id": other})

    assert answer.status_code == 404, answer.json
    assert "it is a run of job 'stranger'" in answer.json["error"]
    assert records(job, other) == before
    gate.set()
    stranger.backend.bus.close()


# ------------------------------------------------- deployed, on the emulators


@pytest.fixture
def stack(gcp_env, tmp_path) -> Any:
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(tmp_path / "ran.jsonl")),
                  PROJECT)
    try:
        yield stack
    finally:
        stack.close()


@pytest.fixture
def deployed(stack):
    """start, scheduler (pushed from the schedule topic) and control."""
    scheduler = stack.function(WORKFLOW, "scheduler", "http")
    start = stack.function(WORKFLOW, "start", "http")
    control = stack.function(WORKFLOW, "control", "http")
    stack.ensure_topic()
    stack.push(scheduler)
    return start, control


def executions(stack: Stack, run_id: str) -> list[str]:
    path = pathlib.Path(stack.env["FUNCTION_FLOW_TEST_EXECUTIONS"])
    if not path.exists():
        return []
    return [entry["task_id"] for entry in map(json.loads, path.read_text().splitlines())
            if entry["run_id"] == run_id]


def started(start, stack: Stack, gate: pathlib.Path) -> str:
    status, body = post(start.url, {"gate": str(gate)})
    assert status == 200, body
    wait_for(lambda: "first" in executions(stack, body["run_id"]), "first to run")
    return body["run_id"]


def cli(stack: Stack, *args: str) -> subprocess.CompletedProcess:
    """`function-flow ARGS` with the functions' environment: Firestore, the schedule topic."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    env.update(stack.env)
    return subprocess.run([sys.executable, "-m", "function_flow.cli", *args], env=env,
                          capture_output=True, text=True, timeout=100)


def test_deployed_pause_resume_and_cancel(deployed, stack, firestore_store, tmp_path) -> None:
    start, control = deployed
    run_id = started(start, stack, tmp_path / "gate-1")

    status, body = post(control.url, {"action": "pause", "run_id": run_id})

    assert (status, body["outcome"], body["run_status"]) == (200, "paused", "PAUSED"), body
    (tmp_path / "gate-1").touch()
    wait_for(lambda: "task next attempt 1: held, the run is paused" in stack.logs(),
             "the scheduler to hold next")
    assert executions(stack, run_id) == ["first"]
    assert firestore_store.get_tasks(run_id, ["next"])[0].status is TaskStatus.QUEUED
    assert "PAUSED" in cli(stack, "status", run_id).stdout

    resumed = cli(stack, "resume", run_id)

    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed run {run_id}: sent its 1 queued task(s) again" in resumed.stdout
    run = wait_for(lambda: (r := firestore_store.get_run(run_id)).status.is_final and r,
                   "the run to end")
    assert run.status is RunStatus.SUCCEEDED and executions(stack, run_id) == ["first", "next"]
    status, body = post(control.url, {"action": "pause", "run_id": run_id})
    assert status == 409 and body["run_status"] == "SUCCEEDED"

    other = started(start, stack, tmp_path / "gate-2")
    cancelled = cli(stack, "cancel", other)
    assert cancelled.returncode == 0, cancelled.stderr
    assert f"cancelled run {other}: 2 unfinished task(s) marked CANCELLED" in cancelled.stdout
    ignored = stack.logs().count("already completed; outcome ignored")
    (tmp_path / "gate-2").touch()  # first's body returns now, into a cancelled task
    wait_for(lambda: stack.logs().count("already completed; outcome ignored") > ignored,
             "first to return")
    assert firestore_store.get_run(other).status is RunStatus.CANCELLED
    assert {t.task_id: t.status for t in firestore_store.get_tasks(other)
            if t.task_id != "__end__"} == {"first": TaskStatus.CANCELLED,
                                           "next": TaskStatus.CANCELLED}
    status, body = post(control.url, {"action": "cancel", "run_id": other})
    assert status == 409 and body["run_status"] == "CANCELLED"
    status, body = post(control.url, {"action": "resume", "run_id": "no-such-run"})
    assert status == 404
    status, body = post(control.url, "{not json")
    assert status == 400
    assert executions(stack, other) == ["first"]


# ------------------------------------------------------- function-flow dev


def test_the_dev_stack_serves_control(firestore_emulator, pubsub_emulator, storage_emulator,
                                      collection_prefix, tmp_path) -> None:
    """LocalStack (what `function-flow dev` runs) starts control beside the others;
    its poller, ticking every 2 s, never starts a held task."""
    from function_flow.local.stack import DevError, LocalStack

    suffix = collection_prefix.strip("_-")[-8:]
    ran = tmp_path / "ran.jsonl"
    stack = LocalStack(str(WORKFLOW), collection_prefix=collection_prefix,
                       schedule_topic=f"SCHEDULE-{suffix}", events_topic=f"EVENTS-{suffix}",
                       firestore=firestore_emulator, pubsub=pubsub_emulator,
                       storage=storage_emulator, log_path=str(tmp_path / "dev.log"),
                       extra_env={"FUNCTION_FLOW_TEST_EXECUTIONS": str(ran)})
    with stack:
        gate = tmp_path / "gate"
        run_id = stack.start_run({"gate": str(gate)})
        wait_for(lambda: ran.exists() and "first" in ran.read_text(), "first to run")

        assert stack.control("pause", run_id)["outcome"] == "paused"
        gate.touch()
        wait_for(lambda: "task next attempt 1: held" in stack.log_tail(400), "next to be held")
        polled = stack.log_tail(400).count("poller: ")
        wait_for(lambda: stack.log_tail(400).count("poller: ") >= polled + 2,
                 "two more poller ticks")
        assert '"next"' not in ran.read_text()
        assert control.shown_status(stack.store.get_run(run_id)) == "PAUSED"

        assert stack.control("resume", run_id)["outcome"] == "resumed"
        run = wait_for(lambda: (r := stack.store.get_run(run_id)).status.is_final and r,
                       "the run to end")
        assert run.status is RunStatus.SUCCEEDED
        with pytest.raises(DevError, match="the control function answered 409: run .* "
                                           "already ended \\(SUCCEEDED\\)"):
            stack.control("cancel", run_id)
