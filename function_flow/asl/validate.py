"""Definition errors, found before anything runs, each naming the state.

`problems(definition)` lists them (one line each, for `function-flow
validate`); `check` raises the first as an AslDefinitionError. Checked:
the machine's shape (StartAt, States), each state's Type and required
fields, Next/Default/Catch targets that name no state, states nothing
reaches, a state that neither ends nor goes on, JSONPaths and intrinsics
that do not parse, Choice rules without a comparison, a Choice without a
Default whose rules cannot match anything, Resources nothing provides, and
the fields Step Functions would refuse (validate_fields.py: Retry and Catch,
numbers, times).
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from function_flow.asl import choice, intrinsics, jsonpath, validate_fields
from function_flow.asl.errors import AslDefinitionError, PathError

STATE_TYPES = ("Pass", "Task", "Choice", "Wait", "Succeed", "Fail", "Parallel", "Map")
_PATH_FIELDS = ("InputPath", "OutputPath", "ItemsPath", "SecondsPath", "TimestampPath",
                "ErrorPath", "CausePath", "MaxConcurrencyPath", "TimeoutSecondsPath",
                "HeartbeatSecondsPath")
_TEMPLATES = ("Parameters", "ResultSelector", "ItemSelector")


def check(definition: Any, resources: Mapping[str, Any] | None = None) -> None:
    """Raise AslDefinitionError for the first problem of `definition`."""
    found = problems(definition, resources)
    if found:
        state, message = found[0]
        raise AslDefinitionError(message, state)


def problems(definition: Any, resources: Mapping[str, Any] | None = None,
             where: str = "") -> list[tuple[str | None, str]]:
    """Every problem found: (state name or None, one-line message)."""
    if not isinstance(definition, dict):
        return [(None, f"{where}a state machine definition must be a JSON object, got "
                       f"{type(definition).__name__}")]
    states = definition.get("States")
    if not isinstance(states, dict) or not states:
        return [(None, f"{where}the definition has no States (an object of named states)")]
    start = definition.get("StartAt")
    found: list[tuple[str | None, str]] = []
    if not isinstance(start, str):
        found.append((None, f"{where}the definition has no StartAt naming its first state"))
    elif start not in states:
        found.append((None, f"{where}StartAt names {start!r}, which is not a state"))
    for name, state in states.items():
        found += [(name, f"{where}state {name!r}: {m}") for m in _state(name, state, states)]
        if isinstance(state, dict):
            for index, inner in enumerate(_machines(state)):
                found += problems(inner, resources, f"{where}{name} (branch {index}): ")
            resource = state.get("Resource")
            if state.get("Type") == "Task" and isinstance(resource, str):
                found += [(name, f"{where}state {name!r}: {m}")
                          for m in _resource(resource, resources)]
    if isinstance(start, str) and start in states:
        for name in states:
            if name not in _reachable(start, states):
                found.append((name, f"{where}state {name!r} is unreachable: no Next, "
                                    "Default, Choice or Catch leads to it"))
    return found


def _resource(resource: str, resources: Mapping[str, Any] | None) -> list[str]:
    """What is wrong with a Task's Resource: a remote target that cannot be
    called, or (when `resources` are given) one nothing provides."""
    from function_flow.asl.resources import SCHEMES, remote_of

    if resource.endswith(".waitForTaskToken") and (resources or {}).get(resource) \
            is not None and not callable((resources or {})[resource]):
        return [f"Resource {resource!r} waits for a task token: give it a Python function "
                "(the worker, which gets $$.Task.Token and answers with it), not a remote "
                "target (a remote function's answer is a plain Task's result)"]
    try:
        if remote_of(resource, resources or {}) is not None:
            return []
    except ValueError as exc:
        return [f"Resource {resource!r}: {exc}"]
    if resources is None or resource in resources:
        return []
    return [f"nothing provides the Resource {resource!r}; pass it in resources (a "
            "function or a remote target), or name a remote function: "
            + ", ".join(f"{p}..." for p in SCHEMES)]


def _machines(state: dict[str, Any]) -> list[Any]:
    if state.get("Type") == "Parallel":
        return list(state.get("Branches") or [])
    if state.get("Type") == "Map":
        return [state.get("ItemProcessor") or state.get("Iterator")]
    return []


def _targets(state: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    if "Next" in state:
        yield "Next", state["Next"]
    if "Default" in state:
        yield "Default", state["Default"]
    for index, rule in enumerate(state.get("Choices") or []):
        if isinstance(rule, dict):
            yield f"Choices[{index}].Next", rule.get("Next")
    for index, catcher in enumerate(state.get("Catch") or []):
        if isinstance(catcher, dict):
            yield f"Catch[{index}].Next", catcher.get("Next")


def _reachable(start: str, states: dict[str, Any]) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        state = states.get(stack.pop())
        if not isinstance(state, dict):
            continue
        for _, target in _targets(state):
            if isinstance(target, str) and target in states and target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _state(name: str, state: Any, states: dict[str, Any]) -> list[str]:
    if not isinstance(state, dict):
        return ["a state must be a JSON object"]
    kind = state.get("Type")
    if kind not in STATE_TYPES:
        return [f"unknown Type {kind!r}; use one of {', '.join(STATE_TYPES)}"]
    found = []
    for field, target in _targets(state):
        if target not in states:
            found.append(f"{field} names {target!r}, which is not a state of this machine")
    terminal = kind in ("Succeed", "Fail", "Choice")
    if not terminal and not state.get("End") and "Next" not in state:
        found.append("it has neither Next nor End: true")
    if state.get("End") and "Next" in state:
        found.append("it has both Next and End")
    if kind == "Task" and not isinstance(state.get("Resource"), str):
        found.append("a Task needs a Resource")
    if kind == "Choice":
        found += _choice(state)
    if kind == "Wait" and sum(f in state for f in ("Seconds", "SecondsPath", "Timestamp",
                                                    "TimestampPath")) != 1:
        found.append("a Wait needs exactly one of Seconds, SecondsPath, Timestamp, "
                     "TimestampPath")
    if kind == "Parallel" and not state.get("Branches"):
        found.append("a Parallel needs Branches")
    if kind == "Map" and not (state.get("ItemProcessor") or state.get("Iterator")):
        found.append("a Map needs an ItemProcessor (or Iterator)")
    for field in _PATH_FIELDS + ("ResultPath",):
        value = state.get(field)
        if isinstance(value, str) and not _path_ok(value, field):
            found.append(f"{field} {value!r} is not a valid JSONPath")
    for field in _TEMPLATES:
        found += [f"{field}: {m}" for m in _template(state.get(field))]
    return found + validate_fields.problems(kind, state)


def _path_ok(path: str, field: str) -> bool:
    if field in ("ErrorPath", "CausePath") and intrinsics.is_intrinsic(path):
        try:
            intrinsics.parse(path)
            return True
        except ValueError:
            return False
    try:
        jsonpath.parse(path[1:] if path.startswith("$$") else path)
    except PathError:
        return False
    return field != "ResultPath" or jsonpath.is_definite(path)


def _template(value: Any, at: str = "") -> list[str]:
    found = []
    if isinstance(value, dict):
        for key, inner in value.items():
            if key.endswith(".$") and not isinstance(inner, str):
                found.append(f"{at}{key} must be a JSONPath or an intrinsic function (a "
                             f"string), got {type(inner).__name__}")
            elif key.endswith(".$"):
                if intrinsics.is_intrinsic(inner):
                    try:
                        intrinsics.parse(inner)
                    except ValueError as exc:
                        found.append(f"{at}{key}: {exc}")
                elif not _path_ok(inner, key):
                    found.append(f"{at}{key} {inner!r} is not a valid JSONPath")
            else:
                found += _template(inner, f"{at}{key}.")
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _template(inner, f"{at}[{index}].")
    return found


def _choice(state: dict[str, Any]) -> list[str]:
    rules = state.get("Choices")
    if not isinstance(rules, list) or not rules:
        return ["a Choice needs a non-empty Choices list"]
    found = []
    for index, rule in enumerate(rules):
        found += [f"Choices[{index}]: {m}" for m in _rule(rule)]
        if not isinstance(rule, dict) or "Next" not in rule:
            found.append(f"Choices[{index}] has no Next")
    if "Default" not in state and all(_never(rule) for rule in rules):
        found.append("no rule can match (each compares with a value of the wrong type) "
                     "and there is no Default: every run would fail here")
    return found


def _rule(rule: Any) -> list[str]:
    if not isinstance(rule, dict):
        return ["a rule must be a JSON object"]
    for key in ("And", "Or"):
        if key in rule:
            inner = rule[key]
            if not isinstance(inner, list) or not inner:
                return [f"{key} needs a non-empty list of rules"]
            return [m for r in inner for m in _rule(r)]
    if "Not" in rule:
        return _rule(rule["Not"])
    operator = choice.operator_of(rule)
    if operator is None:
        return ["the rule has no comparison operator (e.g. StringEquals, IsPresent)"]
    variable = rule.get("Variable")
    if not isinstance(variable, str) or not _path_ok(variable, "Variable"):
        return [f"Variable {variable!r} is not a valid JSONPath"]
    if operator.endswith("Path") and not _path_ok(str(rule[operator]), operator):
        return [f"{operator} {rule[operator]!r} is not a valid JSONPath"]
    return []


def _never(rule: Any) -> bool:
    """A comparison whose literal operand has a type its operator never matches."""
    if not isinstance(rule, dict):
        return True
    operator = choice.operator_of(rule)
    if operator is None or operator.endswith("Path") or operator in choice.TYPE_TESTS \
            or operator == "IsPresent":
        return False
    operand = rule[operator]
    if operator.startswith(("String", "Timestamp")):
        return not isinstance(operand, str) or (
            operator.startswith("Timestamp") and choice.parse_timestamp(operand) is None)
    if operator.startswith("Numeric"):
        return isinstance(operand, bool) or not isinstance(operand, (int, float))
    if operator == "BooleanEquals":
        return not isinstance(operand, bool)
    return False
