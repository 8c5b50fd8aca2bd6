"""Remote tasks on the embedded backend: both ways of writing a remote function.

tests/workflows_gcp/remote_round_trip.py has one remote task answered by a
`@remote.function` and one by a function written as Function Flow's sample
writes it (it publishes its own answer with Pub/Sub's client, which the
embedded hosting stands in for). test_remote_tasks_gcp.py runs the same file
on the emulators, through real push subscriptions.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import pathlib
import threading
import uuid
from typing import Any

import pytest

from function_flow import DefinitionError, backends, remote, tasks
from function_flow.core.definition import Call
from function_flow.core.ports import Request
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import hosting
from function_flow.remote.caller import Dispatcher
from function_flow.remote.functions import RemoteFunction, answer_message
from functions_stack import wait_for
from signatures import TEST_HMAC_KEY, signed

WORKFLOW = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "remote_round_trip.py"


def load_workflow() -> Any:
    spec = importlib.util.spec_from_file_location(f"rt_{uuid.uuid4().hex}", WORKFLOW)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def executions(tmp_path, monkeypatch) -> pathlib.Path:
    path = tmp_path / "executions.jsonl"
    monkeypatch.setenv("FUNCTION_FLOW_TEST_EXECUTIONS", str(path))
    return path


@pytest.fixture
def workflow(tmp_path, executions):
    """The workflow on a fresh embedded backend, its classic function hosted."""
    module = load_workflow()
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    module.job.use_backend(backend)
    remote.host("RT_CLASSIC", module.classic_remote)
    try:
        yield module
    finally:
        hosting.unhost("RT_CLASSIC")
        backend.close()


def received(executions: pathlib.Path, function: str) -> list[dict[str, Any]]:
    if not executions.exists():
        return []
    lines = [json.loads(line) for line in executions.read_text().splitlines()]
    return [line["payload"] for line in lines if line.get("function") == function]


def test_both_forms_answer_and_their_answers_become_results(workflow, executions):
    job = workflow.job
    run = job.run({"n": 4, "test_run": "a"}, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    wrapped_request, = received(executions, "multiply")
    classic_request, = received(executions, "classic_remote")
    # Exactly the JSON Function Flow sends; "result" only when the body's is truthy.
    assert sorted(wrapped_request) == ["job_args", "job_id", "result", "task_args"]
    assert wrapped_request["job_args"] == {"n": 4, "test_run": "a"}
    assert wrapped_request["task_args"] == {"factor": 10}
    assert wrapped_request["result"] == {"n": 4}
    assert sorted(classic_request) == ["job_args", "job_id", "task_args"]
    assert classic_request["task_args"] == {"region": "APAC"}
    records = {t.task_id: t for t in job.engine.task_records(run.run_id)}
    assert records["wrapped"].result == {"product": 40}
    # Function Flow's result of a remote task: its answer, as RemoteFunctionFuture parses it.
    assert records["classic"].result == {"job_id": classic_request["job_id"],
                                         "message": "all good", "code": 0}
    assert records["combine"].result == {"wrapped": {"product": 40},
                                         "classic": records["classic"].result}
    # Each attempt had a job id of its own; the trigger went with the answer.
    assert wrapped_request["job_id"] != classic_request["job_id"]
    assert records["wrapped"].trigger_id == wrapped_request["job_id"]
    assert job.engine.store.get_trigger(wrapped_request["job_id"]) is None


def test_an_exception_in_the_wrapped_function_fails_the_attempt_then_retries_apply(
        workflow, executions):
    job = workflow.job
    run = job.run({"fail_first": True, "test_run": "b"}, timeout=30)
    assert run.status is RunStatus.SUCCEEDED, run.error
    first, second = received(executions, "multiply")
    assert first["job_id"] != second["job_id"]  # a new id names the new attempt
    record, = job.engine.store.get_tasks(run.run_id, ["wrapped"])
    assert record.attempt == 2 and record.result == {"product": 30}


def test_a_nonzero_code_fails_the_task_with_the_answers_message(workflow, executions):
    job = workflow.job
    run = job.run({"classic_fails": True, "test_run": "c"}, timeout=30)
    assert run.status is RunStatus.FAILED
    record, = job.engine.store.get_tasks(run.run_id, ["classic"])
    assert record.status is TaskStatus.FAILED and record.error == "the region is closed"


def test_the_trigger_is_committed_before_the_request_is_sent(tmp_path):
    job = tasks.Job(name="ordering")
    seen: list[Any] = []

    class Checking:
        def call(self, call: Call, request: Request, timeout: float | None) -> Any:
            raise AssertionError("asynchronous calls are sent, not called")

        def send(self, call: Call, request: Request) -> None:
            seen.append(store.get_trigger(request.job_id))
            raise ConnectionError("the topic is unreachable")

    @job.task(task_id="r", remote_topic="SOMEWHERE")
    def r(task, job):
        return "payload"

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=1)
    store = backend.store
    backend.caller = Dispatcher({"pubsub": Checking()})
    job.use_backend(backend)
    try:
        run = job.run(timeout=30)
    finally:
        backend.close()
    trigger, = seen
    assert trigger is not None and trigger.task_id == "r"
    # The send failed: the attempt fails with why, and its trigger is gone.
    record, = store.get_tasks(run.run_id, ["r"])
    assert run.status is RunStatus.FAILED and "ConnectionError: the topic is unreachable" \
        in record.error
    assert store.get_trigger(trigger.trigger_id) is None


def event_of(message: dict[str, Any]) -> dict[str, Any]:
    return {"data": base64.b64encode(json.dumps(message).encode()).decode(),
            "attributes": {}}


def test_answers_that_are_malformed_unknown_repeated_or_late_change_nothing(
        workflow, executions, monkeypatch):
    job = workflow.job
    listener = job.make_external_event_listener()
    run = job.run({"test_run": "d"}, timeout=30)
    assert run.status is RunStatus.SUCCEEDED
    before = [t.to_dict() for t in job.engine.task_records(run.run_id)]
    classic_request, = received(executions, "classic_remote")
    answers = [
        {"status": {"code": 0}, "resource": {"type": "remote_function_resource"}},
        {"status": {"code": 0}, "resource": {"type": "remote_function_resource",
                                             "labels": {"job_id": 12}}},
        answer_message("no-such-job", value=1),
        answer_message(classic_request["job_id"], value="again"),  # a second answer
        answer_message(classic_request["job_id"], error="late failure"),
    ]
    for answer in answers:
        assert listener(event_of(answer), None) is None  # acknowledged
    assert [t.to_dict() for t in job.engine.task_records(run.run_id)] == before


def test_an_answer_after_the_attempt_timed_out_changes_nothing(tmp_path, executions,
                                                               monkeypatch):
    monkeypatch.setenv("RT_TIMEOUT", "1")
    module = load_workflow()
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    module.job.use_backend(backend)
    remote.host("RT_CLASSIC", module.classic_remote)
    try:
        run = module.job.run({"silent": True, "test_run": "e"}, timeout=60)
        assert run.status is RunStatus.FAILED
        record, = backend.store.get_tasks(run.run_id, ["classic"])
        request, = received(executions, "classic_remote")
        assert record.error == (f"TimeoutError: attempt 1 of task 'classic' got no answer or "
                                f"event for {request['job_id']!r} within its timeout (1.0 s)")
        assert backend.store.get_trigger(request["job_id"]) is None
        listener = module.job.make_external_event_listener()
        assert listener(event_of(answer_message(request["job_id"], value=1)), None) is None
        assert backend.store.get_tasks(run.run_id, ["classic"])[0].to_dict() \
            == record.to_dict()
    finally:
        hosting.unhost("RT_CLASSIC")
        backend.close()


def test_a_request_delivered_twice_is_acted_on_and_answered_once(store):
    calls, answers = [], []
    function = RemoteFunction(lambda payload, context: calls.append(payload) or "done")
    request = {"job_id": "job-1", "job_args": {}, "task_args": {}, "result": 1}
    reply = lambda message, attributes: answers.append(message)  # noqa: E731
    assert function.answer(request, {"run_id": "run-1"}, None, reply, store) == "answered"
    assert function.answer(request, {"run_id": "run-1"}, None, reply, store) == "duplicate"
    assert len(calls) == 1 and answers == [answer_message("job-1", value="done")]


def test_the_wrapped_function_rejects_what_is_not_a_request(monkeypatch):
    monkeypatch.setenv("FUNCTION_FLOW_HMAC_KEY", TEST_HMAC_KEY)
    function = remote.function(lambda payload, context: 1)
    for data in (b"not json", b"[1, 2]", b'{"job_args": {}}', b'{"job_id": 7}'):
        event = {"data": base64.b64encode(data).decode(), "attributes": signed(data)}
        assert function(event, None) is None  # acknowledged, nothing called


def test_a_result_that_cannot_be_stored_is_the_tasks_failure():
    answers = []
    function = RemoteFunction(lambda payload, context: {1, 2})
    function.answer({"job_id": "j"}, {}, None, lambda m, a: answers.append(m), None)
    answer, = answers
    assert answer["status"]["code"] != 0 and "TypeError" in answer["status"]["message"]


@pytest.mark.parametrize("topic", ["ab", "1abc", "goog-topic", "has space", "x" * 256])
def test_a_topic_pubsub_would_refuse_is_a_definition_error_naming_the_task(topic):
    job = tasks.Job(name="bad_topic")
    with pytest.raises(DefinitionError) as error:
        job.task(task_id="send_it", remote_topic=topic)(lambda task, job: 1)
    assert "task 'send_it'" in str(error.value) and repr(topic) in str(error.value)
    with pytest.raises(ValueError):
        remote.function(lambda p, c: 1, topic=topic)


def test_remote_topic_and_call_together_are_refused():
    job = tasks.Job(name="both")
    with pytest.raises(DefinitionError, match="task 'x': give remote_topic or call"):
        job.task(task_id="x", remote_topic="TOPIC_A", call=remote.PubSub("TOPIC_B"))(
            lambda task, job: 1)


def test_a_hosted_function_that_raises_fails_its_attempt_at_once(workflow, executions):
    job = workflow.job
    run = job.run({"classic_raises": True, "test_run": "f"}, timeout=30)
    assert run.status is RunStatus.FAILED
    record, = job.engine.store.get_tasks(run.run_id, ["classic"])
    assert record.error == ("classic_remote() for topic RT_CLASSIC raised RuntimeError: "
                            "the classic function broke")


def test_a_run_that_fails_cancels_the_attempts_still_waiting(workflow, executions):
    job = workflow.job
    run = job.run({"wrapped_fails": True, "silent": True, "test_run": "g"}, timeout=30)
    assert run.status is RunStatus.FAILED
    classic, = job.engine.store.get_tasks(run.run_id, ["classic"])
    assert classic.status is TaskStatus.CANCELLED
    # The hosted function runs on its own thread: its record may come after the run ended.
    request, = wait_for(lambda: received(executions, "classic_remote"), "the classic request",
                        timeout=30)
    assert job.engine.store.get_trigger(request["job_id"]) is None


def assert_busy_until_released(bus, started: threading.Event, release: threading.Event) -> None:
    """Once the work has started, the bus is busy; once released, idle again."""
    assert started.wait(30)
    assert not bus.wait_idle(0)
    release.set()
    assert bus.wait_idle(30)


def test_a_hosted_function_counts_as_the_buses_work_until_it_returns():
    """What makes job.wait see the end of a run a hosted answer ended: the
    function (and the answer it publishes) runs on the hosting pool, and the
    in-process bus counts it as busy meanwhile (run_end.wait waits for it idle)."""
    from function_flow.bus.local import LocalBus

    bus = LocalBus(1)
    host = hosting.LocalHost("p", "EVENTS", bus=bus)
    started, release = threading.Event(), threading.Event()
    hosting.host("RT_SLOW", lambda event, context: (started.set(), release.wait(30)))
    try:
        host.publish("RT_SLOW", b"{}", {"job_id": "j"})
        assert_busy_until_released(bus, started, release)
    finally:
        release.set()
        hosting.unhost("RT_SLOW")
        host.close()
        bus.close()


def test_an_answer_that_cannot_be_sent_is_forgotten_so_a_redelivery_answers(store):
    calls, answers = [], []
    function = RemoteFunction(lambda payload, context: calls.append(1) or "done")
    request = {"job_id": "job-9", "job_args": {}, "task_args": {}}

    def broken(message, attributes):
        raise ConnectionError("the events topic is unreachable")

    with pytest.raises(ConnectionError):
        function.answer(request, {"run_id": "run-1"}, None, broken, store)
    reply = lambda message, attributes: answers.append(message)  # noqa: E731
    assert function.answer(request, {"run_id": "run-1"}, None, reply, store) == "answered"
    assert len(calls) == 2 and answers == [answer_message("job-9", value="done")]


@pytest.mark.parametrize("status", ["broken", {"code": "0"}, {"code": True}, [0]])
def test_a_reply_whose_status_is_malformed_is_not_a_reply(status):
    from function_flow import futures

    reply = {"status": status, "resource": {"type": "remote_function_resource",
                                            "labels": {"job_id": "j"}}}
    assert futures.RemoteFunctionFuture.handle_message(reply) is None


@pytest.mark.parametrize("topic", ["SCHEDULE", "SCHEDULE_EXTERNAL_EVENTS"])
def test_a_remote_topic_that_is_the_jobs_own_topic_is_refused(topic):
    job = tasks.Job(name="own")
    with pytest.raises(DefinitionError, match=f"task 'r': remote_topic '{topic}' is this "
                                              "job's own"):
        job.task(task_id="r", remote_topic=topic)(lambda task, job: 1)


def test_a_5_mib_request_and_answer_travel_and_the_answer_is_stored_by_reference(tmp_path):
    job = tasks.Job(name="big_remote")
    big = "x" * (5 * 1024 * 1024)

    @job.task(task_id="send", remote_topic="BIG_REQUESTS")
    def send(task, job):
        return big

    @job.task(task_id="check", deps=["send"])
    def check(task, job):
        return len(job.get_task_result("send"))

    @remote.function(topic="BIG_REQUESTS")
    def echo_back(payload, context):
        return payload["result"] + "!"

    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=2)
    job.use_backend(backend)
    try:
        run = job.run(timeout=60)
        assert run.status is RunStatus.SUCCEEDED, run.error
        assert job.get_task_result("check") == len(big) + 1
        stored, = backend.store.get_tasks(run.run_id, ["send"])
        assert isinstance(stored.result, dict) and "function_flow_blob" in stored.result
    finally:
        hosting.unhost("BIG_REQUESTS")
        backend.close()
