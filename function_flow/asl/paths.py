"""The path pipeline: InputPath, Parameters, ResultSelector, ResultPath, OutputPath.

Each function is one field of a state, applied as AWS applies it, with
AWS's defaults (`$`) and `null` meanings (InputPath/OutputPath null: `{}`;
ResultPath null: keep the input, discard the result). A path that selects
nothing is a States.Runtime failure naming the state and the field. A
States.Runtime raised by OutputPath is not caught by any Catch (case 145).
"""

from __future__ import annotations

import json
from typing import Any

from function_flow.asl import intrinsics, jsonpath
from function_flow.asl.errors import RESULT_PATH_MATCH_FAILURE, AslError, PathError, runtime

_DEFAULT = object()


def _short(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 200 else text[:200] + "..."


def select(state: str, field: str, path: str, data: Any, context: Any, *,
           catchable: bool = True) -> Any:
    """`path` on `data` for `state`'s `field`, else States.Runtime."""
    try:
        return jsonpath.select(path, data, context)
    except PathError as exc:
        raise runtime(state, f"Invalid path {path!r} : {exc}", catchable=catchable) from None


def input_path(state: str, spec: dict[str, Any], data: Any, context: Any) -> Any:
    path = spec.get("InputPath", "$")
    if path is None:
        return {}
    return select(state, "InputPath", path, data, context)


def output_path(state: str, spec: dict[str, Any], data: Any, context: Any) -> Any:
    path = spec.get("OutputPath", "$")
    if path is None:
        return {}
    return select(state, "OutputPath", path, data, context, catchable=False)


def result_path(state: str, spec: dict[str, Any], data: Any, result: Any) -> Any:
    """The state's raw input with the result placed at ResultPath."""
    path = spec.get("ResultPath", "$")
    if path is None:
        return data
    if path == "$":
        return result
    try:
        return jsonpath.assign(path, data, result)
    except PathError as exc:  # Step Functions' error for it, which a Catch may take
        raise AslError(RESULT_PATH_MATCH_FAILURE,
                       f"Unable to apply ResultPath {path!r} to the input of state "
                       f"{state!r}: {exc}") from None


def template(state: str, field: str, value: Any, data: Any, context: Any,
             rng: Any = None) -> Any:
    """A payload template (Parameters, ResultSelector, ItemSelector) filled in.

    Keys ending in `.$` take the value of their path or intrinsic, under the
    key without the suffix; everything else is copied.
    """
    if isinstance(value, dict):
        out = {}
        for key, inner in value.items():
            if key.endswith(".$") and isinstance(inner, str):
                out[key[:-2]] = _dynamic(state, key, inner, data, context, rng)
            else:
                out[key] = template(state, field, inner, data, context, rng)
        return out
    if isinstance(value, list):
        return [template(state, field, inner, data, context, rng) for inner in value]
    return value


def _dynamic(state: str, key: str, expression: str, data: Any, context: Any,
             rng: Any) -> Any:
    if intrinsics.is_intrinsic(expression):
        try:
            return intrinsics.evaluate(expression, data, context, rng)
        except AslError as exc:
            raise runtime(state, f"The value of the field {key!r} ({expression}): "
                                 f"{exc.cause}") from None
    try:
        return jsonpath.select(expression, data, context)
    except PathError:
        where = context if expression.startswith("$$") else data
        raise runtime(state, f"The JSONPath {expression!r} specified for the field {key!r} "
                             f"could not be found in the input {_short(where)!r}") from None


def parameters(state: str, spec: dict[str, Any], data: Any, context: Any, rng: Any = None,
               field: str = "Parameters") -> Any:
    """The effective input: `data` (after InputPath) through the state's Parameters."""
    if field not in spec:
        return data
    return template(state, field, spec[field], data, context, rng)


def result_selector(state: str, spec: dict[str, Any], result: Any, context: Any,
                    rng: Any = None) -> Any:
    if "ResultSelector" not in spec:
        return result
    return template(state, "ResultSelector", spec["ResultSelector"], result, context, rng)


def value_or_path(state: str, spec: dict[str, Any], field: str, data: Any,
                  context: Any, rng: Any = None) -> Any:
    """A field given as a value (`Error`) or as a path/intrinsic (`ErrorPath`)."""
    if field in spec:
        return spec[field]
    expression = spec.get(field + "Path")
    if expression is None:
        return None
    if intrinsics.is_intrinsic(expression):
        try:
            return intrinsics.evaluate(expression, data, context, rng)
        except AslError as exc:
            raise runtime(state, f"The value of {field}Path ({expression}): {exc.cause}") \
                from None
    try:
        return jsonpath.select(expression, data, context)
    except PathError:
        raise runtime(state, f"The JSONPath {expression!r} specified for the field "
                             f"{field + 'Path'!r} could not be found in the input "
                             f"{_short(data)!r}") from None
