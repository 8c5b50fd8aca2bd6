"""Assemble the Google Cloud backend: Firestore store + Pub/Sub bus.

Called lazily by backends.from_settings when settings.backend == "gcp", so
google.cloud is imported only by programs that use it. Building the backend
makes no network call: the Firestore and Pub/Sub clients are created on
first use, so defining a Job (at import time of a workflow file, or in a
Cloud Function's cold start) never needs credentials.

Project, in order: settings.project (GOOGLE_CLOUD_PROJECT and friends), the
Job's `project` argument, "function-flow-local" when an emulator is
configured, else Application Default Credentials (resolved by each client
on first use). A Job built with an upstream-style `db=firestore.Client()` or
`pubsub=pubsub_v1.PublisherClient()` keeps using those clients.
"""

from __future__ import annotations

import os
from typing import Any

from function_flow.backends import Backend
from function_flow.config import Settings
from function_flow.emulators import DEFAULT_PROJECT
from function_flow.store.firestore import FirestoreStore

DEFAULT_SCHEDULE_TOPIC = "SCHEDULE"


def project_for(settings: Settings, job: Any = None) -> str | None:
    """The project to use, or None to let the clients ask google.auth."""
    project = settings.project or getattr(job, "project", None)
    if project:
        return project
    if os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"):
        return DEFAULT_PROJECT
    return None


def store(settings: Settings, job: Any = None) -> FirestoreStore:
    """The Firestore store the settings (and an upstream-style Job(db=...)) ask for."""
    client = getattr(job, "db", None)
    if client is not None and not hasattr(client, "collection"):
        client = None  # not a Firestore client: ignore it, as Function Flow would fail
    return FirestoreStore(project=project_for(settings, job),
                          database=settings.firestore_database,
                          prefix=settings.collection_prefix, client=client)


def backend(settings: Settings, job: Any = None) -> Backend:
    """Firestore for state, Pub/Sub for scheduling messages, Firestore timers for delays."""
    from function_flow.bus.pubsub import PubSubBus
    from function_flow.timers import FirestoreTimers

    state = store(settings, job)
    topic = (settings.schedule_topic or getattr(job, "schedule_topic", None)
             or DEFAULT_SCHEDULE_TOPIC)
    timers = FirestoreTimers(lambda: state.client, prefix=settings.collection_prefix)
    publisher = getattr(job, "pubsub", None)
    if publisher is not None and not hasattr(publisher, "publish"):
        publisher = None  # not a PublisherClient: build our own
    bus = PubSubBus(topic, project=project_for(settings, job), timers=timers,
                    publisher=publisher)
    # Pub/Sub cannot deliver a message hours later cheaply; the poller scans
    # for expired leases instead of the engine sending lease-check messages.
    return Backend("gcp", state, bus, lease_check_messages=False)
