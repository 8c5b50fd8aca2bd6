"""Child processes that never outlive their starter: one process group each.

`function-flow dev` and the test suite start Java emulators (through the
`gcloud` wrapper, which forks the JVM) and functions-framework servers
(gunicorn, which forks workers). Ending only the PID we started would leave
those grandchildren running on their ports. So every child starts in a new
session, which makes it the leader of its own process group whose id is its
PID, and is stopped by signalling that group: this reaches every descendant
and never touches a process we did not start.

This module is the only place that signals process groups; emulators.py,
functions.py and stack.py all go through it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from typing import IO, Callable, Iterator, Sequence


class DevError(RuntimeError):
    """The local topology could not start (a process died or did not answer)."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def signal_group(pgid: int, sig: int) -> None:
    """Send `sig` to process group `pgid`; a group already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` still exists (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_groups(processes: Sequence[subprocess.Popen], timeout: float = 10.0,
                first: int = signal.SIGTERM) -> None:
    """End each process and its whole group: `first`, then SIGKILL after `timeout`.

    Every group gets the first signal at once, so they shut down in
    parallel and the total wait is `timeout`, not one per process. Leaders
    are reaped afterwards, so no zombie is left either.
    """
    for process in processes:
        if process.poll() is None or group_alive(process.pid):
            signal_group(process.pid, first)
    deadline = time.monotonic() + timeout
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(0.0, deadline - time.monotonic()))
    # A leader's children (the JVM, gunicorn workers) may outlive it briefly.
    while any(group_alive(p.pid) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    for process in processes:
        if group_alive(process.pid):
            signal_group(process.pid, signal.SIGKILL)
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout)


class Child:
    """A process started by `spawn`: the Popen, plus the thread copying its output."""

    def __init__(self, process: subprocess.Popen, pump: threading.Thread | None) -> None:
        self.process = process
        self.pump = pump

    @property
    def pid(self) -> int:
        """Its PID, which is also its process group id."""
        return self.process.pid

    def exited(self) -> bool:
        return self.process.poll() is not None

    def stop(self, timeout: float = 10.0, first: int = signal.SIGTERM) -> None:
        stop_children([self], timeout, first)


def stop_children(children: Sequence[Child], timeout: float = 10.0,
                  first: int = signal.SIGTERM) -> None:
    """stop_groups for Children, then wait until their output is copied out."""
    stop_groups([c.process for c in children], timeout, first)
    for child in children:
        if child.pump is not None:
            child.pump.join(timeout)


def spawn(command: Sequence[str], env: dict[str, str], *, log: IO | None = None,
          on_line: Callable[[str], None] | None = None, name: str = "child") -> Child:
    """Start `command` as the leader of a new process group.

    Its stdout and stderr go to `log` (an open file: the child writes it
    directly, nothing here has to keep up) or, with `on_line`, through a
    pipe to a daemon thread that calls on_line(line) for each line (so
    several children can share one tagged log). Neither: discarded.
    """
    if log is not None and on_line is not None:
        raise ValueError("give log or on_line, not both")
    stdout: int | IO = subprocess.PIPE if on_line else (log or subprocess.DEVNULL)
    process = subprocess.Popen(list(command), env=env, stdin=subprocess.DEVNULL,
                               stdout=stdout, stderr=subprocess.STDOUT,
                               start_new_session=True, text=True, encoding="utf-8",
                               errors="replace")
    pump = None
    if on_line is not None:
        pump = threading.Thread(target=_pump, args=(process, on_line),
                                name=f"function-flow-log-{name}", daemon=True)
        pump.start()
    return Child(process, pump)


def _pump(process: subprocess.Popen, on_line: Callable[[str], None]) -> None:
    assert process.stdout is not None
    with process.stdout:
        for line in process.stdout:
            on_line(line)


# ----------------------------------------------------------------- signals


class Terminated(BaseException):
    """SIGTERM arrived: unwind like Ctrl-C does, through every `finally`."""


@contextlib.contextmanager
def sigterm_unwinds():
    """Within the block, SIGTERM raises Terminated, so `finally` blocks stop children."""
    def raise_terminated(signum, frame):
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_ignored():
    """Let a shutdown finish: a second Ctrl-C must not leave processes behind."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN)
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block only."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
