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
the first of them, the others go to the queue. A chain then runs on
one thread, with no hand-off per task. Inside a body (which may wait for
what it published) everything goes to the pool, and so does a message kept
before the body began (`blocking`). A completion may also
take, for its worker, the RUN_TASK message that worker would handle next
(`reserve_next`: the one it keeps, or the queue's head; nothing while
another worker is busy outside a body, since this one is to wait then)
and claim that attempt in its own commit (core/chaining.py); the message
then leaves the bus unhandled (`settle_next`).

Workers are woken lazily, as Go's scheduler hands off a processor: a
message queued while a worker is busy outside a task body wakes nobody
(that worker takes it next), and a worker that finds another busy outside a
body waits instead of taking work (its kept message goes to the queue),
unless it was woken with a pass. The timer thread, while the queue is not
empty, looks every millisecond and wakes one worker, with a pass, if the
queue's head has waited since its last look or every busy worker is inside
a body (`blocking`): so no message waits much longer than a look. Engine
steps hold the GIL but for SQLite's calls, which release it: every runnable
thread more turns each of those calls into a thread switch, so a fan-out of
no-op tasks on eight eager workers cost twice what it costs on one (issue
11). Bodies that block (I/O, a remote call, a sleep) still get all the
workers, one more per look. An `eager` bus wakes a worker per message
instead (the embedded backend at synchronous=FULL: there a commit is an
fsync, and the transactions of the workers woken meanwhile share it).
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from typing import Callable, Iterator

from function_flow import tracing
from function_flow.bus.lease_checks import LeaseChecks
from function_flow.core import output
from function_flow.core.messages import Message, MessageKind
from function_flow.core.ports import Bus
from function_flow.errors import ConfigurationError

logger = logging.getLogger("function_flow.bus")

_STOP = object()

#: Seconds between the timer thread's looks at a backlog (see the docstring).
BACKLOG_POLL = 0.001


def _runs_task_of(message: Message, run_id: str) -> bool:
    return message.kind is MessageKind.RUN_TASK and message.run_id == run_id


class LocalBus(Bus):
    """Delivers messages to one handler on `workers` threads.

    `release_due` is ports.Bus's (0): the timer thread delivers delayed
    messages itself.
    """

    def __init__(self, workers: int = 8, clock: Callable[[], float] = time.monotonic,
                 *, eager: bool = False) -> None:
        self.workers = max(1, int(workers))
        #: Wake a worker for every message queued, as a plain pool does (for
        #: SQLite at synchronous=FULL, where a commit is an fsync: the
        #: transactions of workers woken meanwhile are committed with it).
        self.eager = eager
        self._clock = clock
        self._handler: Callable[[Message], object] | None = None
        #: Messages waiting for a worker; `_work_ready` wakes one.
        self._ready: collections.deque = collections.deque()
        self._control: queue.SimpleQueue = queue.SimpleQueue()  # lease checks
        self._timers: list[tuple[float, int, Message, int, object]] = []
        self._sequence = itertools.count()
        self._lock = threading.Lock()
        self._timer_wakeup = threading.Condition(self._lock)  # the heap's head changed
        self._idle = threading.Condition(self._lock)          # nothing left to do
        self._work_ready = threading.Condition(self._lock)    # a worker may take one
        self._waiting_workers = 0  # workers waiting in _take
        self._handling = 0         # workers handling a message
        self._in_bodies = 0        # of those, inside a task body (blocking)
        self._passes = 0           # wake-ups that may take a message anyway (_take)
        #: The queue's head when the timer thread last looked (None: not looking).
        self._backlog_head: object = None
        self._backlog_look = 0.0   # time.monotonic() of its next look
        self._busy = 0             # messages queued or being handled now
        self._delayed_work = 0     # delayed RUN_TASK messages (retries)
        self._lease_checks = LeaseChecks()  # those in _timers, and the forgotten
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
            thread = threading.Thread(target=self._work, args=(None,),
                                      name=f"function-flow-worker-{number}", daemon=True)
            try:
                thread.start()
            except RuntimeError as exc:  # the system's limit of threads
                self.close()
                raise ConfigurationError(
                    f"cannot start {self.workers:,} worker threads ({exc}, after "
                    f"{number:,}); use fewer (--workers, FUNCTION_FLOW_WORKERS)") from None
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
                else:
                    self._lease_checks.scheduled(message)
                if self._timers[0] is entry:  # due before anything the timer waits for
                    self._timer_wakeup.notify()
                return
            self._busy += 1
        if message.kind is MessageKind.CHECK_LEASE:
            self._control.put((message, deliveries, sender))
            return
        worker = self._worker
        if getattr(worker, "next", False) is None and output.current() is None:
            worker.next = (message, deliveries, sender)
            return
        with self._lock:
            self._queue_work((message, deliveries, sender))

    def keeps_next(self) -> bool:
        """Whether a message published now would be kept for this thread to handle
        next (a worker, outside a task body, keeping nothing yet). ports.Bus's
        optional capability: core/chaining.py then claims that attempt with
        the commit that queues it and runs it here, without a message."""
        return getattr(self._worker, "next", False) is None and output.current() is None

    def reserve_next(self, run_id: str) -> tuple[Message, object] | None:
        """The RUN_TASK message of `run_id` this worker handles next (ports.Bus): the
        one it keeps, or else the queue's head, which it then keeps. A worker
        outside a task body only, as for `keeps_next`, and none while another
        worker is busy outside a body: this one is to wait once its delivery
        ends (`_work`), so that one worker runs the engine's steps."""
        worker = self._worker
        if getattr(worker, "next", False) is False or output.current() is not None \
                or self._handling - self._in_bodies > 1 and not self.eager:
            return None
        item = worker.next
        if item is None:
            with self._lock:
                if not self._ready or self._ready[0] is _STOP \
                        or not _runs_task_of(self._ready[0][0], run_id):
                    return None
                item = worker.next = self._ready.popleft()
            worker.popped = True
        elif not _runs_task_of(item[0], run_id):
            return None
        return item[0], item[2]

    def settle_next(self, claimed: bool) -> None:
        """A reserved message whose attempt was claimed is spent: it leaves the bus.
        Otherwise it is where it was: kept for this worker, or the queue's head."""
        worker = self._worker
        popped, worker.popped = getattr(worker, "popped", False), False
        if claimed:
            worker.next = None
            self._done()
        elif popped:
            with self._lock:
                self._ready.appendleft(worker.next)
                self._watch_backlog()
            worker.next = None

    def _queue_work(self, item: tuple[Message, int, object]) -> None:
        """Queue a message for the workers (holding the lock); wake one only if
        no worker outside a body would come for it (see the docstring)."""
        self._ready.append(item)
        if self.eager or self._handling - self._in_bodies <= 0:
            self._wake_one()
        else:
            self._watch_backlog()

    def _wake_one(self) -> None:
        """Wake a waiting worker, with a pass to handle a message even though
        another worker is outside a body (holding the lock)."""
        if self._waiting_workers:
            self._passes = min(self._passes + 1, self._waiting_workers)
            self._work_ready.notify()

    def _watch_backlog(self) -> None:
        """Make the timer thread look at the queue while it is not empty."""
        if self._backlog_head is None:
            self._backlog_head = self._ready[0]
            self._backlog_look = time.monotonic() + BACKLOG_POLL
            self._timer_wakeup.notify()

    def _take(self, handled: bool) -> object:
        """The next message for this worker (`handled`: it has just handled one).

        It waits while the queue is empty, and also while another worker is
        busy outside a body, unless woken with a pass: one worker runs the
        engine's steps, the others run bodies (see the docstring).
        """
        with self._lock:
            if handled:
                self._handling -= 1
            while not self._ready or (self._handling - self._in_bodies > 0 and not self.eager
                                      and not self._passes and not self._closed):
                if self._ready:
                    self._watch_backlog()
                self._waiting_workers += 1
                self._work_ready.wait()
                self._waiting_workers -= 1
            if self._passes:
                self._passes -= 1
            item = self._ready.popleft()
            if item is not _STOP:
                self._handling += 1
            return item

    @contextlib.contextmanager
    def blocking(self) -> Iterator[None]:
        """While a task body runs on this worker (ports.Bus): the timer thread
        wakes another worker for the backlog if the body takes a while."""
        worker = self._worker
        if getattr(worker, "next", False) is False:  # not a worker of this bus
            yield
            return
        with self._lock:
            self._in_bodies += 1
            # A message kept for this worker (the successors of an attempt a
            # completion claimed ahead, queued before its body) goes to the
            # pool: the body may wait for what it starts.
            kept, worker.next = worker.next, None
            if kept is not None:
                self._queue_work(kept)
        try:
            yield
        finally:
            with self._lock:
                self._in_bodies -= 1

    def _look_at_backlog(self) -> float | None:
        """The timer thread, holding the lock: when a look is due, wake one more
        worker if the queue's head has waited since the last look or every
        busy worker is in a body; seconds until the next look (None: no
        backlog). So no message waits much longer than a look for a worker."""
        if not self._ready or self._closed:
            self._backlog_head = None
            return None
        now = time.monotonic()
        if now < self._backlog_look:
            return self._backlog_look - now
        head = self._ready[0]
        if head is self._backlog_head or self._handling - self._in_bodies <= 0:
            self._wake_one()
        self._backlog_head, self._backlog_look = head, now + BACKLOG_POLL
        return BACKLOG_POLL

    def _yield_kept(self, item: tuple[Message, int, object]) -> None:
        """Queue the message this worker kept, and let `_take` park it: another
        worker is busy outside a body (a slot's hand-over keeps a message for
        each completer, so without this every worker woken once would stay)."""
        with self._lock:
            self._ready.append(item)
            self._watch_backlog()

    def _work(self, inbox: queue.SimpleQueue | None) -> None:
        """A worker's loop (inbox None: the shared queue) or the control thread's."""
        worker = self._worker
        keeps = inbox is None  # the control thread keeps nothing
        if keeps:
            worker.next = None
        handled = False
        while True:
            item = worker.next if keeps else None
            if item is not None:
                worker.next = None
                if self._handling - self._in_bodies > 1 and not self.eager:
                    self._yield_kept(item)  # another worker is busy outside a body
                    item = None
            if item is None:
                item = self._take(handled) if inbox is None else inbox.get()
            handled = True
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
                    elif self._lease_checks.due(message):
                        continue
                    self._busy += 1
                    if message.kind is MessageKind.CHECK_LEASE:
                        self._control.put((message, deliveries, sender))
                    else:
                        self._queue_work((message, deliveries, sender))
                timeout = self._timers[0][0] - now if self._timers else None
                if self._backlog_head is not None:
                    poll = self._look_at_backlog()
                    if poll is not None:
                        timeout = poll if timeout is None else min(timeout, poll)
                self._timer_wakeup.wait(timeout)

    def forget(self, message: Message) -> None:
        """Drop a delayed lease check no longer wanted: its attempt ended (ports.Bus).

        Each claim schedules one an hour ahead; kept until due, a process
        that runs tasks for hours would hold one per attempt it ever ran.
        """
        if message.kind is not MessageKind.CHECK_LEASE:
            return
        with self._lock:
            self._timers = self._lease_checks.forget(message, self._timers)

    @property
    def delayed(self) -> int:
        """Messages waiting for their time here: retries' backoffs, lease checks."""
        with self._lock:
            return len(self._timers)

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
        with self._lock:
            for thread in self._threads:
                if thread.name.startswith("function-flow-worker"):
                    self._ready.append(_STOP)
                    self._work_ready.notify()
                elif thread.name == "function-flow-control":
                    self._control.put(_STOP)
        self._threads = []
