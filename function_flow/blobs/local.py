"""Blobs in a local directory: the embedded backend's (`core.ports.Blobs`).

A key `runs/<run>/tasks/<task>/<attempt>-<id>.json` is the file of that
relative path under the root. A blob is written to a temporary file in the
same folder, flushed to disk, then renamed into place, so a reader sees all
of it or nothing, and a blob is on disk before the SQLite commit that
references it (a crash cannot leave a reference to a half-written file).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid

from function_flow.core.payloads import run_prefix
from function_flow.core.ports import BlobNotFoundError


class LocalBlobs:
    """Blobs as files under `root` (created on the first write)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        folder = os.path.dirname(path)
        os.makedirs(folder, exist_ok=True)
        partial = f"{path}.{uuid.uuid4().hex}.partial"
        try:
            with open(partial, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise
        _sync_folder(folder)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                return handle.read()
        except (FileNotFoundError, NotADirectoryError):
            raise BlobNotFoundError(key) from None

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(self._path(key))

    def delete_run(self, run_id: str) -> None:
        folder = self._path(run_prefix(run_id).rstrip("/"))
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(folder)

    def location(self, key: str) -> str:
        return self._path(key)

    def _path(self, key: str) -> str:
        """The file of `key`, which must stay under the root."""
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") or "\\" in part or "\0" in part
                          for part in parts):
            raise ValueError(f"{key!r} is not a blob key (relative, '/'-separated, "
                             "without '.' or '..' segments)")
        return os.path.join(self.root, *parts)

    def __repr__(self) -> str:
        return f"LocalBlobs({self.root!r})"


def _sync_folder(folder: str) -> None:
    """Make a rename durable (POSIX: fsync the directory); best effort elsewhere."""
    with contextlib.suppress(OSError, AttributeError):
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
