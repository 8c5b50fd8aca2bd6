"""Hooks and the completion callback in the deployed topology, on the emulators.

`start` (HTTP, with X-Function-Flow-Callback-Url), `scheduler` and `poller`
run in functions-framework processes, the scheduler behind two Pub/Sub push
subscriptions (every message is delivered twice); the test plays Cloud
Scheduler and calls the poller, which releases the callback's delayed
retry. The receiver is a real HTTP server in this process that checks the
signature.
"""

from __future__ import annotations

import collections
import pathlib

import pytest

from function_flow.core import hooks
from function_flow.core.records import RunStatus, TaskStatus

from callback_receiver import Receiver
from emulators import PROJECT
from functions_stack import Stack, post, wait_for
from test_gcp_e2e import executed, final_run

WORKFLOW = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "hooked.py"
KEY = "e2e-0123456789abcdef0123456789abcdef"

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def receiver():
    receiver = Receiver([503, 200], KEY)
    try:
        yield receiver
    finally:
        receiver.close()


def test_hooks_and_callback_run_once_through_the_deployed_functions(
        gcp_env, firestore_store, tmp_path, receiver) -> None:
    executions = tmp_path / "executions.jsonl"
    stack = Stack(dict(gcp_env, FUNCTION_FLOW_TEST_EXECUTIONS=str(executions),
                       FUNCTION_FLOW_HMAC_KEY=KEY, FUNCTION_FLOW_CALLBACK_BACKOFF="0.2"),
                  PROJECT)
    try:
        scheduler = stack.function(WORKFLOW, "scheduler", "cloudevent")
        start = stack.function(WORKFLOW, "start", "http")
        poller = stack.function(WORKFLOW, "poller", "http")
        stack.push(scheduler)
        stack.push(scheduler)  # every message twice

        status, body = post(start.url, {"fail": True},
                            headers={"X-Function-Flow-Callback-Url": receiver.url})
        assert status == 200, body
        run = final_run(firestore_store, body["run_id"])
        assert run.status is RunStatus.FAILED
        receiver.wait_for(1, timeout=120)

        def delivered_again():
            assert post(poller.url, {})[0] == 200  # Cloud Scheduler's tick
            return len(receiver.posts) >= 2

        wait_for(delivered_again, "the poller to release the callback's retry",
                 interval=0.5)
        posts = receiver.posts
        assert [p["answered"] for p in posts] == [503, 200]
        assert all(p["signature"] == "ok" for p in posts)
        assert posts[-1]["body"]["status"] == "FAILED"
        assert posts[-1]["body"]["failed_tasks"] == ["b"]

        def settled():
            current = firestore_store.get_run(run.run_id)
            return current if not current.hooks_pending else None

        wait_for(settled, "the hooks to end", timeout=60)
        records = {t.task_id: t for t in firestore_store.get_tasks(run.run_id)}
        assert records[hooks.CALLBACK].status is TaskStatus.SUCCEEDED
        ran = collections.Counter(e["task_id"] for e in executed(executions))
        assert ran == {"a": 1, "b": 1, "on_failure": 1, "on_end": 1}
        assert {e["status"] for e in executed(executions) if "status" in e} == {"FAILED"}
        assert len(receiver.posts) == 2
    finally:
        stack.close()
