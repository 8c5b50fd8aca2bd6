"""What one state does with its input: the language's semantics, with no I/O.

`enter` says what entering a state leads to (go to a state, end, fail,
wait, call a resource, run branches or items); a Task, Parallel or Map
comes back through `finish` with its result, and any failure through
`recover`, which applies Retry and Catch. Whoever drives the machine (the
in-memory interpreter of local.py, the engine integration) owns time,
storage and resources; the rules live here once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from function_flow.asl import choice, context as ctx, paths, retry
from function_flow.asl.errors import (EXCEEDED_TOLERATED_FAILURE, NO_CHOICE_MATCHED, AslError,
                                      PathError, runtime)

#: Wait delays AWS refuses ("Wait state delay is too long"): ~2^31 seconds.
MAX_WAIT_SECONDS = 2 ** 31 - 1
TOKEN_SUFFIX = ".waitForTaskToken"


@dataclasses.dataclass
class Goto:
    """Go to state `state` with `output`."""
    state: str
    output: Any


@dataclasses.dataclass
class Succeed:
    """The machine (or branch, or item) ends with `output`."""
    output: Any


@dataclasses.dataclass
class Fail:
    """The machine (or branch, or item) fails."""
    error: str | None
    cause: str | None


@dataclasses.dataclass
class Raised:
    """The state failed; `recover` decides (retry, catch or fail)."""
    failure: AslError


@dataclasses.dataclass
class Wait:
    """Wait until `until` (epoch seconds), then `then`."""
    until: float
    then: Goto | Succeed


@dataclasses.dataclass
class Call:
    """Call `resource` with `payload`; come back through `finish` with its result."""
    resource: str
    payload: Any
    callback: bool = False
    timeout: float | None = None
    heartbeat: float | None = None


@dataclasses.dataclass
class Branches:
    """Run each branch machine on `input`; `finish` gets their outputs, in order."""
    branches: list[dict[str, Any]]
    input: Any


@dataclasses.dataclass
class Items:
    """Run the processor machine on each input; `finish` gets the outputs, in order."""
    processor: dict[str, Any]
    inputs: list[Any]
    max_concurrency: int = 0
    tolerated_count: int | None = None
    tolerated_percentage: float | None = None


@dataclasses.dataclass
class Retry:
    """Run the state again after `delay` seconds; `retrier` is the one that matched."""
    delay: float
    retrier: int


Outcome = Goto | Succeed | Fail | Raised | Wait | Call | Branches | Items | Retry


def _leave(spec: dict[str, Any], output: Any) -> Goto | Succeed:
    if spec.get("End") or "Next" not in spec:
        return Succeed(output)
    return Goto(spec["Next"], output)


def enter(spec: dict[str, Any], name: str, data: Any, context: Any, *, now: float = 0.0,
          rng: Any = None) -> Outcome:
    """What entering state `name` (its definition `spec`) with input `data` leads to."""
    try:
        return _ENTER[spec["Type"]](spec, name, data, context, now, rng)
    except AslError as failure:
        return Raised(failure)


def _pass(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
          rng: Any) -> Outcome:
    effective = paths.parameters(name, spec, paths.input_path(name, spec, data, context),
                                 context, rng)
    result = spec["Result"] if "Result" in spec else effective
    output = paths.result_path(name, spec, data, result)
    return _leave(spec, paths.output_path(name, spec, output, context))


def _choice(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
            rng: Any) -> Outcome:
    effective = paths.input_path(name, spec, data, context)
    try:
        chosen = choice.choose(spec, effective, context)
    except PathError as exc:  # a rule's path selects nothing
        raise runtime(name, str(exc)) from None
    if chosen is None:
        raise AslError(NO_CHOICE_MATCHED, f"No Choice rule of state {name!r} matched the "
                       "input and it has no Default", catchable=True)
    return Goto(chosen, paths.output_path(name, spec, effective, context))


def _succeed(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
             rng: Any) -> Outcome:
    effective = paths.input_path(name, spec, data, context)
    return Succeed(paths.output_path(name, spec, effective, context))


def _fail(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
          rng: Any) -> Outcome:
    error = paths.value_or_path(name, spec, "Error", data, context, rng)
    cause = paths.value_or_path(name, spec, "Cause", data, context, rng)
    return Fail(error, cause)


def _seconds(name: str, spec: dict[str, Any], data: Any, context: Any, now: float) -> float:
    if "Seconds" in spec:
        return now + float(spec["Seconds"])
    if "SecondsPath" in spec:
        path = spec["SecondsPath"]
        try:
            value = paths.select(name, "SecondsPath", path, data, context)
        except AslError:
            raise runtime(name, "The SecondsPath parameter does not reference an input "
                                f"value: {path}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or value != int(value):
            raise runtime(name, f"The SecondsPath parameter cannot be parsed as a long "
                                f"value: {path}")
        if value < 0:
            raise runtime(name, f"The SecondsPath parameter references a negative value: "
                                f"{path}")
        return now + float(value)
    if "Timestamp" in spec:
        moment = choice.parse_timestamp(spec["Timestamp"])
        if moment is None:
            raise runtime(name, "The Timestamp parameter is not a valid ISO-8601 "
                                "extended offset date-time format string")
        return moment.timestamp()
    path = spec["TimestampPath"]
    value = paths.select(name, "TimestampPath", path, data, context)
    moment = choice.parse_timestamp(value)
    if moment is None:
        raise runtime(name, "The TimestampPath parameter does not reference a valid "
                            f"ISO-8601 extended offset date-time format string: {path} == "
                            f"{value}")
    return moment.timestamp()


def _wait(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
          rng: Any) -> Outcome:
    effective = paths.input_path(name, spec, data, context)
    until = _seconds(name, spec, effective, context, now)
    if until - now > MAX_WAIT_SECONDS:
        raise runtime(name, "Wait state delay is too long.")
    return Wait(until, _leave(spec, paths.output_path(name, spec, effective, context)))


def _number_field(name: str, spec: dict[str, Any], field: str, data: Any,
                  context: Any) -> float | None:
    if field in spec:
        return float(spec[field])
    if field + "Path" in spec:
        path = spec[field + "Path"]
        try:
            value = paths.select(name, field + "Path", path, data, context)
        except AslError:
            raise runtime(name, f"The {field}Path parameter does not reference an input "
                                f"value: {path}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0 \
                or value != int(value):
            raise runtime(name, f"The {field}Path parameter references {paths._short(value)}, "
                                f"which is not a positive integer: {path}")
        return float(value)
    return None


def _task(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
          rng: Any) -> Outcome:
    selected = paths.input_path(name, spec, data, context)
    # The Path fields read the state's input as InputPath selected it, as AWS does.
    timeout = _number_field(name, spec, "TimeoutSeconds", selected, context)
    heartbeat = _number_field(name, spec, "HeartbeatSeconds", selected, context)
    effective = paths.parameters(name, spec, selected, context, rng)
    resource = spec["Resource"]
    return Call(resource, effective, callback=resource.endswith(TOKEN_SUFFIX),
                timeout=timeout, heartbeat=heartbeat)


def _parallel(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
              rng: Any) -> Outcome:
    effective = paths.parameters(name, spec, paths.input_path(name, spec, data, context),
                                 context, rng)
    return Branches(list(spec["Branches"]), effective)


def processor(spec: dict[str, Any]) -> dict[str, Any]:
    """A Map's item machine (ItemProcessor, or the older Iterator)."""
    return spec.get("ItemProcessor") or spec["Iterator"]


def _max_concurrency(name: str, spec: dict[str, Any], data: Any, context: Any) -> int:
    if "MaxConcurrencyPath" not in spec:
        return int(spec.get("MaxConcurrency", 0))
    value = paths.select(name, "MaxConcurrencyPath", spec["MaxConcurrencyPath"], data,
                         context)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        shown = value if isinstance(value, str) else paths._short(value)
        raise runtime(name, f'The MaxConcurrencyPath field refers to value "{shown}" which '
                            "is not a valid integer: " + spec["MaxConcurrencyPath"])
    return value


def _map(spec: dict[str, Any], name: str, data: Any, context: Any, now: float,
         rng: Any) -> Outcome:
    effective = paths.input_path(name, spec, data, context)
    items = paths.select(name, "ItemsPath", spec.get("ItemsPath", "$"), effective, context)
    if not isinstance(items, list):
        raise runtime(name, f"Invalid path {spec.get('ItemsPath', '$')!r}: the value "
                            f"{paths._short(items)} is not an array, as ItemsPath must be")
    selector = "ItemSelector" if "ItemSelector" in spec else "Parameters"
    inputs = items
    if selector in spec:
        inputs = [paths.template(name, selector, spec[selector], effective,
                                 ctx.for_item(context, index, item), rng)
                  for index, item in enumerate(items)]
    percentage = spec.get("ToleratedFailurePercentage")
    return Items(processor(spec), inputs, _max_concurrency(name, spec, effective, context),
                 spec.get("ToleratedFailureCount"),
                 None if percentage is None else float(percentage))


_ENTER = {"Pass": _pass, "Choice": _choice, "Succeed": _succeed, "Fail": _fail,
          "Wait": _wait, "Task": _task, "Parallel": _parallel, "Map": _map}


def finish(spec: dict[str, Any], name: str, data: Any, context: Any, result: Any,
           rng: Any = None) -> Outcome:
    """A Task's, Parallel's or Map's `result` through ResultSelector, ResultPath, OutputPath."""
    try:
        selected = paths.result_selector(name, spec, result, context, rng)
        output = paths.result_path(name, spec, data, selected)
        return _leave(spec, paths.output_path(name, spec, output, context))
    except AslError as failure:
        return Raised(failure)


def recover(spec: dict[str, Any], name: str, data: Any, failure: AslError,
            retries: list[int], rng: Any = None) -> Retry | Goto | Fail:
    """After a failure: retry (`retries[i]`: retries retrier i made), catch, or fail."""
    index = retry.retrier_for(spec, failure)
    if index is not None:
        count = retries[index] if index < len(retries) else 0
        seconds = retry.delay(spec["Retry"][index], count, rng)
        if seconds is not None:
            return Retry(seconds, index)
    catcher = retry.catcher_for(spec, failure)
    if catcher is None:
        return Fail(failure.error, failure.cause)
    try:
        output = paths.result_path(name, catcher, data, retry.error_output(failure))
    except AslError as again:
        return Fail(again.error, again.cause)
    return Goto(catcher["Next"], output)


def tolerates(items: Items, failed: int, total: int) -> bool:
    """Whether a Map with `failed` of `total` items failed goes on."""
    if items.tolerated_count is None and items.tolerated_percentage is None:
        return failed == 0
    if items.tolerated_count is not None and failed <= items.tolerated_count:
        return True
    return items.tolerated_percentage is not None and total > 0 \
        and failed * 100.0 / total <= items.tolerated_percentage


def map_failure(items: Items, failed: Fail) -> AslError:
    """The error a Map fails with: the item's own, or the threshold's when it sets one."""
    if items.tolerated_count is None and items.tolerated_percentage is None:
        return AslError(failed.error, failed.cause)
    return AslError(EXCEEDED_TOLERATED_FAILURE,
                    "The specified tolerated failure threshold was exceeded")
