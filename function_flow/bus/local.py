"""In-process bus: a worker pool that delivers messages like Pub/Sub would.

Delivery is at least once: a handler that raises gets the message again
after a capped backoff, as Pub/Sub redelivers an unacknowledged message.
Delayed messages wait in a heap served by one timer thread, so a retry
backoff never keeps a worker sleeping.

Lease checks are handled by a control thread of their own, never by the
workers: when every worker is inside a body that does not return, an
expired lease is still found and unrelated work is not held up behind it.

Per message the bus wakes one worker and nobody else: the timer thread is
woken only when a new delay is due sooner than every other (each claimed
task schedules a lease check an hour ahead, which must not cost a thread
switch), and wait_idle() only when the bus becomes idle. And a message a
worker publishes while it handles one, outside a task body (a completion's
follow-up queuing the next task), is kept for that worker to handle next:
the first of them, the others go to the pool at once. A chain then runs on
one thread, with no hand-off per task. Inside a body (which may wait for
what it published) everything goes to the pool.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Callable

from function_flow import tracing
from function_flow.core import output
from function_flow.core.ports import Bus
from function_flow.core.records import Message, MessageKind

logger = logging.getLogger("function_flow.bus")

_STOP = object()


class LocalBus(Bus):
    """Delivers messages to one handler on `workers` threads.

    `release_due` is ports.Bus's (0): the timer thread delivers delayed
    messages itself.
    """

    def __init__(self, workers: int = 8, clock: Callable[[], float] = time.monotonic) -> None:
        self.workers = max(1, int(workers))
        self._clock = clock
        self._handler: Callable[[Message], object] | None = None
        self._ready: queue.SimpleQueue = queue.SimpleQueue()
        self._control: queue.SimpleQueue = queue.SimpleQueue()  # lease checks
        self._timers: list[tuple[float, int, Message, int, object]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._timer_wakeup = threading.Condition(self._lock)  # the heap's head changed
        self._idle = threading.Condition(self._lock)          # nothing left to do
        self._busy = 0             # messages queued or being handled now
        self._delayed_work = 0     # delayed RUN_TASK messages (retries)
        self._threads: list[threading.Thread] = []
        self._closed = False
        #: On a worker thread: `next`, the message it keeps for itself (or None).
        self._worker = threading.local()

    def subscribe(self, handler: Callable[[Message], object]) -> None:
        """Set the handler and start the threads (idempotent)."""
        self._handler = handler
        if self._threads:
            return
        for number in range(self.workers):
            thread = threading.Thread(target=self._work, args=(self._ready,),
                                      name=f"function-flow-worker-{number}", daemon=True)
            thread.start()
            self._threads.append(thread)
        control = threading.Thread(target=self._work, args=(self._control,),
                                   name="function-flow-control", daemon=True)
        control.start()
        self._threads.append(control)
        timer = threading.Thread(target=self._tick, name="function-flow-timer", daemon=True)
        timer.start()
        self._threads.append(timer)

    def publish(self, message: Message, delay: float = 0.0) -> None:
        # The sender's trace context goes along, as Pub/Sub's attributes carry it.
        self._publish(message, delay, 0, tracing.sender())

    def _publish(self, message: Message, delay: float, deliveries: int,
                 sender: object) -> None:
        with self._lock:
            if delay > 0:
                entry = (self._clock() + delay, next(self._sequence), message, deliveries,
                         sender)
                heapq.heappush(self._timers, entry)
                if message.kind is MessageKind.RUN_TASK:
                    self._delayed_work += 1
                if self._timers[0] is entry:  # due before anything the timer waits for
                    self._timer_wakeup.notify()
                return
            self._busy += 1
        if message.kind is not MessageKind.CHECK_LEASE:
            worker = self._worker
            if getattr(worker, "next", False) is None and output.current() is None:
                worker.next = (message, deliveries, sender)
                return
        self._queue_for(message).put((message, deliveries, sender))

    def keeps_next(self) -> bool:
        """Whether a message published now would be kept for this thread to handle
        next (a worker, outside a task body, keeping nothing yet). ports.Bus's
        optional capability: core/chaining.py then claims that attempt with
        the commit that queues it and runs it here, without a message."""
        return getattr(self._worker, "next", False) is None and output.current() is None

    def _queue_for(self, message: Message) -> queue.SimpleQueue:
        return self._control if message.kind is MessageKind.CHECK_LEASE else self._ready

    def _work(self, inbox: queue.SimpleQueue) -> None:
        worker = self._worker
        keeps = inbox is self._ready  # the control thread keeps nothing
        if keeps:
            worker.next = None
        while True:
            item = worker.next if keeps else None
            if item is None:
                item = inbox.get()
            else:
                worker.next = None
            if item is _STOP:
                return
            message, deliveries, sender = item
            try:
                assert self._handler is not None
                with tracing.resumed(sender):
                    self._handler(message)
            except BaseException:  # noqa: B036 -- redeliver later, like Pub/Sub; keep the thread
                logger.exception("handling %s failed; redelivering", message)
                self._publish(message, min(10.0, 0.05 * 2 ** deliveries), deliveries + 1,
                              sender)
            finally:
                self._done()

    def beside(self, work: Callable[[], object]) -> Callable[[], None]:
        """`work`, counted as this bus's own from now until it returns.

        For work that another thread pool does on the bus's behalf (a hosted
        remote function's answer completes its attempt there, and the end of
        a run retires its leftovers there): wait_idle() waits for it as for
        a message, so a run that work ended is all recorded when it returns.
        """
        with self._lock:
            self._busy += 1

        def counted() -> None:
            try:
                work()
            finally:
                self._done()

        return counted

    def _done(self) -> None:
        with self._lock:
            self._busy -= 1
            if not self._busy and not self._delayed_work:
                self._idle.notify_all()

    def _tick(self) -> None:
        with self._lock:
            while not self._closed:
                now = self._clock()
                while self._timers and self._timers[0][0] <= now:
                    _, _, message, deliveries, sender = heapq.heappop(self._timers)
                    if message.kind is MessageKind.RUN_TASK:
                        self._delayed_work -= 1
                    self._busy += 1
                    self._queue_for(message).put((message, deliveries, sender))
                timeout = self._timers[0][0] - now if self._timers else None
                self._timer_wakeup.wait(timeout)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing is queued, running or waiting to be retried.

        Lease checks far in the future do not count: they only matter if a
        task hangs, and waiting for them would keep a finished program alive.
        A closed bus is idle: what it still held is dropped (so the wait at
        exit does not outlast a retry's backoff after close()).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while (self._busy or self._delayed_work) and not self._closed:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._idle.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the threads; messages not yet handled are dropped."""
        with self._lock:
            self._closed = True
            self._timer_wakeup.notify_all()
            self._idle.notify_all()
        for thread in self._threads:
            if thread.name.startswith("function-flow-worker"):
                self._ready.put(_STOP)
            elif thread.name == "function-flow-control":
                self._control.put(_STOP)
        self._threads = []
