"""A broken workflow definition fails early with one clear DefinitionError.

Every message names the offending task, so a workflow with dozens of tasks
tells its author where to look. The property tests check the graph facts
the engine relies on (topological order, the concurrency bound) and that a
reported cycle is a real one.
"""

from __future__ import annotations

import base64
import importlib.util
import itertools
import re
import textwrap

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from function_flow import DefinitionError, tasks
from function_flow.core.graph import Dag, make_spec
from signatures import TEST_HMAC_KEY, signed


def job_with(*specs: tuple[str, list[str] | None]) -> tasks.Job:
    """A job with one trivial task per (task_id, deps)."""
    job = tasks.Job(name="checked")
    for task_id, deps in specs:
        job.task(task_id=task_id, deps=deps)(lambda task, job: None)
    return job


def definition_error(action) -> DefinitionError:
    with pytest.raises(DefinitionError) as caught:
        action()
    message = str(caught.value)
    assert "\n" not in message, "a definition error is one line"
    return caught.value


# ------------------------------------------------------------- graph errors

def test_duplicate_task_id_names_the_task():
    job = job_with(("load", None))
    error = definition_error(lambda: job.task(task_id="load")(lambda task, job: None))
    assert "'load' is defined twice" in str(error)
    assert error.task_id == "load"


class CountedId(str):
    """A task id that counts how often ids are compared with it."""

    compared = 0

    def __eq__(self, other: object) -> bool:
        CountedId.compared += 1
        return str.__eq__(self, other)

    __hash__ = str.__hash__


def test_declaring_a_task_does_not_compare_its_id_with_every_id_before_it():
    """Ids are looked up (subdags.check_free): comparing each new id with every
    declared one made a job of 10,000 tasks take seconds to define."""
    count = 2000
    CountedId.compared = 0
    job = tasks.Job(name="many")
    for number in range(count):
        job.task(task_id=CountedId(f"t{number}"))(lambda task, job: None)
    assert CountedId.compared < 10 * count, CountedId.compared
    error = definition_error(lambda: job.task(task_id="t1999")(lambda task, job: None))
    assert str(error) == "task 't1999' is defined twice in job 'many'; task ids must be unique"
    error = definition_error(lambda: job.subdag(task_id="t7", dag=job_with(("a", None))))
    assert "the job already has a task 't7'" in str(error)


def test_a_job_of_twenty_thousand_tasks_defines_and_validates():
    job = job_with(("root", None), *((f"t{n}", ["root"]) for n in range(20_000)))
    job.validate()
    assert len(job.dag.tasks) == 20_001 and len(job.dag.dependents["root"]) == 20_000


def test_unknown_dependency_suggests_the_closest_id():
    job = job_with(("extract_sales", None), ("report", ["extract_sale"]))
    error = definition_error(job.validate)
    assert str(error) == ("task 'report' depends on unknown task 'extract_sale' "
                          "(did you mean 'extract_sales'?)")
    assert error.task_id == "report"


def test_unknown_dependency_never_suggests_the_task_itself():
    # 'stepl' (a typo of 'step1') is as close to 'step2', the task that has the dep:
    # suggesting it would propose a cycle.
    job = job_with(("step1", None), ("step2", ["stepl"]))
    error = definition_error(job.validate)
    assert str(error) == ("task 'step2' depends on unknown task 'stepl' "
                          "(did you mean 'step1'?)")


def test_unknown_dependency_without_a_close_match():
    error = definition_error(job_with(("a", None), ("b", ["zzz"])).validate)
    assert "task 'b' depends on unknown task 'zzz'" in str(error)
    assert "did you mean" not in str(error)


def test_cycle_message_prints_the_cycle_path():
    job = job_with(("a", ["c"]), ("b", ["a"]), ("c", ["b"]), ("d", ["c"]))
    error = definition_error(job.validate)
    assert str(error) == "job 'checked' has a dependency cycle: a -> b -> c -> a"
    assert error.task_id == "a"


def test_cycle_reached_through_a_tail_reports_only_the_cycle():
    # "0tail" sorts first and leads into the cycle; the tail is not part of it.
    job = job_with(("0tail", ["y"]), ("x", ["z"]), ("y", ["x"]), ("z", ["y"]))
    message = str(definition_error(job.validate))
    assert message.endswith("x -> y -> z -> x") or message.endswith("y -> z -> x -> y") \
        or message.endswith("z -> x -> y -> z")
    assert "0tail" not in message


def test_self_dependency_is_a_cycle_of_one():
    job = tasks.Job(name="checked")
    error = definition_error(
        lambda: job.task(task_id="loop", deps=["loop"])(lambda task, job: None))
    assert "task 'loop' depends on itself: cycle loop -> loop" in str(error)


def test_errors_surface_when_a_function_first_serves_and_when_the_cli_loads(tmp_path,
                                                                           monkeypatch):
    """Entry points are built before or after the tasks (Function Flow's PyPI
    example builds them first), so the definition is checked on first use."""
    path = tmp_path / "broken_workflow.py"
    path.write_text(textwrap.dedent("""
        from function_flow import tasks
        job = tasks.Job(name='broken')

        @job.task(task_id='step1')
        def step1(task, job):
            return 1

        @job.task(task_id='step2', deps=['setp1'])
        def step2(task, job):
            return 2

        scheduler = job.make_scheduler()
    """))
    spec = importlib.util.spec_from_file_location("broken_workflow", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
    data = b'{"run_id": "r", "task_id": "step1", "attempt": 1}'
    message = {"data": base64.b64encode(data).decode(), "attributes": signed(data)}
    error = definition_error(lambda: module.scheduler(message, None))
    assert "task 'step2' depends on unknown task 'setp1' (did you mean 'step1'?)" == str(error)
    from function_flow import loader

    with pytest.raises(loader.LoadError, match="depends on unknown task 'setp1'"):
        loader.load_job(str(path))


def test_start_with_a_broken_graph_raises_definition_error(tmp_path):
    from function_flow import backends

    job = job_with(("a", ["b"]), ("b", ["a"]))
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    try:
        job.use_backend(backend)
        assert "dependency cycle" in str(definition_error(job.start))
    finally:
        backend.close()


# ------------------------------------------------------ task declarations

def three_params(a, b, c):
    return None


def keyword_only(*, x):
    return None


def named_plus_extra(task, job, extra):
    return None


@pytest.mark.parametrize("func,missing", [
    (three_params, "c"), (keyword_only, "x"), (named_plus_extra, "extra")])
def test_function_that_cannot_accept_the_call(func, missing):
    job = tasks.Job(name="checked")
    error = definition_error(lambda: job.task(task_id="bad_sig")(func))
    message = str(error)
    assert message.startswith("task 'bad_sig': function ")
    assert f"requires parameter(s) {missing}" in message
    assert error.task_id == "bad_sig"


def one_parameter(context):
    return None


def one_optional(value=1):
    return None


async def coroutine_body(task, job):
    return None


async def generator_body(task, job):
    yield None


@pytest.mark.parametrize("func", [coroutine_body, generator_body])
def test_an_async_function_is_refused_naming_the_task(func):
    job = tasks.Job(name="checked")
    message = str(definition_error(lambda: job.task(task_id="later")(func)))
    assert message.startswith(f"task 'later': {func.__name__}() is an async function")
    assert "asyncio.run" in message
    message = str(definition_error(lambda: job.foreach(task_id="each", over="x")(func)))
    assert message.startswith(f"task 'each': {func.__name__}() is an async function")


def task_positional_only(task, /, **context):
    return None


def task_positional_only_job_named(task, /, job):
    return None


@pytest.mark.parametrize("func,fragment", [
    (one_parameter, "takes one positional parameter (context)"),
    (one_optional, "takes one positional parameter (value)"),
    (task_positional_only, "requires parameter(s) task (positional-only)"),
    (task_positional_only_job_named, "requires parameter(s) task (positional-only)")])
def test_function_that_cannot_take_task_and_job_is_rejected_when_declared(func, fragment):
    job = tasks.Job(name="checked")
    error = definition_error(lambda: job.task(task_id="bad_call")(func))
    message = str(error)
    assert message.startswith(f"task 'bad_call': function {func.__name__}() ")
    assert fragment in message
    assert message.endswith("declare it as `def f(task, job)` or `def f(**context)`")
    assert error.task_id == "bad_call"


@pytest.mark.parametrize("func", [
    lambda task, job: None, lambda t, j: None, lambda job, **context: None,
    lambda **context: None, lambda task: None, lambda: None, lambda *args: None,
    lambda task, job, extra=1: None, lambda task, job, /: None, lambda t, j=None: None,
    lambda t, *rest: None, lambda task=None, /, **context: None])
def test_functions_that_can_accept_the_call(func):
    tasks.Job(name="checked").task(task_id="fine")(func)


def test_job_without_tasks_is_rejected():
    error = definition_error(tasks.Job(name="hollow").validate)
    assert str(error).startswith("job 'hollow' has no tasks: declare at least one "
                                 "with @job.task(task_id=...)")


@pytest.mark.parametrize("options,fragment", [
    ({"retries": -1}, "retries must be an integer >= 0, got -1"),
    ({"retries": 1.5}, "retries must be an integer >= 0, got 1.5"),
    ({"retries": "2"}, "retries must be an integer >= 0, got '2'"),
    ({"timeout": 0}, "timeout must be a positive number of seconds, got 0"),
    ({"timeout": -3}, "timeout must be a positive number of seconds, got -3"),
    ({"timeout": "10"}, "timeout must be a positive number of seconds, got '10'"),
    ({"retry_backoff": "fast"}, "retry_backoff must be seconds or a Backoff"),
    ({"retries": True}, "retries must be an integer >= 0, got True"),
    ({"timeout": True}, "timeout must be a positive number of seconds, got True"),
    ({"timeout": float("nan")}, "timeout must be a positive number of seconds, got nan"),
    ({"timeout": float("inf")}, "timeout must be a positive number of seconds, got inf"),
    ({"retry_backoff": -1.0}, "retry_backoff must be a number of seconds >= 0, got -1.0"),
    ({"retry_backoff": float("nan")}, "retry_backoff must be a number of seconds >= 0"),
    ({"deps": "step1"}, "deps must be a list of task ids, got 'step1'"),
    ({"deps": [1]}, "dependency 1 is not a task id string"),
    ({"deps": ["a", "a"]}, "a dependency is listed twice"),
])
def test_bad_task_options(options, fragment):
    job = tasks.Job(name="checked")
    error = definition_error(lambda: job.task(task_id="opt", **options)(lambda task, job: None))
    assert str(error).startswith("task 'opt'")
    assert fragment in str(error)
    assert error.task_id == "opt"


@pytest.mark.parametrize("task_id", ["", "a/b", "__end__", "__private", 7])
def test_bad_task_ids(task_id):
    job = tasks.Job(name="checked")
    definition_error(lambda: job.task(task_id=task_id)(lambda task, job: None))


@pytest.mark.parametrize("kwargs", [{"name": ""}, {"name": "a/b"},
                                    {"name": "ok", "max_parallel_tasks": 0}])
def test_bad_job_options(kwargs):
    definition_error(lambda: tasks.Job(**kwargs))


# -------------------------------------------------------------- properties

@st.composite
def forward_dags(draw, max_nodes: int = 60):
    """(n, deps) where every edge goes from a lower to a higher index."""
    n = draw(st.integers(1, max_nodes))
    deps = [sorted(draw(st.sets(st.integers(0, j - 1), max_size=min(j, 5)))) if j else []
            for j in range(n)]
    return n, deps


def build(deps: list[list[int]], declaration_order: list[int]) -> Dag:
    specs = [make_spec(f"t{i}", [f"t{d}" for d in deps[i]], None) for i in declaration_order]
    return Dag("prop", specs)


def reachability(n: int, deps: list[list[int]]) -> list[set[int]]:
    """below[j]: every node j depends on, directly or not (indices are topological)."""
    below: list[set[int]] = [set() for _ in range(n)]
    for j in range(n):
        for d in deps[j]:
            below[j] |= {d} | below[d]
    return below


def max_antichain(n: int, below: list[set[int]]) -> int:
    """Brute force: the most tasks no two of which depend on each other."""
    best = 0
    for mask in range(1, 1 << n):
        nodes = [i for i in range(n) if mask >> i & 1]
        if len(nodes) > best and all(a not in below[b] for a, b in itertools.permutations(nodes, 2)):
            best = len(nodes)
    return best


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_random_dags_build_in_topological_order(data):
    n, deps = data.draw(forward_dags())
    declaration = data.draw(st.permutations(range(n)))
    dag = build(deps, declaration)
    position = {task: i for i, task in enumerate(dag.order)}
    assert sorted(dag.order) == sorted(f"t{i}" for i in range(n))
    for j in range(n):
        for d in deps[j]:
            assert position[f"t{d}"] < position[f"t{j}"]
    assert 1 <= dag.width_bound <= n
    # Tasks with the same longest-path depth never depend on each other.
    depth: list[int] = []
    for j in range(n):
        depth.append(1 + max((depth[d] for d in deps[j]), default=-1))
    largest_level = max(depth.count(level) for level in set(depth))
    assert dag.width_bound >= largest_level


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_width_bound_is_at_least_the_true_maximum_antichain(data):
    n, deps = data.draw(forward_dags(max_nodes=10))
    dag = build(deps, list(range(n)))
    assert max_antichain(n, reachability(n, deps)) <= dag.width_bound <= n


CYCLE = re.compile(r"has a dependency cycle: (.+)$")


@settings(deadline=None, max_examples=150)
@given(data=st.data())
def test_back_edge_is_reported_as_a_real_cycle(data):
    n, deps = data.draw(forward_dags())
    below = reachability(n, deps)
    pairs = [(i, j) for j in range(n) for i in below[j]]  # j depends on i
    assume(pairs)
    low, high = data.draw(st.sampled_from(pairs))
    deps = [list(d) for d in deps]
    deps[low].append(high)  # now low depends on high, which depends on low
    with pytest.raises(DefinitionError) as caught:
        build(deps, data.draw(st.permutations(range(n))))
    match = CYCLE.search(str(caught.value))
    assert match, str(caught.value)
    cycle = match.group(1).split(" -> ")
    assert len(cycle) >= 3 and cycle[0] == cycle[-1]
    assert len(set(cycle[:-1])) == len(cycle) - 1
    for before, after in zip(cycle, cycle[1:]):
        # "u -> v" reads "u runs before v": v depends on u.
        assert int(before[1:]) in deps[int(after[1:])], (before, after, cycle)
    assert caught.value.task_id in cycle


def test_a_foreach_that_is_not_a_foreach_is_refused_naming_the_task():
    job = tasks.Job(name="checked")
    message = str(definition_error(lambda: job.task(task_id="fan", foreach=[1, 2])(
        lambda task, job: None)))
    assert message.startswith("task 'fan': foreach must be a ForEach, got [1, 2]")
    assert "@job.foreach(" in message


def test_a_parameter_function_flow_cannot_fill_is_named_with_the_one_it_resembles():
    job = tasks.Job("typo")
    with pytest.raises(DefinitionError) as refused:
        job.task(task_id="t")(lambda task, job_: 1)
    assert "requires parameter(s) job_ that function_flow cannot supply (a typo? 'job_' for " \
        "'job'); it is called as func(task=...)" in str(refused.value)
    with pytest.raises(DefinitionError) as refused:
        job.task(task_id="u")(lambda task, region: 1)
    assert "region that function_flow cannot supply; it is called" in str(refused.value)
