"""Assemble a store and a bus into a backend, as settings say.

This is the only module that knows every adapter; the engine sees ports.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
from typing import Any

from function_flow.config import Settings
from function_flow.engine import Engine, Workflow
from function_flow.ports import Bus, Store


@dataclasses.dataclass
class Backend:
    """A store plus a bus, and how the engine should use them."""

    kind: str
    store: Store
    bus: Bus
    #: Whether the bus delivers delayed messages cheaply (local bus: yes;
    #: Pub/Sub: no, the poller scans for expired leases instead).
    lease_check_messages: bool = True

    def engine(self, workflow: Workflow) -> Engine:
        engine = Engine(workflow, self.store, self.bus,
                        lease_check_messages=self.lease_check_messages)
        subscribe = getattr(self.bus, "subscribe", None)
        if subscribe is not None:
            subscribe(engine.handle)
        return engine

    def close(self) -> None:
        for part in (self.bus, self.store):
            close = getattr(part, "close", None)
            if close is not None:
                close()


def embedded(db_path: str | None = None, workers: int | None = None) -> Backend:
    """SQLite store plus the in-process bus: no cloud account needed."""
    from function_flow.bus.local import LocalBus
    from function_flow.store.sqlite import SqliteStore

    settings = Settings.from_env()
    bus = LocalBus(workers or settings.workers)
    backend = Backend("embedded", SqliteStore(db_path or settings.db_path), bus)
    # A script that calls job.start() and returns should still see its run
    # through, as it would on Cloud Functions: wait for the bus at exit.
    atexit.register(bus.wait_idle)
    return backend


def from_settings(settings: Settings, job: Any = None) -> Backend:
    """The backend the settings ask for (embedded unless cloud settings exist)."""
    if settings.backend == "gcp":
        from function_flow import gcp  # imported only when asked for

        return gcp.backend(settings, job)
    return embedded(settings.db_path, settings.workers)


def pid_alive(owner: str) -> bool:
    """Whether the process named "host:pid" still runs (on this host)."""
    import socket

    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
