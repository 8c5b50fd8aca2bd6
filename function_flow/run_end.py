"""Waiting for a run to end (Job.wait): told by the store where it can tell, else polling.

The embedded store (SQLite, in this process) notifies every commit that
writes a run record (a run's end, its hooks done, a pause), so `job.wait()`,
`job.run()` and `function-flow run` return as soon as the run ends instead
of at the next poll. Stores that cannot notify (Firestore) are polled.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Optional

from function_flow.core import control, watches
from function_flow.core.ports import Store
from function_flow.core.records import RunRecord

if TYPE_CHECKING:
    from function_flow.tasks import Job

#: How long `Job.wait` lets the in-process bus finish a run's follow-ups
#: after the run ended (tasks still running in a failed run may take longer;
#: they are not waited for).
FOLLOW_UP_GRACE_SECONDS = 2.0

#: With a notifying store, how often the waiter looks anyway: for what
#: another process writes (a `function-flow cancel`), which notifies nobody here.
NOTIFIED_LOOK_SECONDS = 1.0


class RunChanges:
    """Pauses between looks at a run: `mark()` before reading it, then `pause(s)`.

    A write committed after `mark()` ends the pause at once, so a run that
    ends between the read and the pause is not missed.
    """

    def __init__(self, store: Store) -> None:
        self._store = store
        #: Whether the store tells of its run writes (else pauses are sleeps).
        self.notified = store.run_writes() is not None
        self._seen = 0

    def mark(self) -> None:
        self._seen = self._store.run_writes() or 0

    def pause(self, seconds: float) -> None:
        self._seen = self._store.wait_run_write(self._seen, seconds)


def wait(job: "Job", run_id: str, timeout: Optional[float] = None,
         poll_interval: Optional[float] = None, *, hooks: bool = True) -> RunRecord:
    """Job.wait: look at the run until it ended (and, with `hooks`, its hooks
    ran), repairing it meanwhile where no poller does; its final record."""
    changes = RunChanges(job.engine.store)
    if poll_interval is None:
        poll_interval = NOTIFIED_LOOK_SECONDS if changes.notified else 0.05
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        changes.mark()
        run = job.engine.run_status(run_id)
        if run.status.is_final and not (hooks and run.hooks_pending):
            # The commit that ends a run comes before its follow-ups (the
            # tasks below a failure marked UPSTREAM_FAILED): let this
            # process's bus finish them, briefly, so the records agree (it
            # counts hosted remote functions' answers too: LocalBus.beside).
            # A hook still running is bus work too, which hooks=False does
            # not wait for: then the records say when the follow-ups are done.
            if run.hooks_pending:
                _wait_for_tasks_ended(job.engine.store, run_id, FOLLOW_UP_GRACE_SECONDS)
            else:
                job.backend.bus.wait_idle(timeout=FOLLOW_UP_GRACE_SECONDS)
            return run
        job.repair_if_stalled(run_id)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"run {run_id} still {run.status.value} after {timeout} s")
        changes.pause(poll_interval if deadline is None
                      else max(0.0, min(poll_interval, deadline - time.monotonic())))


def _wait_for_tasks_ended(store: Store, run_id: str, timeout: float,
                          every: float = 0.01) -> None:
    """Until every task of the run has ended, or `timeout` passed.

    Only the workflow's own tasks: not function_flow's records (`__` ids),
    the hooks, which may run for long, and the end task, which a failed run
    may leave WAITING for good (core/leftovers.py leaves it so).
    """
    deadline = time.monotonic() + timeout
    while any(not t.status.is_final and not t.task_id.startswith("__")
              for t in store.get_tasks(run_id)) and time.monotonic() < deadline:
        time.sleep(every)


class Repairs:
    """On the embedded backend, what the poller does on Google Cloud, for a waiter.

    When the in-process bus has nothing queued, running or delayed but
    the run has not ended, a follow-up step may have been lost to an
    error between a commit and its messages: `recover` redoes it. Rate
    limited; while the bus is busy, it only looks for the Cloud Storage
    objects the run's GCSFutures wait for. A run resumed from another
    process (`function-flow resume`) gets its held tasks sent again here.
    """

    def __init__(self) -> None:
        self._last = 0.0
        self._resumes_seen: dict[str, float] = {}  # run id -> resumed_at acted on

    def if_stalled(self, job: "Job", run_id: str, every: float = 2.0) -> None:
        now = time.monotonic()
        if now - self._last < every:
            return
        self._last = now
        if control.resend_if_resumed(job.engine, run_id, self._resumes_seen):
            return
        if job.backend.bus.wait_idle(0):
            job.engine.poll(stale_after=every, run_ids=[run_id])
        else:
            watches.check(job.engine, run_ids=[run_id])
