"""The deployed topology, end to end, on the Firestore and Pub/Sub emulators.

Workflow files run unchanged under functions-framework, started by the
building blocks `function-flow dev` uses (function_flow/local/; the test
conveniences are in tests/functions_stack.py):
`start` and `poller` as HTTP functions, `scheduler` behind push subscriptions
of the Pub/Sub emulator on the SCHEDULE topic, exactly as Pub/Sub invokes a
deployed function. State is read back from Firestore with FirestoreStore.
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import datetime
import json
import pathlib
import threading
import time
import urllib.request
from typing import Any

import pytest

from emulators import PROJECT
from function_flow import history
from function_flow.cloud.functions import RUN_ID_HEADER
from function_flow.core.messages import Message
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.store.firestore_timers import FirestoreTimers
from functions_stack import Stack, post, wait_for
from signatures import signed
from test_sample import EXPECTED_DEPS, valid_rows

ROOT = pathlib.Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "main.py"
WORKFLOWS = pathlib.Path(__file__).resolve().parent / "workflows_gcp"
SIGNATURES = ("event", "cloudevent", "http")
#: A key the functions do not have.
OTHER_KEY = "not-the-deployments-key-0123456789abcdef"

#: What a healthy log never contains: a failed delivery, a transaction that
#: gave up, an error answer from functions-framework.
TROUBLE = ("Failed to commit transaction", "TransientBackendError", "will be redelivered",
           "Traceback", "ERROR")
#: What store/firestore.py logs or raises when it gives a transaction up.
GAVE_UP = ("transaction still aborted", "still conflicting", "gave up")


@pytest.fixture
def executions(tmp_path) -> pathlib.Path:
    return tmp_path / "executions.jsonl"


@pytest.fixture
def stack(gcp_env, executions) -> Any:
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(executions)), PROJECT)
    try:
        yield stack
    finally:
        stack.close()


def final_run(store, run_id: str, timeout: float = 120.0):
    def ended():
        run = store.get_run(run_id)
        return run if run is not None and run.status.is_final else None
    return wait_for(ended, f"run {run_id} to end", timeout)


def executed(path: pathlib.Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def tasks_of(store, run_id: str) -> dict:
    return {t.task_id: t for t in store.get_tasks(run_id) if t.task_id != "__end__"}


def push_envelope(data: bytes, message_id: str = "1",
                  attributes: dict[str, str] | None = None) -> dict:
    """What a Pub/Sub push subscription POSTs (the emulator sends the same),
    signed with the test key unless `attributes` say otherwise."""
    published = datetime.datetime.now(datetime.timezone.utc).isoformat()
    return {"message": {"data": base64.b64encode(data).decode(),
                        "attributes": signed(data) if attributes is None else attributes,
                        "messageId": message_id, "publishTime": published},
            "subscription": f"projects/{PROJECT}/subscriptions/scheduler"}


def handled(function, run_id: str) -> collections.Counter:
    """How many deliveries of each task's messages the scheduler answered."""
    counts: collections.Counter = collections.Counter()
    for entry in function.json_logs():
        message = entry.get("message", "")
        if message.startswith(f"scheduler: run {run_id} task "):
            counts[message.split(" task ")[1].split(" ")[0]] += 1
    return counts


def failed_pushes(emulator, function) -> list[str]:
    """Pushes to `function` that the Pub/Sub emulator saw answered with a non-2xx.

    The emulator logs each one ("Failed to push to endpoint 'URL': ... not
    an acknowledgement: 503"); the function's port is this test's alone.
    """
    with open(emulator.log_path, encoding="utf-8", errors="replace") as log:
        return [line for line in log
                if "Failed to push to endpoint" in line and function.url in line]


# ------------------------------------------------------------------ the sample


@pytest.mark.parametrize("signature", SIGNATURES)
def test_sample_runs_through_start_pubsub_push_and_scheduler(stack, firestore_store,
                                                             tmp_path, signature):
    events = f"EVENTS-{stack.suffix}"
    stack.env["FUNCTION_FLOW_EVENTS_TOPIC"] = events
    scheduler = stack.function(SAMPLE, "scheduler", signature)
    listener = stack.function(SAMPLE, "external_event_listener", signature)
    pricing = stack.function(SAMPLE, "regional_pricing", "event")  # taskr1, taskr2
    start = stack.function(SAMPLE, "start", "http")
    stack.push(scheduler)
    stack.push(listener, events)
    stack.push(pricing, "PRICING_REQUESTS", f"pricing-{stack.suffix}")

    status, body = post(start.url, {"region": "EMEA", "output_dir": str(tmp_path / "out")})
    assert status == 200, body
    run = final_run(firestore_store, body["run_id"])

    assert run.status is RunStatus.SUCCEEDED, run.error
    records = tasks_of(firestore_store, run.run_id)
    assert set(records) == set(EXPECTED_DEPS)
    assert all(r.status is TaskStatus.SUCCEEDED and r.attempt == 1 for r in records.values())
    rows = valid_rows()
    summary = records["task_6"].result
    assert summary["total_revenue"] == pytest.approx(sum(r["revenue"] for r in rows),
                                                     abs=0.005)
    assert summary["rows_used"] == len(rows) and summary["focus_region"] == "EMEA"
    report = json.loads(pathlib.Path(summary["report"]).read_text())
    assert report["run_id"] == run.run_id
    for task_id, deps in EXPECTED_DEPS.items():
        for dep in deps:
            assert records[task_id].started_at >= records[dep].finished_at
    logs = stack.logs()
    assert not [word for word in TROUBLE if word in logs], logs[-3000:]


# ------------------------------------------------------------------ duplicates


def test_every_message_delivered_twice_runs_each_body_once(stack, firestore_store,
                                                           executions):
    source = WORKFLOWS / "diamond.py"
    scheduler = stack.function(source, "scheduler", "cloudevent")
    start = stack.function(source, "start", "http")
    # Two subscriptions on the topic: Pub/Sub delivers every message to each.
    stack.push(scheduler)
    stack.push(scheduler)

    status, body = post(start.url, {"x": 5})
    assert status == 200, body
    run = final_run(firestore_store, body["run_id"])

    assert run.status is RunStatus.SUCCEEDED, run.error
    records = tasks_of(firestore_store, run.run_id)
    assert records["d"].result == 5 * 2 + 5 * 3

    # Every task's message arrives twice (or more: follow-ups are repeated
    # by duplicates). The run can end before the second subscription has
    # delivered its copies, so wait for them, then check that none of those
    # second deliveries ran a body again.
    def handled_twice() -> collections.Counter | None:
        counts = handled(scheduler, run.run_id)
        return counts if all(counts[task] >= 2 for task in "abcd") else None

    wait_for(handled_twice, "every message to be delivered twice", timeout=60)
    ran = collections.Counter(e["task_id"] for e in executed(executions))
    assert ran == {"a": 1, "b": 1, "c": 1, "d": 1}
    logs = stack.logs()
    assert not [word for word in TROUBLE if word in logs], logs[-3000:]


def test_eight_copies_of_every_message_and_eight_starts_run_each_body_once(
        stack, firestore_store, executions, pubsub_emulator):
    """Heavy duplication: liveness and exactly-once bodies, with no transaction given up.

    Every scheduling message is published twice (duplicate.py) and pushed
    by 4 subscriptions, so each arrives 8 times; the emulator pushes up to
    2 messages at once per subscription, so up to 8 deliveries run at once,
    spread over 4 scheduler processes. Meanwhile 8 concurrent POSTs to
    `start` (4 processes) carry the same run id.
    """
    source = WORKFLOWS / "duplicated.py"
    stack.env["FUNCTION_FLOW_TEST_PUBLISH_COPIES"] = "2"
    scheduler = stack.function(source, "scheduler", "cloudevent", workers=4, threads=4)
    start = stack.function(source, "start", "http", workers=4, threads=2)
    for _ in range(4):
        stack.push(scheduler)

    run_id = f"heavy-{stack.suffix}"
    barrier = threading.Barrier(8)

    def start_once(_: int) -> tuple[int, Any]:
        barrier.wait()
        return post(start.url, {"x": 3}, headers={RUN_ID_HEADER: run_id})

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(start_once, range(8)))
    assert [status for status, _ in answers] == [200] * 8, answers
    assert all(body["run_id"] == run_id for _, body in answers), answers
    assert sorted(body["created"] for _, body in answers) == [False] * 7 + [True], answers

    try:
        run = final_run(firestore_store, run_id, timeout=180)
    except AssertionError as exc:
        states = {t: (r.status.value, r.attempt) for t, r in
                  tasks_of(firestore_store, run_id).items()}
        raise AssertionError(f"{exc}; tasks {states}\n{stack.logs()[-5000:]}") from None
    assert run.status is RunStatus.SUCCEEDED, run.error
    records = tasks_of(firestore_store, run_id)
    assert {t: r.status for t, r in records.items()} == {
        t: TaskStatus.SUCCEEDED for t in "abcde"}
    assert all(r.attempt == 1 for r in records.values())
    assert records["e"].result == 3 * (2 + 3 + 4)
    # The run can end before the last copies arrive: wait for 8 of each.
    wait_for(lambda: all(n >= 8 for n in
                         (handled(scheduler, run_id)[t] for t in "abcde")),
             "every message to be delivered 8 times", timeout=120)

    ran = collections.Counter(e["task_id"] for e in executed(executions))
    assert ran == {t: 1 for t in "abcde"}, ran
    logs = stack.logs()
    assert not [line for line in logs.splitlines()
                if any(words in line for words in GAVE_UP + TROUBLE)], logs[-5000:]
    assert failed_pushes(pubsub_emulator, scheduler) == []


# -------------------------------------------------------------- 8 instances


def most_running_at_once(records: list) -> int:
    """The largest number of RUNNING intervals (claim to completion) that overlap."""
    events = sorted([(r.started_at, 1) for r in records] +
                    [(r.finished_at, -1) for r in records])  # at a tie, ends first
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


@pytest.mark.parametrize("max_parallel", [50, 5])
def test_fan_out_of_50_on_8_scheduler_instances(stack, firestore_store, executions,
                                                max_parallel):
    """1 -> 50 -> 1 on 8 scheduler processes, with max_parallel_tasks 50 and 5.

    One functions-framework with WORKERS=8: eight gunicorn worker processes,
    each with its own Firestore and Pub/Sub clients, like eight function
    instances; the emulator's push subscription spreads its concurrent
    deliveries over them. Each worker has 2 threads: with 1, gunicorn's
    sync worker closes every connection and the emulator's push client then
    stalls about 2 s per delivery, which real Pub/Sub does not do.
    """
    source = WORKFLOWS / "fanout.py"
    stack.env["FANOUT_MAX_PARALLEL"] = str(max_parallel)
    scheduler = stack.function(source, "scheduler", "cloudevent", workers=8, threads=2)
    start = stack.function(source, "start", "http")
    stack.push(scheduler)

    status, body = post(start.url, {})
    assert status == 200, body
    run = final_run(firestore_store, body["run_id"], timeout=180)

    assert run.status is RunStatus.SUCCEEDED, run.error
    records = tasks_of(firestore_store, run.run_id)
    assert len(records) == 52
    assert all(r.status is TaskStatus.SUCCEEDED and r.attempt == 1 for r in records.values())
    assert records["join"].result == sum(range(50))
    runs = executed(executions)
    assert collections.Counter(e["task_id"] for e in runs) == {t: 1 for t in records}
    assert len({e["pid"] for e in runs}) > 1, "all deliveries went to one process"
    join = records["join"]
    assert all(join.started_at >= records[f"branch_{n}"].finished_at for n in range(50))
    # With 5, concurrency slots pass from task to task by compare-and-set.
    assert most_running_at_once(list(records.values())) <= max_parallel
    logs = stack.logs()
    assert not [word for word in TROUBLE if word in logs], logs[-3000:]


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("signature", SIGNATURES)
def test_bad_messages_are_acknowledged_and_change_nothing(stack, firestore_store,
                                                          executions, signature):
    source = WORKFLOWS / "diamond.py"
    scheduler = stack.function(source, "scheduler", signature)
    start = stack.function(source, "start", "http")
    # No subscription yet, so messages reach nobody: deliver a's by hand,
    # which leaves a SUCCEEDED and b, c QUEUED while bad messages arrive.
    stack.ensure_topic()
    run_id = post(start.url, {})[1]["run_id"]
    assert post(scheduler.url, push_envelope(Message(run_id, "a", 1).to_json()))[0] == 200
    before = [t.to_dict() for t in firestore_store.get_tasks(run_id)]
    assert tasks_of(firestore_store, run_id)["a"].status is TaskStatus.SUCCEEDED

    bad = {"not JSON": b"\x00\xff garbage",
           "JSON array": b"[]",
           "unknown run": Message("no-such-run", "a", 1).to_json(),
           "unknown task": Message(run_id, "zzz", 1).to_json(),
           "stale attempt": Message(run_id, "a", 0).to_json()}
    # b's own next step, which would run b, but not signed with the key.
    b_next = Message(run_id, "b", 1).to_json()
    forged = {"not signed": {}, "does not match": signed(b_next, key=OTHER_KEY),
              "replay": signed(b_next, timestamp=int(time.time()) - 301),
              "malformed": {**signed(b_next), "function_flow_timestamp": "yesterday"},
              "forged": {**signed(b_next), "function_flow_signature": "sha256=" + "0" * 64}}
    for number, (name, data) in enumerate(bad.items()):
        status, answer = post(scheduler.url, push_envelope(data, str(number + 10)))
        assert 200 <= status < 300, f"{name}: {status} {answer}"
    for number, (name, attributes) in enumerate(forged.items()):
        status, answer = post(scheduler.url, push_envelope(b_next, str(number + 20),
                                                           attributes))
        assert 200 <= status < 300, f"{name}: {status} {answer}"

    # The same through the emulator's push subscription: logged, not retried.
    stack.push(scheduler)
    for data in bad.values():
        stack.publish(data, **signed(data))
    for attributes in forged.values():
        stack.publish(b_next, **attributes)
    expected = ["rejected and acknowledged", "unknown_run", "unknown_task", "stale",
                "not signed: it has no", "does not match", "replay", "malformed"]

    def all_logged():
        text = scheduler.log()
        return all(text.count(word) >= 2 for word in expected)
    wait_for(all_logged, "the scheduler to log every bad message")

    assert [t.to_dict() for t in firestore_store.get_tasks(run_id)] == before
    assert [e["task_id"] for e in executed(executions)] == ["a"]
    assert "Traceback" not in scheduler.log()
    if signature == "event":  # once (the other forms run signed runs elsewhere in this file):
        # signed, the same messages of b and c (lost before the subscription) finish the run.
        for task_id in ("b", "c"):
            data = Message(run_id, task_id, 1).to_json()
            stack.publish(data, **signed(data))
        assert final_run(firestore_store, run_id).status is RunStatus.SUCCEEDED
        assert sorted(e["task_id"] for e in executed(executions)) == ["a", "b", "c", "d"]


def test_start_answers_bad_bodies_with_400_json(stack, firestore_store):
    start = stack.function(WORKFLOWS / "diamond.py", "start", "http")
    status, body = post(start.url, "this is not json")
    assert status == 400 and "not JSON" in body["error"]
    status, body = post(start.url, [1, 2, 3])
    assert status == 400 and "JSON object" in body["error"]
    assert firestore_store.list_runs() == []


def test_start_twice_with_the_same_run_id_makes_one_run(stack, firestore_store, executions):
    source = WORKFLOWS / "diamond.py"
    scheduler = stack.function(source, "scheduler", "http")
    start = stack.function(source, "start", "http")
    stack.push(scheduler)

    first = post(start.url, {"x": 2}, headers={RUN_ID_HEADER: "nightly-2026-11-22"})
    second = post(start.url, {"x": 2}, headers={RUN_ID_HEADER: "nightly-2026-11-22"})
    other = post(start.url, {"x": 3}, headers={RUN_ID_HEADER: "nightly-2026-11-22"})

    assert first == (200, {"run_id": "nightly-2026-11-22", "created": True})
    assert second == (200, {"run_id": "nightly-2026-11-22", "created": False})
    # The answer names the run in a header too (faas-flow's X-Faas-Flow-Reqid).
    again = urllib.request.Request(start.url, data=b'{"x": 2}', method="POST", headers={
        "Content-Type": "application/json", RUN_ID_HEADER: "nightly-2026-11-22"})
    with urllib.request.urlopen(again, timeout=60) as response:
        assert response.headers[RUN_ID_HEADER] == "nightly-2026-11-22"
    # Other arguments under the same id: refused (core/starts.py), not answered
    # with the old run as if they had started.
    assert other[0] == 409 and other[1]["run_id"] == "nightly-2026-11-22", other
    assert "already exists with other arguments" in other[1]["error"]
    run = final_run(firestore_store, "nightly-2026-11-22")
    assert run.status is RunStatus.SUCCEEDED and run.args == {"x": 2}
    assert [r.run_id for r in firestore_store.list_runs()] == ["nightly-2026-11-22"]
    assert collections.Counter(e["task_id"] for e in executed(executions)) == {
        "a": 1, "b": 1, "c": 1, "d": 1}


# ------------------------------------------------------- retries as timers


def test_retry_backoff_waits_as_a_timer_the_poller_publishes(stack, firestore_store,
                                                             executions, collection_prefix):
    source = WORKFLOWS / "flaky.py"
    scheduler = stack.function(source, "scheduler", "event")
    start = stack.function(source, "start", "http")
    poller = stack.function(source, "poller", "http")
    stack.push(scheduler)
    timers = FirestoreTimers(lambda: firestore_store.client, prefix=collection_prefix)

    run_id = post(start.url, {})[1]["run_id"]
    # The first attempt failed; its retry is a timer document, not a sleeper.
    wait_for(lambda: timers.pending() == 1, "the retry to be stored as a timer")
    flaky = tasks_of(firestore_store, run_id)["flaky"]
    assert (flaky.status, flaky.attempt) == (TaskStatus.QUEUED, 2)
    assert "first attempt fails on purpose" in flaky.error

    def poll_until_done():
        status, body = post(poller.url, {})
        assert status == 200, body
        run = firestore_store.get_run(run_id)
        return run if run.status.is_final else None
    run = wait_for(poll_until_done, "the poller to release the retry", interval=0.5)

    assert run.status is RunStatus.SUCCEEDED, run.error
    assert tasks_of(firestore_store, run_id)["after"].result == "ok on attempt 2"
    assert [(e["task_id"], e["attempt"]) for e in executed(executions)] == [
        ("flaky", 1), ("flaky", 2), ("after", 1)]
    assert timers.pending() == 0
    # Both attempts are kept, each with what its body printed and logged, and
    # the scheduler's log lines are JSON that Cloud Logging files under the run.
    kept = history.attempts(tasks_of(firestore_store, run_id)["flaky"])
    assert [(a.attempt, a.outcome) for a in kept] == [(1, "failed"), (2, "succeeded")]
    assert "RuntimeError: first attempt fails on purpose" in kept[0].error
    for a in kept:
        assert a.output == (f"flaky prints on attempt {a.attempt}\n"
                            f"WARNING flaky: flaky logs on attempt {a.attempt}\n")
    lines = [json.loads(line) for line in scheduler.log().splitlines()
             if line.startswith('{"severity"')]
    logged = [e for e in lines if e["message"] == "flaky logs on attempt 2"]
    assert logged and logged[0]["severity"] == "WARNING"
    assert logged[0]["logging.googleapis.com/labels"] == {
        "job": "flaky", "run_id": run_id, "task_id": "flaky", "attempt": "2"}


def test_two_pollers_at_once_publish_each_due_timer_once(firestore_store, collection_prefix):
    """Timers are claimed in a transaction each: concurrent pollers never both send one."""
    import threading

    clock = [1000.0]
    timers = FirestoreTimers(lambda: firestore_store.client, prefix=collection_prefix,
                             clock=lambda: clock[0])
    due = [Message("run", f"t{n}", 2) for n in range(20)]
    for message in due:
        timers.add(message, due_at=999.0)
    timers.add(Message("run", "later", 2), due_at=1030.0)
    sent: list[Message] = []
    failures: list[BaseException] = []
    lock = threading.Lock()

    def publish(message: Message) -> None:
        with lock:
            sent.append(message)

    def poll() -> None:
        try:
            timers.publish_due(publish)
        except BaseException as exc:  # collected: a crashing poller fails the test
            failures.append(exc)

    pollers = [threading.Thread(target=poll) for _ in range(2)]
    for thread in pollers:
        thread.start()
    for thread in pollers:
        thread.join()
    # A timer both contended for may be left to the next poll: never lost.
    timers.publish_due(publish)

    assert failures == []
    assert sorted(sent, key=lambda m: m.task_id) == sorted(due, key=lambda m: m.task_id)
    assert timers.pending() == 1  # the one due later stays
    clock[0] = 1031.0
    assert timers.publish_due(publish) == 1 and sent[-1].task_id == "later"
    assert timers.pending() == 0


def test_a_timer_whose_publish_fails_is_published_by_a_later_poller(firestore_store,
                                                                    collection_prefix):
    clock = [1000.0]
    timers = FirestoreTimers(lambda: firestore_store.client, prefix=collection_prefix,
                             clock=lambda: clock[0])
    timers.add(Message("run", "t", 2), due_at=1000.0)

    def broken(message: Message) -> None:
        raise ConnectionError("Pub/Sub unreachable")

    with pytest.raises(ConnectionError):
        timers.publish_due(broken)
    sent: list[Message] = []
    assert timers.publish_due(sent.append) == 0  # still claimed by the failed poller
    clock[0] += 61  # the claim expires
    assert timers.publish_due(sent.append) == 1
    assert sent == [Message("run", "t", 2)] and timers.pending() == 0
