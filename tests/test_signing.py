"""Signed internal messages (signing.py) and the run id on every message.

Unit level: the one check (Keys.verify, delivery.check_signature) against
every kind of bad signature, key rotation, the age measured at Pub/Sub's
publish time, the keys each backend has, `function-flow dev`'s key file,
and the receivers on the embedded store (scheduler, listener, callback).
On the Pub/Sub emulator: what each publisher puts on the wire. The forged
scheduling message through functions-framework is in test_gcp_e2e.py
(test_bad_messages_are_acknowledged_and_change_nothing), the deployed
callbacks in test_openfaas_e2e.py and test_approvals_http.py.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import pathlib
import re
import stat
import subprocess
import time
import uuid

import flask
import pytest

from function_flow import backends, remote, signing
from function_flow.bus.pubsub import PubSubBus
from function_flow.cloud import callback, delivery
from function_flow.config import Settings
from function_flow.core.messages import Message
from function_flow.core.ports import Request
from function_flow.core.records import TaskStatus
from function_flow.errors import ConfigurationError
from function_flow.local.callback_server import BackendSite
from function_flow.local.keys import dev_key
from function_flow.local.pubsub import EmulatorPubSub
from function_flow.remote.functions import RemoteFunction
from function_flow.remote.pubsub import PubSubSender
from signatures import KEYS, TEST_HMAC_KEY, signed
from test_functions import (FLASK_APP, as_legacy, deliver_all, encode, gcs_event, http_start,
                            make_job, snapshot)

OLD_KEY = "the-key-before-the-rotation-0123456789"
OTHER_KEY = "a-key-nobody-here-has-0123456789abcdef"
BODY = b'{"run_id": "r1", "task_id": "a", "attempt": 1}'
NOW = 1_800_000_000


def attributes(**changes: str) -> dict[str, str]:
    return {**signed(BODY, timestamp=NOW), **changes}


# ------------------------------------------------------------- the check


@pytest.mark.parametrize("values, reason", [
    ({}, "not signed: it has no function_flow_timestamp and function_flow_signature"),
    (attributes(function_flow_signature=""), "not signed: it has no function_flow_signature"),
    ({"function_flow_signature": signed(BODY)["function_flow_signature"]},
     "no function_flow_timestamp"),
    (signed(BODY, key=OTHER_KEY, timestamp=NOW), "does not match"),
    (attributes(function_flow_signature="sha256=" + "0" * 64), "does not match"),
    (attributes(function_flow_timestamp=str(NOW + 1)), "does not match"),  # moved stamp
    (signed(BODY, timestamp=NOW - 301), "signed 301 s ago"),  # a replay
    (signed(BODY, timestamp=NOW + 301), "signature from the future: signed 301 s from now"),
    (attributes(function_flow_timestamp="yesterday"), "not a time in epoch seconds"),
    (attributes(function_flow_timestamp="1e9"), "not a time in epoch seconds"),
    (attributes(function_flow_timestamp="-5"), "not a time in epoch seconds"),
    (attributes(function_flow_timestamp="١٨٠٠٠٠٠٠٠٠"), "not a time in epoch seconds"),
    (attributes(function_flow_signature="md5=abc"), "not sha256=<64 hex digits>"),
    (attributes(function_flow_signature="sha256=" + "é" * 64), "not sha256=<64 hex digits>"),
])
def test_a_bad_signature_is_refused_saying_why(values, reason) -> None:
    with pytest.raises(delivery.Unsigned, match=re.escape(reason)):
        delivery.check_signature(BODY, values, signing.ATTRIBUTES, KEYS, at=NOW)
    delivery.check_signature(BODY, attributes(), signing.ATTRIBUTES, KEYS, at=NOW)
    delivery.check_signature(BODY, attributes(), signing.ATTRIBUTES, KEYS, at=NOW + 300)


def test_signatures_of_changed_old_or_foreign_requests_do_not_verify() -> None:
    body = b'{"run_id": "r"}'
    headers = signing.sign(body, TEST_HMAC_KEY, timestamp=1_000_000)
    signing.verify(body, headers, TEST_HMAC_KEY, now=1_000_100)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(body + b" ", headers, TEST_HMAC_KEY, now=1_000_100)
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(body, headers, TEST_HMAC_KEY[::-1], now=1_000_100)
    moved = dict(headers, **{signing.TIMESTAMP_HEADER: "1000050"})  # replayed "now"
    with pytest.raises(signing.SignatureError, match="does not match"):
        signing.verify(body, moved, TEST_HMAC_KEY, now=1_000_100)
    with pytest.raises(signing.SignatureError, match="replay"):
        signing.verify(body, headers, TEST_HMAC_KEY, now=1_000_000 + 301)
    with pytest.raises(signing.SignatureError, match="not signed"):
        signing.verify(body, {}, TEST_HMAC_KEY)
    lower = {k.lower(): v for k, v in headers.items()}
    signing.verify(body, lower, TEST_HMAC_KEY, now=1_000_000)


def test_verify_takes_its_tolerance_from_the_settings_and_wants_the_bytes_sent(
        monkeypatch) -> None:
    body = b'{"run_id": "r"}'
    headers = signing.sign(body, TEST_HMAC_KEY, timestamp=1_000_000)
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_TOLERANCE", "1000")
    signing.verify(body, headers, TEST_HMAC_KEY, now=1_000_000 + 900)
    with pytest.raises(signing.SignatureError, match="more than the 1000 s of "
                                                     "FUNCTION_FLOW_HMAC_TOLERANCE"):
        signing.verify(body, headers, TEST_HMAC_KEY, now=1_000_000 + 1001)
    with pytest.raises(TypeError, match=r"must be the bytes sent, got str; pass body.encode"):
        signing.sign(body.decode(), TEST_HMAC_KEY)
    with pytest.raises(TypeError, match="must be the bytes sent"):
        signing.verify(body.decode(), headers, TEST_HMAC_KEY)


def test_during_a_rotation_the_previous_key_verifies_and_never_signs() -> None:
    old = signed(BODY, key=OLD_KEY, timestamp=NOW)
    rotating = signing.Keys.from_settings(Settings.from_env({
        "FUNCTION_FLOW_HMAC_KEY": TEST_HMAC_KEY, "FUNCTION_FLOW_HMAC_PREVIOUS_KEY": OLD_KEY}))
    rotating.verify(BODY, old, signing.ATTRIBUTES, now=NOW)
    made = rotating.sign(BODY, signing.ATTRIBUTES, timestamp=NOW)
    assert made == signed(BODY, timestamp=NOW)  # the new key signs
    rotated = signing.Keys.from_settings(Settings.from_env({
        "FUNCTION_FLOW_HMAC_KEY": TEST_HMAC_KEY}))
    with pytest.raises(signing.SignatureError, match="does not match"):
        rotated.verify(BODY, old, signing.ATTRIBUTES, now=NOW)
    rotated.verify(BODY, made, signing.ATTRIBUTES, now=NOW)


def test_settings_of_the_keys_say_what_is_wrong() -> None:
    assert OLD_KEY not in repr(Settings.from_env({"FUNCTION_FLOW_HMAC_KEY": TEST_HMAC_KEY,
                                                  "FUNCTION_FLOW_HMAC_PREVIOUS_KEY": OLD_KEY}))
    tolerant = Settings.from_env({"FUNCTION_FLOW_HMAC_KEY": TEST_HMAC_KEY,
                                  "FUNCTION_FLOW_HMAC_TOLERANCE": "900"})
    signing.Keys.from_settings(tolerant).verify(
        BODY, signed(BODY, timestamp=NOW - 600), signing.ATTRIBUTES, now=NOW)
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_HMAC_TOLERANCE"):
        Settings.from_env({"FUNCTION_FLOW_HMAC_TOLERANCE": "soon"})
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_HMAC_PREVIOUS_KEY is 5"):
        signing.Keys.from_settings(Settings(hmac_key=TEST_HMAC_KEY, hmac_previous_key="short"))


def test_the_gcp_backend_refuses_to_start_without_a_key(monkeypatch) -> None:
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY", raising=False)
    with pytest.raises(ConfigurationError) as missing:
        backends.from_settings(Settings(backend="gcp", project="p"))
    assert "FUNCTION_FLOW_HMAC_KEY is not set" in str(missing.value)
    assert "openssl rand -hex 32" in str(missing.value)
    assert "--set-secrets FUNCTION_FLOW_HMAC_KEY=SECRET:latest" in str(missing.value)
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_HMAC_KEY"):
        PubSubBus("SCHEDULE", project="p").publish_now(Message("r", "a", 1))


def test_an_openssl_signature_verifies() -> None:
    """What the README shows for senders without Python: openssl dgst -hmac."""
    stamp = str(int(time.time()))
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", TEST_HMAC_KEY],
                            input=stamp.encode() + b"." + BODY, capture_output=True,
                            check=True).stdout.decode().split()[-1]
    signing.verify(BODY, {"X-Function-Flow-Timestamp": stamp,
                          "X-Function-Flow-Signature": f"sha256={digest}"}, TEST_HMAC_KEY)


def test_the_readmes_secret_holds_the_key_without_a_newline(tmp_path) -> None:
    """The README makes the Secret Manager secret from `openssl rand -hex 32`. The
    functions get the secret's bytes as they are, while an approver reads it back
    with `$(gcloud secrets versions access ...)`, which drops a trailing newline:
    with one in the secret, every approval it signs would be a 401."""
    readme = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
    line, = [line for line in readme.splitlines() if "gcloud secrets create" in line]
    made = line.split("| gcloud secrets create")[0]
    secret = subprocess.run(["bash", "-c", made], capture_output=True, check=True).stdout
    assert re.fullmatch(rb"[0-9a-f]{64}", secret), secret
    (tmp_path / "secret").write_bytes(secret)
    read_back = subprocess.run(["bash", "-c", 'key=$(cat secret); printf %s "$key"'],
                               cwd=tmp_path, capture_output=True, check=True).stdout
    headers = signing.sign(BODY, secret)  # what a function signs with
    signing.verify(BODY, headers, read_back)  # what the approver checks and signs with


@pytest.mark.parametrize("command", ["deploy.sh", "deploy/README.md"])
def test_deploy_makes_and_rotates_the_key_without_a_newline(command) -> None:
    """deploy.sh's first key and deploy/README.md's rotated one: the same
    pipeline, whose output is the secret's bytes (no newline, for the reason above)."""
    root = pathlib.Path(__file__).resolve().parent.parent
    text = (root / "deploy" / "deploy.sh" if command == "deploy.sh"
            else root / command).read_text()
    made, = [line.strip().rstrip("|").strip() for line in text.splitlines()
             if "secrets.token_urlsafe" in line]
    secret = subprocess.run(["bash", "-c", made], capture_output=True, check=True).stdout
    assert re.fullmatch(rb"[A-Za-z0-9_-]{64}", secret), secret


# ------------------------------------------ the age, measured at publishing


def envelope(data: bytes, attributes: dict[str, str], published: float) -> dict:
    when = datetime.datetime.fromtimestamp(published, datetime.timezone.utc).isoformat()
    return {"message": {"data": encode(data), "attributes": attributes,
                        "messageId": "1", "publishTime": when}, "subscription": "s"}


def test_a_message_that_waited_in_a_backlog_is_accepted_a_republished_one_refused(
        tmp_path, caplog) -> None:
    job, calls = make_job(tmp_path)
    run_id = http_start(job, "{}")[0]["run_id"]
    [first] = job.backend.bus.take()  # type: ignore[attr-defined]
    data = first.to_json()
    ten_minutes_ago = time.time() - 600
    old = signed(data, timestamp=int(ten_minutes_ago))
    scheduler = job.make_scheduler()

    for published in (time.time(), time.time() + 3600):  # published again; a made-up time
        with FLASK_APP.test_request_context("/", method="POST",
                                            json=envelope(data, old, published)), \
                caplog.at_level(logging.WARNING, logger="function_flow"):
            assert scheduler(flask.request) == ({"outcome": "rejected"}, 200)
    assert calls == [] and "signature too old" in caplog.text
    # 1st gen: the context's timestamp is the publish time.
    event = {"data": encode(data), "attributes": old}
    stamp = datetime.datetime.fromtimestamp(ten_minutes_ago + 1, datetime.timezone.utc)
    assert scheduler(event, {"timestamp": stamp.isoformat()}) is None
    assert calls == ["a"]
    assert job.engine.store.get_tasks(run_id, ["a"])[0].status is TaskStatus.SUCCEEDED


# ------------------------------------------------------------ receivers


def test_the_listener_refuses_a_badly_signed_event_and_takes_an_unsigned_one(
        tmp_path, caplog) -> None:
    """Unsigned: a Cloud Storage notification, which cannot sign. Signed: checked."""
    job, calls = make_job(tmp_path)
    run_id = http_start(job, '{"wait_for_file": true}')[0]["run_id"]
    deliver_all(job, as_legacy)
    before = snapshot(job, run_id)
    listener = job.make_external_event_listener()
    data = gcs_event(run_id)

    for forged in (signed(data, key=OTHER_KEY), signed(data, timestamp=int(time.time()) - 900)):
        with caplog.at_level(logging.WARNING, logger="function_flow"):
            assert listener({"data": encode(data), "attributes": forged}, None) is None
    assert snapshot(job, run_id) == before
    assert "does not match" in caplog.text and "signature too old" in caplog.text
    assert listener({"data": encode(data), "attributes": {}}, None) is None
    deliver_all(job, as_legacy)
    assert calls == ["a", "b", "c"]


def test_a_remote_function_acts_only_on_a_signed_request(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
    monkeypatch.setenv("FUNCTION_FLOW_DB", str(tmp_path / "none.db"))  # no store: no dedup
    calls, answers = [], []
    remote = RemoteFunction(lambda payload, context: calls.append(payload) or "done")
    remote._reply = lambda message, attrs: answers.append((message, attrs))
    remote._store = None
    data = json.dumps({"job_id": "job-1", "job_args": {}, "task_args": {}}).encode()
    for bad in ({}, signed(data, key=OTHER_KEY), signed(data, timestamp=int(time.time()) - 301)):
        assert remote({"data": encode(data), "attributes": bad}, None) is None
    assert calls == [] and answers == []
    assert remote({"data": encode(data), "attributes": signed(data, {"run_id": "r"})},
                  None) is None
    assert len(calls) == 1 and answers[0][1] == {"run_id": "r", "job_id": "job-1"}
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY")
    with pytest.raises(ConfigurationError):  # not acknowledged: comes again once set
        remote({"data": encode(data), "attributes": signed(data)}, None)


def approve_request(site, body: bytes, headers: dict[str, str]):
    with FLASK_APP.test_request_context("/approve", method="POST", data=body,
                                        headers=headers, content_type="application/json"):
        return callback.handle(site, flask.request)


def test_the_embedded_callback_server_without_a_key_accepts_only_its_own(tmp_path,
                                                                          monkeypatch) -> None:
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY", raising=False)
    backend = backends.embedded(str(tmp_path / "runs.db"), 1, Settings())
    try:
        assert backend.keys.ephemeral
        body = b'{"token": "' + b"x" * 43 + b'"}'
        answer, status = approve_request(BackendSite(backend), body,
                                         signing.sign(body, TEST_HMAC_KEY))
        assert status == 401 and "this process has no FUNCTION_FLOW_HMAC_KEY" in answer["error"]
        answer, status = approve_request(BackendSite(backend), body,
                                         backend.keys.sign(body))
        assert status == 404 and "unknown approval token" in answer["error"]
        # Its own random key never leaves the process: nothing it sends is signed with it.
        adapters = backends.remote_adapters(Settings(), "embedded", backend)
        assert adapters["http"].keys is None and adapters["openfaas"].keys is None
    finally:
        backend.close()


def test_a_deployed_callback_without_a_key_answers_501_saying_what_to_set(
        tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FUNCTION_FLOW_HMAC_KEY", raising=False)
    job, _ = make_job(tmp_path)
    job.backend.keys = None
    answer, status = approve_request(callback.JobSite(job), b"{}", {})
    assert status == 501 and "FUNCTION_FLOW_HMAC_KEY is not set" in answer["error"]


# ------------------------------------------------- `function-flow dev`'s key


def test_dev_makes_its_key_file_once_readable_by_its_owner_only(tmp_path) -> None:
    settings = Settings(db_path=str(tmp_path / ".function_flow" / "function_flow.db"))
    key, where = dev_key(settings)
    path = tmp_path / ".function_flow" / "hmac.key"
    assert where == str(path) and path.read_text().strip() == key and len(key) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert dev_key(settings) == (key, str(path))  # read, not made again
    assert dev_key(Settings(db_path=settings.db_path, hmac_key=TEST_HMAC_KEY)) == \
        (TEST_HMAC_KEY, "FUNCTION_FLOW_HMAC_KEY")
    path.write_text("short\n")
    with pytest.raises(ConfigurationError,
                       match=re.escape(f"the HMAC key file {path} is 5 characters")):
        dev_key(settings)


# --------------------------------------------- on the wire: the emulator


def pulled(pubsub: EmulatorPubSub, subscription: str, count: int) -> list:
    received: list = []
    deadline = time.monotonic() + 60
    while len(received) < count and time.monotonic() < deadline:
        answer = pubsub.subscriber.pull(request={"subscription": subscription,
                                                 "max_messages": 10}, timeout=10)
        received += [m.message for m in answer.received_messages]
    assert len(received) == count, received
    return received


def test_every_message_function_flow_publishes_names_its_run_and_is_signed(
        gcp_env, pubsub_emulator, monkeypatch) -> None:
    pubsub = EmulatorPubSub(pubsub_emulator.host, gcp_env["GOOGLE_CLOUD_PROJECT"])
    topic = f"WIRE-{uuid.uuid4().hex[:8]}"
    subscription = pubsub.subscription_path(topic + "-pull")
    pubsub.subscriber.create_subscription(
        request={"name": subscription, "topic": pubsub.ensure_topic(topic)}, timeout=30)
    pubsub.subscriptions.append(subscription)
    try:
        project = gcp_env["GOOGLE_CLOUD_PROJECT"]
        bus = PubSubBus(topic, project=project, keys=KEYS)
        bus.publish_now(Message("run-1", "a", 1))  # a scheduling message
        sender = PubSubSender(project, KEYS)
        sender.send(remote.PubSub(topic), Request("job-2", "run-2", "t", 1, {}, {}, None))
        monkeypatch.setenv("FUNCTION_FLOW_EVENTS_TOPIC", topic)
        RemoteFunction(lambda p, c: 1)._deployed_reply()(  # a remote function's answer
            {"status": {"code": 0}}, {"run_id": "run-3", "job_id": "job-3"})
        messages = pulled(pubsub, subscription, 3)
        assert sorted(m.attributes["run_id"] for m in messages) == ["run-1", "run-2", "run-3"]
        for message in messages:
            KEYS.verify(message.data, dict(message.attributes), signing.ATTRIBUTES)
        bus.close()
        for opened in sender._topics.values():
            opened.close()
    finally:
        pubsub.close()
