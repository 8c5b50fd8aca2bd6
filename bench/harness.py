"""Drive a workflow run the way Cloud Functions would, on the Pub/Sub emulator.

N worker threads stand for N concurrent instances of the `scheduler`
function: each pulls one message at a time from a subscription on the
run's SCHEDULE topic, calls the scheduler with the legacy background-function
arguments (`event = {'data': base64, 'attributes': {...}}`, `context`), and
acknowledges when it returns or nacks (redelivery at once) when it raises,
as Pub/Sub does with retry-on-failure functions.

Shared by both sides of the benchmark, so it imports only google-cloud
libraries and the standard library, never function_flow.
"""

from __future__ import annotations

import base64
import collections
import dataclasses
import math
import threading
import time
import types
from typing import Any, Callable

from instrument import category, uncounted

Scheduler = Callable[[dict[str, Any], Any], Any]
#: Cloud Run functions (1st gen) bill compute time in 100 ms increments, rounded up.
BILLING_INCREMENT_SECONDS = 0.1


@dataclasses.dataclass
class Outcome:
    """What one driven run did."""

    finished: bool
    status: str
    seconds: float
    invocations: int = 0
    errors: dict[str, int] = dataclasses.field(default_factory=dict)
    error_samples: list[str] = dataclasses.field(default_factory=list)
    poller_calls: int = 0
    #: Function time as Cloud Run functions (1st gen) bill it: each call of the
    #: start function and of the scheduler rounded up to 100 ms, in 100 ms units.
    billed_units: int = 0


def create_subscription(project: str, topic: str, subscription: str) -> str:
    """Create `topic` (if missing) and a fresh pull subscription on it."""
    from google.api_core import exceptions as gexc
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    path = subscriber.subscription_path(project, subscription)
    try:
        publisher.create_topic(request={"name": topic_path})
    except gexc.AlreadyExists:
        pass
    subscriber.create_subscription(request={"name": path, "topic": topic_path,
                                            "ack_deadline_seconds": 600})
    return path


def drive(subscription: str, schedulers: list[Scheduler], start: Callable[[], Any],
          status: Callable[[], str | None], timeout: float,
          poller: Callable[[], Any] | None = None, poll_every: float = 1.0) -> Outcome:
    """Start a run and serve its messages until `status()` says it ended.

    `schedulers` has one scheduler per worker thread (one per simulated
    function instance). `status()` returns the run's final status or None
    while it runs; it is called without counting its reads.
    """
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    stop = threading.Event()
    lock = threading.Lock()
    invocations = [0]
    errors: collections.Counter[str] = collections.Counter()
    samples: list[str] = []
    poller_calls = [0]
    billed_units = [0]

    def bill(seconds: float) -> None:
        with lock:
            billed_units[0] += max(1, math.ceil(seconds / BILLING_INCREMENT_SECONDS))

    def work(scheduler: Scheduler) -> None:
        while not stop.is_set():
            try:
                with uncounted():
                    response = subscriber.pull(
                        request={"subscription": subscription, "max_messages": 1},
                        timeout=10)
            except Exception as exc:  # the emulator went away: stop quietly
                if not stop.is_set():
                    with lock:
                        errors[f"pull:{type(exc).__name__}"] += 1
                time.sleep(0.1)
                continue
            for received in response.received_messages:
                message = received.message
                event = {"data": base64.b64encode(message.data).decode("ascii"),
                         "attributes": dict(message.attributes)}
                context = types.SimpleNamespace(
                    event_id=message.message_id, timestamp=str(message.publish_time),
                    event_type="google.pubsub.topic.publish", resource=subscription)
                with lock:
                    invocations[0] += 1
                began_call = time.monotonic()
                try:
                    scheduler(event, context)
                except Exception as exc:  # like a crashed function: redeliver
                    with lock:
                        errors[type(exc).__name__] += 1
                        if len(samples) < 5:
                            samples.append(f"{type(exc).__name__}: {str(exc)[:300]}")
                    _settle(subscriber, subscription, received.ack_id, ack=False)
                else:
                    _settle(subscriber, subscription, received.ack_id, ack=True)
                finally:
                    bill(time.monotonic() - began_call)

    def poll() -> None:
        while not stop.wait(poll_every):
            try:
                assert poller is not None
                with category("poller"):
                    poller()
                poller_calls[0] += 1
            except Exception as exc:
                with lock:
                    errors[f"poller:{type(exc).__name__}"] += 1

    threads = [threading.Thread(target=work, args=(s,), daemon=True,
                                name=f"bench-scheduler-{i}")
               for i, s in enumerate(schedulers)]
    if poller is not None:
        threads.append(threading.Thread(target=poll, daemon=True, name="bench-poller"))
    for thread in threads:
        thread.start()
    began = time.monotonic()
    final: str | None = None
    try:
        start()
        bill(time.monotonic() - began)  # the start function's call
        while time.monotonic() - began < timeout:
            with uncounted():
                final = status()
            if final is not None:
                break
            time.sleep(0.02)
    finally:
        seconds = time.monotonic() - began
        stop.set()
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))
    with lock:
        return Outcome(finished=final is not None, status=final or "did not finish",
                       seconds=seconds, invocations=invocations[0], errors=dict(errors),
                       error_samples=list(samples), poller_calls=poller_calls[0],
                       billed_units=billed_units[0])


def _settle(subscriber: Any, subscription: str, ack_id: str, ack: bool) -> None:
    with uncounted():
        try:
            if ack:
                subscriber.acknowledge(request={"subscription": subscription,
                                                "ack_ids": [ack_id]})
            else:
                subscriber.modify_ack_deadline(request={
                    "subscription": subscription, "ack_ids": [ack_id],
                    "ack_deadline_seconds": 0})
        except Exception:  # an expired ack id: Pub/Sub redelivers, as it would
            pass
