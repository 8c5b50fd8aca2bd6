"""Pub/Sub bus: scheduling messages on the SCHEDULE topic.

Each message is `messages.Message.to_json()` with its run, task, attempt and
kind as attributes, so a message means something in Cloud Logging and in
the Pub/Sub console. Every message a Topic publishes (scheduling messages,
remote requests, remote answers) is signed: `function_flow_timestamp` and
`function_flow_signature` attributes over its data (signing.py), which its
receiver checks before acting on it; and the trace context, W3C
`traceparent` (tracing.py), when a span is current. Publishing waits for Pub/Sub's acknowledgement: a lost
publish raises (TransientBackendError when a retry may fix it), so the
caller's own message is redelivered instead of the run stalling silently.

Pub/Sub cannot delay a message, and a function instance must never sleep
through a retry backoff, so a delayed message is written to a timer store
(`timers.FirestoreTimers`) and the poller publishes it once it is due.

Clients are built on first publish: constructing a Job stays network-free,
and a process forked by gunicorn builds its own gRPC channel after the fork.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Protocol

from function_flow import signing, tracing
from function_flow.core.messages import Message
from function_flow.core.ports import Bus
from function_flow.errors import (ConfigurationError, TransientBackendError,
                                  transient_google_errors)

logger = logging.getLogger("function_flow.bus.pubsub")

#: How long to wait for Pub/Sub to acknowledge one publish.
PUBLISH_TIMEOUT_SECONDS = 60.0


class TimerStore(Protocol):
    """Where delayed messages wait until they are due (see timers.py)."""

    def add(self, message: Message, due_at: float) -> None: ...

    def publish_due(self, publish: Callable[[Message], Any], limit: int = 500) -> int: ...


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors a later attempt may not see again: errors.transient_google_errors().

    Kept under this name for the timer store, which imports it from here.
    """
    return transient_google_errors()


def retryable_call_errors() -> tuple[type[BaseException], ...]:
    """What the publisher's own retry (`_retry`) may try the call again on.

    The transient errors minus those that are not an RPC's answer: RetryError
    is that retry giving up, and the timeout is ours, waiting on the publish
    future; neither can come out of the call the retry repeats. (GatewayTimeout
    and TooManyRequests stay: only the REST transport answers them, and
    there they mean what Unavailable and ResourceExhausted mean over gRPC.)
    """
    from google.api_core import exceptions as gexc

    return tuple(error for error in transient_google_errors()
                 if issubclass(error, gexc.GoogleAPICallError))


class Topic:
    """One Pub/Sub topic to publish on: the project, the client, and retries.

    Shared by the bus (SCHEDULE), remote tasks (their remote topic) and
    remote functions (their answers on the external events topic).
    `create`: create the topic when it is missing, as Function Flow does for
    SCHEDULE; a remote function's topic is not created (a topic nobody
    subscribes to would swallow the request), its absence is an error.
    `keys` sign every message (default: the settings' keys, read on first
    publish; ConfigurationError when FUNCTION_FLOW_HMAC_KEY is missing).
    """

    def __init__(self, topic: str, project: str | None = None, publisher: Any = None,
                 publish_timeout: float = PUBLISH_TIMEOUT_SECONDS,
                 create: bool = True, keys: signing.Keys | None = None) -> None:
        self.topic = topic
        self.keys = keys
        self.publish_timeout = publish_timeout
        self.create = create
        self._project = project
        #: A PublisherClient the caller made (Function Flow's `Job(pubsub=...)`),
        #: else built on first publish.
        self._publisher: Any = publisher
        self._topic_ready = False
        self._lock = threading.Lock()

    @property
    def project(self) -> str:
        """The project: given, or Application Default Credentials' project."""
        if self._project is None:
            import google.auth
            from google.auth.exceptions import DefaultCredentialsError

            try:
                _, self._project = google.auth.default()
            except DefaultCredentialsError as exc:
                raise ConfigurationError(
                    "no Google Cloud project for Pub/Sub: set GOOGLE_CLOUD_PROJECT "
                    f"({exc})") from exc
            if not self._project:
                raise ConfigurationError(
                    "no Google Cloud project for Pub/Sub: set GOOGLE_CLOUD_PROJECT")
        return self._project

    @property
    def path(self) -> str:
        return f"projects/{self.project}/topics/{self.topic}"

    @property
    def publisher(self) -> Any:
        """The PublisherClient, built once per process on first use."""
        if self._publisher is None:
            with self._lock:
                if self._publisher is None:
                    from google.cloud import pubsub_v1

                    # Every publish is waited for at once, so batching could
                    # only add latency: send each message straight away.
                    batch = pubsub_v1.types.BatchSettings(max_latency=0.001)
                    self._publisher = pubsub_v1.PublisherClient(batch_settings=batch)
        return self._publisher

    def _retry(self) -> Any:
        """The client's own retries, bounded by publish_timeout in all."""
        from google.api_core.retry import Retry, if_exception_type

        return Retry(predicate=if_exception_type(*retryable_call_errors()),
                     initial=0.1, maximum=5.0, timeout=self.publish_timeout)

    def _ensure_topic(self) -> None:
        """Create the topic if it is missing (when `create`)."""
        if self._topic_ready or not self.create:
            return
        from google.api_core import exceptions as gexc

        try:
            self.publisher.create_topic(request={"name": self.path},
                                        retry=self._retry(), timeout=self.publish_timeout)
            logger.info("created Pub/Sub topic %s", self.path)
        except gexc.AlreadyExists:
            pass
        except gexc.PermissionDenied:
            # Deployed functions often may publish but not create topics;
            # the deployment created it, and publishing will tell if not.
            logger.debug("no permission to create %s; assuming it exists", self.path)
        except transient_errors() as exc:
            raise TransientBackendError(
                f"Pub/Sub unavailable while creating topic {self.path}: {exc}") from exc
        self._topic_ready = True

    def publish(self, data: bytes, attributes: dict[str, str], what: str) -> str:
        """Publish and wait for Pub/Sub to accept it; returns the message id.

        `what` names the message in errors. A missing topic is created once
        more (when `create`) or reported with what to do.
        """
        from google.api_core import exceptions as gexc

        if self.keys is None:
            self.keys = signing.Keys.from_env()
        attributes = tracing.inject({**attributes, **self.keys.sign(data, signing.ATTRIBUTES)})
        self._ensure_topic()
        try:
            try:
                return self._send(data, attributes)
            except gexc.NotFound:
                if not self.create:
                    raise ConfigurationError(
                        f"cannot send {what}: the Pub/Sub topic {self.path} does not "
                        "exist; create it and deploy the function it triggers") from None
                # The topic vanished (or creating it was not allowed and it
                # never existed): try to create it once more, then publish.
                self._topic_ready = False
                self._ensure_topic()
                return self._send(data, attributes)
        except transient_errors() as exc:
            raise TransientBackendError(
                f"publishing {what} on {self.path} failed: {exc}") from exc

    def _send(self, data: bytes, attributes: dict[str, str]) -> str:
        future = self.publisher.publish(self.path, data, retry=self._retry(),
                                        timeout=self.publish_timeout, **attributes)
        return future.result(timeout=self.publish_timeout)

    def close(self) -> None:
        """Flush and stop the publisher's background threads."""
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            try:
                publisher.stop()
            except Exception:  # already stopped, or Pub/Sub gone: nothing to flush
                logger.debug("stopping the Pub/Sub publisher failed", exc_info=True)
        self._topic_ready = False


class PubSubBus(Bus):
    """Publishes scheduling messages on one topic; delayed ones go to timers.

    It inherits `subscribe` (nothing to do: Pub/Sub pushes to the scheduler
    function) and `wait_idle` (never known to be idle) from ports.Bus.
    """

    def __init__(self, topic: str, project: str | None = None,
                 timers: TimerStore | None = None,
                 publish_timeout: float = PUBLISH_TIMEOUT_SECONDS,
                 publisher: Any = None, keys: signing.Keys | None = None) -> None:
        if not topic or "/" in topic:
            raise ConfigurationError(
                f"Pub/Sub topic must be a topic id without '/', got {topic!r}; "
                "set Job(schedule_topic=...) or FUNCTION_FLOW_SCHEDULE_TOPIC")
        self.topic = topic
        self.timers = timers
        self.publish_timeout = publish_timeout
        self._topic = Topic(topic, project, publisher, publish_timeout, keys=keys)

    @property
    def project(self) -> str:
        return self._topic.project

    @property
    def topic_path(self) -> str:
        return self._topic.path

    @property
    def publisher(self) -> Any:
        return self._topic.publisher

    def publish(self, message: Message, delay: float = 0.0) -> None:
        """Send `message` now, or store it as a timer when `delay` > 0."""
        if delay > 0:
            if self.timers is None:
                raise ConfigurationError(
                    "PubSubBus needs a timer store for delayed messages "
                    "(retry backoff); build it with timers=FirestoreTimers(...)")
            self.timers.add(message, time.time() + delay)
            logger.debug("run %s task %s attempt %d: due in %.1f s (timer)",
                         message.run_id, message.task_id, message.attempt, delay)
            return
        self.publish_now(message)

    def publish_now(self, message: Message) -> str:
        """Publish and wait for Pub/Sub to accept it; returns the message id."""
        return self._topic.publish(message.to_json(), message.attributes(), str(message))

    def release_due(self, limit: int = 500) -> int:
        """Publish delayed messages whose time has come (the poller calls this)."""
        if self.timers is None:
            return 0
        return self.timers.publish_due(self.publish_now, limit)

    def close(self) -> None:
        """Flush and stop the publisher's background threads."""
        self._topic.close()
