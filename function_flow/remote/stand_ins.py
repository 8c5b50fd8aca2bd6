"""Stand-ins for Pub/Sub's publisher and google.auth while a hosted function runs.

A remote function written for Function Flow publishes its own answer:

    _, project = google.auth.default()
    publisher = pubsub_v1.PublisherClient()
    publisher.publish(publisher.topic_path(project, 'SCHEDULE_EXTERNAL_EVENTS'), data)

Hosted by the embedded backend (hosting.py), it must run unchanged with no
cloud account and send nothing off the machine. So, while any hosted
function runs, `google.cloud.pubsub_v1.PublisherClient` and
`google.auth.default` are replaced at that client boundary: publishing
delivers in this process, and the default credentials are anonymous with
the local project. Only names looked up while the function runs are
replaced: a client built when the module is imported (at module level) is
the real one, and fails without credentials. Everything else in the
process sees the stand-ins too while a hosted function runs (task bodies
included); on the embedded backend nothing else should publish.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import uuid
from typing import Any, Callable, Iterator

#: Delivers one message: (topic id, data, attributes).
Deliver = Callable[[str, bytes, dict[str, str]], None]

_lock = threading.Lock()
_users = 0
_saved: dict[str, Any] = {}
_current: dict[str, Any] = {}


class LocalPublisherClient:
    """What a hosted function gets for `pubsub_v1.PublisherClient()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        del args, kwargs

    @staticmethod
    def topic_path(project: str, topic: str) -> str:
        return f"projects/{project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, ordering_key: str = "",
                **attributes: Any) -> "concurrent.futures.Future[str]":
        del ordering_key
        if not isinstance(data, bytes):
            raise TypeError("data must be bytes, as Pub/Sub's PublisherClient requires")
        topic_id = topic.rsplit("/", 1)[-1]
        attributes.pop("retry", None)
        attributes.pop("timeout", None)
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        try:
            _current["deliver"](topic_id, data, {k: str(v) for k, v in attributes.items()})
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(uuid.uuid4().hex)
        return future

    def stop(self) -> None:
        pass


def _default(*args: Any, **kwargs: Any) -> tuple[Any, str]:
    from google.auth.credentials import AnonymousCredentials

    del args, kwargs
    return AnonymousCredentials(), _current["project"]


@contextlib.contextmanager
def google_stand_ins(deliver: Deliver, project: str) -> Iterator[None]:
    """Replace the publisher and google.auth.default for the block (re-entrant)."""
    global _users
    import google.auth
    from google.cloud import pubsub_v1

    from google.cloud import pubsub

    with _lock:
        if _users == 0:
            _saved["client"], _saved["default"] = pubsub_v1.PublisherClient, google.auth.default
            # `pubsub_v1.PublisherClient` and its alias `pubsub.PublisherClient`.
            pubsub_v1.PublisherClient = LocalPublisherClient  # type: ignore[misc]
            pubsub.PublisherClient = LocalPublisherClient  # type: ignore[misc]
            google.auth.default = _default  # type: ignore[assignment]
        _current["deliver"], _current["project"] = deliver, project
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                pubsub_v1.PublisherClient = _saved["client"]  # type: ignore[misc]
                pubsub.PublisherClient = _saved["client"]  # type: ignore[misc]
                google.auth.default = _saved["default"]  # type: ignore[assignment]
