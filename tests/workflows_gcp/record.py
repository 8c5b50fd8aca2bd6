"""Shared by the workflows here: record each task body execution in a file.

The e2e tests run these workflows in several functions-framework processes
at once; each execution appends one JSON line (O_APPEND, one write, so lines
from different processes never interleave) to $FUNCTION_FLOW_TEST_EXECUTIONS.
"""

from __future__ import annotations

import json
import os
import time


def record(task, **extra) -> None:
    path = os.environ["FUNCTION_FLOW_TEST_EXECUTIONS"]
    line = json.dumps({"run_id": task.run_id, "task_id": task.id, "attempt": task.attempt,
                       "pid": os.getpid(), "at": time.time(), **extra}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def record_payload(function: str, payload: dict) -> int:
    """Record what a remote function received; returns how many calls of that
    function for that run (this one included) are recorded."""
    path = os.environ["FUNCTION_FLOW_TEST_EXECUTIONS"]
    run_id = payload["job_args"].get("test_run", "")
    line = json.dumps({"function": function, "payload": payload, "run": run_id,
                       "pid": os.getpid(), "at": time.time()}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
    return calls_of(function, run_id)


def calls_of(function: str, run_id: str) -> int:
    """How many calls of remote function `function` for run `run_id` are recorded."""
    path = os.environ["FUNCTION_FLOW_TEST_EXECUTIONS"]
    if not os.path.exists(path):
        return 0
    with open(path, encoding="utf-8") as handle:
        entries = [json.loads(text) for text in handle if '"function"' in text]
    return sum(1 for e in entries if e["function"] == function and e["run"] == run_id)
