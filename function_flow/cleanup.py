"""Deleting old runs: Function Flow's `tasks.cleanup_expired_jobs`, on any backend."""

from __future__ import annotations

import time
import types
from typing import TYPE_CHECKING, Any, Optional

from function_flow.backends import from_settings
from function_flow.config import Settings
from function_flow.core import recovery
from function_flow.core.records import RunStatus

if TYPE_CHECKING:
    from function_flow.tasks import Job


def names_cloud(db: Any, pubsub: Any, project: Optional[str]) -> bool:
    """Built the Function Flow way: a Firestore client, a Pub/Sub client or a project."""
    return bool(project) or hasattr(db, "collection") or hasattr(pubsub, "publish")


def cleanup_expired_jobs(db: Any = None, project: Optional[str] = None,
                         max_expire_days: int = 30,
                         max_timeout_days: Optional[float] = None,
                         job: Optional["Job"] = None) -> int:
    """Delete runs started more than `max_expire_days` ago, with their blobs; returns how many.

    As in Function Flow, `db` (a Firestore client) and `project` select the
    Firestore store; `job` uses that job's backend; with none of them, the
    settings decide (the embedded store unless Google Cloud settings exist).

    max_timeout_days: runs still RUNNING that long after they started are
    marked FAILED (Function Flow's default was 1 day; here it is off unless
    given, because a run may wait days for a human approval by design).
    """
    if job is not None:
        backend = job.backend
    else:
        settings = Settings.from_env(cloud_hint=names_cloud(db, None, project))
        # gcp.backend reads the clients and project from a Job; none here.
        backend = from_settings(settings, types.SimpleNamespace(db=db, project=project))
    now = time.time()
    if max_timeout_days is not None:
        for run in backend.store.list_runs(limit=100_000, status=RunStatus.RUNNING):
            if run.created_at < now - max_timeout_days * 86400:
                recovery.fail_run(
                    backend.store, run.run_id, now=now,
                    error=f"run timed out: still running {max_timeout_days} day(s) "
                          "after it started (cleanup_expired_jobs max_timeout_days)")
    expired = backend.store.runs_started_before(now - max_expire_days * 86400)
    for run_id in expired:
        # Blobs first: if deleting the records then fails, the next cleanup
        # finds the run again and finishes; the other way round, its blobs
        # would outlive it unseen.
        if backend.blobs is not None:
            backend.blobs.delete_run(run_id)
        backend.store.delete_run(run_id)
    return len(expired)
