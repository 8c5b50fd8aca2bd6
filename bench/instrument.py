"""Count Firestore document operations and Pub/Sub publishes at the RPC layer.

One method for both sides of the benchmark (ours and Google's Function Flow
0.0.7, which runs in another venv), so their numbers compare: the Firestore
client's generated API class is patched, so every request any code makes
through any `firestore.Client` is seen, counted as Firestore bills it:

- a document read (get, or a get inside a transaction): 1 read per document
  asked for, found or not;
- a query: the documents it returns, at least 1;
- a commit (plain write, batch or transaction): 1 write per document write
  in it (set, update, create, delete; field transforms ride along free).
  A commit that fails (a lost transaction) still counts its writes, since
  the client sent them; its failure is counted too. Deletes are also
  counted apart (`deletes`, included in `writes`): Firestore prices them
  lower.

`PublisherClient.publish` is patched the same way to count messages, their
volume as Pub/Sub bills it (body, attribute keys and values, 20 bytes of
timestamp and the message id) and that volume billed with Pub/Sub's
minimum of 1000 bytes per request (each message published alone, and
pushed alone to its function).
Monitoring code excludes itself with `uncounted()`. With `by_site`, each
operation is also charged to the innermost caller frame in the given files
(e.g. the engine's `execute`, `complete`, `_check_join`), to show which step
costs what. Imports only google-cloud libraries, never function_flow.
"""

from __future__ import annotations

import collections
import contextlib
import sys
import threading
from typing import Any, Iterable, Iterator

_local = threading.local()


@contextlib.contextmanager
def uncounted() -> Iterator[None]:
    """Operations of this thread inside the block are not counted."""
    previous = getattr(_local, "off", False)
    _local.off = True
    try:
        yield
    finally:
        _local.off = previous


@contextlib.contextmanager
def category(name: str) -> Iterator[None]:
    """Operations of this thread inside the block are counted apart, under `name`
    (the poller's, which cost per second of run time, not per task)."""
    previous = getattr(_local, "category", None)
    _local.category = name
    try:
        yield
    finally:
        _local.category = previous


class Counters:
    """Totals, plus per call site when asked. Thread-safe."""

    KEYS = ("reads", "writes", "deletes", "queries", "commits", "commit_failures",
            "transactions", "rollbacks", "publishes", "publish_bytes",
            "publish_billed_bytes")

    def __init__(self, site_files: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self.totals: collections.Counter[str] = collections.Counter()
        self.by_site: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        self.commit_errors: collections.Counter[str] = collections.Counter()
        self.categories: dict[str, collections.Counter[str]] = collections.defaultdict(
            collections.Counter)
        self.site_files = tuple(site_files)

    def add(self, key: str, amount: int = 1) -> None:
        if amount == 0 or getattr(_local, "off", False):
            return
        apart = getattr(_local, "category", None)
        if apart is not None:
            with self._lock:
                self.categories[apart][key] += amount
            return
        site = self._site() if self.site_files else None
        with self._lock:
            self.totals[key] += amount
            if site is not None:
                self.by_site[site][key] += amount

    def _site(self) -> str:
        frame = sys._getframe(2)
        fallback = None
        while frame is not None:
            filename = frame.f_code.co_filename.replace("\\", "/")
            for rank, suffix in enumerate(self.site_files):
                # "pkg/dir/" names every file in that directory; else one file.
                if suffix.endswith("/") and suffix in filename or filename.endswith(suffix):
                    name = f"{filename.rsplit('/', 1)[-1]}:{frame.f_code.co_name}"
                    if rank == 0:
                        return name
                    fallback = fallback or name
            frame = frame.f_back
        return fallback or "other"

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                **{k: self.totals[k] for k in self.KEYS},
                "commit_errors": dict(self.commit_errors),
                "by_site": {site: dict(c) for site, c in self.by_site.items()},
                "categories": {name: dict(c) for name, c in self.categories.items()},
            }

    def reset(self) -> None:
        with self._lock:
            self.totals.clear()
            self.by_site.clear()
            self.commit_errors.clear()
            self.categories.clear()


_installed: Counters | None = None


def install(site_files: Iterable[str] = ()) -> Counters:
    """Patch the Firestore and Pub/Sub client classes (once per process)."""
    global _installed
    if _installed is not None:
        _installed.site_files = tuple(site_files)
        return _installed
    counters = Counters(site_files)
    _patch_firestore(counters)
    _patch_pubsub(counters)
    _installed = counters
    return counters


def _field(request: Any, name: str) -> Any:
    if request is None:
        return None
    if isinstance(request, dict):
        return request.get(name)
    return getattr(request, name, None)


def _patch_firestore(counters: Counters) -> None:
    from google.cloud.firestore_v1.services.firestore.client import FirestoreClient

    original_batch_get = FirestoreClient.batch_get_documents
    original_run_query = FirestoreClient.run_query
    original_commit = FirestoreClient.commit
    original_begin = FirestoreClient.begin_transaction
    original_rollback = FirestoreClient.rollback

    def batch_get_documents(self: Any, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        responses = original_batch_get(self, request, *args, **kwargs)

        def counted() -> Iterator[Any]:
            for response in responses:
                if response._pb.WhichOneof("result") is not None:
                    counters.add("reads")
                yield response

        return counted()

    def run_query(self: Any, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        counters.add("queries")
        counters.add("reads")  # a query costs at least one read
        responses = original_run_query(self, request, *args, **kwargs)

        def counted() -> Iterator[Any]:
            seen = 0
            for response in responses:
                if response._pb.HasField("document"):
                    if seen:
                        counters.add("reads")
                    seen += 1
                yield response

        return counted()

    def commit(self: Any, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        writes = _field(request, "writes") or []
        counters.add("writes", len(writes))
        counters.add("deletes", sum(1 for write in writes if _field(write, "delete")))
        counters.add("commits")
        try:
            return original_commit(self, request, *args, **kwargs)
        except Exception as exc:
            counters.add("commit_failures")
            if not getattr(_local, "off", False) and not getattr(_local, "category", None):
                with counters._lock:
                    counters.commit_errors[type(exc).__name__] += 1
            raise

    def begin_transaction(self: Any, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        counters.add("transactions")
        return original_begin(self, request, *args, **kwargs)

    def rollback(self: Any, request: Any = None, *args: Any, **kwargs: Any) -> Any:
        counters.add("rollbacks")
        return original_rollback(self, request, *args, **kwargs)

    FirestoreClient.batch_get_documents = batch_get_documents
    FirestoreClient.run_query = run_query
    FirestoreClient.commit = commit
    FirestoreClient.begin_transaction = begin_transaction
    FirestoreClient.rollback = rollback


#: What Pub/Sub adds to a message's billed volume: a 20-byte timestamp and the
#: message id (the emulator's and the service's ids are about 16 digits).
MESSAGE_OVERHEAD_BYTES = 20 + 16
#: Pub/Sub bills at least this much per publish, push or pull request.
MIN_BILLED_BYTES = 1000


def _patch_pubsub(counters: Counters) -> None:
    from google.cloud.pubsub_v1.publisher.client import Client as PublisherClient

    original_publish = PublisherClient.publish

    def publish(self: Any, topic: str, data: bytes, *args: Any, **kwargs: Any) -> Any:
        counters.add("publishes")
        attributes = {k: v for k, v in kwargs.items() if k not in ("ordering_key", "retry",
                                                                   "timeout")}
        size = len(data) + MESSAGE_OVERHEAD_BYTES + sum(
            len(str(k).encode()) + len(str(v).encode()) for k, v in attributes.items())
        counters.add("publish_bytes", size)
        counters.add("publish_billed_bytes", max(MIN_BILLED_BYTES, size))
        return original_publish(self, topic, data, *args, **kwargs)

    PublisherClient.publish = publish
