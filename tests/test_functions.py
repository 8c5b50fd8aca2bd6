"""The Cloud Functions entry points, on the embedded store (fast, no emulator).

Google Cloud hands a Pub/Sub message to a function in three shapes: a 1st gen
background function gets `(event, context)` with a dict, a 2nd gen function
gets a CloudEvent whose data is `{"message": ..., "subscription": ...}`, and
an HTTP function behind a push subscription gets the push envelope as a
flask request. Each test here drives a real run through one of them.

The bus is an outbox: it keeps what the engine publishes, and the test
delivers each message itself, in the shape under test. End-to-end delivery
through the Pub/Sub emulator and functions-framework is in test_gcp_e2e.py.
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import pathlib
from typing import Any, Callable

import flask
import pytest
from cloudevents.http import CloudEvent

from function_flow import futures, tasks
from function_flow.backends import Backend
from function_flow.bus.pubsub import PubSubBus
from function_flow.cloud.functions import RUN_ID_HEADER
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import TransientBackendError
from function_flow.local.emulators import free_port
from function_flow.store.sqlite import SqliteStore
from signatures import KEYS, signed

FLASK_APP = flask.Flask("function-flow-tests")


class Outbox(Bus):
    """A bus that keeps messages until the test delivers them."""

    def __init__(self) -> None:
        self.messages: list[tuple[Message, float]] = []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        self.messages.append((message, delay))

    def take(self) -> list[Message]:
        taken, self.messages = [m for m, _ in self.messages], []
        return taken


# ------------------------------------------------------------ the workflow


def make_job(tmp_path: pathlib.Path, bus: Any = None) -> tuple[tasks.Job, list[str]]:
    """a -> b -> c; b waits for a file in GCS (an external event)."""
    calls: list[str] = []
    job = tasks.Job(name="functions_test")

    @job.task(task_id="a")
    def a(task, job):
        calls.append("a")
        return {"n": job.get_arguments().get("n", 0) + 1}

    @job.task(task_id="b", deps=["a"])
    def b(task, job):
        calls.append("b")
        if job.get_arguments().get("wait_for_file"):
            return futures.GCSFuture(f"gs://bucket/{task.run_id}/")
        return job.get_task_result("a")["n"] * 10

    @job.task(task_id="c", deps=["b"])
    def c(task, job):
        calls.append("c")
        return {"b": job.get_task_result("b")}

    job.use_backend(Backend(kind="embedded", store=SqliteStore(str(tmp_path / "runs.db")),
                            bus=bus if bus is not None else Outbox(),
                            lease_check_messages=False, keys=KEYS))
    return job, calls


# ------------------------------------------------------ the delivery forms


def encode(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def pubsub_message(data: bytes | str, attributes: dict[str, str] | None = None) -> dict:
    """A Pub/Sub message, signed as function_flow signs what it publishes."""
    published = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return {"data": encode(data), "attributes": signed(data, attributes),
            "messageId": "1234", "publishTime": published}


def as_legacy(fn: Callable, data: bytes | str, attributes: dict | None = None) -> Any:
    """1st gen background function: `fn(event, context)`."""
    event = {"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
             "data": encode(data), "attributes": signed(data, attributes)}
    return fn(event, {"event_id": "1234", "event_type": "google.pubsub.topic.publish"})


def as_cloudevent(fn: Callable, data: bytes | str, attributes: dict | None = None) -> Any:
    """2nd gen function: a CloudEvent of type messagePublished."""
    event = CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished",
                        "source": "//pubsub.googleapis.com/projects/p/topics/SCHEDULE"},
                       {"message": pubsub_message(data, attributes),
                        "subscription": "projects/p/subscriptions/scheduler"})
    return fn(event)


def as_push(fn: Callable, data: bytes | str, attributes: dict | None = None) -> Any:
    """HTTP function behind a push subscription: the envelope as JSON body."""
    envelope = {"message": pubsub_message(data, attributes),
                "subscription": "projects/p/subscriptions/scheduler"}
    with FLASK_APP.test_request_context("/", method="POST", json=envelope):
        return fn(flask.request)


FORMS = {"legacy": as_legacy, "cloudevent": as_cloudevent, "push": as_push}


def http_start(job: tasks.Job, body: bytes | str = b"", run_id: str | None = None
               ) -> tuple[dict, int]:
    headers = {RUN_ID_HEADER: run_id} if run_id else {}
    with FLASK_APP.test_request_context("/", method="POST", data=body, headers=headers,
                                        content_type="application/json"):
        return job.make_start()(flask.request)


def deliver_all(job: tasks.Job, form: Callable) -> list[Any]:
    """Deliver every published message (and what those publish) through `form`."""
    scheduler = job.make_scheduler()
    answers = []
    outbox: Outbox = job.backend.bus  # type: ignore[assignment]
    while outbox.messages:
        for message in outbox.take():
            answers.append(form(scheduler, message.to_json(), message.attributes()))
    return answers


def snapshot(job: tasks.Job, run_id: str) -> list[dict]:
    return [r.to_dict() for r in job.engine.store.get_tasks(run_id)]


# -------------------------------------------------------------------- tests


@pytest.mark.parametrize("form", FORMS)
def test_scheduler_runs_a_workflow_in_every_delivery_form(tmp_path, form):
    job, calls = make_job(tmp_path)
    body, status = http_start(job, json.dumps({"n": 4}))
    assert status == 200
    run_id = body["run_id"]

    answers = deliver_all(job, FORMS[form])

    assert job.engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert calls == ["a", "b", "c"]
    records = {r.task_id: r for r in job.engine.task_records(run_id)}
    assert records["c"].result == {"b": 50}
    if form == "push":
        assert all(status == 200 for _, status in answers)
        assert [a["outcome"] for a, _ in answers] == ["succeeded"] * 3
    else:
        assert answers == [None, None, None]


@pytest.mark.parametrize("form", FORMS)
def test_duplicate_message_runs_the_task_body_once(tmp_path, form):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    outbox: Outbox = job.backend.bus  # type: ignore[assignment]
    first = outbox.take()[0]
    scheduler = job.make_scheduler()

    FORMS[form](scheduler, first.to_json())
    FORMS[form](scheduler, first.to_json())

    assert calls == ["a"]
    # The duplicate repeats a's follow-up (its first delivery might have died
    # before publishing it): the same message for b, attempt 1, twice.
    assert {(m.task_id, m.attempt) for m in outbox.messages[0:]
            for m in [m[0]]} == {("b", 1)}
    deliver_all(job, FORMS[form])
    assert calls == ["a", "b", "c"]
    assert job.engine.run_status(run_id).status is RunStatus.SUCCEEDED


BAD_MESSAGES = {
    "not JSON": b"\x00\xffnot json",
    "JSON array": b"[1, 2, 3]",
    "missing attempt": b'{"run_id": "r", "task_id": "a"}',
    "wrong types": b'{"run_id": 1, "task_id": "a", "attempt": "1"}',
    "unknown kind": b'{"run_id": "r", "task_id": "a", "attempt": 1, "kind": "explode"}',
    # Ids no store accepts (Firestore would answer InvalidArgument forever).
    "empty run id": b'{"run_id": "", "task_id": "a", "attempt": 1}',
    "huge task id": b'{"run_id": "r", "task_id": "' + b"x" * 2000 + b'", "attempt": 1}',
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("bad", BAD_MESSAGES)
def test_malformed_message_is_acknowledged_and_logged(tmp_path, caplog, form, bad):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    before = snapshot(job, run_id)

    with caplog.at_level(logging.WARNING, logger="function_flow"):
        answer = FORMS[form](job.make_scheduler(), BAD_MESSAGES[bad])

    assert answer == (({"outcome": "rejected"}, 200) if form == "push" else None)
    assert "rejected and acknowledged" in caplog.text
    assert snapshot(job, run_id) == before and calls == []


@pytest.mark.parametrize("form", FORMS)
def test_data_that_is_not_base64_is_acknowledged(tmp_path, caplog, form):
    job, _ = make_job(tmp_path)
    scheduler = job.make_scheduler()
    event = {"data": "!!! not base64 !!!", "attributes": {}}
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        if form == "legacy":
            answer = scheduler(event, None)
        elif form == "cloudevent":
            answer = scheduler(CloudEvent({"type": "t", "source": "s"}, {"message": event}))
        else:
            with FLASK_APP.test_request_context("/", method="POST", json={"message": event}):
                answer = scheduler(flask.request)
    assert answer == (({"outcome": "rejected"}, 200) if form == "push" else None)
    assert "not base64" in caplog.text


TARGETS = {  # what the message names -> the scheduler's answer
    "unknown run": (lambda run_id: Message("no-such-run", "a", 1), "unknown_run"),
    "unknown task": (lambda run_id: Message(run_id, "zzz", 1), "unknown_task"),
    "stale attempt": (lambda run_id: Message(run_id, "b", 0), "stale"),
    "end task": (lambda run_id: Message(run_id, "__end__", 1), "unknown_task"),
}


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("form", FORMS)
def test_message_for_nothing_we_know_changes_nothing(tmp_path, caplog, form, target):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    as_legacy(job.make_scheduler(), job.backend.bus.take()[0].to_json())  # a ran
    before = snapshot(job, run_id)  # b is QUEUED, attempt 1
    make_message, outcome = TARGETS[target]

    with caplog.at_level(logging.INFO, logger="function_flow"):
        answer = FORMS[form](job.make_scheduler(), make_message(run_id).to_json())

    assert answer == (({"outcome": outcome}, 200) if form == "push" else None)
    assert outcome in caplog.text
    assert snapshot(job, run_id) == before
    assert calls == ["a"]


def test_push_request_that_is_not_an_envelope_gets_400_json(tmp_path):
    job, _ = make_job(tmp_path)
    with FLASK_APP.test_request_context("/", method="POST", data="hello",
                                        content_type="text/plain"):
        body, status = job.make_scheduler()(flask.request)
    assert status == 400
    assert "push envelope" in body["error"]


def test_unsupported_event_object_is_acknowledged(tmp_path, caplog):
    job, _ = make_job(tmp_path)
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        assert job.make_scheduler()(42) is None
    assert "unsupported event type int" in caplog.text


# --------------------------------------------------------------- start


@pytest.mark.parametrize("body, reason", [("not json", "not JSON"),
                                          ("[1, 2]", "JSON object, got list"),
                                          ('"text"', "JSON object, got str")])
def test_start_rejects_bad_body_with_400_json(tmp_path, body, reason):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, body)
    assert status == 400
    assert reason in answer["error"]
    assert job.engine.store.list_runs() == []


def test_start_with_empty_body_starts_a_run_without_arguments(tmp_path):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, b"")
    assert status == 200 and answer["created"] is True
    assert job.engine.store.get_run(answer["run_id"]).args == {}


def test_start_with_the_same_run_id_twice_makes_one_run(tmp_path):
    job, calls = make_job(tmp_path)
    first, status1 = http_start(job, '{"n": 1}', run_id="nightly-2026-01-01")
    second, status2 = http_start(job, '{"n": 1}', run_id="nightly-2026-01-01")
    assert (status1, status2) == (200, 200)
    assert first == {"run_id": "nightly-2026-01-01", "created": True}
    assert second == {"run_id": "nightly-2026-01-01", "created": False}
    assert [r.run_id for r in job.engine.store.list_runs()] == ["nightly-2026-01-01"]
    # The retried start re-sends the queued root (the first call might have
    # died before publishing it); the duplicate is harmless: a runs once.
    outbox: Outbox = job.backend.bus  # type: ignore[assignment]
    assert {(m.task_id, m.attempt) for m, _ in outbox.messages} == {("a", 1)}
    sent = len(outbox.messages)
    # The same id with other arguments is another start: refused, nothing sent.
    conflict, status3 = http_start(job, '{"n": 2}', run_id="nightly-2026-01-01")
    assert status3 == 409 and conflict["run_id"] == "nightly-2026-01-01"
    assert "already exists with other arguments" in conflict["error"]
    assert len(outbox.messages) == sent
    assert job.engine.store.get_run("nightly-2026-01-01").args == {"n": 1}
    deliver_all(job, as_push)
    assert calls == ["a", "b", "c"]


@pytest.mark.parametrize("run_id", ["a/b", "x" * 201, "__reserved__", ".."])
def test_start_rejects_run_ids_firestore_cannot_store(tmp_path, run_id):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, "{}", run_id=run_id)
    assert status == 400
    assert RUN_ID_HEADER in answer["error"]


# ------------------------------------------------- external event listener


def gcs_event(run_id: str) -> bytes:
    return json.dumps({"function_flow_event_type": "gcs_path_create",
                       "path_prefix": f"gs://bucket/{run_id}/"}).encode()


@pytest.mark.parametrize("form", FORMS)
def test_an_event_no_future_recognises_is_acknowledged_as_ignored(tmp_path, caplog, form):
    """The events topic also carries what is none of the job's business (the log
    sink's every BigQuery job, other jobs' answers): acknowledged as "ignored",
    logged at INFO, not as a warning each."""
    job, calls = make_job(tmp_path)
    run_id = http_start(job, '{"wait_for_file": true}')[0]["run_id"]
    deliver_all(job, as_legacy)
    before = snapshot(job, run_id)
    with caplog.at_level(logging.INFO, logger="function_flow"):
        answer = FORMS[form](job.make_external_event_listener(),
                             b'{"protoPayload": {"methodName": "jobservice.jobcompleted"}}')
    assert answer == (({"outcome": "ignored"}, 200) if form == "push" else None)
    assert "matched no Future class" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert snapshot(job, run_id) == before and calls == ["a", "b"]


@pytest.mark.parametrize("form", FORMS)
def test_external_event_completes_a_waiting_task_in_every_form(tmp_path, form):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, '{"wait_for_file": true}')[0]["run_id"]
    deliver_all(job, as_legacy)
    assert job.engine.store.get_tasks(run_id, ["b"])[0].status is TaskStatus.RUNNING

    answer = FORMS[form](job.make_external_event_listener(), gcs_event(run_id))
    deliver_all(job, as_legacy)

    assert answer == (({"outcome": "succeeded"}, 200) if form == "push" else None)
    assert job.engine.run_status(run_id).status is RunStatus.SUCCEEDED
    assert job.engine.store.get_tasks(run_id, ["c"])[0].result == {
        "b": f"gs://bucket/{run_id}/"}
    # The same event again finds no trigger: acknowledged, nothing runs twice.
    again = FORMS[form](job.make_external_event_listener(), gcs_event(run_id))
    assert again == (({"outcome": "unknown_trigger"}, 200) if form == "push" else None)
    assert calls == ["a", "b", "c"]


@pytest.mark.parametrize("data, logged", [
    (b"\x00 not json", "rejected and acknowledged"),
    (b"[1]", "not a JSON object"),
    (b'{"function_flow_event_type": "gcs_path_create", "path_prefix": "gs://x/"}',
     "unknown trigger"),
    (b'{"something": "else"}', "matched no Future class"),
])
@pytest.mark.parametrize("form", FORMS)
def test_external_event_listener_acknowledges_what_it_cannot_use(tmp_path, caplog, form,
                                                                 data, logged):
    job, _ = make_job(tmp_path)
    run_id = http_start(job, '{"wait_for_file": true}')[0]["run_id"]
    deliver_all(job, as_legacy)
    before = snapshot(job, run_id)
    with caplog.at_level(logging.INFO, logger="function_flow"):
        answer = FORMS[form](job.make_external_event_listener(), data)
    if form == "push":
        assert answer[1] == 200
    else:
        assert answer is None
    assert logged in caplog.text
    assert snapshot(job, run_id) == before


# ------------------------------------------------------- transient errors


def unreachable_pubsub(monkeypatch) -> PubSubBus:
    """A real Pub/Sub client pointed at a port where nothing listens."""
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{free_port()}")
    return PubSubBus("SCHEDULE", project="p", publish_timeout=3, keys=KEYS)


def test_scheduler_raises_when_pubsub_is_down_so_the_message_comes_again(
        tmp_path, monkeypatch, caplog):
    job, calls = make_job(tmp_path, bus=Outbox())
    run_id = http_start(job, "{}")[0]["run_id"]
    first = job.backend.bus.take()[0]  # type: ignore[attr-defined]
    job.engine.bus = unreachable_pubsub(monkeypatch)

    with caplog.at_level(logging.WARNING, logger="function_flow"):
        with pytest.raises(TransientBackendError):
            as_cloudevent(job.make_scheduler(), first.to_json())

    assert "will be redelivered" in caplog.text
    # The task's success is recorded; the redelivery repeats the lost publish.
    assert calls == ["a"]
    assert job.engine.store.get_tasks(run_id, ["a"])[0].status is TaskStatus.SUCCEEDED


def test_start_answers_503_when_pubsub_is_down(tmp_path, monkeypatch):
    job, _ = make_job(tmp_path)
    job.engine.bus = unreachable_pubsub(monkeypatch)
    answer, status = http_start(job, "{}", run_id="retry-me")
    assert status == 503
    assert "retry" in answer["error"]


# ------------------------------------------------------------------ poller


@pytest.mark.parametrize("form", ["http", "legacy", "cloudevent"])
def test_poller_sends_a_lost_message_again_once_it_is_overdue(tmp_path, form):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    outbox: Outbox = job.backend.bus  # type: ignore[assignment]
    outbox.take()  # the root's message is lost
    poller = job.make_poller()

    def poll() -> Any:
        if form == "http":  # Cloud Scheduler calling the HTTP function
            with FLASK_APP.test_request_context("/", method="POST"):
                return poller(flask.request)
        if form == "legacy":  # Cloud Scheduler publishing to a topic
            return poller({"data": encode("tick")}, None)
        return poller(CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished",
                                  "source": "//pubsub.googleapis.com/x"},
                                 {"message": {"data": encode("tick")}}))

    answer = poll()  # still in flight, as far as anyone can tell: left alone
    assert outbox.take() == []
    assert answer == (({"runs_checked": 1, "timers_published": 0}, 200)
                      if form == "http" else None)

    now = job.engine.clock()
    job.engine.clock = lambda: now + 61  # a minute later, the message is overdue
    poll()
    assert outbox.take() == [Message(run_id, "a", 1)]
    assert calls == []


def test_the_start_answer_names_the_run_in_a_header_too(tmp_path):
    """Served (as functions-framework serves it), the answer carries
    X-Function-Flow-Run-Id, on a start and on a conflicting one; called in
    Python it stays (body, status)."""
    from functions_stack import http_client

    job, _ = make_job(tmp_path)
    client = http_client(job.make_start(), "start")
    first = client.post("/", json={"n": 1}, headers={RUN_ID_HEADER: "nightly-1"})
    assert (first.status_code, first.headers[RUN_ID_HEADER]) == (200, "nightly-1")
    generated = client.post("/", json={"n": 1})
    assert generated.headers[RUN_ID_HEADER] == generated.get_json()["run_id"] != "nightly-1"
    conflict = client.post("/", json={"n": 2}, headers={RUN_ID_HEADER: "nightly-1"})
    assert (conflict.status_code, conflict.headers[RUN_ID_HEADER]) == (409, "nightly-1")
    assert RUN_ID_HEADER not in client.post("/", data=b"[1]").headers  # no run: no id
    assert http_start(job, json.dumps({"n": 1}), run_id="nightly-1") == (
        {"run_id": "nightly-1", "created": False}, 200)
