"""Where a remote task sends its body's result: a Pub/Sub topic, OpenFaaS, HTTP.

    @job.task(task_id='score', deps=['load'], call=remote.OpenFaaS('scorer'))
    @job.task(task_id='r1', remote_topic='SAMPLE_REMOTE_TRIGGER')  # Function Flow's form

`check` refuses what Pub/Sub, OpenFaaS or HTTP would refuse; `@job.task`
calls it, so a bad name is a definition error naming the task, not a
failure at run time.
"""

from __future__ import annotations

import math
import re
import urllib.parse
from typing import Any

from function_flow.core.definition import Call

#: Pub/Sub's rule for topic names (https://cloud.google.com/pubsub/docs/create-topic).
_TOPIC = re.compile(r"[A-Za-z][-A-Za-z0-9._~%+]{2,254}")
#: The function names an OpenFaaS gateway routes (faas-cli's rule).
_OPENFAAS_NAME = re.compile(r"[-a-zA-Z_0-9.]+")
#: How long an asynchronous OpenFaaS attempt waits for its answer when its
#: task has no timeout: far more than the queue worker's usual limits
#: (ack_wait 30 s, function timeouts of minutes), far less than the week
#: other asynchronous attempts may wait (core/waiting.py).
OPENFAAS_ASYNC_WAIT_SECONDS = 3600.0


def PubSub(topic: str) -> Call:  # noqa: N802 -- reads like a class at the call site
    """A remote function behind a Pub/Sub topic; it answers on the external
    events topic with Function Flow's `remote_function_resource` message."""
    return Call("pubsub", topic, asynchronous=True)


def OpenFaaS(name: str, *, asynchronous: bool = False) -> Call:  # noqa: N802
    """An OpenFaaS function, called through the gateway that settings name.

    Synchronous (`/function/NAME`): the answer is the task's result.
    Asynchronous (`/async-function/NAME`): the gateway's queue worker posts the
    answer to function_flow's callback endpoint later. A gateway accepts a
    call of a function it does not have and never answers it, so the
    attempt waits at most the task's timeout, or an hour when it sets none.
    """
    options = {"wait": OPENFAAS_ASYNC_WAIT_SECONDS} if asynchronous is True else {}
    return Call("openfaas", name, asynchronous=asynchronous, options=options)  # check()s it


def Http(url: str, *, audience: str | None = None,  # noqa: N802
         timeout: float | None = None) -> Call:
    """POST the body's result as JSON to `url` (Cloud Run, any HTTP service).

    audience: send a Google-signed ID token for it (Cloud Run and Cloud
    Functions take their URL); None sends no token. timeout: seconds for
    the request (the task's own timeout still bounds the attempt).
    """
    options: dict[str, Any] = {}
    if audience:
        options["audience"] = audience
    if timeout is not None:
        options["timeout"] = timeout
    return Call("http", url, asynchronous=False, options=options)


def is_topic_name(name: object) -> bool:
    """Whether Pub/Sub accepts `name` as a topic (or subscription) id."""
    return isinstance(name, str) and bool(_TOPIC.fullmatch(name)) \
        and not name.lower().startswith("goog")


def check(call: Call) -> None:
    """Raise ValueError, saying why, for a call Pub/Sub, OpenFaaS or HTTP would refuse."""
    target = call.target
    if call.kind == "pubsub":
        if not is_topic_name(target):
            raise ValueError(
                f"remote_topic {target!r} is not a Pub/Sub topic name: 3-255 letters, "
                "digits or -._~%+, starting with a letter and not with 'goog'")
    elif call.kind == "openfaas":
        if not isinstance(target, str) or not _OPENFAAS_NAME.fullmatch(target):
            raise ValueError(f"OpenFaaS function name {target!r} must match "
                             "[-a-zA-Z_0-9.]+")
        if not isinstance(call.asynchronous, bool):  # "false" would be true
            raise ValueError(f"OpenFaaS({target!r}): asynchronous must be True or False, "
                             f"got {call.asynchronous!r}")
    elif call.kind == "http":
        parsed = urllib.parse.urlparse(target) if isinstance(target, str) else None
        if parsed is None or parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"an HTTP task needs an http:// or https:// URL, got {target!r}")
        timeout = call.options.get("timeout")
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < math.inf):  # NaN too
            raise ValueError("the HTTP timeout must be a positive number of seconds, "
                             f"got {timeout!r}")
    else:
        raise ValueError(f"unknown kind of remote call {call.kind!r}")
