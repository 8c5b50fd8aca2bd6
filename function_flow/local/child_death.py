"""How a body's child process (local/child.py) dies with the program that forked it.

On Linux a child asks the kernel for SIGKILL when the thread that forked it
ends (prctl PR_SET_PDEATHSIG), so a body never outlives its program; and a
watcher process in the child's group kills the group once the child is
gone, so the processes the body started do not outlive it either.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from typing import Callable

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    """prctl(2) on Linux, resolved here in the parent: a child must not dlopen
    (the loader's lock may have been held by another thread at the fork)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent(parent: int) -> bool:  # pragma: no cover -- runs in the child
    """Linux: SIGKILL this child when the thread that forked it ends. False
    when the parent is already gone (it died before this took effect)."""
    if _PRCTL is None:
        return True
    with contextlib.suppress(Exception):
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    return os.getppid() == parent


def watch_group(child: int, fds: tuple[int, ...]) -> None:  # pragma: no cover -- a child's
    """Linux: fork a watcher into this child's group, which kills the group
    when the child is gone. The child dies with its program (PDEATHSIG), but
    the processes its body started would live on, reparented; the watcher
    (not one of the body's, so not killed with it) sees the child go and
    takes them down with itself. When the attempt ends otherwise, the parent
    kills the group, watcher included."""
    if _PRCTL is None:
        return
    try:
        pid = os.fork()
    except OSError:
        return  # the child still dies with its program; only its own processes may not
    if pid:
        return
    try:
        for fd in fds:
            os.close(fd)
        while os.getppid() == child:
            time.sleep(0.05)
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(0)
