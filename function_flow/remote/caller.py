"""One caller for every kind of remote function: it hands each call to its kind's adapter.

Adapters implement ports.Caller for one `Call.kind`: pubsub.py (publishes
to the topic), openfaas.py (the gateway), http.py, and, on the embedded
backend, hosting.py (the workflow file's own remote functions, in this
process). backends.py decides which adapters a backend has. Each call is a
span (tracing.remote_call), whose context the adapter's message carries.
"""

from __future__ import annotations

from typing import Any, Mapping

from function_flow import tracing
from function_flow.core.definition import Call
from function_flow.core.ports import Caller, Request
from function_flow.errors import ConfigurationError


class Dispatcher:
    """ports.Caller over one adapter per kind of call."""

    def __init__(self, adapters: Mapping[str, Caller]) -> None:
        self.adapters = dict(adapters)

    def _adapter(self, call: Call, request: Request) -> Caller:
        adapter = self.adapters.get(call.kind)
        if adapter is None:
            raise ConfigurationError(
                f"task {request.task_id!r} calls {call.describe()}, but this backend "
                f"cannot reach {call.kind} functions (it reaches: "
                f"{', '.join(sorted(self.adapters)) or 'none'})")
        return adapter

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        with tracing.remote_call(call, request):  # the adapter sends its context along
            return self._adapter(call, request).call(call, request, timeout)

    def send(self, call: Call, request: Request) -> None:
        with tracing.remote_call(call, request):
            self._adapter(call, request).send(call, request)
