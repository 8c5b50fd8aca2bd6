"""Retry and Catch: which retrier or catcher an error meets, and the delay.

Matching follows the Step Functions documentation: a retrier or catcher
matches an error it names, `States.ALL` matches every error but
`States.Runtime` (and States.DataLimitExceeded), `States.TaskFailed`
matches every error but `States.Timeout` and those. The first retrier that
matches decides: when its attempts are used up the error goes to the
catchers, never to a later retrier. A failure marked not catchable (a
States.Runtime from OutputPath) meets neither.
"""

from __future__ import annotations

import random
from typing import Any

from function_flow.asl.errors import ALL, NOT_MATCHED_BY_ALL, TASK_FAILED, TIMEOUT, AslError

DEFAULT_INTERVAL_SECONDS = 1.0
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_BACKOFF_RATE = 2.0


def names(error: str, names_listed: list[str]) -> bool:
    """Whether an ErrorEquals list matches `error`."""
    if error in names_listed:
        return True
    if error in NOT_MATCHED_BY_ALL:
        return False
    if ALL in names_listed:
        return True
    return TASK_FAILED in names_listed and error != TIMEOUT


def retrier_for(spec: dict[str, Any], failure: AslError) -> int | None:
    """The index of the retrier that matches `failure`, if any."""
    if not failure.catchable:
        return None
    for index, retrier in enumerate(spec.get("Retry") or []):
        if names(failure.error, retrier.get("ErrorEquals", [])):
            return index
    return None


def delay(retrier: dict[str, Any], count: int, rng: Any = None) -> float | None:
    """Seconds before retry number `count + 1`, or None when the retrier is used up."""
    if count >= int(retrier.get("MaxAttempts", DEFAULT_MAX_ATTEMPTS)):
        return None
    seconds = float(retrier.get("IntervalSeconds", DEFAULT_INTERVAL_SECONDS)) * float(
        retrier.get("BackoffRate", DEFAULT_BACKOFF_RATE)) ** count
    if "MaxDelaySeconds" in retrier:
        seconds = min(seconds, float(retrier["MaxDelaySeconds"]))
    if retrier.get("JitterStrategy") == "FULL":
        seconds = (rng or random).uniform(0, seconds)
    return seconds


def catcher_for(spec: dict[str, Any], failure: AslError) -> dict[str, Any] | None:
    """The first catcher that matches `failure`, if any."""
    if not failure.catchable:
        return None
    for catcher in spec.get("Catch") or []:
        if names(failure.error, catcher.get("ErrorEquals", [])):
            return catcher
    return None


def error_output(failure: AslError) -> dict[str, Any]:
    """What a catcher hands on: {"Error", "Cause"} (Cause only when there is one)."""
    output: dict[str, Any] = {"Error": failure.error}
    if failure.cause is not None:
        output["Cause"] = failure.cause
    return output
