"""Remote tasks: a task's body result sent to a function elsewhere.

Where (a `Call` for `@job.task(call=...)`): `PubSub(topic)` (what Function
Flow's `remote_topic=` means), `OpenFaaS(name)` and `Http(url)`. The answer
becomes the task's result.

`function(f)` makes a plain `f(payload, context)` the remote Cloud
Function itself (functions.py); `host(topic, f)` answers a topic with a
function written for Function Flow on the embedded backend (hosting.py).
Both import their modules on first use: defining a workflow stays light.
"""

from __future__ import annotations

from typing import Any, Callable

from function_flow.remote.targets import Http, OpenFaaS, PubSub

__all__ = ["PubSub", "OpenFaaS", "Http", "function", "host"]


def function(func: Callable[..., Any] | None = None, *, topic: str | None = None) -> Any:
    """Make `func(payload, context)` a remote Cloud Function; see remote/functions.py."""
    from function_flow.remote import functions

    return functions.function(func, topic=topic)


def host(topic: str, function: Callable[..., Any]) -> None:
    """Answer `topic` with `function` in this process (embedded backend, dev),
    as `--remote` does; a topic Pub/Sub refuses or a function that cannot be
    called as function(event, context) is refused now."""
    from function_flow.remote import functions, hosting
    from function_flow.remote.targets import PubSub, check

    check(PubSub(topic))
    functions.check_callable(function)
    hosting.host(topic, function)
