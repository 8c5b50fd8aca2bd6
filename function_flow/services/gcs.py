"""Cloud Storage for GCSFuture: does an object under a gs:// prefix exist?

The engine's `ports.Watcher`, built by backends.py for both backends. One
`list_blobs(bucket, prefix=..., max_results=1)` call per check (a class A
operation); the client honours STORAGE_EMULATOR_HOST (gcp-storage-emulator)
and is created on first use, so a workflow without a GCSFuture never needs
Cloud Storage credentials.
"""

from __future__ import annotations

import threading
from typing import Any

GS = "gs://"


def split_path(path: str) -> tuple[str, str]:
    """("bucket", "object/prefix") of "gs://bucket/object/prefix".

    Raises ValueError, saying what a path looks like, for anything else.
    """
    if not isinstance(path, str) or not path.startswith(GS):
        raise ValueError(f"a Cloud Storage path starts with gs://, as in "
                         f"gs://BUCKET/PREFIX; got {path!r}")
    bucket, _, prefix = path[len(GS):].partition("/")
    if not bucket:
        raise ValueError(f"the Cloud Storage path {path!r} names no bucket: "
                         "write gs://BUCKET/PREFIX")
    return bucket, prefix


class GcsWatcher:
    """Checks prefixes with google-cloud-storage (ports.Watcher)."""

    def __init__(self, project: str | None = None, client: Any = None) -> None:
        self.project = project
        self._client = client
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                from google.cloud import storage

                self._client = storage.Client(project=self.project)
            return self._client

    def exists(self, path_prefix: str) -> bool:
        bucket, prefix = split_path(path_prefix)
        from google.api_core import exceptions as gexc

        try:
            blobs = self.client.list_blobs(bucket, prefix=prefix or None, max_results=1)
            return next(iter(blobs), None) is not None
        except gexc.NotFound as exc:
            raise LookupError(f"there is no bucket {bucket!r} ({exc.message}); create it, "
                              f"or return a GCSFuture for an existing one") from exc
        except gexc.Forbidden as exc:
            raise PermissionError(f"listing bucket {bucket!r} is not allowed "
                                  f"({exc.message}): give the poller's service account "
                                  "roles/storage.objectViewer on it") from exc
