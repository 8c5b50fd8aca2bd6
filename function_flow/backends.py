"""Assemble a store and a bus into a backend, as settings say.

This is the only module that knows every adapter; the engine sees ports.

- embedded: SQLite (store/sqlite.py) plus the in-process bus (bus/local.py).
- gcp: Firestore (store/firestore.py) plus Pub/Sub (bus/pubsub.py), with
  Firestore timers (store/firestore_timers.py) for delayed messages.

Building a backend makes no network call: the Firestore and Pub/Sub clients
are created on first use, so defining a Job (at import time of a workflow
file, or in a Cloud Function's cold start) never needs credentials, and
google.cloud is imported only by programs that use it.

Project of the gcp backend, in order: settings.project (GOOGLE_CLOUD_PROJECT
and friends), the Job's `project` argument, "function-flow-local" when an
emulator is configured, else Application Default Credentials (resolved by
each client on first use). A Job built with an upstream-style
`db=firestore.Client()` or `pubsub=pubsub_v1.PublisherClient()` keeps using
those clients.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import socket
from typing import Any

from function_flow.config import DEFAULT_PROJECT, Settings
from function_flow.core.engine import Engine, Workflow
from function_flow.core.ports import Bus, Executor, InlineExecutor, Store

DEFAULT_SCHEDULE_TOPIC = "SCHEDULE"


@dataclasses.dataclass
class Backend:
    """A store plus a bus, and how the engine should use them."""

    kind: str
    store: Store
    bus: Bus
    #: Whether the bus delivers delayed messages cheaply (local bus: yes;
    #: Pub/Sub: no, the poller scans for expired leases instead).
    lease_check_messages: bool = True
    #: Where the store lives, for messages that must say which store was
    #: read ("the embedded store .function_flow/function_flow.db").
    description: str = ""
    #: Runs task bodies; the embedded one stops a body at its timeout.
    executor: Executor = dataclasses.field(default_factory=InlineExecutor)
    #: Where bodies cannot be stopped (Cloud Functions): how long after an
    #: overrunning attempt started its retry may begin (the platform's
    #: request timeout has ended it by then). 0 where bodies are stopped.
    retry_after_overrun: float = 0.0

    def engine(self, workflow: Workflow) -> Engine:
        engine = Engine(workflow, self.store, self.bus,
                        lease_check_messages=self.lease_check_messages,
                        executor=self.executor,
                        retry_after_overrun=self.retry_after_overrun)
        self.bus.subscribe(engine.handle)
        return engine

    def close(self) -> None:
        self.bus.close()
        self.store.close()


def embedded(db_path: str | None = None, workers: int | None = None) -> Backend:
    """SQLite store plus the in-process bus: no cloud account needed."""
    from function_flow.bus.local import LocalBus
    from function_flow.store.sqlite import SqliteStore

    settings = Settings.from_env()
    path = db_path or settings.db_path
    bus = LocalBus(workers or settings.workers)
    backend = Backend("embedded", SqliteStore(path), bus,
                      description=f"the embedded store {path}")
    # A script that calls job.start() and returns should still see its run
    # through, as it would on Cloud Functions: wait for the bus at exit.
    atexit.register(bus.wait_idle)
    return backend


def from_settings(settings: Settings, job: Any = None) -> Backend:
    """The backend the settings ask for (embedded unless cloud settings exist)."""
    if settings.backend == "gcp":
        return gcp(settings, job)
    return embedded(settings.db_path, settings.workers)


# ------------------------------------------------------------- Google Cloud


def project_for(settings: Settings, job: Any = None) -> str | None:
    """The project to use, or None to let the clients ask google.auth."""
    project = settings.project or getattr(job, "project", None)
    if project:
        return project
    if os.environ.get("FIRESTORE_EMULATOR_HOST") or os.environ.get("PUBSUB_EMULATOR_HOST"):
        return DEFAULT_PROJECT
    return None


def firestore_store(settings: Settings, job: Any = None) -> Store:
    """The Firestore store the settings (and an upstream-style Job(db=...)) ask for."""
    from function_flow.store.firestore import FirestoreStore

    client = getattr(job, "db", None)
    if client is not None and not hasattr(client, "collection"):
        client = None  # not a Firestore client: ignore it, as Function Flow would fail
    return FirestoreStore(project=project_for(settings, job),
                          database=settings.firestore_database,
                          prefix=settings.collection_prefix, client=client)


def describe_firestore(settings: Settings, job: Any = None) -> str:
    """Which Firestore a store of these settings reads, in words."""
    where = os.environ.get("FIRESTORE_EMULATOR_HOST")
    place = f"the Firestore emulator at {where}" if where else "Firestore"
    project = project_for(settings, job) or "the default project of your credentials"
    prefix = f", collection prefix {settings.collection_prefix!r}" \
        if settings.collection_prefix else ""
    return (f"{place} (project {project}, database {settings.firestore_database}"
            f"{prefix})")


def gcp(settings: Settings, job: Any = None) -> Backend:
    """Firestore for state, Pub/Sub for scheduling messages, Firestore timers for delays."""
    from function_flow.bus.pubsub import PubSubBus
    from function_flow.store.firestore_timers import FirestoreTimers

    state = firestore_store(settings, job)
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
    return Backend("gcp", state, bus, lease_check_messages=False,
                   description=describe_firestore(settings, job),
                   retry_after_overrun=settings.function_timeout)


def pid_alive(owner: str) -> bool:
    """Whether the process named "host:pid" still runs (on this host)."""
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
