"""A foreach over a sub-DAG: one copy of a job's tasks per item, `node[i]/t`.

On SQLite and on the Firestore emulator (the `store` fixture), through the
public API, plus redrive and the CLI's collapsed rows.
"""

from __future__ import annotations

import threading

import pytest

from function_flow.cli import items as cli_items
from function_flow.core import foreach
from function_flow.core.listing import ordered_tasks
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.errors import DefinitionError
from function_flow.tasks import Job

from test_foreach import Peak, on, records


def per_item_job(bad: set | None = None, regions: int = 4,
                 **options) -> tuple[Job, list[str]]:
    """regions -> foreach per_region over prep (clean -> score) -> report.

    Items in `bad` fail to clean (a set: redrive tests mend it in place)."""
    bad = set() if bad is None else bad
    names = ["emea", "apac", "amer", "latam"] + [f"r{i}" for i in range(4, regions)]
    ran: list[str] = []
    lock = threading.Lock()
    prep = Job("prep")

    @prep.task(task_id="clean")
    def clean(task, job):
        with lock:
            ran.append(task.id)
        if task.item in bad:
            raise ValueError(f"cannot clean {task.item}")
        return f"clean-{task.item}"

    @prep.task(task_id="score", deps=["clean"])
    def score(task, job):
        # A sibling in the same item's copy, then a task of the parent.
        return {"key": task.item_key, "from": job.get_task_result("clean"),
                "regions": len(job.get_task_result("regions")), "id": task.id}

    job = Job("per_item")
    job.task(task_id="regions")(lambda **_: names[:regions])
    job.foreach(task_id="per_region", over="regions", dag=prep, **options)
    job.task(task_id="report", deps=["per_region"],
             trigger_rule="all_done")(lambda job, **_: job.get_task_result("per_region"))
    return job, ran


def test_each_item_runs_its_own_copy_and_the_aggregator_gets_them_in_order(store) -> None:
    job, _ = per_item_job()
    run = on(store, job).run(timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("report") == [
        {"key": i, "from": f"clean-{r}", "regions": 4, "id": f"per_region[{i}]/score"}
        for i, r in enumerate(["emea", "apac", "amer", "latam"])]
    done = records(job, run.run_id)
    assert {done[f"per_region[{i}]/{t}"].status for i in range(4)
            for t in ("clean", "score")} == {TaskStatus.SUCCEEDED}
    assert done["per_region[2]/score"].template == "per_region/score"


def test_a_mapping_and_a_sub_dag_with_two_sinks_give_results_by_key(store) -> None:
    two = Job("two")
    two.task(task_id="a")(lambda task, **_: task.item * 2)
    two.task(task_id="b")(lambda task, **_: task.item_key)
    job = Job("keyed")
    job.task(task_id="prices")(lambda **_: {"x": 1, "y": 2})
    job.foreach(task_id="each", over="prices", dag=two)
    on(store, job)
    assert job.run(timeout=60).status is RunStatus.SUCCEEDED
    assert job.get_task_result("each") == {"x": {"a": 2, "b": "x"}, "y": {"a": 4, "b": "y"}}


def test_at_most_max_concurrency_copies_run_at_once(store) -> None:
    peak = Peak()
    sub = Job("slow")
    sub.task(task_id="one")(lambda task, **_: peak.count(task.item))
    sub.task(task_id="two", deps=["one"])(lambda task, **_: peak.count(task.item))
    job = Job("lanes")
    job.task(task_id="list")(lambda **_: list(range(12)))
    job.foreach(task_id="work", over="list", dag=sub, max_concurrency=3)
    on(store, job, workers=8)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert peak.most == 3 and job.get_task_result("work") == list(range(12))


def test_max_parallel_tasks_holds_inside_the_copies(store) -> None:
    peak = Peak()
    sub = Job("wide")
    sub.task(task_id="a")(lambda task, **_: peak.count(task.item))
    sub.task(task_id="b")(lambda task, **_: peak.count(task.item))
    job = Job("slots", max_parallel_tasks=2)
    job.task(task_id="list")(lambda **_: list(range(6)))
    job.foreach(task_id="work", over="list", dag=sub)
    on(store, job, workers=8)
    assert job.run(timeout=120).status is RunStatus.SUCCEEDED
    assert job.engine.slots == 2 and peak.most == 2


def test_a_failure_inside_a_copy_fails_that_item_only_within_tolerance(store) -> None:
    job, ran = per_item_job(bad={"apac"}, tolerated_failures=1)
    run = on(store, job).run(timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    report = job.get_task_result("report")
    assert report[1] is None and report[0]["from"] == "clean-emea"
    done = records(job, run.run_id)
    assert done["per_region[1]/clean"].status is TaskStatus.FAILED
    assert "cannot clean apac" in done["per_region[1]/clean"].error
    assert done["per_region[1]/score"].status is TaskStatus.UPSTREAM_FAILED
    assert done["per_region[1]"].status is TaskStatus.UPSTREAM_FAILED
    assert done["per_region[2]/score"].status is TaskStatus.SUCCEEDED


def test_too_many_failed_copies_fail_the_foreach_after_every_item_ended(store) -> None:
    job, _ = per_item_job(bad={"apac", "amer"}, tolerated_failures=1)
    run = on(store, job).run(timeout=120)
    assert run.status is RunStatus.FAILED
    assert "2 of 4 items of foreach task 'per_region' failed" in run.error
    done = records(job, run.run_id)
    assert done["per_region"].status is TaskStatus.FAILED
    assert all(t.status.is_final for t in done.values() if t.task_id.startswith("per_"))


def test_a_branch_inside_a_copy_chooses_by_the_item(store) -> None:
    sub = Job("route")
    sub.task(task_id="decide", branch=True)(
        lambda task, **_: "small" if task.item < 10 else "large")
    sub.task(task_id="small", deps=["decide"])(lambda task, **_: f"s{task.item}")
    sub.task(task_id="large", deps=["decide"])(lambda task, **_: f"L{task.item}")
    job = Job("routed")
    job.task(task_id="list")(lambda **_: [1, 50])
    job.foreach(task_id="each", over="list", dag=sub)
    run = on(store, job).run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("each") == [{"small": "s1", "large": None},
                                           {"small": None, "large": "L50"}]
    done = records(job, run.run_id)
    assert done["each[0]/large"].status is TaskStatus.SKIPPED
    assert done["each[1]/small"].status is TaskStatus.SKIPPED


def test_redrive_runs_only_the_failed_items_copies_again(store) -> None:
    bad = {"amer"}
    job, ran = per_item_job(bad)
    run = on(store, job).run(timeout=120)
    assert run.status is RunStatus.FAILED
    assert records(job, run.run_id)["per_region[2]"].status is TaskStatus.UPSTREAM_FAILED

    bad.clear()  # the fix
    ran.clear()
    job.engine.redrive(run.run_id)
    assert job.wait(run.run_id, timeout=120).status is RunStatus.SUCCEEDED
    assert ran == ["per_region[2]/clean"]
    done = records(job, run.run_id)
    assert done["per_region[2]/score"].status is TaskStatus.SUCCEEDED
    assert job.get_task_result("report")[2]["from"] == "clean-amer"


def test_a_foreach_over_a_sub_dag_inside_a_sub_dag_nests_its_ids(store) -> None:
    leaf = Job("leaf")
    leaf.task(task_id="double")(lambda task, **_: task.item * 2)
    middle = Job("middle")
    middle.task(task_id="list")(lambda **_: [1, 2, 3])
    middle.foreach(task_id="each", over="list", dag=leaf)
    job = Job("outer")
    job.subdag(task_id="stage", dag=middle)
    run = on(store, job).run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("stage") == [2, 4, 6]
    assert records(job, run.run_id)["stage/each[2]/double"].status is TaskStatus.SUCCEEDED


def test_a_sub_dag_inside_the_copied_job_gives_each_item_its_sinks_result(store) -> None:
    """Its join reads the copy's records (the join's task.deps name them);
    it read the declared ids, which hold no record, and every item got None."""
    leaf = Job("leaf")
    leaf.task(task_id="x")(lambda task, **_: task.item * 10)
    per = Job("per")
    per.task(task_id="first")(lambda task, **_: task.item)
    per.subdag(task_id="inner", dag=leaf)
    per.task(task_id="after", deps=["first", "inner"])(
        lambda task, job: {"deps": task.deps, "inner": job.get_task_result(task.deps[1]),
                           "first": job.get_task_result(task.deps[0])})
    job = Job("outer")
    job.task(task_id="src")(lambda **_: [1, 2])
    job.foreach(task_id="each", over="src", dag=per)
    run = on(store, job).run(timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    assert job.get_task_result("each") == [
        {"deps": [f"each[{i}]/first", f"each[{i}]/inner"], "inner": item * 10, "first": item}
        for i, item in enumerate([1, 2])]
    assert records(job, run.run_id)["each[1]/inner"].result == 20


def test_status_counts_each_task_of_many_copies_in_one_row(tmp_path) -> None:
    from function_flow.store.sqlite import SqliteStore

    job, _ = per_item_job(regions=30)
    run = on(SqliteStore(str(tmp_path / "db.sqlite")), job).run(timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    rows = cli_items.collapse(ordered_tasks(job.engine.task_records(run.run_id),
                                            job.dag.order))
    labels = [r.label if isinstance(r, cli_items.ItemsRow) else r.task_id for r in rows]
    assert labels == ["regions", "per_region", "per_region[0..29]",
                      "per_region[0..29]/clean", "per_region[0..29]/score", "report"]


@pytest.mark.parametrize("declare, message", [
    (lambda job, sub: job.foreach(task_id="f", over="list", dag=sub, retries=2),
     "retries belong to that job's tasks"),
    (lambda job, sub: job.foreach(task_id="f", over="list", dag="prep"),
     "dag must be a tasks.Job"),
    (lambda job, sub: job.foreach(task_id="f", over="nothing", dag=sub),
     "unknown task 'nothing'"),
])
def test_bad_declarations_are_definition_errors_naming_the_foreach(declare, message):
    sub = Job("sub")
    sub.task(task_id="t")(lambda **_: 1)
    job = Job("parent")
    job.task(task_id="list")(lambda **_: [1])
    with pytest.raises(DefinitionError, match=message) as caught:
        declare(job, sub)
        job.validate()
    assert "'f'" in str(caught.value)


def test_a_foreach_inside_a_foreachs_sub_dag_is_refused_clearly():
    inner = Job("inner")
    inner.task(task_id="list")(lambda **_: [1])
    inner.foreach(task_id="each", over="list")(lambda item, **_: item)
    job = Job("parent")
    job.task(task_id="list")(lambda **_: [1])
    with pytest.raises(DefinitionError, match="task 'each' is a foreach itself"):
        job.foreach(task_id="f", over="list", dag=inner)



def test_a_foreach_added_to_the_copied_job_after_its_use_is_refused_too():
    inner = Job("inner")
    inner.task(task_id="list")(lambda **_: [1])
    job = Job("parent")
    job.task(task_id="list")(lambda **_: [1])
    job.foreach(task_id="f", over="list", dag=inner)
    inner.foreach(task_id="each", over="list")(lambda item, **_: item)
    with pytest.raises(DefinitionError, match="foreach 'f' of job 'parent' runs job 'inner' "
                                              "per item, whose task 'each' is a foreach"):
        job.validate()


def test_no_record_is_written_by_every_copy(tmp_path) -> None:
    """The per-item cost stays flat: no record lists every item's copy."""
    from function_flow.store.sqlite import SqliteStore

    sub = Job("pair")
    sub.task(task_id="a")(lambda task, **_: task.item)
    sub.task(task_id="b", deps=["a"])(lambda task, **_: task.item)
    job = Job("flat")
    job.task(task_id="list")(lambda **_: list(range(500)))
    job.foreach(task_id="work", over="list", dag=sub, max_concurrency=50)
    run = on(SqliteStore(str(tmp_path / "db.sqlite")), job).run(timeout=120)
    assert run.status is RunStatus.SUCCEEDED, run.error
    done = records(job, run.run_id)
    assert max(len(t.deps or []) for t in done.values()) <= foreach.GROUP_SIZE
    assert len(done) == 2 + 500 * 3 + 5 + 1  # tasks, items and copies, groups, collector


def test_graph_draws_the_copied_sub_dag_inside_the_foreach_node():
    from function_flow.cli import graphs

    job, _ = per_item_job()
    text = graphs.render(job.dag, "text")
    assert "per_region  <- regions  (foreach over regions)  (per item: a copy of job prep" \
        in text
    assert "    per_region/score  <- per_region/clean" in text
    mermaid = graphs.render(job.dag, "mermaid")
    assert 'subgraph' in mermaid and '["clean"]' in mermaid and "regions --> per_region" \
        in mermaid
    dot = graphs.render(job.dag, "dot")
    assert '"per_region/clean" -> "per_region/score";' in dot
    assert 'subgraph "cluster_per_region"' in dot
