"""Definition errors in a state's own fields: Retry and Catch, numbers, times.

What Step Functions refuses when a state machine is created (its
CreateStateMachine validation), found here before anything runs, so that a
definition `validate` passes is one `run` executes as written: a Retry
without ErrorEquals is not ignored, a Wait of "5" seconds does not wait, a
MaxConcurrency of "x" does not fail at run time. validate.py calls
`problems` for each state; each message names the field.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

#: The states that may retry and catch (Step Functions: Task, Parallel, Map).
HANDLING = ("Task", "Parallel", "Map")


def problems(kind: str, state: dict[str, Any]) -> list[str]:
    """What is wrong with the fields of one state of Type `kind`."""
    found: list[str] = []
    for field in ("Retry", "Catch"):
        if field in state:
            if kind not in HANDLING:
                found.append(f"{field} is only for Task, Parallel and Map states")
            found += _handlers(field, state[field])
    if kind in ("Succeed", "Fail") and "Next" in state:
        found.append(f"a {kind} state ends the machine: it takes no Next")
    if kind == "Wait":
        found += _wait(state)
    if kind == "Task":
        found += _timeouts(state)
        resource = state.get("Resource")
        if isinstance(resource, str) and resource.endswith(".waitForTaskToken") \
                and "$$.Task.Token" not in json.dumps(state.get("Parameters")):
            found.append("a .waitForTaskToken Task passes its token on in Parameters, e.g. "
                         '"Parameters": {"token.$": "$$.Task.Token", "input.$": "$"}')
    if kind == "Map":
        found += _whole(state, "MaxConcurrency", 0)
        found += _whole(state, "ToleratedFailureCount", 0)
        percentage = state.get("ToleratedFailurePercentage")
        if "ToleratedFailurePercentage" in state and not (
                _number(percentage) and 0 <= percentage <= 100):
            found.append(f"ToleratedFailurePercentage must be a number from 0 to 100, got "
                         f"{percentage!r}")
    return found


def _handlers(field: str, value: Any) -> list[str]:
    """Retry or Catch: a list of objects, each with a non-empty ErrorEquals
    (States.ALL alone, and in the last one), a Catch with its Next."""
    if not isinstance(value, list):
        return [f"{field} must be a list of objects, got {type(value).__name__}"]
    found = []
    for index, handler in enumerate(value):
        at = f"{field}[{index}]"
        if not isinstance(handler, dict):
            found.append(f"{at} must be an object, got {type(handler).__name__}")
            continue
        errors = handler.get("ErrorEquals")
        if not isinstance(errors, list) or not errors \
                or not all(isinstance(e, str) and e for e in errors):
            found.append(f"{at} needs ErrorEquals, a non-empty list of error names")
        elif "States.ALL" in errors and (len(errors) > 1 or index < len(value) - 1):
            found.append(f"{at}: States.ALL must be the only error of the last {field}")
        if field == "Catch" and not isinstance(handler.get("Next"), str):
            found.append(f"{at} needs a Next, the state to go to")
        if field == "Retry":
            # (IntervalSeconds 0, which Step Functions refuses, retries at once here.)
            found += [f"{at}: {m}" for m in _whole(handler, "MaxAttempts", 0)
                      + _whole(handler, "IntervalSeconds", 0)
                      + _whole(handler, "MaxDelaySeconds", 1)]
            rate = handler.get("BackoffRate")
            if "BackoffRate" in handler and not (_number(rate) and rate >= 1.0):
                found.append(f"{at}: BackoffRate must be a number of at least 1.0, got "
                             f"{rate!r}")
    return found


def _wait(state: dict[str, Any]) -> list[str]:
    found = _whole(state, "Seconds", 0)
    stamp = state.get("Timestamp")
    if "Timestamp" in state and not _timestamp(stamp):
        found.append(f"Timestamp must be an ISO 8601 time (2026-01-01T00:00:00Z), got "
                     f"{stamp!r}")
    return found


def _timeouts(state: dict[str, Any]) -> list[str]:
    found = []
    for field in ("TimeoutSeconds", "HeartbeatSeconds"):
        found += _whole(state, field, 1)
        if field in state and field + "Path" in state:
            found.append(f"a Task takes {field} or {field}Path, not both")
    timeout, heartbeat = state.get("TimeoutSeconds"), state.get("HeartbeatSeconds")
    if _whole_number(timeout) and timeout >= 1 and _whole_number(heartbeat) \
            and heartbeat >= timeout:
        found.append(f"HeartbeatSeconds ({heartbeat}) must be smaller than TimeoutSeconds "
                     f"({timeout})")
    return found


def _whole(fields: dict[str, Any], field: str, least: int) -> list[str]:
    """`field`, when present, must be a whole number of at least `least`."""
    if field not in fields:
        return []
    value = fields[field]
    if _whole_number(value) and value >= least:
        return []
    return [f"{field} must be a whole number of at least {least}, got {value!r}"]


def _whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and value == value


def _timestamp(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True
