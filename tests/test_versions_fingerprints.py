"""Versions: what a run records of its definition, and what a difference reaches.

The fingerprints of a definition (a hash per task of its body and settings)
are the same in every process and ignore what does not change the code; a
run records them, and a redeployment differs from a run only where the run
has not finished. Redrive is allowed only while the succeeded tasks stand.
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

from function_flow.backends import embedded
from function_flow.core import fingerprints, versions
from function_flow.core.definition import END_TASK_ID
from function_flow.core.graph import Dag, make_spec
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.tasks import Job
from test_run_graph import Outbox, drain
from versions_jobs import (WORKFLOWS, _fresh_log, a_v1, a_v2, b_v1, b_v2,  # noqa: F401
                           c_fails, c_v1, d_body, engine_of, job_of)


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
    ok, why = allowed(c=c_v1, extra=("d", ["c"]))  # the run would have no record of d
    assert not ok and "task 'd' is new; a redrive runs the run's own tasks again" in why
    ok, why = allowed(b=b_v2)
    assert not ok and "task 'b' succeeded but changed (body)" in why
    ok, why = allowed(a_retries=2)
    assert not ok and "task 'a' succeeded but changed (settings)" in why
    ok, why = allowed(with_c=False)  # c's record would wait for good
    assert not ok and "task 'c' was removed" in why
    ok, why = allowed(c_deps=("a",), b=b_v2)
    assert not ok and "task 'b' succeeded but changed (body)" in why


def test_the_fingerprints_of_a_1000_task_run_fit_its_record(store) -> None:
    specs = [make_spec("root", [], a_v1)] + [
        make_spec(f"task-{i:04d}", ["root"], b_v1, task_args={"i": i}) for i in range(999)]
    dag = Dag("wide", specs)
    run = RunRecord(run_id="wide-1", job_name="wide", args={}, **versions.recorded(dag))

    recorded = versions.parse(run)
    # README: 26 characters plus the task id each, about 40 KB for 1,000 tasks.
    assert {len(fingerprint) for task_id, fingerprint in recorded.items()
            if task_id != END_TASK_ID} == {26}  # the virtual end task's: its sinks
    assert 35_000 < len(run.task_versions) < 45_000
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


def test_every_task_setting_counts_in_its_fingerprint_and_only_there() -> None:
    from function_flow import remote

    def fingerprint_with(**settings: Any) -> list[str]:
        job = Job(name="versioned")
        job.task(task_id="a", **settings)(a_v1)
        return fingerprints.of_dag(job.dag)["a"].split(".")

    plain = fingerprint_with()
    for settings in [dict(retries=2), dict(retry_backoff=5), dict(timeout=30),
                     dict(task_args={"day": 1}), dict(retry_on=(KeyError,)),
                     dict(remote_topic="topic-one"), dict(remote_topic="topic-two"),
                     dict(call=remote.Http("http://127.0.0.1:1/a")),
                     dict(call=remote.Http("http://127.0.0.1:1/b"))]:
        deps, setting, body = fingerprint_with(**settings)
        assert (deps, body) == (plain[0], plain[2]) and setting != plain[1], settings
    assert fingerprint_with(retry_on=(KeyError,)) != fingerprint_with(retry_on=(ValueError,))
    assert fingerprint_with(remote_topic="topic-one") != fingerprint_with(
        remote_topic="topic-two")


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
