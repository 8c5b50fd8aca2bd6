"""Bad input at the Cloud Functions entry points, through the real entry points.

Two promises (docs/design.md, invariant 6): a Pub/Sub delivery that cannot be
used is acknowledged (a 5xx or an exception would make Pub/Sub deliver it
again forever), and a bad HTTP request gets a 4xx JSON error that says what
to send instead. Only a transient backend error is answered 503.

The deliveries are built as in test_functions.py, on the embedded store.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import re
import subprocess
import sys
import tempfile
import pathlib
from typing import Any

import flask
import pytest
from cloudevents.http import CloudEvent
from hypothesis import HealthCheck, given, settings, strategies as st

from function_flow.cloud.delivery import MAX_START_BODY_BYTES
from function_flow.core.records import TaskStatus
from function_flow.core.values import MAX_VALUE_BYTES
from function_flow.errors import transient_google_errors
from signatures import signed
from test_functions import (FLASK_APP, FORMS, as_legacy, deliver_all, http_start, make_job,
                            snapshot, unreachable_pubsub)


def raw_start(job, environ: dict[str, Any], body: bytes) -> tuple[dict, int]:
    """POST `body` to start with WSGI environ overrides (Content-Length...)."""
    with FLASK_APP.test_request_context("/", method="POST", input_stream=io.BytesIO(body),
                                        content_type="application/json",
                                        environ_overrides=environ):
        return job.make_start()(flask.request)


# ------------------------------------------------------------- start


def test_start_refuses_a_5_mb_body_with_413_at_once(tmp_path):
    # "At once": by its size, not by parsing it (the next test); no timing here.
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, json.dumps({"x": "a" * 5_000_000}))
    assert status == 413
    assert "1,048,576" in answer["error"] and "gs://" in answer["error"]
    assert job.engine.store.list_runs() == []


def test_start_refuses_a_big_body_before_parsing_it(tmp_path):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, b"\xff not even JSON " * 400_000)
    assert status == 413, answer


@pytest.mark.parametrize("declared", ["", "10"], ids=["chunked", "lying"])
def test_start_counts_the_body_it_reads_not_only_content_length(tmp_path, declared):
    # A chunked request has no Content-Length, and a server that marks its
    # input terminated passes on the whole body, whatever the header said.
    job, _ = make_job(tmp_path)
    body = json.dumps({"x": "a" * (MAX_START_BODY_BYTES + 10)}).encode()
    answer, status = raw_start(job, {"CONTENT_LENGTH": declared,
                                     "wsgi.input_terminated": True}, body)
    assert status == 413, answer
    assert job.engine.store.list_runs() == []


def test_start_reads_a_body_without_content_length(tmp_path):
    job, _ = make_job(tmp_path)
    answer, status = raw_start(job, {"CONTENT_LENGTH": "", "wsgi.input_terminated": True},
                               b'{"n": 41}')
    assert status == 200, answer
    assert job.engine.store.get_run(answer["run_id"]).args == {"n": 41}


def test_arguments_under_the_body_limit_but_over_the_engines_get_400(tmp_path):
    job, _ = make_job(tmp_path)
    body = json.dumps({"x": "a" * (MAX_VALUE_BYTES + 1000)})
    assert len(body) < MAX_START_BODY_BYTES
    answer, status = http_start(job, body)
    assert status == 400
    assert f"{MAX_VALUE_BYTES:,}" in answer["error"]


@pytest.mark.parametrize("body", ["[" * 100_000, '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}",
                                  '{"a": ' + '{"b": ' * 50_000 + "1" + "}" * 50_001,
                                  '{"a": ' + "[" * 256 + "]" * 256 + "}"])
def test_start_answers_400_to_json_nested_too_deeply(tmp_path, body):
    """Too deep to parse, or deeper than a stored value may be (values.MAX_DEPTH)."""
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, body)
    assert status == 400
    assert re.search(r"nested (too deeply|more than 256 levels deep)", answer["error"]), answer
    assert job.engine.store.list_runs() == []


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_start_refuses_nan_and_infinity_in_arguments(tmp_path, constant):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, '{"x": [1, %s]}' % constant)
    assert status == 400
    assert f"{constant} is not standard JSON" in answer["error"]
    assert job.engine.store.list_runs() == []


@pytest.mark.parametrize("body, reason", [
    (b'{"x": "\xff\xfe"}', "not JSON"),  # not UTF-8
    (b"null", "JSON object, got NoneType"),
    (b'{"a": 1', "not JSON"),
])
def test_every_bad_start_request_gets_a_4xx_json_error(tmp_path, body, reason):
    job, _ = make_job(tmp_path)
    answer, status = http_start(job, body)
    assert 400 <= status < 500 and reason in answer["error"]


def test_start_called_as_an_event_function_says_how_to_deploy_it(tmp_path):
    job, _ = make_job(tmp_path)
    answer, status = job.make_start()({"data": "e30="})
    assert status == 400 and "--trigger-http" in answer["error"]
    assert job.engine.store.list_runs() == []


# ------------------------------------------------ Pub/Sub: every form


def deliver_message(fn, form: str, message: Any) -> Any:
    """Hand `message` (the Pub/Sub message object, any JSON) to fn in `form`."""
    if form == "legacy":
        return fn(message, {"event_id": "1", "event_type": "google.pubsub.topic.publish"})
    envelope = {"message": message, "subscription": "projects/p/subscriptions/s"}
    if form == "cloudevent":
        return fn(CloudEvent({"type": "google.cloud.pubsub.topic.v1.messagePublished",
                              "source": "//pubsub.googleapis.com/x"}, envelope))
    with FLASK_APP.test_request_context("/", method="POST", json=envelope):
        return fn(flask.request)


def acknowledged(form: str, answer: Any) -> bool:
    if form == "push":
        return isinstance(answer, tuple) and 200 <= answer[1] < 300
    return answer is None


ENTRY_POINTS = ["scheduler", "external_event_listener"]


def entry_point(job, name: str):
    return job.make_scheduler() if name == "scheduler" else job.make_external_event_listener()


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("data", [42, 1.5, True, ["e30="], {"b64": "e30="}, None],
                         ids=["int", "float", "bool", "list", "object", "null"])
def test_message_data_that_is_not_a_string_is_acknowledged(tmp_path, caplog, entry, form,
                                                           data):
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    before = snapshot(job, run_id)
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        answer = deliver_message(entry_point(job, entry), form,
                                 {"data": data, "attributes": {}, "messageId": "1"})
    assert acknowledged(form, answer), answer
    assert "rejected and acknowledged" in caplog.text
    assert "no data" in caplog.text or "not a base64 string" in caplog.text
    assert snapshot(job, run_id) == before and calls == []


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("message", ["text", [1, 2], 7, None],
                         ids=["string", "list", "number", "null"])
def test_message_that_is_not_an_object_is_acknowledged(tmp_path, caplog, entry, form,
                                                       message):
    job, _ = make_job(tmp_path)
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        answer = deliver_message(entry_point(job, entry), form, message)
    assert acknowledged(form, answer), answer
    assert "rejected and acknowledged" in caplog.text


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("form", FORMS)
def test_data_nested_too_deeply_is_acknowledged(tmp_path, caplog, entry, form):
    job, _ = make_job(tmp_path)
    data = base64.b64encode(b"[" * 100_000).decode()
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        answer = deliver_message(entry_point(job, entry), form, {"data": data})
    assert acknowledged(form, answer), answer
    assert "rejected and acknowledged" in caplog.text


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("body", [b"hello", b'{"no": "message"}', b"[" * 100_000])
def test_http_body_that_is_no_push_envelope_gets_400_json(tmp_path, entry, body):
    # Pub/Sub never sends one: whoever did is told, not silently acknowledged.
    job, _ = make_job(tmp_path)
    with FLASK_APP.test_request_context("/", method="POST", data=body,
                                        content_type="application/json"):
        answer, status = entry_point(job, entry)(flask.request)
    assert status == 400 and "not a Pub/Sub push envelope" in answer["error"]


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_cloudevent_whose_data_is_bytes_is_acknowledged(tmp_path, caplog, entry):
    job, _ = make_job(tmp_path)
    event = CloudEvent({"type": "t", "source": "s", "datacontenttype": "text/plain"},
                       b'{"message": {"data": "e30="}}')
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        assert entry_point(job, entry)(event) is None
    assert "CloudEvent carries no Pub/Sub message (its data is bytes)" in caplog.text


def test_attributes_of_the_wrong_shape_do_not_stop_a_good_message(tmp_path):
    job, calls = make_job(tmp_path)
    http_start(job, "{}")
    message = job.backend.bus.take()[0]  # type: ignore[attr-defined]
    # Attributes that are no object cannot carry a signature: refused,
    # acknowledged; non-string values beside a signature are dropped.
    good = {"n": 1, "ok": "yes", **signed(message.to_json())}
    for attributes in (["a", "b"], "text", good):
        answer = deliver_message(job.make_scheduler(), "push", {
            "data": base64.b64encode(message.to_json()).decode(), "attributes": attributes})
        assert answer[1] == 200
    assert calls == ["a"]


# ---------------------------------------------- Pub/Sub: fuzzed shapes

JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def b64(value: bytes) -> str:
    return base64.b64encode(value).decode()


#: What message data decodes to: noise, any JSON, and near misses of a
#: scheduling message or of an event a Future recognises.
PAYLOADS = st.one_of(
    st.binary(max_size=64),
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"run_id": JSON | st.sampled_from(["r", "run-1"]),
                           "task_id": JSON | st.sampled_from(["a", "b", "__end__"]),
                           "attempt": JSON | st.integers(),
                           "kind": JSON | st.sampled_from(["run_task", "check_lease"])}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"function_flow_event_type": st.just("gcs_path_create"),
                           "path_prefix": JSON}).map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({"resource": st.just({"type": "bigquery_resource"}),
                           "protoPayload": JSON}).map(lambda v: json.dumps(v).encode()),
)
MESSAGES = st.one_of(
    JSON,
    st.fixed_dictionaries({}, optional={
        "data": JSON | st.text(max_size=12) | PAYLOADS.map(b64),
        "attributes": JSON | st.dictionaries(st.text(max_size=8), st.text(max_size=8)),
        "messageId": JSON}),
)
#: A whole push envelope (or whatever else arrives instead of one).
ENVELOPES = st.one_of(
    JSON,
    st.fixed_dictionaries({"message": MESSAGES}, optional={"subscription": JSON}),
)


@pytest.fixture(scope="module")
def fuzz_job():
    with tempfile.TemporaryDirectory() as directory:
        job, _ = make_job(pathlib.Path(directory))
        # A live run, so that near misses of its messages reach real records.
        http_start(job, '{"wait_for_file": true}', run_id="run-1")
        yield job


def is_envelope(value: Any) -> bool:
    return isinstance(value, dict) and "message" in value


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(envelope=ENVELOPES, entry=st.sampled_from(ENTRY_POINTS),
       form=st.sampled_from(["legacy", "cloudevent", "push", "push-bytes"]),
       raw=st.binary(max_size=32))
def test_fuzzed_deliveries_are_acknowledged_and_never_raise(fuzz_job, envelope, entry,
                                                            form, raw):
    fn = entry_point(fuzz_job, entry)
    if form == "legacy":  # the message itself is the event
        event = envelope.get("message", envelope) if isinstance(envelope, dict) else envelope
        assert fn(event, None) is None
    elif form == "cloudevent":
        assert fn(CloudEvent({"type": "t", "source": "s"}, envelope)) is None
    else:
        body = raw if form == "push-bytes" else json.dumps(envelope).encode()
        with FLASK_APP.test_request_context("/", method="POST", data=body,
                                            content_type="application/json"):
            answer, status = fn(flask.request)
        if form == "push" and is_envelope(envelope):
            assert 200 <= status < 300, answer
        else:
            assert status in (200, 400), answer
            if status == 400:
                assert "push envelope" in answer["error"]


# ------------------------------------------------ transient: only 503


def test_push_to_the_scheduler_answers_503_json_when_pubsub_is_down(tmp_path, monkeypatch,
                                                                     caplog):
    job, calls = make_job(tmp_path)
    http_start(job, "{}")
    first = job.backend.bus.take()[0]  # type: ignore[attr-defined]
    job.engine.bus = unreachable_pubsub(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="function_flow"):
        answer, status = FORMS["push"](job.make_scheduler(), first.to_json())
    assert status == 503 and "retry later" in answer["error"]
    assert "will be redelivered" in caplog.text and calls == ["a"]


def test_http_poller_answers_503_json_when_pubsub_is_down(tmp_path, monkeypatch):
    job, _ = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    job.backend.bus.take()  # type: ignore[attr-defined]  # the root's message is lost
    now = job.engine.clock()
    job.engine.clock = lambda: now + 61  # overdue: the poller publishes it again
    job.engine.bus = unreachable_pubsub(monkeypatch)
    with FLASK_APP.test_request_context("/", method="POST"):
        answer, status = job.make_poller()(flask.request)
    assert status == 503 and "retry later" in answer["error"]
    assert job.engine.store.get_tasks(run_id, ["a"])[0].status is TaskStatus.QUEUED


# ------------------------------------------- the list of transient errors


def test_errors_module_does_not_import_google():
    code = ("import sys, function_flow.errors; "
            "assert 'google.api_core' not in sys.modules, 'imported google.api_core'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_one_list_of_transient_errors_serves_store_bus_and_entry_points():
    from google.api_core import exceptions as gexc

    from function_flow.bus.pubsub import Topic, transient_errors
    from function_flow.cloud.delivery import is_transient
    from function_flow.store import firestore_transactions

    errors = transient_google_errors()
    assert firestore_transactions.TRANSIENT == errors and transient_errors() == errors
    assert gexc.RetryError in errors and gexc.Unknown in errors
    assert is_transient(gexc.ServiceUnavailable("down"))
    assert not is_transient(gexc.InvalidArgument("bad"))
    # The publisher's own retry repeats a call on what a call can answer;
    # its own give-up (RetryError) and our wait's timeout are not such.
    retry = Topic("SCHEDULE", project="p")._retry()
    assert retry._predicate(gexc.ServiceUnavailable("down"))
    assert retry._predicate(gexc.Unknown("reset"))
    assert not retry._predicate(gexc.RetryError("gave up", None))
    assert not retry._predicate(TimeoutError())
    assert not retry._predicate(gexc.InvalidArgument("bad"))


def test_a_good_run_still_goes_through_after_bad_input(tmp_path):
    job, calls = make_job(tmp_path)
    http_start(job, "[" * 100_000)
    deliver_message(job.make_scheduler(), "push", {"data": 42})
    run_id = http_start(job, '{"n": 1}')[0]["run_id"]
    deliver_all(job, as_legacy)
    assert calls == ["a", "b", "c"]
    assert job.engine.run_status(run_id).status.value == "SUCCEEDED"
