"""Choice rules: which `Next` a Choice state takes for an input.

Every comparison operator of the language, with a `...Path` twin that reads
the value to compare with from the input. A comparison between values of
different types is false, not an error (the corpus's choice cases record
that on AWS). A Variable (or a `...Path` operand) that selects nothing is
an error, as on Step Functions (States.Runtime: "The choice state's
condition path references an invalid value"), except for `IsPresent`,
which is how a rule asks whether it selects anything.
"""

from __future__ import annotations

import datetime
import re
from typing import Any, Callable

from function_flow.asl import jsonpath
from function_flow.asl.errors import PathError

_TIMESTAMP = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def parse_timestamp(text: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp (offset required, any fraction of a second), else None."""
    if not isinstance(text, str):
        return None
    match = _TIMESTAMP.match(text)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    micro = int((fraction or ".0")[1:7].ljust(6, "0"))
    try:
        zone = datetime.timezone.utc if offset == "Z" else datetime.timezone(
            datetime.timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            * (1 if offset[0] == "+" else -1))
        return datetime.datetime(int(year), int(month), int(day), int(hour), int(minute),
                                 int(second), micro, tzinfo=zone)
    except ValueError:
        return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string_matches(value: str, pattern: str) -> bool:
    """`*` matches any run of characters; `\\*` is a literal star."""
    pieces = re.split(r"(?<!\\)\*", pattern)
    regex = ".*".join(re.escape(p.replace("\\*", "*").replace("\\\\", "\\")) for p in pieces)
    return re.fullmatch(regex, value, re.S) is not None


def _ordered(kind: Callable[[Any], bool], convert: Callable[[Any], Any],
             test: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def compare(left: Any, right: Any) -> bool:
        if not (kind(left) and kind(right)):
            return False
        a, b = convert(left), convert(right)
        return a is not None and b is not None and test(a, b)
    return compare


_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "Equals": lambda a, b: a == b, "LessThan": lambda a, b: a < b,
    "GreaterThan": lambda a, b: a > b, "LessThanEquals": lambda a, b: a <= b,
    "GreaterThanEquals": lambda a, b: a >= b}
_KINDS: dict[str, tuple[Callable[[Any], bool], Callable[[Any], Any]]] = {
    "String": (lambda v: isinstance(v, str), lambda v: v),
    "Numeric": (_number, lambda v: v),
    "Timestamp": (lambda v: isinstance(v, str), parse_timestamp),
}

#: Operator name -> compare(variable's value, operand).
OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    f"{kind}{test}": _ordered(*_KINDS[kind], _TESTS[test])
    for kind in _KINDS for test in _TESTS}
OPERATORS["BooleanEquals"] = lambda a, b: isinstance(a, bool) and isinstance(b, bool) \
    and a is b
OPERATORS["StringMatches"] = lambda a, b: isinstance(a, str) and isinstance(b, str) \
    and _string_matches(a, b)
#: Type tests: operand True asks "is it", False "is it not".
TYPE_TESTS: dict[str, Callable[[Any], bool]] = {
    "IsNull": lambda v: v is None, "IsNumeric": _number,
    "IsString": lambda v: isinstance(v, str), "IsBoolean": lambda v: isinstance(v, bool),
    "IsTimestamp": lambda v: parse_timestamp(v) is not None,
}
COMPARISONS = frozenset(OPERATORS) | frozenset(f"{o}Path" for o in OPERATORS if
                                               o != "StringMatches") \
    | frozenset(TYPE_TESTS) | {"IsPresent"}

_MISSING = object()


def _value(path: str, data: Any, context: Any) -> Any:
    try:
        return jsonpath.select(path, data, context)
    except PathError:
        return _MISSING


def _present(path: str, data: Any, context: Any) -> Any:
    """What `path` selects; PathError in Step Functions' words when nothing."""
    value = _value(path, data, context)
    if value is _MISSING:
        raise PathError(f"Invalid path '{path}': The choice state's condition path "
                        "references an invalid value.")
    return value


def operator_of(rule: dict[str, Any]) -> str | None:
    """The comparison a rule makes (None for And/Or/Not or a rule without one)."""
    return next((key for key in rule if key in COMPARISONS), None)


def matches(rule: dict[str, Any], data: Any, context: Any = None) -> bool:
    """Whether a Choice rule (or a nested one) holds for `data`."""
    if "And" in rule:
        return all(matches(r, data, context) for r in rule["And"])
    if "Or" in rule:
        return any(matches(r, data, context) for r in rule["Or"])
    if "Not" in rule:
        return not matches(rule["Not"], data, context)
    operator = operator_of(rule)
    if operator is None:
        return False
    operand = rule[operator]
    if operator == "IsPresent":
        return (_value(rule["Variable"], data, context) is not _MISSING) is bool(operand)
    value = _present(rule["Variable"], data, context)
    if operator in TYPE_TESTS:
        return TYPE_TESTS[operator](value) is bool(operand)
    if operator.endswith("Path"):
        operand = _present(operand, data, context)
        operator = operator[:-4]
    return OPERATORS[operator](value, operand)


def choose(state: dict[str, Any], data: Any, context: Any = None) -> str | None:
    """The Next of the first rule that holds, else the Default (None: no match)."""
    for rule in state.get("Choices", []):
        if matches(rule, data, context):
            return rule["Next"]
    return state.get("Default")
