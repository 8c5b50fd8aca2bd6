"""The completion callback: POSTed, signed, retried until a 2xx, once per run.

The receiver is a real HTTP server on 127.0.0.1 (callback_receiver.py) that
checks every signature as a receiver would. Runs are driven through the
real engine on both stores, through the embedded backend, the command
line, and the `start` function (a Flask request here; through
functions-framework and Pub/Sub on the emulators in test_callbacks_e2e.py).
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import flask
import pytest

from function_flow import backends, callbacks, tasks
from function_flow.cloud import functions
from function_flow.core import hooks
from function_flow.core.engine import Engine
from function_flow.config import Settings
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ConfigurationError

from callback_receiver import Receiver
from cli_runs import flow, run_id_of, workflow
from test_run_graph import Outbox

KEY = "0123456789abcdef0123456789abcdef-test-key"


@pytest.fixture
def receiver_for(monkeypatch):
    """Make receivers answering a script of statuses; the key and a fast backoff set."""
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", KEY)
    monkeypatch.setenv("FUNCTION_FLOW_CALLBACK_BACKOFF", "0.01")
    made = []

    def make(*statuses: int, hold_first: float = 0.0) -> Receiver:
        receiver = Receiver(list(statuses), KEY, hold_first)
        made.append(receiver)
        return receiver

    yield make
    for receiver in made:
        receiver.close()


def two_step(fail: bool = False) -> tasks.Job:
    job = tasks.Job("called_back")
    job.task(task_id="a")(lambda **_: {"rows": 3})
    if fail:
        job.task(task_id="b", deps=["a"])(boom)
    else:
        job.task(task_id="b", deps=["a"])(lambda **_: "done")
    return job


def boom(**_):
    raise RuntimeError("b broke")


class DelayedOutbox(Outbox):
    """Keeps each message's delay, so drain() can honour a retry's backoff."""

    def __init__(self) -> None:
        super().__init__()
        self.delays: list[float] = []
        self.published: list[tuple] = []  # every (message, delay), kept after drain()

    def publish(self, message, delay: float = 0.0) -> None:
        super().publish(message, delay)
        self.delays.append(delay)
        self.published.append((message, delay))


def drain(engine: Engine, bus: DelayedOutbox, limit: int = 200) -> None:
    while bus.sent and limit:
        limit -= 1
        message, delay = bus.sent.pop(0), bus.delays.pop(0)
        time.sleep(min(delay, 1.0))
        engine.handle(message)


def callback_record(store, run_id: str):
    return store.get_tasks(run_id, [hooks.CALLBACK])[0]


def run_to_the_end(store, receiver: Receiver, job: tasks.Job | None = None,
                   args: dict | None = None) -> tuple[Engine, str]:
    """Runs the job (two_step() by default) with its callback to `receiver`,
    delivering every message, retries after their backoff, until none is left."""
    bus = DelayedOutbox()
    engine = Engine(job or two_step(), store, bus, lease_check_messages=False)
    run_id, _ = engine.start(args or {}, callback_url=receiver.url)
    drain(engine, bus)
    return engine, run_id


def test_the_callback_is_retried_until_it_gets_a_2xx_and_every_post_is_signed(
        store, receiver_for) -> None:
    receiver = receiver_for(500, 500, 200)
    engine, run_id = run_to_the_end(store, receiver, args={"day": "monday"})
    posts = receiver.wait_for(3)
    assert len(posts) == 3 and [p["answered"] for p in posts] == [500, 500, 200]
    assert all(p["signature"] == "ok" for p in posts)
    assert all(p["headers"]["X-Function-Flow-Run-Id"] == run_id
               and p["headers"]["Content-Type"] == "application/json" for p in posts)
    body = posts[-1]["body"]
    run = engine.run_status(run_id)
    assert body == {"run_id": run_id, "job": "called_back", "status": "SUCCEEDED",
                    "error": None, "results": {"b": "done"}, "failed_tasks": [],
                    "created_at": run.created_at, "finished_at": run.finished_at,
                    "redrives": 0}
    record = callback_record(store, run_id)
    assert (record.status, record.attempt) == (TaskStatus.SUCCEEDED, 3)
    assert record.result == {"delivered": True, "status_code": 200}
    assert not run.hooks_pending and run.callback_url == receiver.url
    # Late duplicates of every message post nothing more.
    assert len(receiver.posts) == 3


def test_a_redriven_run_calls_back_again_with_its_redrives(store, receiver_for) -> None:
    """A receiver acting once per run_id would drop the second end's results:
    (run_id, redrives) names one end."""
    receiver = receiver_for(200, 200)
    broken = [True]
    job = tasks.Job("called_back")
    job.task(task_id="a")(lambda **_: {"rows": 3})

    @job.task(task_id="b", deps=["a"])
    def b(**_):
        if broken:
            raise RuntimeError("b broke")
        return "done"

    engine, run_id = run_to_the_end(store, receiver, job)
    broken.clear()
    engine.redrive(run_id)
    drain(engine, engine.bus)
    first, second = (p["body"] for p in receiver.wait_for(2))
    assert (first["run_id"], first["status"], first["redrives"]) == (run_id, "FAILED", 0)
    assert (second["run_id"], second["status"], second["redrives"], second["results"]) \
        == (run_id, "SUCCEEDED", 1, {"b": "done"})


def test_a_failed_run_reports_its_error_after_its_hooks(store, receiver_for) -> None:
    receiver = receiver_for(200)
    job = two_step(fail=True)
    ran = []
    job.on_failure(lambda run: ran.append("on_failure"))
    job.on_end(lambda run: ran.append("on_end"))
    _, run_id = run_to_the_end(store, receiver, job)
    body = receiver.wait_for(1)[0]["body"]
    assert (body["status"], body["failed_tasks"], body["results"]) == ("FAILED", ["b"], {})
    assert body["error"] == "task 'b' failed: RuntimeError: b broke"
    assert ran == ["on_failure", "on_end"]
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    # The callback went after the hooks had ended.
    assert records[hooks.ON_END].finished_at <= records[hooks.CALLBACK].started_at


@pytest.mark.parametrize("status", [400, 403, 404, 302])
def test_a_receiver_that_refuses_the_callback_is_not_asked_again(
        store, receiver_for, status) -> None:
    receiver = receiver_for(status, 200)
    engine, run_id = run_to_the_end(store, receiver)
    assert len(receiver.wait_for(1)) == 1
    record = callback_record(store, run_id)
    assert (record.status, record.attempt) == (TaskStatus.FAILED, 1)
    assert f"answered HTTP {status}" in record.error and "not sent again" in record.error
    run = engine.run_status(run_id)
    assert (run.status, run.hooks_pending) == (RunStatus.SUCCEEDED, False)


@pytest.mark.parametrize("status", [408, 425, 429, 503])
def test_busy_or_timed_out_answers_are_retried(store, receiver_for, status) -> None:
    receiver = receiver_for(status, 204)
    _, run_id = run_to_the_end(store, receiver)
    assert [p["answered"] for p in receiver.wait_for(2)] == [status, 204]
    assert callback_record(store, run_id).status is TaskStatus.SUCCEEDED


def test_a_post_slower_than_the_callback_timeout_is_given_up_and_retried(
        store, receiver_for, monkeypatch) -> None:
    """The first answer comes after a minute (or at the end of the test); with
    FUNCTION_FLOW_CALLBACK_TIMEOUT at half a second, the sender stops waiting
    for it and the second POST delivers the callback."""
    monkeypatch.setenv("FUNCTION_FLOW_CALLBACK_TIMEOUT", "0.5")
    receiver = receiver_for(200, 200, hold_first=60)
    _, run_id = run_to_the_end(store, receiver)
    record = callback_record(store, run_id)
    assert (record.status, record.attempt) == (TaskStatus.SUCCEEDED, 2)
    assert len(receiver.wait_for(2)) == 2


def test_an_unreachable_receiver_is_retried_as_many_times_as_configured(
        store, receiver_for, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_CALLBACK_ATTEMPTS", "3")
    receiver = receiver_for(200)
    receiver.close()  # nobody listens there any more
    engine, run_id = run_to_the_end(store, receiver)
    record = callback_record(store, run_id)
    assert (record.status, record.attempt) == (TaskStatus.FAILED, 3)
    assert "cannot reach the callback to" in record.error
    assert not engine.run_status(run_id).hooks_pending


def test_each_retry_waits_up_to_twice_as_long_as_the_last_and_never_over_an_hour(
        store, receiver_for, monkeypatch) -> None:
    """The n-th retry waits between half of and all of BACKOFF * 2**(n-1) seconds
    (jitter keeps callbacks from retrying in step), at most an hour: with the
    defaults, 36 POSTs over 12 to 25 hours."""
    monkeypatch.setenv("FUNCTION_FLOW_CALLBACK_ATTEMPTS", "4")
    receiver = receiver_for(500)
    bus = DelayedOutbox()
    engine = Engine(two_step(), store, bus, lease_check_messages=False)
    run_id, _ = engine.start({}, callback_url=receiver.url)
    drain(engine, bus)
    waits = [delay for message, delay in bus.published
             if message.task_id == hooks.CALLBACK and message.attempt > 1]
    ceilings = [0.01, 0.02, 0.04]  # the fixture's FUNCTION_FLOW_CALLBACK_BACKOFF is 0.01
    assert len(waits) == 3 and all(c / 2 <= w <= c for w, c in zip(waits, ceilings)), waits
    assert len(receiver.posts) == 4
    assert callback_record(store, run_id).status is TaskStatus.FAILED
    default = callbacks.spec("j", Settings.from_env({}))
    longest, shortest = (SimpleNamespace(uniform=lambda low, high, end=end: (low, high)[end])
                         for end in (1, 0))
    ceilings = [min(3600, 2 * 2 ** (n - 1)) for n in range(1, 36)]
    assert default.retries + 1 == 36
    assert [default.retry_backoff.delay(n, longest) for n in range(1, 36)] == ceilings
    least = sum(default.retry_backoff.delay(n, shortest) for n in range(1, 36))
    assert 12 * 3600 < least and sum(ceilings) < 25.2 * 3600


def test_the_callback_sends_a_large_result_by_reference(tmp_path, receiver_for,
                                                         monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_INLINE_LIMIT_BYTES", "1000")
    receiver = receiver_for(200)
    job = tasks.Job("large_result")
    job.task(task_id="big")(lambda **_: "x" * 5000)
    job.use_backend(backends.embedded(str(tmp_path / "ff.db")))
    run_id = job.start({}, callback_url=receiver.url)
    job.wait(run_id, timeout=60)
    result = receiver.wait_for(1)[0]["body"]["results"]["big"]
    blob = result["function_flow_blob"]
    assert blob["bytes"] == 5002 and blob["location"]
    assert json.loads(open(blob["location"]).read()) == "x" * 5000


def test_the_callback_sends_a_foreach_sinks_item_results_large_ones_by_reference(
        tmp_path, receiver_for, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_INLINE_LIMIT_BYTES", "1000")
    receiver = receiver_for(200)
    job = tasks.Job("foreach_sink")
    job.task(task_id="src")(lambda **_: [1, 5000])
    job.foreach(task_id="each", over="src")(lambda task, job: "x" * task.item)
    job.use_backend(backends.embedded(str(tmp_path / "ff.db")))
    run_id = job.start({}, callback_url=receiver.url)
    job.wait(run_id, timeout=60)
    small, big = receiver.wait_for(1)[0]["body"]["results"]["each"]
    assert small == "x"
    assert json.loads(open(big["function_flow_blob"]["location"]).read()) == "x" * 5000


def test_job_wait_returns_once_the_callback_was_delivered(tmp_path, receiver_for) -> None:
    receiver = receiver_for(500, 200)
    job = two_step().use_backend(backends.embedded(str(tmp_path / "ff.db")))
    run_id = job.start({}, callback_url=receiver.url)
    run = job.wait(run_id, timeout=60)
    assert run.status is RunStatus.SUCCEEDED and not run.hooks_pending
    assert len(receiver.posts) == 2


# ------------------------------------------------------------- bad input


def test_a_start_with_a_bad_callback_url_or_no_key_is_refused(tmp_path, monkeypatch) -> None:
    job = two_step().use_backend(backends.embedded(str(tmp_path / "ff.db")))
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", KEY)
    for url in ("ftp://example.com/x", "example.com/hook", "http://", "", 42):
        with pytest.raises(ValueError, match="callback_url must be an http"):
            job.start({}, callback_url=url)
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY")
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_HMAC_KEY is not set"):
        job.start({}, callback_url="https://example.com/hook")
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", "short")
    with pytest.raises(ConfigurationError, match="use at least 32 random characters"):
        job.start({}, callback_url="https://example.com/hook")
    assert job.engine.store.list_runs() == []  # nothing was started


def test_a_callback_that_cannot_be_signed_when_it_is_sent_is_retried(
        store, receiver_for, monkeypatch) -> None:
    """The key was set where the run started but not where it ended: the callback
    fails with what to do, and is sent once the key is there."""
    receiver = receiver_for(200)
    bus = DelayedOutbox()
    engine = Engine(two_step(), store, bus, lease_check_messages=False)
    run_id, _ = engine.start({}, callback_url=receiver.url)
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY")
    while bus.sent and not (bus.sent[0].task_id == hooks.CALLBACK
                            and bus.sent[0].attempt == 2):
        drain(engine, bus, limit=1)
    record = callback_record(store, run_id)
    assert record.status is TaskStatus.QUEUED
    assert "cannot sign the callback" in record.error and "FUNCTION_FLOW_HMAC_KEY" in record.error
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", KEY)
    drain(engine, bus)
    assert receiver.wait_for(1)[0]["signature"] == "ok"


# ----------------------------------------------------- the start function


FLASK_APP = flask.Flask("callback-tests")


def test_the_start_function_takes_the_callback_url_from_a_header(tmp_path,
                                                                  receiver_for) -> None:
    receiver = receiver_for(200)
    job = two_step().use_backend(backends.embedded(str(tmp_path / "ff.db")))
    start = functions.make_start(job)
    header = {"X-Function-Flow-Callback-Url": receiver.url}
    with FLASK_APP.test_request_context("/", method="POST", json={"x": 1}, headers=header):
        answer, status = start(flask.request)
    assert status == 200, answer
    run = job.wait(answer["run_id"], timeout=60)
    assert run.callback_url == receiver.url and run.args == {"x": 1}
    assert receiver.wait_for(1)[0]["body"]["run_id"] == answer["run_id"]
    bad = {"X-Function-Flow-Callback-Url": "file:///etc/passwd"}
    with FLASK_APP.test_request_context("/", method="POST", json={}, headers=bad):
        answer, status = start(flask.request)
    assert status == 400 and "X-Function-Flow-Callback-Url" in answer["error"]


@pytest.mark.parametrize("key", [None, "short-key"])
def test_the_start_function_says_when_the_deployment_cannot_sign(tmp_path, monkeypatch,
                                                                  key) -> None:
    """No key, or one under 32 characters: a 501 naming the variable, and no run.
    (A backend is not built with a short key at all; the key is read again at
    the start, as a deployment's changed secret would be.)"""
    if key is None:
        monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY", raising=False)
    job = two_step().use_backend(backends.embedded(str(tmp_path / "ff.db")))
    if key is not None:
        monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", key)
    start = functions.make_start(job)
    header = {"X-Function-Flow-Callback-Url": "https://example.com/hook"}
    with FLASK_APP.test_request_context("/", method="POST", json={}, headers=header):
        answer, status = start(flask.request)
    assert status == 501 and "FUNCTION_FLOW_HMAC_KEY" in answer["error"]
    assert job.engine.store.list_runs() == []


# ---------------------------------------------------------- command line


def test_run_with_callback_url_delivers_it_and_status_says_so(tmp_path,
                                                              receiver_for) -> None:
    # Retries that take longer than the command's grace for busy tasks: it
    # waits for the callback, saying what happens meanwhile.
    receiver = receiver_for(500, 500, 500, 200)
    env = {"FUNCTION_FLOW_HMAC_KEY": KEY, "FUNCTION_FLOW_CALLBACK_BACKOFF": "1"}
    result = flow(tmp_path, "run", workflow("hooked"), "--arg", "fail=true",
                  "--callback-url", receiver.url, env=env)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    assert "ALERT" in out and "CLEAN UP FAILED" in out
    assert f"callback to {receiver.url}: not delivered yet: attempt 1 failed: " in out
    assert f"callback to {receiver.url}: delivered (HTTP 200, attempt 4)" in out
    assert [p["answered"] for p in receiver.posts] == [500, 500, 500, 200]
    run_id = run_id_of(out)
    status = flow(tmp_path, "status", run_id, env=env)
    assert "on_failure: SUCCEEDED (attempt 1)" in status.stdout
    assert "on_end: SUCCEEDED (attempt 1)" in status.stdout
    assert f"callback to {receiver.url}: delivered (HTTP 200, attempt 4)" in status.stdout
    assert "__" not in status.stdout.split("hooks:")[0]  # no hook rows among the tasks


def test_status_says_when_the_callback_was_refused(tmp_path, receiver_for) -> None:
    receiver = receiver_for(403)
    env = {"FUNCTION_FLOW_HMAC_KEY": KEY}
    result = flow(tmp_path, "run", workflow("hooked"), "--callback-url", receiver.url,
                  env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    status = flow(tmp_path, "status", run_id_of(result.stdout), env=env).stdout
    assert f"callback to {receiver.url}: not delivered after 1 attempt(s): " in status
    assert "answered HTTP 403" in status and "not sent again" in status


def test_run_refuses_a_callback_it_cannot_sign_in_one_line(tmp_path) -> None:
    result = flow(tmp_path, "run", workflow("hooked"), "--callback-url",
                  "https://example.com/hook")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "FUNCTION_FLOW_HMAC_KEY is not set" in lines[0], lines
    bad = flow(tmp_path, "run", workflow("hooked"), "--callback-url", "mailto:me",
               env={"FUNCTION_FLOW_HMAC_KEY": KEY})
    assert bad.returncode == 2 and "callback_url must be an http" in bad.stderr


def test_resume_delivers_the_callback_of_a_run_whose_process_was_killed(
        tmp_path, receiver_for) -> None:
    """The run ended and its callback was being retried when its process died
    (kill -9): `function-flow resume` picks the callback up where it was."""
    import os
    import re
    import signal
    import subprocess
    import sys

    receiver = receiver_for(500)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    env.update(FUNCTION_FLOW_HMAC_KEY=KEY, FUNCTION_FLOW_CALLBACK_BACKOFF="0.5")
    process = subprocess.Popen(
        [sys.executable, "-m", "function_flow.cli", "run", workflow("hooked"),
         "--callback-url", receiver.url], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        receiver.wait_for(1)
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    receiver.statuses = [200]
    listed = flow(tmp_path, "status", env=env).stdout
    run_id = re.search(r"(hooked-\S+)", listed).group(1)
    assert "SUCCEEDED (hooks left: process gone)" in listed, listed
    shown = flow(tmp_path, "status", run_id, env=env).stdout
    assert "not delivered yet" in shown or "sending" in shown, shown
    assert f"is gone before its hooks ran: run them with function-flow resume {run_id}" \
        in " ".join(shown.split()), shown
    resumed = flow(tmp_path, "resume", run_id, env=env)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"callback to {receiver.url}: delivered (HTTP 200, attempt " in resumed.stdout
    assert receiver.posts[-1]["answered"] == 200
    assert receiver.posts[-1]["body"]["status"] == "SUCCEEDED"


def test_a_start_again_with_another_callback_is_refused_and_a_bad_port_at_once(
        store) -> None:
    """The same run id asking for another callback (or none, or one now) would
    never get it: a conflict, like other arguments. A URL whose port is not
    one failed each POST, retried for a day."""
    from function_flow.errors import RunConflictError

    engine = Engine(two_step(), store, Outbox(), lease_check_messages=False)
    first = "http://127.0.0.1:1/a"
    assert engine.start({}, run_id="cb-1", callback_url=first) == ("cb-1", True)
    assert engine.start({}, run_id="cb-1", callback_url=first) == ("cb-1", False)
    for other, asked in (("http://127.0.0.1:1/b", "the callback URL http://127.0.0.1:1/b"),
                         (None, "no callback URL")):
        with pytest.raises(RunConflictError) as refused:
            engine.start({}, run_id="cb-1", callback_url=other)
        assert str(refused.value) == (
            f"run 'cb-1' already exists with the callback URL {first}; this start asks for "
            f"{asked}: start it the same way to get that run, or choose another run id")
    with pytest.raises(ValueError, match=r"callback_url 'http://127.0.0.1:99999/x' has a "
                                         r"bad port \(Port out of range"):
        engine.start({}, callback_url="http://127.0.0.1:99999/x")
    assert [r.run_id for r in store.list_runs(10)] == ["cb-1"]
