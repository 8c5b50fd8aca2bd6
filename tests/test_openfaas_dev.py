"""`function-flow dev` serves the callback function and tells the others its URL.

The command runs as a user runs it (a subprocess, its own emulators), with
the local OpenFaaS gateway of tests/openfaas_gateway.py named in its
environment: the async answer travels queue worker -> dev's callback
function -> Firestore emulator.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from functions_stack import wait_for
from openfaas_gateway import Gateway
from test_dev import assert_all_stopped, dev_log, needs_emulators, run_dev

pytestmark = pytest.mark.timeout(240)

SOURCE = Path(__file__).resolve().parent / "workflows_gcp" / "openfaas.py"


def double(call):
    payload = call.json()
    return {"double": payload["result"]["x"] * 2}


@needs_emulators
def test_dev_runs_an_async_openfaas_task_through_its_callback_function(tmp_path: Path):
    password = uuid.uuid4().hex
    with Gateway(user="admin", password=password) as gateway:
        gateway.register("score", double)
        gateway.register("render", double)
        result = run_dev(tmp_path, str(SOURCE), "--arg", "x=4",
                         FUNCTION_FLOW_OPENFAAS_GATEWAY=gateway.url,
                         FUNCTION_FLOW_OPENFAAS_PASSWORD=password)
        # The gateway records its callback after the POST answers.
        [answer] = wait_for(lambda: gateway.callbacks, "the gateway's callback", 30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"^\s*render\s+SUCCEEDED\s+1\b", result.stdout, re.M), result.stdout
    assert re.search(r'^\s+publish: .*"double": 16', result.stdout, re.M), result.stdout
    log = dev_log(tmp_path)
    port = re.search(r" callback \(http function\) on http://127\.0\.0\.1:(\d+)/", log)
    assert port, log
    assert answer.url.startswith(f"http://127.0.0.1:{port.group(1)}/openfaas/")
    assert answer.status == 200 and answer.answer["outcome"] == "succeeded"
    assert_all_stopped(log)
