"""The runner: plays Pub/Sub, the machines and the poller around the real engine.

`run_scenario` builds a `Harness` for one `Scenario` on a fresh store from
a store factory (stores.py), runs it and returns the oracle's verdict.

Delivery: `PoolBus` (fakes.py) only collects messages. The runner picks the
next due one at random, delivers some twice (half the copies at once, so
two instances get the same message together), re-injects long-delivered
ones late, and honours delays against a `FakeClock` that it advances only
when nothing is due (so leases expire only for executors that are dead).
In sequential mode a running body may let other deliveries happen, nested
in its thread, as other instances would meanwhile; with `threads`, that
many instances deliver from one pool at once.

Crashes: a crashed delivery (SimulatedCrash) is put back into the pool, as
Pub/Sub redelivers a message its function never acknowledged.

The poller: when the pool is empty and the run has not ended, time passes
and the runner calls `engine.poll`, the one poller policy of every backend
(or `engine.resume`, the embedded backend's recovery, when the scenario
says so). The poller also runs at random in the middle of deliveries.
After the end, every message is delivered again and late external
completions are tried: none may change anything.
"""

from __future__ import annotations

import random
import threading
import traceback
from typing import Any, Callable

from function_flow.core import control, hooks
from function_flow.core.engine import Engine
from function_flow.core.graph import END_TASK_ID
from function_flow.core.messages import MessageKind
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.core.recovery import POLLER_STALE_AFTER_SECONDS
from function_flow.errors import RunEndedError

from . import final_checks, hook_checks
from .fakes import Crasher, FakeClock, Pending, PoolBus, RecordingStore, SimulatedCrash
from .oracle import R, Recorder
from .scenario import LEASE, Scenario, build_dag
from .stores import StoreFactory, StoreUnderTest, sqlite_store
from .workflow import HarnessWorkflow


class Harness:
    """Runs one scenario to its end and judges it (see module docstring)."""

    def __init__(self, scenario: Scenario, under: StoreUnderTest,
                 engine_factory: Callable[..., Engine] = Engine) -> None:
        self.scenario = scenario
        self.rng = random.Random(scenario.seed)
        self.clock = FakeClock()
        #: Hook bodies that ran: (hook id, attempt) -> what happened (hook_checks.py).
        self.hook_bodies: dict[tuple[str, int], dict[str, Any]] = {}
        self.dag = build_dag(scenario, hook_checks.hook_specs(self) if scenario.hooks else ())
        self.workflow = HarnessWorkflow(self, self.dag, scenario.max_parallel)
        self.crasher = Crasher(scenario.crash_ops)
        self.bus = PoolBus(self.clock, self.crasher)
        #: The store itself, for the oracle's reads: not recorded, never crashes.
        self.raw_store = under.store
        self.store_name = under.name
        probe = Engine(self.workflow, self.raw_store, self.bus)  # only to learn the slot count
        self.recorder = Recorder(scenario, self.dag, probe.slots)
        self.store = RecordingStore(self.raw_store, self.recorder, self.crasher,
                                    conflict=under.conflict,
                                    conflict_rate=scenario.conflict_rate,
                                    seed=scenario.seed + 2)
        self.engine = engine_factory(self.workflow, self.store, self.bus, clock=self.clock.now,
                                     rng=random.Random(scenario.seed + 1),
                                     lease_check_messages=scenario.lease_check_messages)
        self.body_lock = threading.Lock()
        self.bodies: dict[tuple[str, int], dict[str, Any]] = {}
        self.executing: dict[tuple[str, int], float] = {}
        self.max_executing = 0
        #: Attempts whose executor died: the delivered one, and any attempt its
        #: delivery ran after it (a chain's next claim runs in the same delivery).
        self.crashed_deliveries: set[tuple[str, int]] = set()
        #: Per thread: the bodies the delivery in progress has started.
        self.local = threading.local()
        self.trace: list[str] = []
        self.steps = 0
        self.recover_rounds = 0
        self.errors: list[str] = []
        self.run_id = ""
        self.busy = 0
        self.stopped = False
        self.depth = 0
        #: Control actions still to take, (delivery step, action), and whether
        #: a cancel was asked for (a CANCELLED run needs one).
        self.controls = list(scenario.controls)
        self.cancel_requested = False

    # ------------------------------------------------------------ delivery

    @property
    def max_steps(self) -> int:
        attempts = max(self.scenario.retries, default=0) + 2
        return 200 + 60 * (self.scenario.n + 1) * attempts

    def yield_thread(self) -> None:
        """Give other threads a chance to interleave with a running body."""
        threading.Event().wait(0.0005)

    def overrun(self, task_id: str, attempt: int, start: float) -> None:
        """A body that runs for about its whole lease, or longer (sequential mode).

        Time passes while it runs, and other deliveries happen meanwhile: its
        lease check may fire and its next attempt may run before it returns.
        """
        self.clock.advance_to(start + LEASE + self.rng.uniform(-15.0, 20.0))
        self._log(f"{task_id} a{attempt} still running at t="
                  f"{self.clock.now() - FakeClock.START:.2f} (lease ends "
                  f"{start + LEASE - FakeClock.START:.2f})")
        self.interleave(force=True)

    def interleave(self, force: bool = False) -> None:
        """Deliver a few due messages while a body runs (sequential mode).

        Only messages already due: the clock must not move while a live
        executor holds a lease, or its lease would expire under it.
        """
        if self.depth >= 4 or (not force and self.rng.random() >= self.scenario.interleave_rate):
            return
        self.depth += 1
        try:
            for _ in range(self.rng.randint(1, 6 if force else 3)):
                with self.bus.cond:
                    item = self.bus.pick(self.rng, self.scenario) if self.bus.pool else None
                if item is None:
                    return
                self._step_budget()
                self._log(f"(inside a running body, depth {self.depth})")
                self._take_controls()
                self._deliver(item)
                self._check_store_parallelism()
        finally:
            self.depth -= 1

    def _poll(self) -> None:
        """The poller runs while deliveries go on; it may crash too."""
        armed = self.crasher.armed()
        self.crasher.local.armed = True
        try:
            self.engine.poll(stale_after=POLLER_STALE_AFTER_SECONDS)
            self._log("poller: recover")
        except SimulatedCrash as crash:
            self._log(f"poller: recover CRASHED ({crash})")
        finally:
            self.crasher.local.armed = armed

    def _take_controls(self, every: bool = False) -> bool:
        """Take the control actions due at this step (all of them with `every`)."""
        with self.bus.cond:
            due = [c for c in self.controls if every or c[0] <= self.steps]
            for planned in due:
                self.controls.remove(planned)
        for _, action in due:
            self.control(action)
        return bool(due)

    def control(self, action: str) -> None:
        """A person or a client of the control endpoint acts on the run.

        It may crash like any caller; it is then asked again a few steps
        later, as a client retries a request that got no answer.
        """
        self.cancel_requested = self.cancel_requested or action == "cancel"
        armed = self.crasher.armed()
        self.crasher.local.armed = True
        try:
            outcome = control.ACTIONS[action](self.engine, self.run_id)
            self._log(f"control: {action} -> {outcome.outcome}")
        except RunEndedError as exc:
            self._log(f"control: {action} refused: {exc}")
        except SimulatedCrash as crash:
            self._log(f"control: {action} CRASHED ({crash}); asked again later")
            with self.bus.cond:
                self.controls.append((self.steps + 3, action))
        finally:
            self.crasher.local.armed = armed

    def _stale_completion(self) -> None:
        """A late external completion of an attempt that already finished."""
        with self.recorder.lock:
            done = [(t.task_id, t.old_attempt) for t in self.recorder.transitions
                    if t.old is R and t.task_id != END_TASK_ID and not t.held]
        if not done:
            return
        task_id, attempt = self.rng.choice(done)
        ok = self.rng.random() < 0.5
        before = len(self.recorder.transitions)
        outcome = self.engine.complete(self.run_id, task_id, attempt, ok=ok,
                                       value={"late": True}, error="late failure")
        self._log(f"late complete({task_id}, a{attempt}, ok={ok}) -> {outcome}")
        if outcome != "stale" or len(self.recorder.transitions) != before:
            self.recorder.violation(
                f"a late completion of finished attempt {attempt} of {task_id} was "
                f"not ignored: {outcome}")

    def _log(self, text: str) -> None:
        with self.bus.cond:
            self.trace.append(f"[{self.steps}] t={self.clock.now() - FakeClock.START:.2f} {text}")

    def _deliver(self, item: Pending) -> None:
        message = item.message
        armed = self.crasher.armed()
        self.crasher.local.armed = True
        outer_bodies = getattr(self.local, "bodies", None)
        self.local.bodies = started = []
        try:
            outcome = self.engine.handle(message)
        except SimulatedCrash as crash:
            outcome = f"CRASH ({crash}); redelivered later"
            with self.body_lock:
                if message.kind is MessageKind.RUN_TASK:
                    self.crashed_deliveries.add((message.task_id, message.attempt))
                self.crashed_deliveries.update(started)
            # Not acknowledged: Pub/Sub delivers it again after the ack deadline.
            self.bus.put(message, self.clock.now() + self.rng.uniform(0.0, 10.0),
                         item.generation)
        finally:
            self.crasher.local.armed = armed
            self.local.bodies = outer_bodies
        self._log(f"deliver {message.task_id} a{message.attempt} {message.kind.value} "
                  f"(copy gen {item.generation}) -> {outcome}")

    def _step_budget(self) -> None:
        self.steps += 1
        if self.steps > self.max_steps:
            raise AssertionError(
                f"liveness: run {self.run_id} still going after {self.max_steps} "
                f"deliveries; last steps:\n" + "\n".join(self.trace[-30:]))

    def _drain_sequential(self) -> None:
        while True:
            with self.bus.cond:
                if not self.bus.pool:
                    return
                item = self.bus.pick(self.rng, self.scenario)
                if item is None:
                    self.bus.advance_clock()
                    continue
            self._step_budget()
            if self.rng.random() < self.scenario.recover_rate:
                self._poll()
            if self.rng.random() < self.scenario.reinject_rate:
                self._stale_completion()
            self._take_controls()
            self._deliver(item)
            self._check_store_parallelism()

    def _worker(self) -> None:
        try:
            while True:
                with self.bus.cond:
                    while True:
                        if self.stopped:
                            return
                        if not self.bus.pool and self.busy == 0:
                            self.bus.cond.notify_all()
                            return
                        item = self.bus.pick(self.rng, self.scenario) if self.bus.pool else None
                        if item is not None:
                            self.busy += 1
                            self._step_budget()
                            break
                        if self.bus.pool and self.busy == 0:
                            self.bus.advance_clock()  # nobody runs: leases of the dead expire
                            continue
                        self.bus.cond.wait()
                    poll = self.rng.random() < self.scenario.recover_rate
                try:
                    if poll:
                        self._poll()
                    self._take_controls()
                    self._deliver(item)
                    self._check_store_parallelism()
                finally:
                    with self.bus.cond:
                        self.busy -= 1
                        self.bus.cond.notify_all()
        except BaseException as exc:  # report, and stop the others
            with self.bus.cond:
                self.errors.append("".join(traceback.format_exception(exc)))
                self.stopped = True
                self.bus.cond.notify_all()

    def _drain_threaded(self) -> None:
        threads = [threading.Thread(target=self._worker, name=f"instance-{i}")
                   for i in range(self.scenario.threads)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if self.errors:
            raise AssertionError("a delivery thread failed:\n" + self.errors[0])

    def _drain(self) -> None:
        if self.scenario.threads:
            self._drain_threaded()
        else:
            self._drain_sequential()

    def _check_store_parallelism(self) -> None:
        running = [t for t in self.raw_store.find_tasks(self.run_id, TaskStatus.RUNNING,
                                                        10_000) if not hooks.is_hook(t.task_id)]
        if len(running) > self.scenario.max_parallel:
            self.recorder.violation(
                f"store shows {len(running)} RUNNING tasks after a delivery, "
                f"max_parallel_tasks is {self.scenario.max_parallel}")

    def crash_count(self) -> int:
        """Crashes that happened: planned operations reached, bodies that died."""
        with self.body_lock:
            dead = sum(1 for body in self.bodies.values() if body["outcome"] == "crashed")
        return len(self.crasher.fired) + dead

    def run_status(self) -> RunStatus:
        run = self.raw_store.get_run(self.run_id)
        assert run is not None
        return run.status

    def done(self) -> bool:
        """The run ended, and its hooks too."""
        run = self.raw_store.get_run(self.run_id)
        assert run is not None
        return run.status.is_final and not run.hooks_pending

    def execute(self) -> None:
        """Start the run and deliver until it has ended and every message is spent."""
        self.crasher.local.armed = True
        try:
            self.run_id, created = self.engine.start({"seed": self.scenario.seed},
                                                     run_id="run-1")
            assert created
        except SimulatedCrash as crash:
            self.run_id = "run-1"
            self._log(f"start: CRASH ({crash})")
        finally:
            self.crasher.local.armed = False
        if self.raw_store.get_run(self.run_id) is None:
            raise AssertionError("start() crashed before creating the run")
        resumes = 0
        while True:
            self._drain()
            if self._take_controls(every=True):
                continue  # planned for later than the run's deliveries reached
            if self.done():
                break
            if not self.run_status().is_final \
                    and self.raw_store.get_run(self.run_id).paused_at is not None \
                    and resumes <= len(self.scenario.controls) + self.crash_count():
                # Nothing moves in a paused run: its person resumes it.
                resumes += 1
                self._log("pool empty, run paused: resume")
                self.control("resume")
                continue
            # What the deployed poller does: time passes, then recover().
            self.recover_rounds += 1
            if self.recover_rounds > self.crash_count() + 1:
                break  # judged in check(): more rounds than crashes explain
            # The poller runs every minute; by the time it finds the stall,
            # leases of dead executors and its grace period have passed.
            self.clock.advance_to(self.clock.now() + max(LEASE, POLLER_STALE_AFTER_SECONDS) + 1.0)
            if self.scenario.resume_on_stall:
                # The embedded backend's `function-flow resume`: nothing runs
                # now, so every RUNNING attempt's executor is dead.
                self._log(f"pool empty, run not ended: resume {self.recover_rounds}")
                self.engine.resume(self.run_id)
            else:
                self._log(f"pool empty, run not ended: poller round {self.recover_rounds}")
                self.engine.poll(stale_after=POLLER_STALE_AFTER_SECONDS)
        # Late duplicates after the end must change nothing.
        for message in list(dict.fromkeys(self.bus.delivered)):
            self.bus.put(message, self.clock.now())
        self._drain()
        self.engine.recover(self.run_id)
        self._drain()
        for _ in range(5):
            self._stale_completion()

    # --------------------------------------------------------------- judging

    # --------------------------------------------------------------- judging

    def check(self) -> list[str]:
        """Every invariant this run can show (final_checks.py); [] when all hold."""
        return final_checks.check(self)

    def report(self, problems: list[str]) -> str:
        return final_checks.report(self, problems)


def run_scenario(scenario: Scenario, engine_factory: Callable[..., Engine] = Engine,
                 store_factory: StoreFactory = sqlite_store) -> tuple[Harness, list[str]]:
    """Run one scenario on a fresh store; returns the harness and its problems."""
    with store_factory() as under:
        harness = Harness(scenario, under, engine_factory)
        harness.execute()
        return harness, harness.check()
