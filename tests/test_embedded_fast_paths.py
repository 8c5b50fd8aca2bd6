"""The embedded backend's fast paths keep their promises (issue 11).

- job.wait() learns of a run's end from the store, not from a poll: with a
  poll interval of an hour it still returns when the run ends; with
  hooks=False it returns while a hook still runs, its follow-ups done;
- the run cache of SqliteStore never serves a record another writer
  changed (another store on the same file, a run deleted and started
  again under its id);
- a body that starts a run and waits for it does not hold that run's first
  message on its own, blocked, worker thread;
- synchronous=full is what the connections use, from the argument or the
  environment, and a bad value is refused with the accepted ones.
"""

from __future__ import annotations

import threading

import pytest

from function_flow import backends, run_end, tasks
from function_flow.config import Settings
from function_flow.core import hooks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import ConfigurationError
from function_flow.store.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(120)

#: Deadlines, not timed assertions: each is far beyond what the step needs.
DEADLINE = 60.0


@pytest.fixture
def embedded(tmp_path):
    made = []

    def make(workers: int = 2, **options) -> backends.Backend:
        backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=workers,
                                    **options)
        made.append(backend)
        return backend

    yield make
    for backend in made:
        backend.close()


def test_wait_returns_when_the_run_ends_not_at_the_next_poll(embedded):
    release, waiting = threading.Event(), threading.Event()
    job = tasks.Job(name="notified")

    @job.task("first")
    def first(task, job):
        assert release.wait(DEADLINE)

    @job.task("second", deps=["first"])
    def second(task, job):
        return "done"

    job.use_backend(embedded())
    store = job.engine.store
    wait_run_write = store.wait_run_write

    def spied(seen, timeout):  # the waiter is in its pause: the run has not ended
        waiting.set()
        return wait_run_write(seen, timeout)

    store.wait_run_write = spied
    run_id = job.start()
    outcome = {}
    waiter = threading.Thread(target=lambda: outcome.update(
        record=job.wait(run_id, poll_interval=3600)), daemon=True)
    waiter.start()
    assert waiting.wait(DEADLINE)
    release.set()
    waiter.join(DEADLINE)
    assert not waiter.is_alive(), "job.wait slept its poll interval: no notification"
    assert outcome["record"].status is RunStatus.SUCCEEDED


@pytest.mark.parametrize("slots", [5, 1])
def test_wait_without_hooks_returns_while_a_hook_runs_with_the_follow_ups_done(
        embedded, monkeypatch, slots):
    """The grace for follow-ups is ten minutes here: a waiter that counted the
    running hook as a follow-up would return only once the hook gave up waiting.
    With one slot, `beside` is claimed after the run failed and cancelled,
    which leaves the end task's record WAITING for good: not a follow-up either."""
    monkeypatch.setattr(run_end, "FOLLOW_UP_GRACE_SECONDS", 10 * DEADLINE)
    release = threading.Event()
    job = tasks.Job(name="slow_hook", max_parallel_tasks=slots)

    @job.task("fails")
    def fails(task, job):
        raise RuntimeError("boom")

    job.task("below", deps=["fails"])(lambda task, job: "never")
    job.task("beside")(lambda task, job: "done")

    @job.on_end
    def clean_up(run):
        assert release.wait(DEADLINE)

    job.use_backend(embedded())
    run_id = job.start()
    try:
        record = job.wait(run_id, hooks=False)
        statuses = {t.task_id: t.status for t in job.engine.store.get_tasks(run_id)}
    finally:
        release.set()
    assert record.status is RunStatus.FAILED
    assert not statuses[hooks.ON_END].is_final, "job.wait(hooks=False) waited for on_end"
    assert statuses["below"] is TaskStatus.UPSTREAM_FAILED
    assert statuses["beside"].is_final
    assert not job.wait(run_id).hooks_pending


def test_the_run_cache_sees_what_other_writers_change(tmp_path):
    from function_flow.core.records import RunRecord

    path = str(tmp_path / "runs.db")
    mine, other = SqliteStore(path), SqliteStore(path)  # another process, in effect
    mine.create_run(RunRecord("r1", "job", "h", {"n": 1}), [], {})
    assert mine.get_run("r1").args == {"n": 1}  # now cached
    other.transact(lambda tx: tx.update_run("r1", {"status": "CANCELLED"}))
    assert mine.get_run("r1").status is RunStatus.CANCELLED
    other.delete_run("r1")
    assert mine.get_run("r1") is None
    other.create_run(RunRecord("r1", "job", "h", {"n": 2}), [], {})  # same id, anew
    assert mine.get_run("r1").args == {"n": 2}
    record = mine.get_run("r1")
    record.args = {"changed": "by the caller"}
    assert mine.get_run("r1").args == {"n": 2}, "callers share the cached record"


def test_a_body_that_waits_for_a_run_it_started_is_not_sitting_on_it(embedded):
    job = tasks.Job(name="starter")
    inner_ran = threading.Event()

    @job.task("outer")
    def outer(task, job):
        if job.get_arguments().get("inner"):
            inner_ran.set()
            return "inner"
        job.start({"inner": True})
        return inner_ran.wait(DEADLINE)  # the other worker runs the run it started

    job.use_backend(embedded(workers=2))
    record = job.run(timeout=DEADLINE)
    assert record.status is RunStatus.SUCCEEDED
    assert job.get_task_result("outer") is True


def test_synchronous_full_on_request_and_refused_when_unknown(embedded, tmp_path):
    def mode(store: SqliteStore) -> int:
        return store._connection().execute("PRAGMA synchronous").fetchone()[0]

    assert mode(embedded().store) == 1  # NORMAL, the default
    assert mode(embedded(synchronous="full").store) == 2  # FULL
    settings = Settings.from_env({"FUNCTION_FLOW_SQLITE_SYNCHRONOUS": "FULL"})
    assert mode(embedded(settings=settings).store) == 2
    with pytest.raises(ConfigurationError, match="'normal'.*'full'"):
        Settings.from_env({"FUNCTION_FLOW_SQLITE_SYNCHRONOUS": "off"})
    with pytest.raises(ValueError, match="'normal' or 'full'"):
        SqliteStore(str(tmp_path / "other.db"), synchronous="extra")


def test_writers_waiting_meanwhile_share_one_commit_and_a_failure_undoes_only_its_own(
        tmp_path):
    import time

    from function_flow.core.records import RunRecord, TaskRecord

    store = SqliteStore(str(tmp_path / "runs.db"))
    store.create_run(RunRecord("r", "job", "h", {}), [TaskRecord(t) for t in "abc"], {})
    statements: list[str] = []
    opened = store._writer._connect

    def traced():
        conn = opened()
        conn.set_trace_callback(statements.append)
        return conn

    store._writer.close()
    store._writer._connect = traced
    release = threading.Event()

    def first(tx):
        tx.update_task("r", "a", {"error": "a wrote"})
        assert release.wait(DEADLINE)

    def failing(tx):
        tx.update_task("r", "b", {"error": "b wrote"})
        raise KeyError("b fails")

    def third(tx):
        tx.update_task("r", "c", {"error": "c wrote"})

    outcomes: dict[str, object] = {}

    def write(name, fn):
        try:
            store.transact(fn)
            outcomes[name] = "committed"
        except KeyError as exc:
            outcomes[name] = exc

    threads = [threading.Thread(target=write, args=("a", first))]
    threads[0].start()
    deadline = time.monotonic() + DEADLINE
    while not store._writer._using and time.monotonic() < deadline:
        time.sleep(0.001)
    threads += [threading.Thread(target=write, args=args)
                for args in (("b", failing), ("c", third))]
    for thread in threads[1:]:
        thread.start()
    while store._writer._waiting < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    release.set()
    for thread in threads:
        thread.join(DEADLINE)
    assert outcomes["a"] == outcomes["c"] == "committed"
    assert isinstance(outcomes["b"], KeyError)
    assert statements.count("COMMIT") == 1, statements
    errors = {t.task_id: t.error for t in store.get_tasks("r")}
    assert errors == {"a": "a wrote", "b": None, "c": "c wrote"}


def test_the_cli_progress_view_ends_with_the_run_not_at_its_next_refresh(tmp_path):
    """`function-flow run` follows a run with progress.follow and run_end.RunChanges."""
    import io

    from rich.console import Console

    from function_flow.cli import progress
    from function_flow.core.records import RunRecord
    from function_flow.run_end import RunChanges

    store = SqliteStore(str(tmp_path / "runs.db"))
    store.create_run(RunRecord("r", "job", "h", {}), [], {})
    changes, paused = RunChanges(store), threading.Event()

    def fetch():
        changes.mark()
        return store.get_run("r"), []

    def pause(seconds):
        paused.set()
        changes.pause(seconds)

    ended = {}
    follower = threading.Thread(target=lambda: ended.update(view=progress.follow(
        fetch, Console(file=io.StringIO()), live=False, interval=3600, pause=pause)),
        daemon=True)
    follower.start()
    assert paused.wait(DEADLINE)
    store.transact(lambda tx: tx.update_run("r", {"status": "SUCCEEDED"}))
    follower.join(DEADLINE)
    assert not follower.is_alive(), "the view waited for its refresh interval"
    assert ended["view"][0].status is RunStatus.SUCCEEDED


def test_a_chain_step_rides_along_only_where_the_store_locks_for_writes(tmp_path):
    """core/chaining.py: on SQLite a chain's next task is claimed in the commit
    that completes its predecessor, so no message goes out per step; a store
    answering the declared ports.Store default (locks_for_writes() -> False:
    a store that compares and sets) gets one message per step, and the run
    succeeds the same."""
    from function_flow.bus.local import LocalBus
    from function_flow.core.messages import MessageKind
    from function_flow.core.ports import Store

    class CountingBus(LocalBus):
        def __init__(self) -> None:
            super().__init__(workers=1)
            self.sent = 0

        def publish(self, message, delay=0.0):
            self.sent += message.kind is MessageKind.RUN_TASK
            super().publish(message, delay)

    class Separate(SqliteStore):
        def locks_for_writes(self):
            return Store.locks_for_writes(self)

    steps = 6
    sent = {}
    for name, store_class in (("together", SqliteStore), ("separate", Separate)):
        job = tasks.Job(name=f"chain_{name}")
        for i in range(steps):
            job.task(f"t{i}", deps=[f"t{i - 1}"] if i else [])(lambda task, job: None)
        bus = CountingBus()
        backend = backends.Backend("embedded", store_class(str(tmp_path / f"{name}.db")), bus)
        try:
            job.use_backend(backend)
            assert job.run(timeout=DEADLINE).status is RunStatus.SUCCEEDED
            sent[name] = bus.sent
        finally:
            backend.close()
    assert sent == {"together": 1, "separate": steps}, sent


def _define_fan_out(job: tasks.Job, members: int) -> None:
    job.task("root")(lambda task, job: None)
    for i in range(members):
        job.task(f"m{i}", deps=["root"])(lambda task, job: None)
    job.task("join", deps=[f"m{i}" for i in range(members)])(lambda task, job: None)


def _define_foreach(job: tasks.Job, items: int) -> None:
    job.task("root")(lambda task, job: list(range(items)))
    job.foreach(task_id="work", over="root")(lambda task, job: None)
    job.task("join", deps=["work"])(lambda task, job: len(job.get_task_result("work")))


# The foreach's own steps, root -> work and work -> join, are a chain's (claimed
# ahead on SQLite only, too).
@pytest.mark.parametrize("define,chain_steps", [(_define_fan_out, 0), (_define_foreach, 2)])
def test_a_fan_out_member_claims_its_next_sibling_in_its_own_commit(tmp_path, define,
                                                                    chain_steps):
    """core/chaining.py: on SQLite each success of a fan-out's member (root -> N ->
    join) or of a foreach's item also claims the one queued next (the local
    bus reserves its message for the worker), so N - 1 claims take no
    transaction of their own; a store answering the ports.Store default
    (locks_for_writes() -> False) claims each in its own, and the run
    succeeds the same."""
    from function_flow.bus.local import LocalBus
    from function_flow.core.ports import Store

    class Counting(SqliteStore):
        transactions = 0

        def transact(self, fn, **options):
            type(self).transactions += 1
            return super().transact(fn, **options)

    class Together(Counting):
        transactions = 0

    class Separate(Counting):
        transactions = 0

        def locks_for_writes(self):
            return Store.locks_for_writes(self)

    members = 6
    for store_class in (Together, Separate):
        job = tasks.Job(name=f"fan_out_{store_class.__name__}")
        define(job, members)
        # One worker: the members' messages wait in its queue, in order.
        backend = backends.Backend("embedded", store_class(
            str(tmp_path / f"{store_class.__name__}.db")), LocalBus(workers=1))
        try:
            job.use_backend(backend)
            assert job.run(timeout=DEADLINE).status is RunStatus.SUCCEEDED
        finally:
            backend.close()
    assert Separate.transactions - Together.transactions == members - 1 + chain_steps, \
        (Separate.transactions, Together.transactions)


def test_a_task_claimed_ahead_does_not_start_once_the_completion_ended_the_run(tmp_path):
    """README: a run that fails fast starts nothing new. The foreach's last item
    claims x0, queued next, in its own commit (core/chaining.py); that item's
    follow-up then fails the foreach (its other item failed), which ends the
    run FAILED: x0 is looked at with the run as it is then, and never starts."""
    from function_flow.bus.local import LocalBus

    started: list[str] = []
    job = tasks.Job(name="ended_by_follow_up", max_parallel_tasks=10)
    job.task("root")(lambda task, job: [0, 1])

    def item(task, job, item=None):
        started.append(task.id)
        if item == 0:
            raise RuntimeError("item 0 fails")

    # One lane: work[1] is queued by work[0]'s failure and handled at once,
    # with the x tasks' messages waiting in the queue behind it.
    job.foreach(task_id="work", over="root", max_concurrency=1)(item)
    for number in range(3):
        job.task(f"x{number}", deps=["root"])(lambda task, job: started.append(task.id))
    backend = backends.Backend("embedded", SqliteStore(str(tmp_path / "runs.db")),
                               LocalBus(workers=1))
    try:
        job.use_backend(backend)
        run_id = job.start()
        assert backend.bus.wait_idle(timeout=DEADLINE)
        records = {t.task_id: t.status.value for t in job.engine.task_records(run_id)}
        assert job.engine.run_status(run_id).status is RunStatus.FAILED
    finally:
        backend.close()
    assert started == ["work[0]", "work[1]"], (started, records)
    assert {records[f"x{number}"] for number in range(3)} == {"CANCELLED"}, records
