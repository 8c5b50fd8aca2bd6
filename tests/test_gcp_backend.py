"""The GCP backend as assembled by backends.py: Firestore + Pub/Sub on the emulators."""

from __future__ import annotations

import uuid

import pytest

from function_flow.backends import from_settings
from function_flow.config import Settings
from function_flow.core.messages import Message
from function_flow.core.records import RunStatus
from function_flow.errors import ConfigurationError
from function_flow.tasks import Job
from signatures import TEST_HMAC_KEY

CLOUD_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GCP_PROJECT",
                   "FIRESTORE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST")


def test_defining_a_gcp_job_needs_no_credentials(monkeypatch, tmp_path) -> None:
    for name in CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))
    job = Job("offline")
    backend = from_settings(Settings(backend="gcp", hmac_key=TEST_HMAC_KEY), job)
    assert backend.kind == "gcp" and backend.lease_check_messages is False
    with pytest.raises(ConfigurationError, match="FIRESTORE_EMULATOR_HOST"):
        backend.store.get_run("anything")


def test_settings_choose_database_prefix_topic_and_emulator_project(gcp_env) -> None:
    settings = Settings(backend="gcp", project=None, collection_prefix="p_",
                        schedule_topic="T1", hmac_key=TEST_HMAC_KEY)
    backend = from_settings(settings, Job("j", schedule_topic="ignored"))
    assert backend.store.prefix == "p_"
    assert backend.store.project == "function-flow-local"
    assert backend.bus.topic == "T1"
    assert from_settings(Settings(backend="gcp", hmac_key=TEST_HMAC_KEY),
                         Job("j", schedule_topic="MINE")).bus.topic == "MINE"


def test_upstream_style_db_client_is_reused(firestore_env) -> None:
    from google.cloud import firestore

    client = firestore.Client(project="function-flow-local")
    backend = from_settings(Settings(backend="gcp", hmac_key=TEST_HMAC_KEY), Job("j", db=client))
    assert backend.store.client is client


def test_upstream_style_clients_or_project_choose_google_cloud(monkeypatch, tmp_path) -> None:
    """Function Flow users pass `db=firestore.Client()`: no variable needed."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import firestore, pubsub_v1

    for name in CLOUD_VARIABLES + ("FUNCTION_FLOW_BACKEND", "K_SERVICE", "FUNCTION_TARGET"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FUNCTION_FLOW_DB", str(tmp_path / "local.db"))
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
    client = firestore.Client(project="p", credentials=AnonymousCredentials())
    publisher = pubsub_v1.PublisherClient(credentials=AnonymousCredentials())

    with_db = Job("with_db", db=client, pubsub=publisher)
    assert with_db.backend.kind == "gcp"
    assert with_db.backend.store.client is client
    assert with_db.backend.bus.publisher is publisher
    assert Job("with_project", project="p").backend.kind == "gcp"
    assert Job("plain").backend.kind == "embedded"
    monkeypatch.setenv("FUNCTION_FLOW_BACKEND", "embedded")  # an explicit choice wins
    assert Job("forced", db=client).backend.kind == "embedded"


def test_cleanup_expired_jobs_with_an_upstream_db_client_cleans_firestore(
        firestore_env, firestore_store, monkeypatch) -> None:
    import time

    from google.cloud import firestore

    from function_flow import tasks
    from function_flow.core.engine import Engine

    job = Job("cleanup_fs")
    job.task("a")(lambda task, job: None)

    from function_flow.core.ports import Bus

    class Quiet(Bus):
        def publish(self, message, delay=0.0):
            pass

    def start_days_ago(days: float) -> str:
        engine = Engine(job, firestore_store, Quiet(),
                        clock=lambda: time.time() - days * 86400)
        return engine.start({})[0]

    old, recent = start_days_ago(40), start_days_ago(2)
    client = firestore.Client(project="function-flow-local")
    # Only the client says "Firestore" now (the collection prefix stays).
    for name in CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)

    assert tasks.cleanup_expired_jobs(db=client, max_expire_days=30) == 1
    assert firestore_store.get_run(old) is None
    assert firestore_store.get_run(recent) is not None


def test_a_dag_runs_over_pubsub_and_firestore(gcp_env, monkeypatch) -> None:
    """Messages travel through the Pub/Sub emulator; handling them as the
    scheduler function would drives the run to SUCCEEDED in Firestore."""
    from google.cloud import pubsub_v1

    topic = f"schedule-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FUNCTION_FLOW_SCHEDULE_TOPIC", topic)
    job = Job("gcp_dag", max_parallel_tasks=2)

    @job.task("a")
    def a(task, job):
        return job.get_arguments()["n"]

    for i in range(3):
        job.task(f"b{i}", deps=["a"])(lambda task, job, i=i: job.get_task_result("a") + i)

    @job.task("c", deps=["b0", "b1", "b2"])
    def c(task, job):
        return sum(job.get_task_result(f"b{i}") for i in range(3))

    assert job.backend.kind == "gcp"
    project = "function-flow-local"
    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    subscription = subscriber.subscription_path(project, topic + "-pull")
    publisher.create_topic(request={"name": topic_path})
    subscriber.create_subscription(request={"name": subscription, "topic": topic_path})

    run_id = job.start({"n": 5})
    handled = []
    while not job.engine.run_status(run_id).status.is_final:
        response = subscriber.pull(request={"subscription": subscription,
                                            "max_messages": 10}, timeout=30)
        for received in response.received_messages:
            message = Message.from_json(received.message.data)
            handled.append((message.task_id, job.engine.handle(message)))
            subscriber.acknowledge(request={"subscription": subscription,
                                            "ack_ids": [received.ack_id]})
    run = job.engine.run_status(run_id)
    assert run.status is RunStatus.SUCCEEDED, run.error
    results = {t.task_id: t.result for t in job.engine.task_records(run_id)}
    assert results == {"a": 5, "b0": 5, "b1": 6, "b2": 7, "c": 18}
    assert sorted(t for t, verdict in handled if verdict == "succeeded") == \
        ["a", "b0", "b1", "b2", "c"]
    assert job.backend.store.get_run(run_id).run_id == run_id
    job.backend.close()
    subscriber.close()
