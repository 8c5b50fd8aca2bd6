"""OpenFaaS on the deployed topology: functions-framework processes on the emulators.

`scheduler` (behind a push subscription of the Pub/Sub emulator) calls the
local gateway (tests/openfaas_gateway.py); the queue worker posts the async
answer to `callback`, a real functions-framework HTTP function, which
completes the attempt in Firestore. Bad callbacks get their answers from
that same process.
"""

from __future__ import annotations

import pathlib
import uuid

import pytest
from emulators import PROJECT
from functions_stack import Stack, post, wait_for
from openfaas_gateway import Gateway, post_callback

from function_flow import signing
from function_flow.core.records import RunStatus, TaskStatus
from function_flow.remote import openfaas
from signatures import TEST_HMAC_KEY

pytestmark = pytest.mark.timeout(240)

SOURCE = pathlib.Path(__file__).resolve().parent / "workflows_gcp" / "openfaas.py"
PASSWORD = "pw-" + uuid.uuid4().hex[:8]
OTHER_KEYS = signing.Keys(b"not-the-deployments-key-0123456789abcdef")


def double(call):
    payload = call.json()
    return {"double": payload["result"]["x"] * 2, "job_id": payload["job_id"],
            "run": call.headers.get("X-Function-Flow-Run-Id")}


def test_async_answer_completes_the_task_through_the_deployed_callback(gcp_env,
                                                                       firestore_store):
    with Gateway(user="admin", password=PASSWORD) as gateway:
        gateway.register("score", double)
        gateway.register("render", double)
        gateway.callback_copies = 2
        stack = Stack(dict(gcp_env, FUNCTION_FLOW_OPENFAAS_GATEWAY=gateway.url,
                           FUNCTION_FLOW_OPENFAAS_PASSWORD=PASSWORD), PROJECT)
        try:
            callback = stack.function(SOURCE, "callback", "http")
            stack.env["FUNCTION_FLOW_CALLBACK_URL"] = callback.url
            scheduler = stack.function(SOURCE, "scheduler", "event")
            start = stack.function(SOURCE, "start", "http")
            stack.push(scheduler)

            status, body = post(start.url, {"x": 5})
            assert status == 200, body
            run_id = body["run_id"]

            def ended():
                run = firestore_store.get_run(run_id)
                return run if run is not None and run.status.is_final else None

            run = wait_for(ended, f"run {run_id} to end", 100)
            assert run.status is RunStatus.SUCCEEDED, (run.error, stack.logs()[-3000:])
            records = {r.task_id: r for r in firestore_store.get_tasks(run_id)}
            assert records["score"].result["double"] == 10
            render = records["render"]
            assert render.result["double"] == 20 and render.result["run"] == run_id
            assert records["publish"].result == {"published": render.result}
            assert render.attempt == 1
            # Every call to the gateway names the run and is signed with the key.
            for sent in gateway.requests:
                assert sent.headers["X-Function-Flow-Run-Id"] == run_id, sent.path
                signing.verify(sent.body, sent.headers, TEST_HMAC_KEY)

            # The queue worker posted twice: the copy changed nothing.
            wait_for(lambda: len(gateway.callbacks) == 2, "both callback copies", 30)
            assert sorted(c.answer["outcome"] for c in gateway.callbacks) == \
                ["ignored", "succeeded"]
            url = gateway.callbacks[0].url
            path = f"{callback.url.rstrip('/')}/openfaas/{render.result['job_id']}"
            assert url.startswith(path + "?function_flow_timestamp="), url

            # Forged and malformed callbacks, answered by the deployed function:
            # unsigned, signed with another key, or the signature of another job.
            base = callback.url.rstrip("/")
            forged = [f"{base}/openfaas/{uuid.uuid4().hex}",
                      openfaas.callback_url(base, uuid.uuid4().hex, OTHER_KEYS),
                      url.replace(render.result["job_id"], uuid.uuid4().hex)]
            for fake, reason in zip(forged, ("not signed", "does not match", "does not match")):
                status, answer = post_callback(fake, "{}", X_Function_Status="200")
                assert status == 200 and answer["outcome"] == "ignored", answer
                assert reason in answer["reason"], answer
            status, answer = post_callback(url, "{}")
            assert status == 400 and "X-Function-Status" in answer["error"], answer
            status, answer = post_callback(f"{base}/elsewhere", "{}")
            assert status == 404, answer
            assert "POSTs to /approve, /heartbeat, /openfaas, /reject" in answer["error"]
            after = {r.task_id: r for r in firestore_store.get_tasks(run_id)}
            assert after["render"].result == render.result
            assert all(r.status is TaskStatus.SUCCEEDED for r in after.values()
                       if r.task_id != "__end__")
            logs = stack.logs()
            assert "Traceback" not in logs, logs[-3000:]
        finally:
            stack.close()
