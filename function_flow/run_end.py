"""Waiting for a run to change: told by the store where it can tell, else polling.

The embedded store (SQLite, in this process) notifies every commit that
writes a run record (a run's end, its hooks done, a pause), so `job.wait()`,
`job.run()` and `function-flow run` return as soon as the run ends instead
of at the next poll. Stores that cannot notify (Firestore) are polled.
"""

from __future__ import annotations

import time
from typing import Any

#: With a notifying store, how often the waiter looks anyway: for what
#: another process writes (a `function-flow cancel`), which notifies nobody here.
NOTIFIED_LOOK_SECONDS = 1.0


class RunChanges:
    """Pauses between looks at a run: `mark()` before reading it, then `pause(s)`.

    A write committed after `mark()` ends the pause at once, so a run that
    ends between the read and the pause is not missed.
    """

    def __init__(self, store: Any) -> None:
        self._count = getattr(store, "run_writes", None)
        self._wait = getattr(store, "wait_run_write", None)
        self._seen = 0

    @property
    def notified(self) -> bool:
        """Whether the store tells of its run writes (else pauses are sleeps)."""
        return self._wait is not None

    def mark(self) -> None:
        if self._count is not None:
            self._seen = self._count()

    def pause(self, seconds: float) -> None:
        if self._wait is None:
            time.sleep(seconds)
        else:
            self._seen = self._wait(self._seen, seconds)
