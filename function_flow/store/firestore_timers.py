"""Delayed scheduling messages on Google Cloud, kept as Firestore documents.

Pub/Sub delivers at once and a Cloud Function must not sleep through a
retry backoff, so a message due later is written to `{prefix}timers/{id}`
(`due_at`, the message) and the poller, run by Cloud Scheduler, publishes
the due ones. The resolution is the poller's period (a minute, deployed).

Publishing a timer: claim it in a transaction on its own document (so two
pollers running at once do not both publish it), publish, then delete it
only if the claim is still ours. A poller that dies after claiming leaves
the claim to expire, and the next poller publishes the timer again: a
duplicate message is harmless, a lost one is not.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from typing import Any, Callable

from function_flow.bus.pubsub import transient_errors
from function_flow.core.messages import Message
from function_flow.errors import TransientBackendError

logger = logging.getLogger("function_flow.store.firestore_timers")

#: How long a claimed timer stays with its poller before another may take it.
CLAIM_SECONDS = 60.0


def timer_id(message: Message) -> str:
    """One document per message: publishing the same message late twice
    (the engine re-delays an early delivery) keeps one timer, not two."""
    return hashlib.sha256(message.to_json()).hexdigest()[:40]


class FirestoreTimers:
    """Timer documents in Firestore, next to the run records."""

    def __init__(self, client: Callable[[], Any], prefix: str = "",
                 clock: Callable[[], float] = time.time) -> None:
        #: A callable returning the Firestore client, so nothing connects
        #: before the first timer (the store builds the client lazily too).
        self._client = client
        self.collection_name = f"{prefix}timers"
        self.clock = clock

    @property
    def collection(self) -> Any:
        return self._client().collection(self.collection_name)

    def add(self, message: Message, due_at: float) -> None:
        """Remember `message`, to be published at `due_at` (epoch seconds)."""
        try:
            self.collection.document(timer_id(message)).set({
                "due_at": float(due_at), "message": message.to_json().decode(),
                "claim": None, "claimed_until": 0.0, "created_at": self.clock()})
        except transient_errors() as exc:
            raise TransientBackendError(f"storing a timer for {message} failed: {exc}") from exc

    def pending(self) -> int:
        """How many timers wait (for status displays and tests)."""
        return sum(1 for _ in self.collection.select([]).stream())

    def publish_due(self, publish: Callable[[Message], Any], limit: int = 500) -> int:
        """Publish every due timer (up to `limit`); returns how many were sent.

        `publish` must raise if the message was not accepted; the timer then
        stays, and its claim expires for the next poller to try again.
        """
        from google.cloud.firestore_v1.base_query import FieldFilter

        now = self.clock()
        query = (self.collection.where(filter=FieldFilter("due_at", "<=", now))
                 .order_by("due_at").limit(limit))
        due = list(query.stream())
        # Pollers running at once start at different timers, so they rarely
        # contend for the same document.
        random.shuffle(due)
        sent = 0
        for snapshot in due:
            claim = self._claim(snapshot.reference, now)
            if claim is None:
                continue
            try:
                message = Message.from_json(snapshot.get("message"))
            except (KeyError, ValueError) as exc:
                logger.warning("timer %s holds no valid message (%s); deleted",
                               snapshot.id, exc)
                snapshot.reference.delete()
                continue
            publish(message)
            self._release(snapshot.reference, claim)
            sent += 1
        if sent:
            logger.info("published %d due timer(s)", sent)
        return sent

    def _claim(self, ref: Any, now: float) -> str | None:
        """Take the timer for this poller; None if it is gone or taken."""
        from google.api_core import exceptions as gexc
        from google.cloud import firestore

        claim = uuid.uuid4().hex

        @firestore.transactional
        def take(transaction: Any) -> bool:
            snapshot = ref.get(transaction=transaction)
            if not snapshot.exists:
                return False
            data = snapshot.to_dict() or {}
            if data.get("due_at", 0.0) > now or data.get("claimed_until", 0.0) > now:
                return False
            transaction.update(ref, {"claim": claim, "claimed_until": now + CLAIM_SECONDS})
            return True

        try:
            return claim if take(self._client().transaction()) else None
        except (gexc.Aborted, ValueError) as exc:
            # Another poller's transaction on this timer won ("Failed to
            # commit transaction"): it publishes the timer, or, if it fails
            # too, the timer stays for the next poll.
            logger.info("timer %s contended, left to another poller: %s", ref.id, exc)
            return None

    def _release(self, ref: Any, claim: str) -> None:
        """Delete a published timer unless someone stored it anew meanwhile."""
        from google.cloud import firestore

        @firestore.transactional
        def drop(transaction: Any) -> None:
            snapshot = ref.get(transaction=transaction)
            if snapshot.exists and (snapshot.to_dict() or {}).get("claim") == claim:
                transaction.delete(ref)

        drop(self._client().transaction())
