"""Blobs in a Cloud Storage bucket: the gcp backend's (`core.ports.Blobs`).

FUNCTION_FLOW_BUCKET names the bucket, optionally with a folder
(`gs://bucket/some/folder`); a key is the object `<folder>/<key>`. The
client is built on first use (defining a Job needs no credentials); with
STORAGE_EMULATOR_HOST set, google-cloud-storage talks to that emulator
without credentials.

Each write creates a new object (`if_generation_match=0`), which makes it
safe for the client to retry a write whose answer was lost; the engine
never writes a key twice, so "already exists" means that earlier try
landed. Errors a later try may not see become TransientBackendError; a
missing bucket or a refused permission is a ConfigurationError saying what
to fix.
"""

from __future__ import annotations

import threading
from typing import Any

from function_flow.core.payloads import run_prefix
from function_flow.core.ports import BlobNotFoundError
from function_flow.errors import ConfigurationError, TransientBackendError, \
    transient_google_errors


def parse_bucket(setting: str) -> tuple[str, str]:
    """`name` or `gs://name/folder` -> (bucket name, object name prefix)."""
    text = setting.strip()
    if text.startswith("gs://"):
        text = text[len("gs://"):]
    name, _, folder = text.partition("/")
    if not name:
        raise ConfigurationError(
            f"FUNCTION_FLOW_BUCKET={setting!r} names no bucket; use a bucket name or "
            "gs://bucket/folder")
    folder = folder.strip("/")
    return name, f"{folder}/" if folder else ""


class GcsBlobs:
    """Blobs as objects of one bucket (a folder of it, with `gs://bucket/folder`)."""

    def __init__(self, bucket: str, project: str | None = None, client: Any = None,
                 retry_timeout: float = 120.0) -> None:
        self.bucket_name, self.folder = parse_bucket(bucket)
        self.project = project
        #: How long the client retries an error a later try may not see.
        self.retry_timeout = retry_timeout
        self._client = client
        self._bucket: Any = None
        self._lock = threading.Lock()

    @property
    def bucket(self) -> Any:
        with self._lock:
            if self._bucket is None:
                if self._client is None:
                    from google.cloud import storage

                    try:
                        self._client = storage.Client(project=self.project)
                    except Exception as exc:  # google.auth: no credentials
                        raise ConfigurationError(
                            f"cannot use Cloud Storage bucket {self.bucket_name!r}: {exc}; "
                            "run `gcloud auth application-default login`, or set "
                            "STORAGE_EMULATOR_HOST to use gcp-storage-emulator") from exc
                self._bucket = self._client.bucket(self.bucket_name)
            return self._bucket

    @property
    def client(self) -> Any:
        _ = self.bucket
        return self._client

    def put(self, key: str, data: bytes) -> None:
        from google.api_core import exceptions as gexc

        blob = self.bucket.blob(self.folder + key)
        try:
            blob.upload_from_string(data, content_type="application/json",
                                    if_generation_match=0, retry=self._retry())
        except gexc.PreconditionFailed:
            pass  # a retry of this write, whose first try landed (keys are never reused)
        except Exception as exc:
            raise self._error("write", key, exc) from exc

    def get(self, key: str) -> bytes:
        from google.api_core import exceptions as gexc

        try:
            return self.bucket.blob(self.folder + key).download_as_bytes(
                retry=self._retry())
        except gexc.NotFound as exc:
            if self._bucket_missing():
                raise self._error("read", key, exc) from exc
            raise BlobNotFoundError(key) from None
        except Exception as exc:
            raise self._error("read", key, exc) from exc

    def delete(self, key: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            self.bucket.blob(self.folder + key).delete(retry=self._retry())
        except gexc.NotFound:
            pass
        except Exception as exc:
            raise self._error("delete", key, exc) from exc

    def delete_run(self, run_id: str) -> None:
        from google.api_core import exceptions as gexc

        prefix = self.folder + run_prefix(run_id)
        try:
            for blob in self.client.list_blobs(self.bucket_name, prefix=prefix,
                                               retry=self._retry()):
                try:
                    blob.delete(retry=self._retry())
                except gexc.NotFound:
                    pass
        except gexc.NotFound as exc:
            raise self._error("delete", prefix, exc) from exc  # the bucket itself
        except Exception as exc:
            raise self._error("delete", prefix, exc) from exc

    def _retry(self) -> Any:
        from google.cloud.storage.retry import DEFAULT_RETRY

        return DEFAULT_RETRY.with_timeout(self.retry_timeout)

    def location(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self.folder}{key}"

    def _bucket_missing(self) -> bool:
        from google.api_core import exceptions as gexc

        try:
            return not self.bucket.exists(retry=self._retry())
        except gexc.GoogleAPIError:
            return False

    def _error(self, action: str, key: str, exc: Exception) -> Exception:
        """A storage error as one of ours, saying what to do."""
        from google.api_core import exceptions as gexc

        import requests

        where = self.location(key)
        if isinstance(exc, transient_google_errors() + (requests.ConnectionError,
                                                         requests.Timeout)):
            return TransientBackendError(f"could not {action} {where}: {exc}")
        if isinstance(exc, gexc.NotFound):
            return ConfigurationError(
                f"could not {action} {where}: the bucket {self.bucket_name!r} does not exist; "
                "create it (gcloud storage buckets create gs://NAME) or set "
                "FUNCTION_FLOW_BUCKET to one that does")
        if isinstance(exc, (gexc.Forbidden, gexc.Unauthorized)):
            return ConfigurationError(
                f"could not {action} {where}: permission denied; give the functions' "
                f"service account roles/storage.objectAdmin on gs://{self.bucket_name}")
        return exc

    def __repr__(self) -> str:
        return f"GcsBlobs({self.location('')!r})"
