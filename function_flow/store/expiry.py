"""Old runs deleted by Firestore itself: the `expire_at` field of a TTL policy.

Runs carry `created_at` as epoch seconds, which a Firestore TTL policy
cannot use: it needs a timestamp field. With FUNCTION_FLOW_RUN_TTL_DAYS set,
the Firestore store writes `expire_at` (a UTC datetime) on every document of
a run, and `function-flow deploy` enables a TTL policy on that field for
each collection group below. A TTL deletion never deletes subcollections,
so the tasks, slots and context of a run carry the field too, and so do
its triggers and deliveries (top-level, keyed by run).

When: the run document expires TTL days after the run started, whatever its
state, as `cleanup_expired_jobs(max_expire_days=TTL)` would delete it. Any
other document expires TTL days after it was last written, so never before
its run: nothing reads a run's documents once the run is gone.
"""

from __future__ import annotations

import datetime

#: The timestamp field the TTL policies watch.
FIELD = "expire_at"
#: Top-level collections holding run data (the store prefixes their names).
TOP_LEVEL = ("runs", "triggers", "deliveries")
#: Subcollections of a run document (never prefixed).
SUBCOLLECTIONS = ("tasks", "slots", "context")


def collection_groups(prefix: str = "") -> list[str]:
    """The collection groups a TTL policy must cover for a store with `prefix`."""
    return [prefix + name for name in TOP_LEVEL] + list(SUBCOLLECTIONS)


def expire_at(since: float, ttl_days: float) -> datetime.datetime:
    """The moment a document written (or a run started) at `since` expires."""
    return datetime.datetime.fromtimestamp(since, datetime.timezone.utc) \
        + datetime.timedelta(days=ttl_days)
