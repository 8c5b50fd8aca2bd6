"""The in-process bus's bookkeeping of delayed lease checks it may forget.

Each claim schedules a lease check an hour ahead (core/recovery.py). Once
the attempt has ended the check is not wanted (`Bus.forget`), but a heap
entry cannot be removed cheaply: it is marked forgotten here, dropped when
due, and all forgotten entries leave the heap at once when they pile up.
So a process that runs tasks for hours does not hold one check per attempt
it ever ran. Every method runs under the bus's lock.
"""

from __future__ import annotations

import collections
import heapq

from function_flow.core.messages import Message

#: Forgotten lease checks the heap holds before it is rebuilt without them.
FORGOTTEN_KEPT = 1024


class LeaseChecks:
    """Lease checks in a timer heap of (due, sequence, message, ...) entries."""

    def __init__(self) -> None:
        #: Entries in the heap, per message (a hold and a new claim add a second).
        self._scheduled: collections.Counter[Message] = collections.Counter()
        self._forgotten: set[Message] = set()

    def scheduled(self, message: Message) -> None:
        """A check entered the heap: it is wanted (again, after a hold)."""
        self._scheduled[message] += 1
        self._forgotten.discard(message)

    def forget(self, message: Message, timers: list[tuple]) -> list[tuple]:
        """Mark `message`'s checks unwanted; the heap, rebuilt without forgotten
        checks once they are at least FORGOTTEN_KEPT and half of them."""
        if not self._scheduled.get(message):
            return timers
        self._forgotten.add(message)
        if len(self._forgotten) < FORGOTTEN_KEPT or \
                len(self._forgotten) * 2 < len(self._scheduled):
            return timers
        kept = [entry for entry in timers if entry[2] not in self._forgotten]
        heapq.heapify(kept)
        for forgotten in self._forgotten:
            del self._scheduled[forgotten]
        self._forgotten.clear()
        return kept

    def due(self, message: Message) -> bool:
        """A check left the heap: whether it was forgotten (then it is dropped)."""
        self._scheduled[message] -= 1
        if self._scheduled[message] <= 0:
            del self._scheduled[message]
            if message in self._forgotten:
                self._forgotten.discard(message)
                return True
        return message in self._forgotten
