"""Versions: a run records its definition; a changed deployment does not guess.

A run is started with one definition of the job (a -> b -> c), then a
second Job object of the same name, as a redeployment would build it,
handles its messages. A change in a task the run has not finished blocks
the run (status says why, the message is acknowledged, nothing runs); a
change only in finished tasks does not; the original definition, deployed
again, finishes the run. Each on both stores.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from function_flow.backends import Backend, embedded
from function_flow.cli import cli
from function_flow.core import fingerprints, versions
from function_flow.core.engine import Engine
from function_flow.core.graph import Dag, make_spec
from function_flow.core.records import Message, MessageKind, RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.core.waiting import Pending
from function_flow.futures import GCSFuture
from function_flow.services.gcs import GcsWatcher
from function_flow.errors import RunBlockedError, TransientBackendError
from function_flow.tasks import Job
from test_functions import as_legacy, as_push
from signatures import KEYS
from test_run_graph import Outbox, drain

WORKFLOWS = Path(__file__).parent / "workflows"
RAN: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    RAN.clear()


def a_v1(task, job):
    RAN.append("a1")
    return 1


def a_v2(task, job):
    RAN.append("a2")
    return 100


def b_v1(task, job):
    RAN.append("b1")
    return 2


def b_v2(task, job):
    RAN.append("b2")
    return 20


def c_v1(task, job):
    RAN.append("c1")
    return 3


def c_fails(task, job):
    RAN.append("c-fails")
    raise RuntimeError("c is broken")


def d_body(task, job):
    RAN.append("d")
    return 4


class Wait(Pending):
    def __init__(self, trigger_id: str) -> None:
        self.trigger_id = trigger_id


def a_waits(task, job):
    RAN.append("a-waits")
    return Wait(f"event-{task.run_id}")


def job_of(*, a=a_v1, b=b_v1, c=c_v1, c_deps=("b",), a_retries=0, a_timeout=None,
           with_c=True, extra: tuple[str, list[str]] | None = None) -> Job:
    """The job `versioned` as one deployment defines it."""
    job = Job(name="versioned")
    job.task(task_id="a", retries=a_retries, timeout=a_timeout)(a)
    job.task(task_id="b", deps=["a"])(b)
    if with_c:
        job.task(task_id="c", deps=list(c_deps))(c)
    if extra is not None:
        job.task(task_id=extra[0], deps=extra[1])(d_body)
    return job


def engine_of(store, bus: Outbox, **definition: Any) -> Engine:
    return Engine(job_of(**definition), store, bus, lease_check_messages=False)


class Counting:
    """The store, counting the reads the engine makes outside transactions."""

    def __init__(self, store) -> None:
        self._store = store
        self.reads = {"get_run": 0, "get_tasks": 0}

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._store, name)
        if name in self.reads:
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.reads[name] += 1
                return found(*args, **kwargs)
            return counted
        return found


def status_output(store, run_id: str | None) -> str:
    """`function-flow status [RUN_ID]` on the store under test."""
    if hasattr(store, "path"):
        env = {"FUNCTION_FLOW_BACKEND": "embedded", "FUNCTION_FLOW_DB": store.path}
    else:  # the Firestore emulator: firestore_env set its variables
        env = {"FUNCTION_FLOW_BACKEND": "gcp"}
    result = CliRunner().invoke(cli, ["status"] + ([run_id] if run_id else []), env=env)
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def started_then_a_done(store) -> tuple[str, Outbox]:
    """A run of the first definition whose task a succeeded; b's message is on its way."""
    bus = Outbox()
    first = engine_of(store, bus)
    run_id, _ = first.start({})
    assert first.handle(bus.sent.pop(0)) == "succeeded"
    assert [m.task_id for m in bus.sent] == ["b"]
    return run_id, bus


def blocked_run(store) -> tuple[str, Outbox]:
    """That run, then b's message handled by a definition in which b changed."""
    run_id, bus = started_then_a_done(store)
    changed = engine_of(store, bus, b=b_v2)
    assert drain(changed, bus) == ["blocked"]
    return run_id, bus


# ----------------------------------------------------------------- blocked


def test_a_changed_task_the_run_has_not_finished_blocks_it(store) -> None:
    run_id, bus = blocked_run(store)

    assert RAN == ["a1"]  # neither version of b ran
    assert bus.sent == []  # nothing sent on: the message was acknowledged
    run = store.get_run(run_id)
    assert run.status is RunStatus.RUNNING  # not failed: the old definition may finish it
    assert "task 'b' changed (body)" in run.blocked
    b = store.get_tasks(run_id, ["b"])[0]
    assert b.status is TaskStatus.QUEUED and b.interrupted == 1  # the claim was undone
    shown = status_output(store, run_id)
    assert (f"BLOCKED: run {run_id} was started with a different definition: task 'b' "
            "changed (body). Deploy the definition it started with") in shown
    assert "redrive it on the new one" in shown
    assert f"{run_id} versioned RUNNING (blocked: its definition changed)" in \
        status_output(store, None)


def test_a_blocked_run_costs_one_read_per_message_and_its_poller_leaves_it(store) -> None:
    run_id, bus = blocked_run(store)
    counting = Counting(store)
    changed = Engine(job_of(b=b_v2), counting, bus, lease_check_messages=False)
    b = store.get_tasks(run_id, ["b"])[0]
    bus.publish(Message(run_id, b.task_id, b.attempt))  # as a poller would send it

    assert drain(changed, bus) == ["blocked"]
    assert counting.reads == {"get_run": 1, "get_tasks": 0}  # the block is on the run

    report = changed.poll(stale_after=0)
    assert (report.runs_checked, report.runs_blocked) == (1, 1)
    assert bus.sent == [] and RAN == ["a1"]


def test_deploying_the_definition_it_started_with_lets_the_run_finish(store) -> None:
    run_id, bus = blocked_run(store)
    again = engine_of(store, bus)  # the first definition, deployed again

    again.poll(stale_after=0)  # sends the withdrawn attempt of b
    drain(again, bus)

    run = store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert run.blocked is None
    assert RAN == ["a1", "b1", "c1"]
    assert "BLOCKED" not in status_output(store, run_id)


@pytest.mark.parametrize("change, expected", [
    ({"with_c": False}, "task 'c' was removed"),
    ({"c_deps": ("a",)}, "task 'c' changed (dependencies)"),
    ({"extra": ("d", ["b"])}, "task 'd' was added after 'b'"),
], ids=["removed", "dependencies", "added"])
def test_removed_rewired_and_added_tasks_the_run_would_reach_block_it(
        store, change: dict[str, Any], expected: str) -> None:
    run_id, bus = started_then_a_done(store)
    changed = engine_of(store, bus, **change)

    assert drain(changed, bus) == ["blocked"]
    assert expected in store.get_run(run_id).blocked
    assert RAN == ["a1"]


def test_a_message_for_a_task_the_new_definition_removed_is_not_just_dropped(store) -> None:
    run_id, bus = started_then_a_done(store)
    first = engine_of(store, bus)
    assert drain(first, bus, limit=1) == ["succeeded"]  # b; c's message is next
    without_c = engine_of(store, bus, with_c=False)

    assert drain(without_c, bus) == ["blocked"]
    assert "task 'c' was removed" in store.get_run(run_id).blocked


# ------------------------------------------------------------- not blocked


def test_a_change_only_in_finished_tasks_does_not_block_the_run(store) -> None:
    run_id, bus = started_then_a_done(store)
    counting = Counting(store)
    changed = Engine(job_of(a=a_v2, a_retries=3), counting, bus,
                     lease_check_messages=False)

    assert drain(changed, bus) == ["succeeded", "succeeded"]

    run = store.get_run(run_id)
    assert run.status is RunStatus.SUCCEEDED and run.blocked is None
    assert RAN == ["a1", "b1", "c1"]
    assert counting.reads["get_tasks"] == 1  # looked at once, then remembered


def test_the_check_adds_no_read_when_the_definition_is_the_runs(store, monkeypatch) -> None:
    def reads_of_a_run() -> dict[str, int]:
        counting = Counting(store)
        bus = Outbox()
        engine = Engine(job_of(), counting, bus, lease_check_messages=False)
        engine.start({})
        drain(engine, bus)
        return counting.reads

    with_check = reads_of_a_run()
    monkeypatch.setattr(versions, "check", lambda engine, run: None)
    assert with_check == reads_of_a_run()


# ------------------------------------------------------------------ events


def test_an_event_for_a_blocked_run_is_kept_until_its_definition_handles_it(store) -> None:
    bus = Outbox()
    first = engine_of(store, bus, a=a_waits)
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    changed = engine_of(store, bus, a=a_waits, b=b_v2)

    with pytest.raises(RunBlockedError, match="task 'b' changed") as refused:
        changed.complete_trigger(f"event-{run_id}", ok=True, value=5)
    assert isinstance(refused.value, TransientBackendError)  # not acknowledged
    assert store.get_trigger(f"event-{run_id}") is not None
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING

    assert first.complete_trigger(f"event-{run_id}", ok=True, value=5) == "succeeded"
    drain(first, bus)
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED
    assert RAN == ["a-waits", "b1", "c1"]


def test_an_expired_lease_of_a_blocked_run_is_left_to_its_own_definition(store) -> None:
    now = [1000.0]
    bus = Outbox()

    def engine(**definition: Any) -> Engine:
        job = job_of(a=a_waits, a_timeout=10.0, **definition)  # the wait's lease: 10 s
        return Engine(job, store, bus, lease_check_messages=False, clock=lambda: now[0])

    first = engine()
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    now[0] += 60  # the lease of a's wait has run out
    check = Message(run_id, "a", 1, MessageKind.CHECK_LEASE)

    assert engine(b=b_v2).handle(check) == "blocked"
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING
    assert first.handle(check) == "lease_expired"
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.FAILED


WATCHED: list[str] = []


def a_watches(task, job):
    RAN.append("a-watches")
    return GCSFuture(WATCHED[-1])


def test_an_object_a_blocked_run_waits_for_completes_it_under_its_own_definition(
        store, gcs_bucket: str) -> None:
    from google.cloud import storage

    bus = Outbox()

    def engine(**definition: Any) -> Engine:
        return Engine(job_of(a=a_watches, **definition), store, bus,
                      lease_check_messages=False, watcher=GcsWatcher(), watch_every=0)

    first, changed = engine(), engine(b=b_v2)
    WATCHED.append(f"gs://{gcs_bucket}/in/")
    run_id, _ = first.start({})
    assert drain(first, bus) == ["waiting"]
    storage.Client().bucket(gcs_bucket).blob("in/x.csv").upload_from_string("1")

    report = changed.poll(stale_after=0)
    assert (report.watches_completed, report.runs_blocked) == (0, 1)
    with pytest.raises(RunBlockedError):  # a notification: not acknowledged
        changed.complete_watches(f"gs://{gcs_bucket}/in/x.csv")
    assert store.get_tasks(run_id, ["a"])[0].status is TaskStatus.RUNNING

    assert first.poll(stale_after=0).watches_completed == 1
    drain(first, bus)
    assert store.get_run(run_id).status is RunStatus.SUCCEEDED
    assert RAN == ["a-watches", "b1", "c1"]


# ------------------------------------------------- the Cloud Functions entry


def test_the_scheduler_function_acknowledges_a_message_of_a_blocked_run(store) -> None:
    run_id, bus = started_then_a_done(store)
    deployed = job_of(b=b_v2)
    deployed.use_backend(Backend(kind="gcp", store=store, bus=bus,
                                 lease_check_messages=False, keys=KEYS))
    scheduler = deployed.make_scheduler()
    message = bus.sent.pop(0)

    assert as_push(scheduler, message.to_json()) == ({"outcome": "blocked"}, 200)
    assert as_legacy(scheduler, message.to_json()) is None  # acknowledged, not raised
    assert "task 'b' changed (body)" in store.get_run(run_id).blocked
    assert RAN == ["a1"] and bus.sent == []


def test_resume_on_google_cloud_refuses_a_definition_that_would_block_the_run(
        firestore_store, tmp_path: Path) -> None:
    run_id, _ = started_then_a_done(firestore_store)
    changed = tmp_path / "changed.py"
    changed.write_text(
        "from function_flow.tasks import Job\n"
        "job = Job(name='versioned')\n"
        "job.task(task_id='a')(lambda task, job: 1)\n"
        "job.task(task_id='b', deps=['a'])(lambda task, job: 'b, changed')\n"
        "job.task(task_id='c', deps=['b'])(lambda task, job: 3)\n")

    result = CliRunner().invoke(cli, ["resume", run_id, "--file", str(changed)],
                                env={"FUNCTION_FLOW_BACKEND": "gcp"})

    assert result.exit_code == 2, result.output
    assert f"run {run_id} was started with a different definition: task 'b' changed " \
           "(body); task 'c' changed (body)" in " ".join(result.output.split())
    assert firestore_store.get_run(run_id).blocked is None  # asking changes nothing


# ------------------------------------------------------------------ redrive


def test_redrive_is_allowed_only_when_the_succeeded_tasks_are_unchanged(store) -> None:
    bus = Outbox()
    first = engine_of(store, bus, c=c_fails)
    run_id, _ = first.start({})
    drain(first, bus)
    run, tasks = store.get_run(run_id), store.get_tasks(run_id)
    assert run.status is RunStatus.FAILED

    def allowed(**definition: Any) -> tuple[bool, str]:
        return versions.redrive_allowed(run, tasks, job_of(**definition).dag)

    assert allowed(c=c_fails) == (True, "")
    assert allowed(c=c_v1) == (True, "")  # the failed task was fixed
    assert allowed(c=c_v1, extra=("d", ["c"])) == (True, "")
    ok, why = allowed(b=b_v2)
    assert not ok and "task 'b' succeeded but changed (body)" in why
    ok, why = allowed(a_retries=2)
    assert not ok and "task 'a' succeeded but changed (settings)" in why
    assert allowed(with_c=False) == (True, "")  # c did not succeed: what did stands
    ok, why = allowed(c_deps=("a",), b=b_v2)
    assert not ok and "task 'b' succeeded but changed (body)" in why


def test_the_fingerprints_of_a_1000_task_run_fit_its_record(store) -> None:
    specs = [make_spec("root", [], a_v1)] + [
        make_spec(f"task-{i:04d}", ["root"], b_v1, task_args={"i": i}) for i in range(999)]
    dag = Dag("wide", specs)
    run = RunRecord(run_id="wide-1", job_name="wide", args={}, **versions.recorded(dag))

    assert len(run.task_versions) < 50_000
    assert len(json.dumps(run.to_dict())) < 100_000  # a Firestore document holds 1 MiB
    assert store.create_run(run, [TaskRecord(task_id="root")], {})
    assert versions.parse(store.get_run("wide-1")) == versions.of(dag).fingerprints


# ------------------------------------------------- what a difference reaches


def dag_of(**definition: Any) -> Dag:
    return job_of(**definition).dag


def difference(records: dict[str, TaskStatus], **definition: Any) -> list[str]:
    run = RunRecord(run_id="r", job_name="versioned", args={},
                    **versions.recorded(dag_of()))
    tasks = [TaskRecord(task_id=t, status=s) for t, s in records.items()]
    return versions.difference(run, tasks, dag_of(**definition))


A_DONE = {"a": TaskStatus.SUCCEEDED, "b": TaskStatus.QUEUED, "c": TaskStatus.WAITING}


def test_differences_in_finished_tasks_are_not_reached() -> None:
    assert difference(A_DONE) == []
    assert difference(A_DONE, a=a_v2, a_retries=1) == []
    assert difference(dict(A_DONE, b=TaskStatus.SUCCEEDED), b=b_v2) == []
    # A task added before finished ones: nothing would ever queue it.
    job = Job(name="versioned")
    job.task(task_id="z")(d_body)
    job.task(task_id="a", deps=["z"])(a_v1)
    job.task(task_id="b", deps=["a"])(b_v1)
    job.task(task_id="c", deps=["b"])(c_v1)
    run = RunRecord(run_id="r", job_name="versioned", args={}, **versions.recorded(dag_of()))
    tasks = [TaskRecord(task_id=t, status=s) for t, s in A_DONE.items()]
    assert versions.difference(run, tasks, job.dag) == []


def test_differences_in_unfinished_tasks_are_reached_and_named() -> None:
    assert difference(A_DONE, b=b_v2) == ["task 'b' changed (body)"]
    assert difference(A_DONE, with_c=False) == [
        "the tasks that end it (those nothing depends on) changed", "task 'c' was removed"]
    assert "task 'c' changed (dependencies)" in difference(A_DONE, c_deps=("a",))
    assert difference(A_DONE, extra=("d", ["c"]))[0] == (
        "task 'd' was added after 'c', which it has not finished")
    # A finished task that now waits for an unfinished one would be reached.
    finished_c = dict(A_DONE, c=TaskStatus.SUCCEEDED)
    assert "task 'c' changed (dependencies)" in difference(finished_c, c_deps=("b", "a"))


# ------------------------------------------------------------ fingerprints


def load(path: Path) -> dict[str, Any]:
    return runpy.run_path(str(path))


def write_module(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    return path


def test_a_body_fingerprint_ignores_comments_layout_and_decorators(tmp_path: Path) -> None:
    plain = load(write_module(tmp_path, "plain", (
        "def body(task, job):\n    total = 1 + 2\n    return total\n")))["body"]
    noted = load(write_module(tmp_path, "noted", (
        "import functools\n\n"
        "@functools.lru_cache(maxsize=3)\n@functools.lru_cache(maxsize=4)\n"
        "def body(task, job):   # the same code\n\n"
        "    total = 1 +    2  # spaced out\n    return total\n")))["body"]
    changed = load(write_module(tmp_path, "changed", (
        "def body(task, job):\n    total = 1 + 3\n    return total\n")))["body"]

    assert fingerprints.body_hash(plain, {}) == fingerprints.body_hash(noted, {})
    assert fingerprints.body_hash(plain, {}) != fingerprints.body_hash(changed, {})


def test_bodies_of_every_kind_get_a_fingerprint_and_closures_count() -> None:
    import functools

    class Callable:
        def __call__(self, task, job):
            return 1

    def make(n: int):
        def body(task, job):
            return n
        return body

    def make_default(n: int):
        def body(task, job, k=n):
            return k
        return body

    kinds = [len, print, lambda task, job: 1, functools.partial(b_v1, None), Callable(),
             Callable().__call__, make(1), make(2), make_default(1), make_default(2), None]
    hashes = [fingerprints.body_hash(kind, {}) for kind in kinds]
    assert len(set(hashes)) == len(hashes)
    namespace: dict[str, Any] = {}
    exec("def no_source(task, job):\n    return 7\n", namespace)  # noqa: S102
    assert fingerprints.body_hash(namespace["no_source"], {}).isalnum()


def test_a_definition_hash_is_the_same_in_every_process() -> None:
    path = WORKFLOWS / "versioned.py"
    here = versions.of(load(path)["job"].dag).hash
    code = ("import runpy, sys; from function_flow.core import versions; "
            f"print(versions.of(runpy.run_path({str(path)!r})['job'].dag).hash)")
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        assert out == here


def test_a_dag_is_fingerprinted_once_when_its_engine_is_built(monkeypatch, tmp_path) -> None:
    """Not in job.start(): a run's start writes the fingerprints computed with the engine,
    and tasks sharing one body (or one body's code with other closures) each get theirs."""
    def make(n: int):
        def body(task, job):
            return n
        return body

    shared, one, two = make(0), make(1), make(2)
    job = Job(name="fingerprinted-once")
    job.task("a")(shared)
    job.task("b", deps=["a"])(shared)
    job.task("c", deps=["a"], task_args={"k": 1})(shared)
    job.task("d", deps=["b", "c"])(one)
    job.task("e", deps=["d"])(two)
    computed = []
    real = fingerprints.of_dag
    monkeypatch.setattr(fingerprints, "of_dag", lambda dag: computed.append(dag) or real(dag))
    backend = embedded(db_path=str(tmp_path / "ff.db"))
    job.use_backend(backend)
    try:
        engine = job.engine
        assert computed == [engine.dag]
        job.start()
        assert job.wait(timeout=60).status is RunStatus.SUCCEEDED
        assert computed == [engine.dag]  # nothing computed in the start
    finally:
        backend.close()
    found = versions.of(engine.dag).fingerprints
    assert found == {**{t: fingerprints.fingerprint(s) for t, s in engine.dag.tasks.items()},
                     "__end__": found["__end__"]}
    assert len({found[t].split(".")[2] for t in "abc"}) == 1
    assert len({found[t].split(".")[2] for t in "ade"}) == 3
