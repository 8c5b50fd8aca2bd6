"""Sub-DAGs: a job used inside another as one node (issue 8 item 3).

Runs go through each store (SQLite, then the Firestore emulator) with the
in-process bus, and through the embedded backend where bodies with a
timeout run in child processes; `graph` and `status` are run as the user
runs them, in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from function_flow import DefinitionError, backends, remote, subdags
from function_flow.backends import Backend
from function_flow.bus.local import LocalBus
from function_flow.cli import graphs
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import hosting
from function_flow.tasks import Job

WORKFLOW = str(Path(__file__).parent / "workflows" / "subdag.py")


@pytest.fixture
def on_store(store):
    buses = []

    def use(job: Job) -> Job:
        bus = LocalBus(2)
        buses.append(bus)
        return job.use_backend(Backend("embedded", store, bus))

    yield use
    for bus in buses:
        bus.close()


def make_prep(name: str = "prep") -> Job:
    """clean -> split; clean fails its first attempt (retries=1) and reads its inputs."""
    prep = Job(name)

    @prep.task(task_id="clean", retries=1, retry_backoff=0.01, task_args={"factor": 10})
    def clean(task, job):
        if task.attempt == 1:
            raise ConnectionError("flaky first attempt")
        return sum(job.get_task_result(dep) for dep in task.deps) * task.task_args["factor"]

    @prep.task(task_id="split", deps=["clean"])
    def split(task, job):
        return {"clean": job.get_task_result("clean"), "me": task.id}

    return prep


def make_main(prep: Job) -> Job:
    """a -> left (prep), b -> right (prep), both -> load."""
    main = Job("main")

    @main.task(task_id="a")
    def a(task, job):
        return 1

    @main.task(task_id="b")
    def b(task, job):
        return 2

    main.subdag(task_id="left", dag=prep, deps=["a"])
    main.subdag(task_id="right", dag=prep, deps=["b"])

    @main.task(task_id="load", deps=["left", "right"])
    def load(task, job):
        return [job.get_task_result("left"), job.get_task_result("right/clean")]

    return main


# --------------------------------------------------------------------- runs


def test_a_subdag_used_twice_runs_each_use_with_its_own_tasks(on_store):
    main = on_store(make_main(make_prep()))
    run = main.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    records = {r.task_id: r for r in main.engine.store.get_tasks(run.run_id)}
    assert set(records) >= {"a", "b", "left/clean", "left/split", "left",
                            "right/clean", "right/split", "right", "load"}
    assert all(r.status is TaskStatus.SUCCEEDED for r in records.values())
    # Inner settings are kept: each use's clean was retried once.
    assert records["left/clean"].attempt == records["right/clean"].attempt == 2
    # Results flow in (each use from its own node's deps), between siblings
    # of the same use, and out (the node's result is its sink's).
    assert main.get_task_result("left/clean") == 10
    assert main.get_task_result("right/clean") == 20
    assert main.get_task_result("left") == {"clean": 10, "me": "left/split"}
    assert main.get_task_result("right") == {"clean": 20, "me": "right/split"}
    assert main.get_task_result("load") == [{"clean": 10, "me": "left/split"}, 20]


def test_nested_subdags_run_as_outer_inner_task(on_store):
    inner = Job("inner")

    @inner.task(task_id="t")
    def t(task, job):
        # "seed" is no task of inner: it resolves one level out, in mid.
        return job.get_task_result("seed") + 1

    mid = Job("mid")

    @mid.task(task_id="seed")
    def seed(task, job):
        return 100 * job.get_task_result(task.deps[0])

    mid.subdag(task_id="inner", dag=inner, deps=["seed"])

    @mid.task(task_id="after", deps=["inner"])
    def after(task, job):
        return job.get_task_result("inner") * 2

    @mid.task(task_id="other")
    def other(task, job):
        return "other"

    outer = Job("outer")

    @outer.task(task_id="start")
    def start(task, job):
        return 3

    outer.subdag(task_id="mid", dag=mid, deps=["start"])
    outer = on_store(outer)
    run = outer.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    ids = {r.task_id for r in outer.engine.store.get_tasks(run.run_id)}
    assert {"mid/inner/t", "mid/inner", "mid/seed", "mid/after", "mid/other", "mid"} <= ids
    assert outer.get_task_result("mid/inner/t") == 301
    assert outer.get_task_result("mid/after") == 602
    # Several sinks: the node's result maps each sink's id inside the sub-DAG.
    assert outer.get_task_result("mid") == {"after": 602, "other": "other"}


def test_a_failing_task_inside_fails_the_run_and_its_node_does_not_succeed(on_store):
    broken = Job("broken")

    @broken.task(task_id="explode")
    def explode(task, job):
        raise ValueError("boom inside")

    main = Job("main")
    main.subdag(task_id="node", dag=broken)

    @main.task(task_id="after", deps=["node"])
    def after(task, job):
        return "never"

    main = on_store(main)
    run = main.run(timeout=60)
    assert run.status is RunStatus.FAILED
    records = {r.task_id: r for r in main.engine.store.get_tasks(run.run_id)}
    assert records["node/explode"].status is TaskStatus.FAILED
    assert "ValueError: boom inside" in records["node/explode"].error
    assert records["node"].status is not TaskStatus.SUCCEEDED
    assert records["after"].status is not TaskStatus.SUCCEEDED


def test_a_subdag_still_runs_alone(on_store):
    prep = make_prep()
    make_main(prep).validate()
    prep = on_store(prep)
    run = prep.run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert prep.get_task_result("split") == {"clean": 0, "me": "split"}


def test_inner_timeouts_and_remote_calls_are_kept(tmp_path):
    """A body with a timeout runs in a child process and still finds its
    sibling; a remote task inside answers through its hosted function."""
    calls = []
    sub = Job("sub")

    @sub.task(task_id="first", timeout=30)
    def first(task, job):
        return os.getpid()

    @sub.task(task_id="second", deps=["first"], timeout=30)
    def second(task, job):
        return {"first": job.get_task_result("first"), "pid": os.getpid()}

    @sub.task(task_id="ask", deps=["second"], remote_topic="SUBDAG_ASK",
              task_args={"k": "v"})
    def ask(task, job):
        return job.get_task_result("second")["first"]

    @remote.function(topic="SUBDAG_ASK")
    def answer(payload, context):
        calls.append(payload)
        return {"answered": payload["result"]}

    main = Job("main")
    main.subdag(task_id="s", dag=sub)
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    main.use_backend(backend)
    try:
        run = main.run(timeout=60)
        first_pid = main.get_task_result("s/first")
        second = main.get_task_result("s/second")
        node = main.get_task_result("s")
    finally:
        hosting.unhost("SUBDAG_ASK")
        backend.close()
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert first_pid != os.getpid() and second["pid"] != os.getpid()  # child processes
    assert second["first"] == first_pid
    assert node == {"answered": first_pid}
    assert len(calls) == 1 and calls[0]["task_args"] == {"k": "v"}
    spec = main.dag.tasks["s/ask"]
    assert spec.call is not None and spec.call.target == "SUBDAG_ASK"


# ------------------------------------------------------------ definition


def test_expanded_tasks_keep_their_settings_and_wait_for_the_node_deps():
    main = make_main(make_prep())
    dag = main.dag
    clean = dag.tasks["left/clean"]
    assert (clean.retries, clean.task_args, clean.deps) == (1, {"factor": 10}, ("a",))
    assert dag.tasks["left/split"].deps == ("left/clean",)
    assert dag.tasks["left"].deps == ("left/split",)
    assert dag.tasks["load"].deps == ("left", "right")
    assert dag.subdag_jobs == {"left": "prep", "right": "prep"}


def test_expand_is_a_function_of_the_prefix_and_the_subdag():
    prep = make_prep()
    specs = subdags.expand("node[3]", prep.dag, ("fan",))
    assert [s.task_id for s in specs] == ["node[3]/clean", "node[3]/split", "node[3]"]
    assert [s.deps for s in specs] == [("fan",), ("node[3]/clean",), ("node[3]/split",)]


def test_the_digest_changes_when_the_inside_of_a_subdag_changes():
    prep = make_prep()
    main = make_main(prep)
    before = main.dag.digest()
    assert make_main(make_prep()).dag.digest() == before  # same definition, same hash

    @prep.task(task_id="extra", deps=["split"])
    def extra(task, job):
        return None

    assert "left/extra" in main.dag.tasks  # the parent sees the change
    assert main.dag.tasks["left"].deps == ("left/extra",)
    assert main.dag.digest() != before


def test_ids_resolve_from_the_innermost_subdag_out():
    known = {"x": 1, "o/x": 1, "o/i/y": 1, "o/i/x": 1}
    assert subdags.resolve("o/i/", "x", known) == "o/i/x"
    assert subdags.resolve("o/", "x", known) == "o/x"
    assert subdags.resolve("o/i/", "o/i/y", known) == "o/i/y"
    assert subdags.resolve("", "y", known) is None
    # In item 3's copy of a foreach's sub-DAG, ids resolve as in its template.
    assert subdags.resolve("o[3]/i/", "x", known) == "o[3]/i/x"
    assert subdags.resolve("o[3]/", "y", known) is None


def cyclic() -> Job:
    job = Job("cyclic")
    job.task(task_id="a", deps=["b"])(lambda task, job: 1)
    job.task(task_id="b", deps=["a"])(lambda task, job: 1)
    return job


def unknown_dep() -> Job:
    job = Job("unknown")
    job.task(task_id="ok")(lambda task, job: 1)
    job.task(task_id="bad", deps=["nope"])(lambda task, job: 1)
    return job


@pytest.mark.parametrize("sub, message", [
    (cyclic, r"sub-DAG 'p' of job 'main', task 'p/[ab]': job 'cyclic' has a dependency "
             r"cycle: (a -> b -> a|b -> a -> b)"),
    (unknown_dep, r"sub-DAG 'p' of job 'main', task 'p/bad': task 'bad' depends on unknown "
                  r"task 'nope'"),
    (lambda: Job("empty"), r"sub-DAG 'p' of job 'main': job 'empty' has no tasks"),
])
def test_a_bad_subdag_is_refused_where_it_is_used_naming_node_and_task(sub, message):
    main = Job("main")
    with pytest.raises(DefinitionError, match=message) as raised:
        main.subdag(task_id="p", dag=sub())
    assert raised.value.task_id.startswith("p")


def test_an_id_clash_names_the_subdag():
    main = Job("main")
    main.task(task_id="x")(lambda task, job: 1)
    with pytest.raises(DefinitionError, match="sub-DAG 'x' of job 'main': the job already "
                                              "has a task 'x'"):
        main.subdag(task_id="x", dag=make_prep())
    main.subdag(task_id="p", dag=make_prep())
    with pytest.raises(DefinitionError, match="id 'p' is already sub-DAG 'p' of job 'main'"):
        main.subdag(task_id="p", dag=make_prep("other"))
    with pytest.raises(DefinitionError, match="id 'p' is already sub-DAG 'p' of job 'main'"):
        main.task(task_id="p")(lambda task, job: 1)
    for bad in ("a/b", "__x", ""):
        with pytest.raises(DefinitionError, match="sub-DAG in job 'main': task"):
            main.subdag(task_id=bad, dag=make_prep())


def test_a_subdag_that_contains_itself_is_refused():
    job = make_prep("self")
    with pytest.raises(DefinitionError, match="sub-DAG 'me' of job 'self': job 'self' is this "
                                              "job; a DAG cannot contain itself"):
        job.subdag(task_id="me", dag=job)
    first, second = make_prep("first"), make_prep("second")
    first.subdag(task_id="two", dag=second)
    with pytest.raises(DefinitionError, match="sub-DAG 'one' of job 'second': job 'first' "
                                              "contains job 'second'; a DAG cannot contain"):
        second.subdag(task_id="one", dag=first)
    assert "two/clean" in first.dag.tasks and not second._subdags


def test_node_deps_and_cycles_through_a_node_name_the_node():
    main = Job("main")
    main.subdag(task_id="p", dag=make_prep(), deps=["nope"])
    with pytest.raises(DefinitionError, match="sub-DAG 'p' of job 'main': task 'p' depends "
                                              "on unknown task 'nope'"):
        main.validate()
    looped = Job("looped")
    looped.subdag(task_id="p", dag=make_prep(), deps=["x"])
    looped.task(task_id="x", deps=["p"])(lambda task, job: 1)
    with pytest.raises(DefinitionError, match="dependency cycle: (p -> x -> p|x -> p -> x)"):
        looped.validate()


def test_depending_on_a_task_inside_a_sub_dag_says_to_depend_on_its_node():
    main = Job("main")
    main.subdag(task_id="p", dag=make_prep())
    main.task(task_id="after", deps=["p/clean"])(lambda task, job: 1)
    with pytest.raises(DefinitionError) as refused:
        main.validate()
    assert str(refused.value).startswith(
        "task 'after' depends on unknown task 'p/clean' (a task inside a sub-DAG is not "
        "depended on from outside it: depend on its node, 'p')")


def test_an_error_deep_inside_names_the_whole_path():
    inner, mid, outer = make_prep("inner"), Job("mid"), Job("outer")
    mid.subdag(task_id="i", dag=inner)
    outer.subdag(task_id="m", dag=mid)
    inner.task(task_id="late", deps=["missing"])(lambda task, job: 1)
    with pytest.raises(DefinitionError, match="sub-DAG 'm/i' of job 'outer', task 'm/i/late': "
                                              "task 'late' depends on unknown task 'missing'"
                       ) as raised:
        outer.validate()
    assert raised.value.task_id == "m/i/late"


def test_dag_must_be_a_job():
    with pytest.raises(DefinitionError, match="sub-DAG 'p' of job 'main': dag must be a "
                                              "tasks.Job"):
        Job("main").subdag(task_id="p", dag=make_prep().dag)


# ------------------------------------------------------------ graph, status


def nested_main() -> Job:
    mid = Job("mid")
    mid.task(task_id="m1")(lambda task, job: 1)
    mid.subdag(task_id="in", dag=make_prep(), deps=["m1"])
    main = Job("main")
    main.task(task_id="a")(lambda task, job: 1)
    main.subdag(task_id="outer", dag=mid, deps=["a"])
    main.task(task_id="z", deps=["outer"])(lambda task, job: 1)
    return main


def test_graph_text_lists_a_subdag_under_its_node():
    assert graphs.render(nested_main().dag, "text").splitlines() == [
        "job main: 7 tasks in 3 levels",
        "level 1",
        "  a",
        "level 2",
        "  outer  <- a  (sub-DAG of job mid)",
        "    outer/m1  <- a",
        "    outer/in  <- outer/m1  (sub-DAG of job prep)",
        "      outer/in/clean  <- outer/m1",
        "      outer/in/split  <- outer/in/clean",
        "level 3",
        "  z  <- outer",
    ]


def test_graph_mermaid_nests_subgraphs():
    out = graphs.render(nested_main().dag, "mermaid")
    lines = [line.strip() for line in out.splitlines()]
    opened = [i for i, line in enumerate(lines) if line.startswith("subgraph ")]
    assert len(opened) == 2
    assert lines[opened[0]].endswith('["outer (sub-DAG of job mid)"]')
    assert lines[opened[1]].endswith('["in (sub-DAG of job prep)"]')
    inner_block = lines[opened[1]:lines.index("end", opened[1]) + 1]
    assert any(line.endswith('["clean"]') for line in inner_block)
    assert any(line.endswith('(["in"])') for line in inner_block)  # the node itself
    assert lines.count("end") == 2
    edges = [line for line in lines if "-->" in line]
    assert len(edges) == sum(len(s.deps) for s in nested_main().dag.tasks.values())


def test_graph_dot_nests_clusters():
    out = graphs.render(nested_main().dag, "dot")
    lines = [line.strip() for line in out.splitlines()]
    outer = lines.index('subgraph "cluster_outer" {')
    inner = lines.index('subgraph "cluster_outer/in" {')
    assert outer < inner < lines.index('"outer/in/clean" [label="clean"];')
    assert lines[inner + 1] == 'label="in (sub-DAG of job prep)";'
    assert '"outer/in/split" -> "outer/in";' in lines
    assert '"outer" -> "z";' in lines and '"a" -> "outer/m1";' in lines


def flow(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    return subprocess.run([sys.executable, "-m", "function_flow.cli", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=100)


@pytest.mark.timeout(120)
def test_run_and_status_list_a_subdags_tasks_under_its_node(tmp_path):
    result = flow(tmp_path, "run", WORKFLOW, "--arg", "n=2")  # picks main, not prep
    assert result.returncode == 0, result.stderr
    assert "load: {\"left\": 21, \"right\": 211}" in result.stdout
    run_id = re.search(r"function-flow status (\S+)", result.stdout).group(1)
    shown = flow(tmp_path, "status", run_id)
    assert shown.returncode == 0, shown.stderr
    rows = [line for line in shown.stdout.splitlines() if "SUCCEEDED  " in line]
    names = [row.split("SUCCEEDED")[0].rstrip() for row in rows]
    assert names == [" extract", " left", "   left/clean", "   left/split", " right",
                     "   right/clean", "   right/split", " load"], shown.stdout
    graph = flow(tmp_path, "graph", WORKFLOW, "--format", "mermaid")
    assert graph.returncode == 0 and graph.stdout.count("subgraph ") == 2, graph.stderr
    alone = flow(tmp_path, "graph", WORKFLOW, "--job", "prep")  # --job picks any job
    assert alone.stdout.startswith("job prep: 2 tasks"), alone.stderr


@pytest.mark.timeout(120)
def test_a_bad_subdag_in_a_file_is_one_error_line(tmp_path):
    (tmp_path / "bad.py").write_text(
        "from function_flow import tasks\n"
        "sub = tasks.Job(name='sub')\n"
        "sub.task(task_id='a', deps=['b'])(lambda task, job: 1)\n"
        "sub.task(task_id='b', deps=['a'])(lambda task, job: 1)\n"
        "main = tasks.Job(name='main')\n"
        "main.task(task_id='x')(lambda task, job: 1)\n"
        "main.subdag(task_id='node', dag=sub, deps=['x'])\n")
    result = flow(tmp_path, "graph", "bad.py")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert re.search(r"sub-DAG 'node' of job 'main', task 'node/[ab]': .*dependency cycle",
                     lines[0]), lines[0]
