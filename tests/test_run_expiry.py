"""Old runs expire in Firestore: every document of a run carries `expire_at`.

`function-flow deploy` enables a TTL policy on `expire_at` for each
collection group in store/expiry.py. Firestore's TTL deletes no
subcollection, so the test walks every collection the store wrote for a run
and checks each document, and that no collection is left without a policy.
"""

from __future__ import annotations

import datetime
import time

from function_flow import backends, futures
from function_flow.config import Settings
from function_flow.core.engine import Engine
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.store import expiry
from function_flow.store.firestore import FirestoreStore
from function_flow.tasks import Job

PROJECT = "function-flow-local"


class Collect(Bus):
    """A bus that keeps what the engine publishes, to be handled in turn."""

    def __init__(self) -> None:
        self.messages: list[Message] = []

    def publish(self, message: Message, delay: float = 0.0) -> None:
        if not delay:  # a retry's backoff: none here
            self.messages.append(message)


def expiring_job() -> Job:
    """Two parallel tasks under one slot (slot documents), a context value,
    and a task left waiting for an external event (a trigger document)."""
    job = Job("expiring", max_parallel_tasks=1)

    @job.task("a")
    def a(task, job):
        job.context.set("rows", 3)
        return 1

    job.task("b")(lambda task, job: 2)
    job.task("wait", deps=["a", "b"])(lambda task, job: futures.BigQueryFuture("bq-job-1"))
    return job


def run_until_waiting(job: Job, store: FirestoreStore) -> str:
    bus = Collect()
    engine = Engine(job, store, bus, lease_check_messages=False,  # as deployed
                    clock=lambda: time.time() - 3600)  # started an hour ago
    run_id, _ = engine.start({"n": 1})
    while bus.messages:
        engine.handle(bus.messages.pop(0))
    assert store.get_trigger("bq-job-1") is not None  # the wait is recorded
    assert store.first_delivery("remote:job-1", run_id)
    return run_id


def documents_of(store: FirestoreStore, run_id: str) -> dict[str, list[dict]]:
    """{collection group: documents} of every collection holding this run's data."""
    client, found = store.client, {}
    for collection in client.collections():
        if collection.id.startswith(store.prefix):
            docs = [d.to_dict() for d in collection.stream()
                    if d.id == run_id or (d.to_dict() or {}).get("run_id") == run_id]
            if docs:
                found[collection.id] = docs
    for sub in client.collection(f"{store.prefix}runs").document(run_id).collections():
        found[sub.id] = [d.to_dict() for d in sub.stream()]
    return found


def test_every_document_of_a_run_expires_never_before_the_run(firestore_env,
                                                                 collection_prefix,
                                                                 monkeypatch) -> None:
    monkeypatch.setenv("FUNCTION_FLOW_RUN_TTL_DAYS", "7")
    job = expiring_job()
    store = job.backend.store  # as a deployed function builds it: from the settings
    assert isinstance(store, FirestoreStore) and store.ttl_days == 7
    try:
        run_id = run_until_waiting(job, store)
        documents = documents_of(store, run_id)
        run = store.get_run(run_id)
    finally:
        job.backend.close()
    # Nothing is written where no TTL policy looks (timers are deleted once sent).
    assert set(documents) == set(expiry.collection_groups(collection_prefix))
    run_doc, = documents[f"{collection_prefix}runs"]
    started = datetime.datetime.fromtimestamp(run.created_at, datetime.timezone.utc)
    assert run_doc[expiry.FIELD] == started + datetime.timedelta(days=7)
    for group, docs in documents.items():
        for doc in docs:
            assert isinstance(doc.get(expiry.FIELD), datetime.datetime), (group, doc)
            assert doc[expiry.FIELD] >= run_doc[expiry.FIELD], (group, doc)


def test_without_a_ttl_documents_carry_no_expiry(firestore_env, collection_prefix) -> None:
    store = backends.firestore_store(Settings.from_env())
    try:
        assert store.first_delivery("remote:job-2", "some-run")
        doc, = store.client.collection(f"{collection_prefix}deliveries").stream()
    finally:
        store.close()
    assert doc.to_dict() == {"key": "remote:job-2", "run_id": "some-run"}
