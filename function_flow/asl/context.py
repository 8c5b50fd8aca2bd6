"""The context object `$$`: the execution, the state machine, the state.

AWS shows `$$.Execution` (Id, Input, Name, RoleArn, StartTime,
RedriveCount), `$$.StateMachine` (Id, Name), `$$.State` (EnteredTime, Name,
and RetryCount in a Task), `$$.Task.Token` in a `.waitForTaskToken` Task
and `$$.Map.Item` (Index, Value) in a Map's ItemSelector.
"""

from __future__ import annotations

import datetime
from typing import Any

ACCOUNT = "111111111111"
REGION = "us-east-1"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/function-flow"


def iso(seconds: float) -> str:
    """AWS's timestamp spelling: 2024-01-01T00:00:00.000Z."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def execution(machine_name: str, execution_name: str, input_value: Any, started: float,
              redrives: int = 0) -> dict[str, Any]:
    """The parts of `$$` that stay the same for a whole execution."""
    machine_id = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:{machine_name}"
    return {
        "Execution": {
            "Id": f"arn:aws:states:{REGION}:{ACCOUNT}:execution:{machine_name}:{execution_name}",
            "Input": input_value, "Name": execution_name, "RoleArn": ROLE,
            "StartTime": iso(started), "RedriveCount": redrives},
        "StateMachine": {"Id": machine_id, "Name": machine_name},
    }


def for_state(base: dict[str, Any], name: str, entered: float, *,
              retry_count: int | None = None, token: str | None = None) -> dict[str, Any]:
    """`$$` while state `name` runs."""
    state: dict[str, Any] = {"EnteredTime": iso(entered), "Name": name}
    if retry_count is not None:
        state["RetryCount"] = retry_count
    context = {**base, "State": state}
    if token is not None:
        context["Task"] = {"Token": token}
    return context


def for_item(context: dict[str, Any], index: int, value: Any) -> dict[str, Any]:
    """`$$` in a Map's ItemSelector, for item `index`."""
    return {**context, "Map": {"Item": {"Index": index, "Value": value}}}
