"""The in-process bus wakes workers lazily, yet never leaves work behind a
blocked one (bus/local.py).

A burst of quick messages is handled by one worker at a time (more
runnable threads only trade the GIL back and forth at each SQLite call),
while handlers that block, in a task body or anywhere, get the other
workers within a few of the timer thread's looks.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

import pytest

from function_flow.bus.local import LocalBus
from function_flow.core.messages import Message, MessageKind


def _message(number: int | str) -> Message:
    return Message("run", f"t{number}", 1, MessageKind.RUN_TASK)


def _deliver_root(bus: LocalBus, handle: Callable[[Message], None]) -> None:
    """Deliver message "troot" to `handle` and what it publishes, then close the bus."""
    try:
        bus.subscribe(handle)
        bus.publish(_message("root"))
        assert bus.wait_idle(timeout=30)
    finally:
        bus.close()


@pytest.fixture
def bus():
    bus = LocalBus(workers=8)
    yield bus
    bus.close()


def test_handlers_blocked_in_bodies_get_every_worker(bus) -> None:
    """Eight bodies that wait for each other finish: a worker that enters a body
    makes the bus wake another for the queued messages."""
    together = threading.Barrier(8, timeout=20)
    passed = []

    def handle(message: Message) -> None:
        if message.task_id == "troot":  # a worker publishes: it keeps one, wakes nobody
            for number in range(8):
                bus.publish(_message(number))
            return
        with bus.blocking():
            together.wait()
        passed.append(message.task_id)

    bus.subscribe(handle)
    bus.publish(_message("root"))
    assert bus.wait_idle(timeout=30)
    assert sorted(passed) == sorted(f"t{n}" for n in range(8))


def test_a_handler_blocked_outside_any_body_does_not_hold_up_the_queue(bus) -> None:
    """A handler stuck in engine code (a store call that waits, say) stops the
    queue's progress: the timer thread sees that and wakes another worker."""
    second_handled = threading.Event()
    waited_behind: list[str] = []

    def handle(message: Message) -> None:
        if message.task_id == "troot":
            bus.publish(_message(0))  # kept for this worker
            bus.publish(_message(1))  # queued, waking nobody
        elif message.task_id == "t0":
            if not second_handled.wait(timeout=20):
                waited_behind.append(message.task_id)
        else:
            second_handled.set()

    bus.subscribe(handle)
    bus.publish(_message("root"))
    assert bus.wait_idle(timeout=30)
    assert second_handled.is_set() and not waited_behind


def test_a_message_does_not_wait_for_another_workers_long_chain(bus) -> None:
    """A worker that keeps handling what it publishes (a chain of quick steps)
    wakes nobody, yet a message it queued beside gets a worker within a few
    of the timer thread's looks, not at the chain's end."""
    steps, other_seen_at = [0], []

    def handle(message: Message) -> None:
        if message.task_id == "tother":
            other_seen_at.append(steps[0])
            return
        steps[0] += 1
        if steps[0] < 20_000 and not other_seen_at:
            bus.publish(_message("step"))  # kept for this worker
            sum(range(200))
        if steps[0] == 10:
            bus.publish(_message("other"))  # queued: this worker is busy, nobody woken

    bus.subscribe(handle)
    bus.publish(_message("step"))
    assert bus.wait_idle(timeout=60)
    assert other_seen_at and other_seen_at[0] < 20_000, (steps, other_seen_at)


def test_a_burst_of_quick_messages_is_not_spread_over_every_worker(bus) -> None:
    """Messages a worker publishes while it handles one wake nobody: the
    handlers run one at a time, bar the odd extra worker the timer thread
    wakes when the machine stalls the first."""
    lock = threading.Lock()
    running, overlapping, handled = [0], [0], [0]

    def handle(message: Message) -> None:
        with lock:
            running[0] += 1
            overlapping[0] += running[0] > 1
            handled[0] += 1
        if message.task_id == "troot":
            for number in range(2000):
                bus.publish(_message(number))
        sum(range(200))  # a little work outside any body, like an engine step
        with lock:
            running[0] -= 1

    bus.subscribe(handle)
    bus.publish(_message("root"))
    assert bus.wait_idle(timeout=60)
    assert handled[0] == 2001
    # Woken eagerly, eight workers overlap in nearly every handling.
    assert overlapping[0] < handled[0] * 0.3, overlapping[0]


def test_the_embedded_backend_wakes_eagerly_only_where_commits_are_fsyncs(tmp_path) -> None:
    """At synchronous=FULL the workers woken at once share an fsync (group
    commit), which is worth more than sparing them the GIL's hand-offs."""
    from function_flow import backends

    for synchronous, eager in (("normal", False), ("full", True)):
        backend = backends.embedded(db_path=str(tmp_path / f"{synchronous}.db"),
                                    synchronous=synchronous)
        try:
            assert backend.bus.eager is eager
        finally:
            backend.close()


def test_a_long_lived_process_does_not_keep_a_lease_check_per_attempt_it_ran(tmp_path) -> None:
    """Each claim schedules a lease check an hour ahead; once its attempt has
    ended it is forgotten, so the timer's heap does not grow with every task
    the process ever ran (nor does a check still wanted go missing)."""
    from function_flow import backends
    from function_flow.bus.lease_checks import FORGOTTEN_KEPT
    from function_flow.tasks import Job

    tasks = 3 * FORGOTTEN_KEPT
    job = Job("long-lived")
    for number in range(tasks):
        job.task(f"t{number}", deps=[f"t{number - 1}"] if number else None)(
            lambda task, job: None)
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    try:
        job.use_backend(backend)
        assert job.run(timeout=120).status.value == "SUCCEEDED"
        assert backend.bus.delayed <= FORGOTTEN_KEPT + 1, backend.bus.delayed
    finally:
        backend.close()


def test_a_forgotten_lease_check_is_dropped_and_one_wanted_again_is_delivered(bus) -> None:
    """Only checks still wanted are delivered, even under the same message."""
    checks: list[Message] = []
    bus.subscribe(checks.append)
    ended = Message("run", "ended", 1, MessageKind.CHECK_LEASE)
    held = Message("run", "held", 1, MessageKind.CHECK_LEASE)
    bus.publish(ended, 0.05)
    bus.publish(held, 0.05)
    bus.forget(ended)
    bus.forget(held)
    bus.publish(held, 0.1)  # claimed again after a hold: the same attempt's check
    deadline = time.monotonic() + 20
    while held not in checks and time.monotonic() < deadline:
        time.sleep(0.01)
    assert checks.count(held) >= 1 and ended not in checks


def test_a_worker_reserves_the_message_it_would_handle_next_and_may_spend_it() -> None:
    """ports.Bus.reserve_next: a worker outside a body gets the RUN_TASK message of
    the run it names that it would handle next (the one it keeps, else the
    queue's head, never past it); settle_next(True) spends it, unhandled,
    settle_next(False) leaves it where it was; the bus still knows when it is
    idle."""
    from function_flow.core import output

    bus = LocalBus(workers=1)
    handled: list[str] = []
    seen: dict[str, object] = {}

    def handle(message: Message) -> None:
        handled.append(message.task_id)
        if message.task_id == "troot":
            bus.publish(_message(0))  # kept for this worker
            for queued in (Message("other", "t9", 1, MessageKind.RUN_TASK), _message(1),
                           _message(2), _message(3)):
                bus.publish(queued)
        elif message.task_id == "t0":
            seen["another run's at the head"] = bus.reserve_next("run")
        elif message.task_id == "t9":
            seen["spent"] = bus.reserve_next("run")
            bus.settle_next(True)
            with output.capturing("run", "t9", 1):
                seen["in a body"] = bus.reserve_next("run")
            seen["the head, put back"] = bus.reserve_next("run")
            bus.settle_next(False)
            bus.publish(_message(4))  # kept for this worker
            seen["the kept one"] = bus.reserve_next("run")
            bus.settle_next(False)

    try:
        bus.subscribe(handle)
        assert bus.reserve_next("run") is None  # not a worker of this bus
        bus.publish(_message("root"))
        assert bus.wait_idle(timeout=30)
    finally:
        bus.close()
    assert handled == ["troot", "t0", "t9", "t4", "t2", "t3"], handled
    reserved = {what: None if found is None else found[0].task_id  # type: ignore[index]
                for what, found in seen.items()}
    assert reserved == {"another run's at the head": None, "spent": "t1", "in a body": None,
                        "the head, put back": "t2", "the kept one": "t4"}, reserved


def test_a_worker_reserves_nothing_while_another_is_busy_outside_a_body() -> None:
    """The second worker, woken for a queue stalled behind the first (busy in engine
    code), reserves nothing: it is to wait once its delivery ends, so that one
    worker runs the engine's steps (LocalBus.reserve_next)."""
    bus = LocalBus(workers=2)
    second_looked = threading.Event()
    seen: dict[str, object] = {}

    def handle(message: Message) -> None:
        if message.task_id == "troot":
            for number in range(3):
                bus.publish(_message(number))  # t0 kept, t1 and t2 queued
        elif message.task_id == "t0":
            second_looked.wait(timeout=20)  # outside a body: the queue stalls
        elif message.task_id == "t1":
            seen["t1"] = bus.reserve_next("run")
            second_looked.set()

    _deliver_root(bus, handle)
    assert seen == {"t1": None}, seen


def test_a_message_kept_for_a_worker_goes_to_the_pool_when_it_enters_a_body() -> None:
    """A worker may keep a message for itself and then run a body (a completion
    that claimed the next attempt ahead queues that attempt's own successors
    first): the body may wait for what that message starts, so entering the
    body hands the kept message to another worker."""
    bus = LocalBus(workers=2)
    started = threading.Event()
    waited: list[bool] = []

    def handle(message: Message) -> None:
        if message.task_id == "troot":
            bus.publish(_message("kept"))  # outside a body: kept for this worker
            with bus.blocking():  # the body waits for what the kept message does
                waited.append(started.wait(timeout=10))
        elif message.task_id == "tkept":
            started.set()

    _deliver_root(bus, handle)
    assert waited == [True]


def test_more_workers_than_the_system_lets_start_is_a_configuration_error(
        monkeypatch) -> None:
    """What `--workers 1000000` meets: the threads started are stopped again."""
    from function_flow.errors import ConfigurationError

    real_start, started = threading.Thread.start, []

    def start(thread: threading.Thread) -> None:
        if len(started) == 3:
            raise RuntimeError("can't start new thread")
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    bus = LocalBus(workers=10)
    with pytest.raises(ConfigurationError, match=r"cannot start 10 worker threads \(can't "
                                                 r"start new thread, after 3\); use fewer"):
        bus.subscribe(lambda message: None)
    for thread in started:
        thread.join(timeout=10)
        assert not thread.is_alive()
