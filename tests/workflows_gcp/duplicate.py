"""A Pub/Sub publisher that sends every message several times.

Pub/Sub delivers at least once; a publisher that retries after a lost
acknowledgement sends the same message twice. `Job(pubsub=...)` (the
Function Flow-compatible way to hand a job its PublisherClient) takes this
instead of a PublisherClient, so every scheduling message the functions
publish (start, the scheduler's follow-ups, the poller's timers) goes out
$FUNCTION_FLOW_TEST_PUBLISH_COPIES times; each push subscription on the
topic then delivers every copy.
"""

from __future__ import annotations

import os
import threading
from typing import Any


class DuplicatingPublisher:
    """publish() sends `copies` identical messages; everything else is the real client."""

    def __init__(self, copies: int | None = None) -> None:
        self.copies = copies or int(os.environ.get("FUNCTION_FLOW_TEST_PUBLISH_COPIES", "2"))
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        # Built on first use, inside the function, where PUBSUB_EMULATOR_HOST is set.
        with self._lock:
            if self._client is None:
                from google.cloud import pubsub_v1

                self._client = pubsub_v1.PublisherClient(
                    batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001))
            return self._client

    def publish(self, topic: str, data: bytes, **kwargs: Any) -> Any:
        """Publish every copy; the future returned resolves once all were accepted."""
        futures = [self.client.publish(topic, data, **kwargs) for _ in range(self.copies)]
        timeout = kwargs.get("timeout") or 60
        for future in futures[1:]:
            future.result(timeout)
        return futures[0]

    def create_topic(self, *args: Any, **kwargs: Any) -> Any:
        return self.client.create_topic(*args, **kwargs)

    def stop(self) -> None:
        if self._client is not None:
            self._client.stop()
