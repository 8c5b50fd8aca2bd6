"""The decision rules, tried without any store: records in, writes and messages out.

Every rule's status changes must be in transitions.LEGAL_TRANSITIONS with
the attempt rule the table gives; hypothesis draws the records.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from function_flow.core import attempts, control, transitions
from function_flow.core.definition import END_TASK_ID, make_spec
from function_flow.core.graph import Dag, RunGraph
from function_flow.core.messages import Message
from function_flow.core.records import RunRecord, RunStatus, TaskRecord, TaskStatus
from function_flow.core.step import Step
from function_flow.core.transitions import LEGAL_TRANSITIONS

NOW = 1000.0
# a -> b, a -> c, (b, c) -> d
GRAPH = RunGraph(Dag("g", [make_spec("a", [], None, retries=1),
                           make_spec("b", ["a"], None), make_spec("c", ["a"], None),
                           make_spec("d", ["b", "c"], None)]))
RUN = RunRecord(run_id="r", job_name="g", dag_hash="h", args={})

statuses = st.sampled_from(list(TaskStatus.__members__.values()))
records = st.builds(TaskRecord, task_id=st.sampled_from(["a", "b", "c", "d"]),
                    status=statuses, attempt=st.integers(0, 5),
                    slot=st.one_of(st.none(), st.integers(0, 3)),
                    not_before=st.one_of(st.none(), st.floats(NOW - 10, NOW + 10)),
                    interrupted=st.integers(0, 4))


def check_legal(before: dict[str, TaskRecord], step: Step) -> None:
    """Every status written is a legal move from the record the rule was given."""
    for write in step.writes:
        if write.kind != "task" or "status" not in write.value:
            continue
        old = before[write.key]
        new = TaskStatus(write.value["status"])
        rule = LEGAL_TRANSITIONS.get((old.status, new))
        assert rule is not None, f"{write.key}: {old.status.value} -> {new.value}"
        attempt = write.value.get("attempt", old.attempt)
        assert attempt in {{"same": old.attempt, "next": old.attempt + 1, "one": 1}[r]
                           for r in rule.split("|")}


@settings(max_examples=300)
@given(records, st.integers(0, 5))
def test_claims_are_legal_and_only_touch_the_task(task: TaskRecord, attempt: int) -> None:
    step = transitions.claim(task, "r", attempt, NOW, lease=60.0)
    check_legal({task.task_id: task}, step)
    assert {w.key for w in step.writes} <= {task.task_id}
    if step.verdict == "claimed":
        assert task.status is TaskStatus.QUEUED and task.attempt == attempt
        assert step.writes[0].value["lease_until"] == NOW + 60.0
    else:
        assert not step.writes


@settings(max_examples=200)
@given(records, st.integers(0, 5))
def test_a_claim_of_a_paused_run_goes_back_unrun_with_its_attempt(task: TaskRecord,
                                                                  attempt: int) -> None:
    step = control.held(task, attempt)
    check_legal({task.task_id: task}, step)
    assert not step.messages and {w.key for w in step.writes} <= {task.task_id}
    if task.status is TaskStatus.RUNNING and task.attempt == attempt:
        assert step.verdict == "held"
        assert step.writes[0].value == {"status": "QUEUED", "started_at": None,
                                        "lease_until": None}
    else:
        assert step.verdict == "stale" and not step.writes


@settings(max_examples=200)
@given(records)
def test_cancel_ends_any_unfinished_task_and_frees_its_slot(task: TaskRecord) -> None:
    step = transitions.cancel(task, task.attempt, NOW, among=control.UNFINISHED)
    if task.status.is_final:
        assert step.verdict == "stale" and not step.writes
        return
    check_legal({task.task_id: task}, step)
    writes = [(w.kind, w.key) for w in step.writes]
    assert writes == [("task", task.task_id)] + ([("slot", task.slot)] if task.slot is not None
                                                 else [])
    assert step.writes[0].value["status"] == "CANCELLED" and not step.messages
    assert all(w.value is None for w in step.writes if w.kind == "slot")


def test_an_early_delivery_is_sent_again_for_when_it_is_due() -> None:
    task = TaskRecord("a", TaskStatus.QUEUED, attempt=2, not_before=NOW + 5)
    step = transitions.claim(task, "r", 2, NOW, lease=60.0)
    assert (step.verdict, step.delay, step.messages) == ("early", 5.0, [Message("r", "a", 2)])


@settings(max_examples=200)
@given(st.integers(1, 4), st.integers(0, 4), st.booleans())
def test_failures_retry_until_retries_are_spent(attempt: int, interrupted: int,
                                                has_slot: bool) -> None:
    spec = GRAPH.spec("a")
    task = TaskRecord("a", TaskStatus.RUNNING, attempt=attempt, interrupted=interrupted,
                      slot=0 if has_slot else None)
    step = transitions.fail(spec, task, "r", "Boom: x", NOW, run=RUN, retry_delay=2.0,
                            graph=GRAPH, has_end_task=False)
    check_legal({"a": task}, step)
    counted = attempt - min(interrupted, transitions.MAX_INTERRUPTED_ATTEMPTS)
    if counted <= spec.retries:
        assert step.messages == [Message("r", "a", attempt + 1)] and step.delay == 2.0
        assert step.run_ended is None
    else:
        assert step.run_ended is RunStatus.FAILED and not step.messages
        # Its dependents learn of the failure (their trigger rules decide).
        assert step.joins == ("b", "c")
        assert ("slot", 0, None) in [(w.kind, w.key, w.value) for w in step.writes] \
            or not has_slot


def test_success_queues_single_dependency_dependents_and_writes_into_joins() -> None:
    a = TaskRecord("a", TaskStatus.RUNNING, attempt=1)
    step = transitions.succeed(GRAPH, a, "r", {"v": 1}, NOW, run=None, has_end_task=False)
    check_legal({"a": a, "b": TaskRecord("b"), "c": TaskRecord("c")}, step)
    assert sorted(m.task_id for m in step.messages) == ["b", "c"]
    b = TaskRecord("b", TaskStatus.RUNNING, attempt=1)
    step = transitions.succeed(GRAPH, b, "r", None, NOW, run=None, has_end_task=False)
    assert step.joins == ("d",) and not step.messages
    assert step.writes[0].value == {"deps_done.b": "SUCCEEDED"}  # a blind write, no status


def test_the_only_sink_ends_the_run_and_a_slot_is_handed_to_an_heir() -> None:
    d = TaskRecord("d", TaskStatus.RUNNING, attempt=1, slot=2)
    heir = TaskRecord("x", TaskStatus.READY, attempt=0)
    step = transitions.succeed(GRAPH, d, "r", 1, NOW, run=RUN, has_end_task=False, heir=heir)
    assert step.run_ended is RunStatus.SUCCEEDED
    assert ("slot", 2, "x") in [(w.kind, w.key, w.value) for w in step.writes]
    assert step.messages == [Message("r", "x", 1)]


def resolve(join_id: str, join: TaskRecord, slots: int = 0, run: RunRecord | None = None,
            graph: RunGraph = GRAPH) -> Step | None:
    return transitions.resolve_join(graph, join_id, join, "r", NOW, run=run, slots=slots,
                                    has_end_task=True)


def test_a_join_is_queued_only_when_every_dependency_succeeded() -> None:
    join = TaskRecord("d", deps_done={"b": "SUCCEEDED"})
    assert resolve("d", join) is None
    join.deps_done["c"] = "SUCCEEDED"
    step = resolve("d", join)
    assert step is not None and step.messages == [Message("r", "d", 1)]
    with_slots = resolve("d", join, slots=3)
    assert with_slots is not None and with_slots.fill_slots and not with_slots.messages
    end = resolve(END_TASK_ID, TaskRecord(END_TASK_ID, deps_done={"d": "SUCCEEDED"}), run=RUN)
    assert end is not None and end.run_ended is RunStatus.SUCCEEDED


def test_a_join_with_a_failed_dependency_ends_upstream_failed_once_all_are_done() -> None:
    join = TaskRecord("d", deps_done={"c": "FAILED"})
    assert resolve("d", join) is None  # b may still be running
    join.deps_done["b"] = "SUCCEEDED"
    step = resolve("d", join)
    check_legal({"d": join, END_TASK_ID: TaskRecord(END_TASK_ID)}, step)
    assert step is not None and not step.messages
    assert step.writes[0].value["status"] == "UPSTREAM_FAILED"
    assert step.joins == (END_TASK_ID,)  # written into what waits for it, like any outcome
    assert step.writes[1].value == {"deps_done.d": "UPSTREAM_FAILED"}


def test_the_end_of_a_run_that_noted_a_failure_is_failed() -> None:
    failed = RunRecord(run_id="r", job_name="g", dag_hash="h", args={},
                       error="task 'c' failed: Boom")
    end = resolve(END_TASK_ID, TaskRecord(END_TASK_ID, deps_done={"d": "UPSTREAM_FAILED"}),
                  run=failed)
    assert end is not None and end.run_ended is RunStatus.FAILED


def test_interrupted_attempts_are_free_up_to_a_bound_then_they_count() -> None:
    spec = GRAPH.spec("b")  # no retries
    free = TaskRecord("b", TaskStatus.RUNNING, attempt=1, interrupted=0)
    step = transitions.interrupted(spec, free, "r", NOW, run=RUN, retry_delay=0.0,
                                   graph=GRAPH, has_end_task=False)
    assert step.verdict == "interrupted" and step.writes[0].value["interrupted"] == 1
    spent = TaskRecord("b", TaskStatus.RUNNING, attempt=4,
                       interrupted=transitions.MAX_INTERRUPTED_ATTEMPTS)
    step = transitions.interrupted(spec, spent, "r", NOW, run=RUN, retry_delay=0.0,
                                   graph=GRAPH, has_end_task=False)
    assert step.run_ended is RunStatus.FAILED
    assert "ProcessDied" in step.writes[0].value["error"]


def test_huge_errors_are_stored_bounded_keeping_their_end() -> None:
    error = "Traceback\n" + "x" * 3_000_000 + "\nValueError: the real cause"
    step = transitions.fail(GRAPH.spec("b"), TaskRecord("b", TaskStatus.RUNNING, attempt=1),
                            "r", error, NOW, run=RUN, retry_delay=0.0, graph=GRAPH,
                            has_end_task=False)
    stored = step.writes[0].value["error"]
    assert len(stored) < attempts.MAX_ERROR_CHARS + 100
    assert stored.endswith("ValueError: the real cause") and stored.startswith("Traceback")


def test_a_grown_graph_is_read_from_the_records() -> None:
    """Tasks a run added carry their own edges; the definition answers the rest."""
    item = TaskRecord("item-1", template="b", deps=["a"], dependents=["d"])
    assert GRAPH.spec("item-1", item) is GRAPH.spec("b")
    assert GRAPH.deps_of("item-1", item) == ("a",)
    assert GRAPH.dependents_of("item-1", item) == ("d",)
    assert GRAPH.knows("item-1", item) and not GRAPH.knows("item-1")
    grown = TaskRecord("a", dependents=["item-1", "item-2"])
    assert GRAPH.dependents_of("a", grown) == ("item-1", "item-2")
    assert GRAPH.single_dependency_dependents("a", grown) == ()  # each is a join
    assert GRAPH.single_dependency_dependents("a") == ("b", "c")
