"""Topics and push subscriptions on the Pub/Sub emulator: the deployment's wiring.

Deploying a Pub/Sub-triggered function creates a push subscription on its
topic that POSTs every message to the function. Locally the same wiring is
made on the emulator with the Pub/Sub client library, so the messages take
the deployed path: publish -> emulator -> push -> functions-framework.

The clients are bound to the emulator's host explicitly (an insecure gRPC
channel, no credentials), not through PUBSUB_EMULATOR_HOST, so this
process's environment is never changed and nothing else is redirected.
"""

from __future__ import annotations

import contextlib
from typing import Any

#: Pub/Sub's maximum ack deadline: a push may take this long to be answered,
#: so a task body may run this long in one delivery before it is redelivered.
MAX_ACK_DEADLINE_SECONDS = 600


class EmulatorPubSub:
    """Admin and publishing calls on one Pub/Sub emulator, for one project.

    Every subscription made here is remembered and deleted by `close()`:
    an emulator that outlives us (a test session's) must not keep pushing
    to ports that are about to close.
    """

    def __init__(self, host: str, project: str) -> None:
        self.host = host
        self.project = project
        self.subscriptions: list[str] = []
        self._publisher: Any = None
        self._subscriber: Any = None

    # ---------------------------------------------------------------- clients

    @property
    def publisher(self) -> Any:
        if self._publisher is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            # Every publish is waited for: batching would only add latency.
            self._publisher = pubsub_v1.PublisherClient(
                batch_settings=pubsub_v1.types.BatchSettings(max_latency=0.001),
                transport=PublisherGrpcTransport(channel=grpc.insecure_channel(self.host)))
        return self._publisher

    @property
    def subscriber(self) -> Any:
        if self._subscriber is None:
            import grpc
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import \
                SubscriberGrpcTransport

            self._subscriber = pubsub_v1.SubscriberClient(
                transport=SubscriberGrpcTransport(channel=grpc.insecure_channel(self.host)))
        return self._subscriber

    def topic_path(self, topic: str) -> str:
        return f"projects/{self.project}/topics/{topic}"

    def subscription_path(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    # -------------------------------------------------------------- wiring

    def ensure_topic(self, topic: str) -> str:
        """Create `topic` unless it exists; returns its path."""
        from google.api_core.exceptions import AlreadyExists

        path = self.topic_path(topic)
        with contextlib.suppress(AlreadyExists):
            self.publisher.create_topic(request={"name": path}, timeout=30)
        return path

    def push(self, topic: str, endpoint: str, name: str,
             ack_deadline: int = MAX_ACK_DEADLINE_SECONDS) -> str:
        """A push subscription `name` delivering `topic` to `endpoint`, as a
        Pub/Sub trigger does; replaces one of that name. Returns its path."""
        from google.api_core.exceptions import AlreadyExists, NotFound

        topic_path = self.ensure_topic(topic)
        path = self.subscription_path(name)
        request = {"name": path, "topic": topic_path, "ack_deadline_seconds": ack_deadline,
                   "push_config": {"push_endpoint": endpoint}}
        try:
            self.subscriber.create_subscription(request=request, timeout=30)
        except AlreadyExists:
            # Left by an earlier stack that was killed: it pushes to a dead port.
            with contextlib.suppress(NotFound):
                self.subscriber.delete_subscription(request={"subscription": path},
                                                    timeout=30)
            self.subscriber.create_subscription(request=request, timeout=30)
        self.subscriptions.append(path)
        return path

    def publish(self, topic: str, data: bytes, **attributes: str) -> str:
        """Publish and wait until the emulator accepted it; returns the message id."""
        return self.publisher.publish(self.topic_path(topic), data, **attributes).result(30)

    def delete_subscriptions(self) -> None:
        """Delete every subscription made here (the emulator may already be gone)."""
        while self.subscriptions:
            path = self.subscriptions.pop()
            with contextlib.suppress(Exception):
                self.subscriber.delete_subscription(request={"subscription": path},
                                                    timeout=10)

    def close(self) -> None:
        """Delete the subscriptions, then close both clients."""
        self.delete_subscriptions()
        publisher, self._publisher = self._publisher, None
        subscriber, self._subscriber = self._subscriber, None
        if publisher is not None:
            with contextlib.suppress(Exception):
                publisher.stop()
        if subscriber is not None:
            with contextlib.suppress(Exception):
                subscriber.close()
