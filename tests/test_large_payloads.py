"""Large results and run arguments by reference (core/payloads.py).

A value over the inline limit (256 KiB of compact JSON by default) is
written to the backend's blob store before the transaction that records a
small reference to it, and comes back through job.get_task_result and
job.get_arguments. Shown on the embedded backend (SQLite + a directory)
and on the gcp backend (Firestore emulator + gcp-storage-emulator, messages
through the Pub/Sub emulator), with the blob store, the records and
cleanup checked directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from typing import Any

import pytest

from function_flow import backends, remote, tasks
from function_flow.config import Settings
from function_flow.core import payloads
from function_flow.core.engine import Engine
from function_flow.core.messages import Message
from function_flow.core.ports import BlobNotFoundError, Bus, Request
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.core.values import MAX_VALUE_BYTES
from function_flow.errors import ConfigurationError, PayloadMissingError, RunConflictError
from function_flow.tasks import Job
from test_run_graph import Outbox, drain
from signatures import TEST_HMAC_KEY

FIVE_MIB = 5 * 1024 * 1024
LIMIT = payloads.DEFAULT_INLINE_LIMIT_BYTES


def engine_for(job: Job, store: Any, bus: Bus, **options: Any) -> Engine:
    """The job's engine on `store` and `bus`, so that job.get_task_result in its
    bodies reads there too."""
    job.use_backend(backends.Backend("test", store, bus, lease_check_messages=False,
                                     **options))
    return job.engine


def passing_job(name: str, timeout: float | None = None) -> Job:
    """`produce` returns 5 MiB; `consume` reads it and the run's 5 MiB arguments."""
    job = Job(name)

    @job.task(task_id="produce")
    def produce(task, job):
        return {"blob": "p" * FIVE_MIB}

    @job.task(task_id="consume", deps=["produce"], timeout=timeout)
    def consume(task, job):
        value = job.get_task_result("produce")["blob"]
        args = job.get_arguments()["blob"]
        return {"length": len(value), "sha256": hashlib.sha256(value.encode()).hexdigest(),
                "args_length": len(args), "args_head": args[:3]}

    return job


def big_args() -> dict[str, Any]:
    return {"blob": "a" * FIVE_MIB}


EXPECTED = {"length": FIVE_MIB, "sha256": hashlib.sha256(b"p" * FIVE_MIB).hexdigest(),
            "args_length": FIVE_MIB, "args_head": "aaa"}


def assert_stored_by_reference(backend: backends.Backend, run_id: str) -> None:
    """The records hold small references; the blobs hold the values."""
    run = backend.store.get_run(run_id)
    produced = backend.store.get_tasks(run_id, ["produce"])[0]
    for value, expected in ((run.args, big_args()), (produced.result, {"blob": "p" * FIVE_MIB})):
        assert payloads.is_reference(value), str(value)[:200]
        assert len(json.dumps(value)) < 1000
        key = value[payloads.REFERENCE_FIELD]["key"]
        assert key.startswith(payloads.run_prefix(run_id))
        assert json.loads(backend.blobs.get(key)) == expected
        assert value[payloads.REFERENCE_FIELD]["bytes"] == len(backend.blobs.get(key))


# --------------------------------------------------------------- embedded


@pytest.fixture
def embedded_env(tmp_path, monkeypatch):
    for name in ("FUNCTION_FLOW_BACKEND", "FUNCTION_FLOW_BLOBS_DIR", "FUNCTION_FLOW_BUCKET",
                 "FUNCTION_FLOW_INLINE_LIMIT_BYTES", "GOOGLE_CLOUD_PROJECT",
                 "FIRESTORE_EMULATOR_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUNCTION_FLOW_DB", str(tmp_path / "state.db"))
    return tmp_path


@pytest.mark.parametrize("timeout", [None, 60.0], ids=["in-thread", "child-process"])
def test_a_5_mib_result_and_arguments_pass_between_tasks_embedded(embedded_env,
                                                                 timeout) -> None:
    job = passing_job("big_local", timeout)
    run = job.run(big_args(), timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.engine.store.get_tasks(run.run_id, ["consume"])[0].result == EXPECTED
    assert_stored_by_reference(job.backend, run.run_id)
    # The blobs are files beside the database, one folder per run.
    folder = embedded_env / "state-blobs" / "runs" / run.run_id
    assert sorted(os.listdir(folder)) == ["args", "tasks"]
    assert job.get_task_result("produce") == {"blob": "p" * FIVE_MIB}
    assert job.get_arguments() == big_args()


def test_the_blob_directory_is_a_setting(embedded_env, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_BLOBS_DIR", str(embedded_env / "elsewhere"))
    job = Job("moved")
    job.task(task_id="t")(lambda task, job: "m" * FIVE_MIB)
    run = job.run({}, timeout=60)
    assert os.listdir(embedded_env / "elsewhere" / "runs") == [run.run_id]
    assert not os.path.exists(embedded_env / "state-blobs")


def test_the_threshold_default_and_both_sides_of_it(embedded_env) -> None:
    """Up to the limit a value stays in its record, one byte more goes to a blob."""
    assert Settings.from_env().inline_limit_bytes == LIMIT == 256 * 1024
    job = Job("edge")
    # "x" * n is n + 2 bytes of JSON.
    job.task(task_id="under")(lambda task, job: "u" * (LIMIT - 2))
    job.task(task_id="over")(lambda task, job: "o" * (LIMIT - 1))
    run = job.run({"v": "a" * (LIMIT - 8)}, timeout=60)  # {"v":"..."} is 8 + n bytes
    assert run.status is RunStatus.SUCCEEDED, run.error
    records = {t.task_id: t.result for t in job.engine.store.get_tasks(run.run_id)}
    assert records["under"] == "u" * (LIMIT - 2)
    assert payloads.is_reference(records["over"])
    reference = records["over"][payloads.REFERENCE_FIELD]
    assert reference["bytes"] == LIMIT + 1
    assert set(reference) == {"key", "bytes", "sha256", "location"}  # what the README shows
    assert re.fullmatch(rf"runs/{run.run_id}/tasks/over/1-[\w-]+\.json", reference["key"])
    assert run.args == {"v": "a" * (LIMIT - 8)}
    assert job.get_task_result("over") == "o" * (LIMIT - 1)


def test_the_threshold_is_a_setting(embedded_env, monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_INLINE_LIMIT_BYTES", "100")
    job = Job("small_limit")
    job.task(task_id="t")(lambda task, job: ["y" * 97])  # ["..."] = 101 bytes
    run = job.run({}, timeout=60)
    assert payloads.is_reference(job.engine.store.get_tasks(run.run_id)[0].result)
    for bad in ("-1", "lots", str(MAX_VALUE_BYTES + 1)):
        monkeypatch.setenv("FUNCTION_FLOW_INLINE_LIMIT_BYTES", bad)
        with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_INLINE_LIMIT_BYTES"):
            Settings.from_env()


def test_a_missing_blob_is_a_clear_error_naming_run_task_and_key(embedded_env) -> None:
    job = passing_job("lost")
    bus = Outbox()
    engine = engine_for(job, job.backend.store, bus, blobs=job.backend.blobs)
    run_id, _ = engine.start({"blob": "small"})
    assert drain(engine, bus, limit=1) == ["succeeded"]  # produce
    reference = engine.store.get_tasks(run_id, ["produce"])[0].result
    key = reference[payloads.REFERENCE_FIELD]["key"]
    os.unlink(job.backend.blobs.location(key))
    # A body reading it fails its attempt, saying what is missing.
    assert drain(engine, bus) == ["failed"]
    consume = engine.store.get_tasks(run_id, ["consume"])[0]
    assert consume.status is TaskStatus.FAILED
    assert "PayloadMissingError" in consume.error and key in consume.error
    job.id = run_id
    with pytest.raises(PayloadMissingError) as raised:
        job.get_task_result("produce")
    message = str(raised.value)
    assert "'produce'" in message and run_id in message and key in message
    assert "missing" in message and "cleanup_expired_jobs" in message


def test_a_damaged_blob_is_refused(embedded_env) -> None:
    job = Job("damaged")
    job.task(task_id="t")(lambda task, job: "d" * FIVE_MIB)
    run = job.run({}, timeout=60)
    key = job.engine.store.get_tasks(run.run_id)[0].result[payloads.REFERENCE_FIELD]["key"]
    with open(job.backend.blobs.location(key), "wb") as handle:
        handle.write(json.dumps("e" * FIVE_MIB).encode())
    with pytest.raises(PayloadMissingError, match="SHA-256"):
        job.get_task_result("t")


# ----------------------------------------------------- engine, every store


class CheckingBlobs:
    """Wraps a blob store; remembers which keys exist (a LocalBlobs underneath)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.puts: list[str] = []

    def put(self, key: str, data: bytes) -> None:
        self.puts.append(key)
        self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


class CommitChecker:
    """Wraps a store: every reference a write records must name a blob that exists."""

    def __init__(self, store: Any, blobs: Any) -> None:
        self.store, self.blobs, self.checked = store, blobs, 0

    def _check(self, value: Any) -> None:
        if payloads.is_reference(value):
            self.blobs.get(value[payloads.REFERENCE_FIELD]["key"])  # raises if missing
            self.checked += 1

    def transact(self, fn, **kwargs):
        checker = self

        class Tx:
            def __init__(self, tx):
                self.tx = tx

            def update_task(self, run_id, task_id, fields):
                checker._check(fields.get("result"))
                self.tx.update_task(run_id, task_id, fields)

            def __getattr__(self, name):
                return getattr(self.tx, name)

        return self.store.transact(lambda tx: fn(Tx(tx)), **kwargs)

    def create_run(self, run, records, slots):
        self._check(run.args)
        return self.store.create_run(run, records, slots)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_blobs_are_written_before_the_commit_that_references_them(store, tmp_path) -> None:
    from function_flow.blobs.local import LocalBlobs

    blobs = CheckingBlobs(LocalBlobs(str(tmp_path / "blobs")))
    checked = CommitChecker(store, blobs)
    job = passing_job("ordered")
    bus = Outbox()
    engine = engine_for(job, checked, bus, blobs=blobs)
    run_id, _ = engine.start(big_args())
    assert drain(engine, bus) == ["succeeded", "succeeded"]
    assert checked.checked == 2  # the arguments and produce's result
    assert store.get_tasks(run_id, ["consume"])[0].result == EXPECTED


def test_a_duplicate_completion_never_touches_the_recorded_blob(store, tmp_path) -> None:
    """Each write gets a new key: a second outcome for the same attempt is stale,
    its own blob is deleted, and the one the record references is intact."""
    from function_flow.blobs.local import LocalBlobs

    blobs = LocalBlobs(str(tmp_path / "blobs"))
    job = Job("twice")
    job.task(task_id="t")(lambda task, job: "1" * FIVE_MIB)
    bus = Outbox()
    engine = engine_for(job, store, bus, blobs=blobs)
    run_id, _ = engine.start({})
    assert drain(engine, bus) == ["succeeded"]
    recorded = store.get_tasks(run_id, ["t"])[0].result
    assert engine.complete(run_id, "t", 1, ok=True, value="2" * FIVE_MIB) == "stale"
    assert store.get_tasks(run_id, ["t"])[0].result == recorded
    key = recorded[payloads.REFERENCE_FIELD]["key"]
    assert json.loads(blobs.get(key)) == "1" * FIVE_MIB
    folder = os.path.dirname(blobs.location(key))
    assert os.listdir(folder) == [os.path.basename(key)]  # the stale one's blob is gone


def test_a_repeated_start_keeps_the_first_arguments_blob_only(store, tmp_path) -> None:
    """The same large arguments again answer the run; other ones are refused
    (core/starts.py), and neither leaves a second blob."""
    from function_flow.blobs.local import LocalBlobs

    blobs = LocalBlobs(str(tmp_path / "blobs"))
    job = Job("again")
    job.task(task_id="t")(lambda task, job: None)
    engine = engine_for(job, store, Outbox(), blobs=blobs)
    engine.start({"blob": "1" * FIVE_MIB}, run_id="fixed-id")
    assert engine.start({"blob": "1" * FIVE_MIB}, run_id="fixed-id") == ("fixed-id", False)
    with pytest.raises(RunConflictError, match="already exists with other arguments"):
        engine.start({"blob": "2" * FIVE_MIB}, run_id="fixed-id")
    args = store.get_run("fixed-id").args
    assert engine.payloads.load(args, "args") == {"blob": "1" * FIVE_MIB}
    folder = os.path.dirname(blobs.location(args[payloads.REFERENCE_FIELD]["key"]))
    assert len(os.listdir(folder)) == 1


def test_without_a_blob_store_values_stay_inline_up_to_the_record_limit(store) -> None:
    """Google Cloud without FUNCTION_FLOW_BUCKET: over the threshold but under
    what a record holds stays inline; more fails the task, naming the setting."""
    job = Job("no_bucket")
    job.task(task_id="medium")(lambda task, job: "m" * (LIMIT * 2))
    job.task(task_id="large")(lambda task, job: "l" * (MAX_VALUE_BYTES + 10))
    bus = Outbox()
    engine = engine_for(job, store, bus)  # no blobs
    run_id, _ = engine.start({})
    assert sorted(drain(engine, bus)) == ["failed", "succeeded"]
    records = {t.task_id: t for t in store.get_tasks(run_id)}
    assert records["medium"].result == "m" * (LIMIT * 2)
    assert records["large"].status is TaskStatus.FAILED
    assert "FUNCTION_FLOW_BUCKET" in records["large"].error
    assert "more than the 900,000 a record can hold" in records["large"].error
    with pytest.raises(ValueError, match="FUNCTION_FLOW_BUCKET"):
        engine.start({"blob": "a" * (MAX_VALUE_BYTES + 10)})


class RecordingCaller:
    """The Caller port's boundary: keeps what a remote function would receive."""

    def __init__(self) -> None:
        self.sent: list[Request] = []

    def call(self, call, request, timeout):
        raise AssertionError("asynchronous only")

    def send(self, call, request) -> None:
        self.sent.append(request)


def test_remote_functions_get_the_real_arguments_and_large_answers_go_to_a_blob(
        store, tmp_path) -> None:
    from function_flow.blobs.local import LocalBlobs

    job = Job("remote_big")
    job.task(task_id="r", call=remote.PubSub("REMOTE_TOPIC"))(lambda task, job: {"go": 1})
    caller, bus = RecordingCaller(), Outbox()
    engine = engine_for(job, store, bus, caller=caller,
                        blobs=LocalBlobs(str(tmp_path / "blobs")))
    run_id, _ = engine.start(big_args())
    assert drain(engine, bus) == ["waiting"]
    (request,) = caller.sent
    assert request.job_args == big_args()
    assert request.function_flow_payload()["job_args"] == big_args()
    assert engine.complete_trigger(request.job_id, ok=True,
                                   value="answer" * FIVE_MIB) == "succeeded"
    result = store.get_tasks(run_id, ["r"])[0].result
    assert payloads.is_reference(result)
    assert engine.payloads.load(result, "r") == "answer" * FIVE_MIB


def test_a_value_shaped_like_a_reference_round_trips(store, tmp_path) -> None:
    """A user's dict that looks like a reference is stored as a blob, so what a
    record holds in that shape is always a reference."""
    from function_flow.blobs.local import LocalBlobs

    tricky = {payloads.REFERENCE_FIELD: {"key": "runs/other/secret.json"}}
    job = Job("tricky")
    job.task(task_id="t")(lambda task, job: tricky)
    bus = Outbox()
    engine = engine_for(job, store, bus, blobs=LocalBlobs(str(tmp_path / "b")))
    run_id, _ = engine.start({})
    drain(engine, bus)
    stored = store.get_tasks(run_id, ["t"])[0].result
    assert stored[payloads.REFERENCE_FIELD]["key"].startswith(payloads.run_prefix(run_id))
    assert engine.payloads.load(stored, "t") == tricky


# ------------------------------------------------------------- cleanup


def start_old_and_recent(job: Job, backend: backends.Backend) -> tuple[str, str]:
    """A run started 40 days ago and one 2 days ago, each with a large argument
    blob and a large result blob."""
    run_ids = []
    for days in (40, 2):
        bus = Outbox()
        engine = Engine(job, backend.store, bus, blobs=backend.blobs,
                        clock=lambda days=days: time.time() - days * 86400,
                        lease_check_messages=False)
        run_id, _ = engine.start({"blob": "c" * (LIMIT + 1)})
        assert drain(engine, bus) == ["succeeded"]
        run_ids.append(run_id)
    return run_ids[0], run_ids[1]


def blob_keys(backend: backends.Backend, run_id: str) -> list[str]:
    run = backend.store.get_run(run_id)
    task = backend.store.get_tasks(run_id, ["t"])[0]
    return [v[payloads.REFERENCE_FIELD]["key"] for v in (run.args, task.result)]


def cleanup_job() -> Job:
    job = Job(f"cleanup_{uuid.uuid4().hex[:6]}")
    job.task(task_id="t")(lambda task, job: "r" * (LIMIT + 1))
    return job


def assert_cleanup_deletes_blobs_with_their_run(job: Job) -> None:
    backend = job.backend
    old, recent = start_old_and_recent(job, backend)
    old_keys, recent_keys = blob_keys(backend, old), blob_keys(backend, recent)
    assert tasks.cleanup_expired_jobs(job=job, max_expire_days=30) == 1
    assert backend.store.get_run(old) is None
    for key in old_keys:
        with pytest.raises(BlobNotFoundError):
            backend.blobs.get(key)
    for key in recent_keys:
        backend.blobs.get(key)


def test_cleanup_expired_jobs_deletes_the_blobs_of_the_runs_it_deletes(embedded_env) -> None:
    job = cleanup_job()
    assert_cleanup_deletes_blobs_with_their_run(job)
    # Without job=, the settings choose the same store and blob directory.
    backend = job.backend
    old, _ = start_old_and_recent(job, backend)
    keys = blob_keys(backend, old)
    assert tasks.cleanup_expired_jobs(max_expire_days=30) == 1
    with pytest.raises(BlobNotFoundError):
        backend.blobs.get(keys[0])


def test_a_failed_start_leaves_no_blob(embedded_env, store, tmp_path) -> None:
    from function_flow.blobs.local import LocalBlobs

    class Down(Bus):
        def publish(self, message, delay=0.0):
            raise RuntimeError("bus down")

    blobs = LocalBlobs(str(tmp_path / "blobs"))
    job = Job("failed_start")
    job.task(task_id="t")(lambda task, job: None)
    engine = engine_for(job, store, Down(), blobs=blobs)
    with pytest.raises(RuntimeError, match="bus down"):
        engine.start(big_args(), run_id="doomed")
    assert store.get_run("doomed") is None
    assert not os.path.exists(tmp_path / "blobs" / "runs" / "doomed")


# ------------------------------------------------------------------- gcp


def test_the_gcp_backend_uses_the_bucket_setting(monkeypatch) -> None:
    from function_flow.blobs.gcs import GcsBlobs

    assert backends.gcp(Settings(backend="gcp", hmac_key=TEST_HMAC_KEY)).blobs is None
    blobs = backends.gcp(Settings(backend="gcp", bucket="gs://b/dir",
                                  hmac_key=TEST_HMAC_KEY)).blobs
    assert isinstance(blobs, GcsBlobs) and blobs.location("k") == "gs://b/dir/k"
    monkeypatch.setenv("FUNCTION_FLOW_BUCKET", "gs://named")
    assert Settings.from_env().bucket == "gs://named"


def drive_over_pubsub(job: Job, args: dict[str, Any], topic: str) -> str:
    """Start a run and handle its messages as the scheduler function would."""
    from google.cloud import pubsub_v1

    project = "function-flow-local"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    subscription = subscriber.subscription_path(project, topic + "-pull")
    publisher.create_topic(request={"name": topic_path})
    subscriber.create_subscription(request={"name": subscription, "topic": topic_path})
    run_id = job.start(args)
    deadline = time.monotonic() + 120
    try:
        while not job.engine.run_status(run_id).status.is_final:
            assert time.monotonic() < deadline, "the run did not end"
            response = subscriber.pull(request={"subscription": subscription,
                                                "max_messages": 10}, timeout=30)
            for received in response.received_messages:
                job.engine.handle(Message.from_json(received.message.data))
                subscriber.acknowledge(request={"subscription": subscription,
                                                "ack_ids": [received.ack_id]})
    finally:
        subscriber.close()
    return run_id


def test_a_5_mib_result_and_arguments_pass_between_tasks_on_firestore_and_gcs(
        gcp_env, gcs_bucket, monkeypatch) -> None:
    from google.cloud import storage

    topic = f"schedule-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FUNCTION_FLOW_SCHEDULE_TOPIC", topic)
    job = passing_job("big_gcp")
    assert job.backend.kind == "gcp"
    run_id = drive_over_pubsub(job, big_args(), topic)
    run = job.engine.run_status(run_id)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.engine.store.get_tasks(run_id, ["consume"])[0].result == EXPECTED
    assert_stored_by_reference(job.backend, run_id)
    # The objects are in the bucket, under the run's folder.
    names = [blob.name for blob in storage.Client().list_blobs(
        gcs_bucket, prefix=payloads.run_prefix(run_id))]
    assert len(names) == 2
    reference = job.engine.store.get_tasks(run_id, ["produce"])[0].result
    assert reference[payloads.REFERENCE_FIELD]["location"].startswith(f"gs://{gcs_bucket}/")
    job.backend.close()


def test_cleanup_deletes_the_blobs_in_the_bucket(gcp_env, gcs_bucket) -> None:
    from google.cloud import storage

    job = cleanup_job()
    assert job.backend.kind == "gcp"
    assert_cleanup_deletes_blobs_with_their_run(job)
    assert len(list(storage.Client().list_blobs(gcs_bucket))) == 2  # the recent run's


# ------------------------------------------------- the command line, dev

WORKFLOW = os.path.join(os.path.dirname(__file__), "workflows", "large.py")
SHOWN = re.compile(r"^\s+echo: <5,242,8\d\d bytes of JSON in (\S+)>$", re.M)


def test_function_flow_run_shows_a_large_result_by_size_and_location(tmp_path) -> None:
    from cli_runs import flow, run_id_of

    result = flow(tmp_path, "run", WORKFLOW, "--arg", "n=3")
    assert result.returncode == 0, result.stderr
    assert re.search(r'^\s+consume: \{"length": 5242880, "n": 3, ', result.stdout, re.M), \
        result.stdout
    shown = SHOWN.search(result.stdout)
    assert shown, result.stdout
    path = shown.group(1)
    assert path.startswith(str(tmp_path / ".function_flow" / "function_flow-blobs" / "runs"))
    with open(path, encoding="ascii") as handle:
        assert len(json.load(handle)["blob"]) == FIVE_MIB
    as_json = json.loads(flow(tmp_path, "status", run_id_of(result.stdout), "--json").stdout)
    [echo] = [t for t in as_json["tasks"] if t["task_id"] == "echo"]
    reference = echo["result"]["function_flow_blob"]  # the reference, not 5 MiB of JSON
    assert reference["location"] == path and reference["bytes"] > FIVE_MIB


def test_function_flow_status_shows_large_arguments_by_size(embedded_env) -> None:
    from cli_runs import flow

    job = Job("args_shown")
    job.task(task_id="t")(lambda task, job: None)
    run = job.run(big_args(), timeout=60)
    shown = flow(embedded_env, "status", run.run_id,
                 env={"FUNCTION_FLOW_DB": str(embedded_env / "state.db")})
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"args <5,242,8\d\d bytes of JSON in \S+state-blobs/runs/", shown.stdout), \
        shown.stdout
    assert "aaaa" not in shown.stdout


@pytest.mark.timeout(240)
@pytest.mark.usefixtures("gcloud_available")
def test_function_flow_dev_passes_a_5_mib_result_through_the_storage_emulator(
        tmp_path) -> None:
    from test_dev import assert_all_stopped, dev_log, run_dev

    result = run_dev(tmp_path, WORKFLOW, "--arg", "n=4")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r'^\s+consume: \{"length": 5242880, "n": 4, ', result.stdout, re.M), \
        result.stdout
    shown = SHOWN.search(result.stdout)
    assert shown and shown.group(1).startswith("gs://function-flow-dev/"), result.stdout
    assert_all_stopped(dev_log(tmp_path))
