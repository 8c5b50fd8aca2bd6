"""Assemble a store and a bus into a backend, as settings say.

This is the only module that knows every adapter; the engine sees ports.

- embedded: SQLite (store/sqlite.py) plus the in-process bus (bus/local.py),
  large values in a directory beside the database (blobs/local.py).
- gcp: Firestore (store/firestore.py) plus Pub/Sub (bus/pubsub.py), with
  Firestore timers (store/firestore_timers.py) for delayed messages, and
  large values in the FUNCTION_FLOW_BUCKET bucket (blobs/gcs.py), if set.
  It signs every message, so it needs FUNCTION_FLOW_HMAC_KEY (signing.py).

Building a backend makes no network call: the Firestore and Pub/Sub clients
are created on first use, so defining a Job (at import time of a workflow
file, or in a Cloud Function's cold start) never needs credentials, and
google.cloud is imported only by programs that use it.

For the command line, selection.py opens the store the settings select
without a job or a bus, and checks that it answers.

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
from typing import TYPE_CHECKING, Any, Callable

from function_flow.config import DEFAULT_PROJECT, Settings, blobs_dir_for
from function_flow.core.engine import Engine, Workflow
from function_flow.core.payloads import DEFAULT_INLINE_LIMIT_BYTES
from function_flow.core.ports import (Blobs, Bus, Caller, Executor, InlineExecutor, Store,
                                      Watcher)
from function_flow.remote.caller import Dispatcher
from function_flow.signing import Keys
from function_flow.tracing import configure as configure_tracing

if TYPE_CHECKING:
    from function_flow.remote.hosting import LocalHost

DEFAULT_SCHEDULE_TOPIC = "SCHEDULE"
DEFAULT_EVENTS_TOPIC = "SCHEDULE_EXTERNAL_EVENTS"


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
    #: Calls the remote functions of remote tasks; None: none can be called.
    caller: Caller | None = None
    #: The remote functions hosted in this process (embedded backend only).
    hosting: LocalHost | None = None
    #: Where results and arguments over `inline_limit` bytes go (core/payloads.py);
    #: None: they stay in their records, up to what a record holds.
    blobs: Blobs | None = None
    inline_limit: int = DEFAULT_INLINE_LIMIT_BYTES
    #: The engine of each job on this backend, by job name (the embedded
    #: callback server completes attempts with them).
    engines: dict[str, Engine] = dataclasses.field(default_factory=dict)
    #: Called by close(): servers the backend started (the callback server).
    closers: list[Callable[[], None]] = dataclasses.field(default_factory=list)
    #: Looks for the Cloud Storage objects GCSFutures wait for; None: the
    #: poller does not look (notifications still complete them).
    watcher: Watcher | None = None
    #: Seconds between two checks of one prefix, and most checks per poll.
    watch_every: float = 10.0
    watch_batch: int = 100
    #: The keys that sign and verify internal messages (signing.py); None:
    #: the settings' keys, looked up where one is needed.
    keys: Keys | None = None

    def engine(self, workflow: Workflow) -> Engine:
        engine = Engine(workflow, self.store, self.bus,
                        lease_check_messages=self.lease_check_messages,
                        executor=self.executor,
                        retry_after_overrun=self.retry_after_overrun,
                        caller=self.caller, blobs=self.blobs,
                        inline_limit=self.inline_limit, watcher=self.watcher,
                        watch_every=self.watch_every, watch_batch=self.watch_batch)
        self.bus.subscribe(engine.handle)
        self.engines[workflow.name] = engine
        if self.hosting is not None:
            self.hosting.attach(engine)
        return engine

    def close(self) -> None:
        for close in self.closers:
            close()
        if self.hosting is not None:
            self.hosting.close()
        self.bus.close()
        self.store.close()


def remote_adapters(settings: Settings, kind: str, backend: Backend | None = None,
                    keys: Keys | None = None) -> dict[str, Caller]:
    """The adapters that call remote functions (function_flow/remote/), by Call.kind.

    `kind` is the backend's ("embedded" or "gcp"): on the embedded backend a
    workflow file's own remote functions run in this process (`backend.hosting`),
    and, unless FUNCTION_FLOW_CALLBACK_URL names one, asynchronous answers
    arrive at a callback server this process starts on first use (`backend`
    serves them). `keys` (default: the backend's) sign what they send.
    """
    from function_flow.remote.http import HttpCaller
    from function_flow.remote.openfaas import OpenFaaSCaller
    from function_flow.remote.pubsub import PubSubSender

    keys = keys or (backend.keys if backend is not None else None)
    # A process's own random key signs only what comes back to this process.
    shared = keys if keys is not None and not keys.ephemeral else None
    callback_base: Callable[[], str | None] = lambda: settings.callback_url
    callback_keys = shared
    if kind == "embedded" and backend is not None and not settings.callback_url:
        from function_flow.local.callback_server import LocalCallbackServer

        server = LocalCallbackServer(backend)
        backend.closers.append(server.close)
        callback_base, callback_keys = server.url, keys
    hosting = backend.hosting if backend is not None else None
    adapters: dict[str, Caller] = {
        "pubsub": hosting if hosting is not None
        else PubSubSender(project_for(settings), keys=shared),
        "openfaas": OpenFaaSCaller(settings, callback_base, keys=shared,
                                   callback_keys=callback_keys),
        "http": HttpCaller(keys=shared),
    }
    return adapters


def gcs_watching(settings: Settings, job: Any = None) -> dict[str, Any]:
    """The Backend fields that make the poller look for GCSFutures' objects."""
    from function_flow.services.gcs import GcsWatcher

    return {"watcher": GcsWatcher(project=project_for(settings, job)),
            "watch_every": settings.gcs_poll_interval, "watch_batch": settings.gcs_poll_batch}


def embedded(db_path: str | None = None, workers: int | None = None,
             settings: Settings | None = None, *,
             synchronous: str | None = None) -> Backend:
    """SQLite store plus the in-process bus: no cloud account needed.

    synchronous: "normal" (default; survives kill -9) or "full" (an fsync
    per commit, survives a power cut); None: FUNCTION_FLOW_SQLITE_SYNCHRONOUS.
    """
    from function_flow.blobs.local import LocalBlobs
    from function_flow.bus.local import LocalBus
    from function_flow.local.child import ChildProcessExecutor
    from function_flow.remote.hosting import LocalHost
    from function_flow.store.sqlite import SqliteStore

    settings = settings or Settings.from_env()
    configure_tracing(settings)  # FUNCTION_FLOW_TRACING, once per process
    path = db_path or settings.db_path
    synchronous = synchronous or settings.sqlite_synchronous
    # At FULL a commit is an fsync: workers woken at once commit together
    # (one fsync for the group); at NORMAL, one worker at a time is faster.
    bus = LocalBus(workers or settings.workers,
                   eager=str(synchronous).lower() == "full")
    store = SqliteStore(path, synchronous)
    hosting = LocalHost(settings.project or DEFAULT_PROJECT,
                        settings.events_topic or DEFAULT_EVENTS_TOPIC, bus=bus)
    backend = Backend("embedded", store, bus,
                      description=describe_embedded(path),
                      keys=Keys.for_process(settings),
                      hosting=hosting,
                      blobs=LocalBlobs(settings.blobs_dir or blobs_dir_for(path)),
                      inline_limit=settings.inline_limit_bytes,
                      # A body with a timeout runs in a child killed at it.
                      executor=ChildProcessExecutor(store) if hasattr(os, "fork")
                      else InlineExecutor(), **gcs_watching(settings))
    backend.caller = Dispatcher(remote_adapters(settings, "embedded", backend))
    # A script that calls job.start() and returns should still see its run
    # through, as it would on Cloud Functions: wait for the bus at exit.
    atexit.register(bus.wait_idle)
    return backend


def from_settings(settings: Settings, job: Any = None) -> Backend:
    """The backend the settings ask for (embedded unless cloud settings exist)."""
    if settings.backend == "gcp":
        return gcp(settings, job)
    return embedded(settings.db_path, settings.workers, settings)


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
                          prefix=settings.collection_prefix, client=client,
                          ttl_days=settings.run_ttl_days)


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

    keys = Keys.from_settings(settings)  # every message is signed: no key, no backend
    configure_tracing(settings)
    state = firestore_store(settings, job)
    topic = (settings.schedule_topic or getattr(job, "schedule_topic", None)
             or DEFAULT_SCHEDULE_TOPIC)
    timers = FirestoreTimers(lambda: state.client, prefix=settings.collection_prefix)
    publisher = getattr(job, "pubsub", None)
    if publisher is not None and not hasattr(publisher, "publish"):
        publisher = None  # not a PublisherClient: build our own
    bus = PubSubBus(topic, project=project_for(settings, job), timers=timers,
                    publisher=publisher, keys=keys)
    # Pub/Sub cannot deliver a message hours later cheaply; the poller scans
    # for expired leases instead of the engine sending lease-check messages.
    return Backend("gcp", state, bus, lease_check_messages=False,
                   description=describe_firestore(settings, job),
                   caller=Dispatcher(remote_adapters(settings, "gcp", keys=keys)),
                   keys=keys,
                   retry_after_overrun=settings.function_timeout,
                   blobs=gcs_blobs(settings, job), inline_limit=settings.inline_limit_bytes,
                   **gcs_watching(settings, job))


def gcs_blobs(settings: Settings, job: Any = None) -> Blobs | None:
    """The bucket of large values, when FUNCTION_FLOW_BUCKET names one."""
    if not settings.bucket:
        return None
    from function_flow.blobs.gcs import GcsBlobs

    return GcsBlobs(settings.bucket, project=project_for(settings, job))


def describe_embedded(path: str) -> str:
    """Which SQLite file the embedded backend reads, in words."""
    return f"the embedded store {path}"
