"""Looking at processes from the tests (bodies killed at their timeout, orphans)."""

from __future__ import annotations

import os


def process_exists(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (orphans are reaped by init)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            return stat.read().rpartition(")")[2].split()[0] not in ("Z", "X")
    except OSError:
        return False
