"""Whether the process executing an embedded run still runs.

An embedded run records its owner as "host:pid" (core/starts.py process_owner);
`status` says whether that process is alive, `resume` refuses to take over a
run whose owner still runs, and `approve` says who will pick up the work.
"""

from __future__ import annotations

import os
import socket

#: What `owner_state` says about the process that executes an embedded run.
OWNER_ALIVE, OWNER_GONE, OWNER_ELSEWHERE = "alive", "gone", "elsewhere"


def owner_state(owner: str) -> str:
    """Whether the process named "host:pid" still runs.

    OWNER_ELSEWHERE when it is on another host (or the name is not
    "host:pid"): that cannot be checked from here. A zombie (killed, not yet
    reaped by its parent) counts as gone.
    """
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return OWNER_ELSEWHERE
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return OWNER_GONE
    except PermissionError:
        return OWNER_ALIVE  # someone else's process: it exists
    except OverflowError:
        return OWNER_GONE
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            state = stat.read().rpartition(")")[2].split()[:1]
    except OSError:
        return OWNER_ALIVE  # no /proc (macOS): the signal check is all there is
    return OWNER_GONE if state in (["Z"], ["X"]) else OWNER_ALIVE


def pid_alive(owner: str) -> bool:
    """Whether the process named "host:pid" still runs (on this host)."""
    return owner_state(owner) == OWNER_ALIVE
