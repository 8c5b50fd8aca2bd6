"""Intrinsic functions: `States.Format('{}', $.x)` and the rest, parsed and run.

An intrinsic is the value of a `.$` field that starts with `States.`. Its
arguments are string literals in single quotes (backslash escapes `\\'`,
`\\{`, `\\}`, `\\\\`), numbers, `true`/`false`/`null`, paths (`$.a`, `$$.b`)
and nested intrinsics. A call that cannot be evaluated (bad arguments, a
path that selects nothing) fails the state with States.Runtime, the error
AWS records for them, and a cause that names the function and says why.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import random
import re
import uuid
from typing import Any, Callable

from function_flow.asl import jsonpath
from function_flow.asl.errors import AslError, PathError, RUNTIME

_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][-+]?\d+)?")
_FUNCTION = re.compile(r"States\.[A-Za-z0-9]+")
_PATH_END = re.compile(r"[,)\s]")


class IntrinsicError(ValueError):
    """An intrinsic that does not parse, or whose arguments do not fit."""


def is_intrinsic(text: Any) -> bool:
    return isinstance(text, str) and text.startswith("States.") and "(" in text


class _Parser:
    def __init__(self, text: str) -> None:
        self.text, self.at = text, 0

    def fail(self, what: str) -> IntrinsicError:
        return IntrinsicError(f"{what} at position {self.at} of {self.text!r}")

    def skip(self) -> None:
        while self.at < len(self.text) and self.text[self.at].isspace():
            self.at += 1

    def call(self) -> tuple[Any, ...]:
        match = _FUNCTION.match(self.text, self.at)
        if not match:
            raise self.fail("expected a States.Function")
        name = match.group()
        if name not in FUNCTIONS:
            raise IntrinsicError(f"unknown intrinsic function {name} in {self.text!r}")
        self.at = match.end()
        if not self.text.startswith("(", self.at):
            raise self.fail("expected '('")
        self.at += 1
        args: list[tuple[Any, ...]] = []
        self.skip()
        if self.text.startswith(")", self.at):
            self.at += 1
            return ("call", name, tuple(args))
        while True:
            self.skip()
            args.append(self.argument())
            self.skip()
            if self.text.startswith(")", self.at):
                self.at += 1
                return ("call", name, tuple(args))
            if not self.text.startswith(",", self.at):
                raise self.fail("expected ',' or ')'")
            self.at += 1

    def argument(self) -> tuple[Any, ...]:
        text, at = self.text, self.at
        if text.startswith("'", at):
            return ("literal", self.string())
        if text.startswith("States.", at):
            return self.call()
        if text.startswith("$", at):
            end = self._path_end(at)
            path = text[at:end].strip()
            try:
                jsonpath.parse(path[1:] if path.startswith("$$") else path)
            except PathError as exc:
                raise IntrinsicError(str(exc)) from None
            self.at = end
            return ("path", path)
        for word, value in (("true", True), ("false", False), ("null", None)):
            if text.startswith(word, at):
                self.at += len(word)
                return ("literal", value)
        match = _NUMBER.match(text, at)
        if match:
            self.at = match.end()
            number = match.group()
            return ("literal", float(number) if match.group(1) or match.group(2)
                    else int(number))
        raise self.fail("expected an argument")

    def _path_end(self, at: int) -> int:
        depth, quote = 0, None
        for i in range(at, len(self.text)):
            char = self.text[i]
            if quote:
                if char == quote:
                    quote = None
            elif char in "'\"":
                quote = char
            elif char in "[(":
                depth += 1
            elif char in "])":
                if depth == 0:
                    return i
                depth -= 1
            elif char == "," and depth == 0:
                return i
        return len(self.text)

    def string(self) -> str:
        out, i = [], self.at + 1
        while i < len(self.text):
            char = self.text[i]
            if char == "\\" and i + 1 < len(self.text):
                out.append(self.text[i + 1])
                i += 2
                continue
            if char == "'":
                self.at = i + 1
                return "".join(out)
            out.append(char)
            i += 1
        raise self.fail("unterminated string")


@functools.lru_cache(maxsize=2048)
def parse(text: str) -> tuple[Any, ...]:
    """The call tree of intrinsic `text`; IntrinsicError when it is not one."""
    parser = _Parser(text.strip())
    tree = parser.call()
    parser.skip()
    if parser.at != len(parser.text):
        raise parser.fail("unexpected text after the call")
    return tree


def evaluate(text: str, data: Any, context: Any, rng: random.Random | None = None) -> Any:
    """The value of intrinsic `text` on a state's input and context.

    AslError (States.Runtime, cause naming the function) when it fails.
    """
    try:
        tree = parse(text)
    except IntrinsicError as exc:
        raise AslError(RUNTIME, f"invalid intrinsic function: {exc}") from None
    return _run(tree, data, context, rng or random)


def _run(node: tuple[Any, ...], data: Any, context: Any, rng: Any) -> Any:
    kind = node[0]
    if kind == "literal":
        return node[1]
    if kind == "path":
        try:
            return jsonpath.select(node[1], data, context)
        except PathError as exc:
            raise AslError(RUNTIME, f"the path {node[1]!r} given to an intrinsic function "
                           f"selects nothing ({exc})") from None
    name, args = node[1], [_run(a, data, context, rng) for a in node[2]]
    function, arity = FUNCTIONS[name]
    if arity is not None and not arity[0] <= len(args) <= arity[1]:
        raise AslError(RUNTIME, f"{name} takes {arity[0]}"
                       f"{'' if arity[0] == arity[1] else f' to {arity[1]}'} arguments, "
                       f"got {len(args)}")
    try:
        return function(rng, *args)
    except AslError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, OverflowError) as exc:
        raise AslError(RUNTIME, f"{name} failed on arguments {json.dumps(args)[:200]}: "
                       f"{exc}") from None


def _dump(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _java_string(value: Any) -> str:
    """How AWS's States.Format prints a value: Java's toString of the JSON value
    (strings bare, objects as {k=v, ...}, arrays as [a, b], null as null)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}={_java_string(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_java_string(v) for v in value) + "]"
    return _dump(value)


def _format(rng: Any, template: str, *args: Any) -> str:
    if not isinstance(template, str):
        raise TypeError("the template must be a string")
    pieces = template.split("{}")
    if len(pieces) - 1 != len(args):
        raise ValueError(f"the template has {len(pieces) - 1} placeholders for "
                         f"{len(args)} arguments")
    out = [pieces[0]]
    for arg, piece in zip(args, pieces[1:]):
        out += [_java_string(arg), piece]
    return "".join(out)


def _string_to_json(rng: Any, text: str) -> Any:
    if not isinstance(text, str):
        raise TypeError("the argument must be a string")
    return json.loads(text) if text.strip() else None


def _integer(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise TypeError(f"{what} must be an integer, got {value!r}")
    return int(value)


def _partition(rng: Any, array: list[Any], size: Any) -> list[list[Any]]:
    size = _integer(size, "the chunk size")
    if not isinstance(array, list) or size <= 0:
        raise ValueError("expects an array and a chunk size > 0")
    return [array[i:i + size] for i in range(0, len(array), size)]


def _range(rng: Any, start: Any, end: Any, step: Any) -> list[int]:
    start, end, step = (_integer(v, "each argument") for v in (start, end, step))
    if step == 0:
        raise ValueError("the step must not be 0")
    values = list(range(start, end + (1 if step > 0 else -1), step))
    if len(values) > 1000:
        raise ValueError("the range has more than 1000 items")
    return values


def _get_item(rng: Any, array: list[Any], index: Any) -> Any:
    if not isinstance(array, list):
        raise TypeError("the first argument must be an array")
    return array[_integer(index, "the index")]


def _unique(rng: Any, array: list[Any]) -> list[Any]:
    if not isinstance(array, list):
        raise TypeError("the argument must be an array")
    seen, out = set(), []
    for value in array:
        key = _dump(value)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def _hash(rng: Any, data: Any, algorithm: str) -> str:
    names = {"MD5": "md5", "SHA-1": "sha1", "SHA-256": "sha256", "SHA-384": "sha384",
             "SHA-512": "sha512"}
    if algorithm not in names:
        raise ValueError(f"the algorithm must be one of {', '.join(names)}")
    text = data if isinstance(data, str) else _dump(data)
    return hashlib.new(names[algorithm], text.encode()).hexdigest()


def _merge(rng: Any, left: dict[str, Any], right: dict[str, Any], deep: Any) -> dict[str, Any]:
    if not isinstance(left, dict) or not isinstance(right, dict):
        raise TypeError("both arguments must be JSON objects")
    if deep is not False:
        raise ValueError("only a shallow merge (false) is supported, as on AWS")
    return {**left, **right}


def _rounded(value: Any, what: str) -> int:
    """A number as AWS takes it for arithmetic: Java's Math.round (half up)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, got {value!r}")
    return math.floor(value + 0.5)


def _random(rng: Any, start: Any, end: Any, seed: Any = None) -> int:
    start, end = _rounded(start, "the start"), _rounded(end, "the end")
    source = random.Random(_integer(seed, "the seed")) if seed is not None else rng
    return source.randint(start, end - 1) if end > start else start


def _add(rng: Any, left: Any, right: Any) -> int:
    return _rounded(left, "each argument") + _rounded(right, "each argument")


def _split(rng: Any, text: str, delimiters: str) -> list[str]:
    if not isinstance(text, str) or not isinstance(delimiters, str):
        raise TypeError("both arguments must be strings")
    parts = re.split("|".join(map(re.escape, delimiters)), text) if delimiters else [text]
    return [part for part in parts if part]


def _b64decode(rng: Any, text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("the argument must be a string")
    return base64.b64decode(text, validate=True).decode()


def _b64encode(rng: Any, text: str) -> str:
    if not isinstance(text, str):
        raise TypeError("the argument must be a string")
    return base64.b64encode(text.encode()).decode()


def _length(rng: Any, array: list[Any]) -> int:
    if not isinstance(array, list):
        raise TypeError("the argument must be an array")
    return len(array)


def _contains(rng: Any, array: list[Any], value: Any) -> bool:
    if not isinstance(array, list):
        raise TypeError("the first argument must be an array")
    return any(_dump(item) == _dump(value) for item in array)


#: name -> (function(rng, *args), (min args, max args) or None for any number).
FUNCTIONS: dict[str, tuple[Callable[..., Any], tuple[int, float] | None]] = {
    "States.Format": (_format, (1, math.inf)),
    "States.StringToJson": (_string_to_json, (1, 1)),
    "States.JsonToString": (lambda rng, value: _dump(value), (1, 1)),
    "States.Array": (lambda rng, *values: list(values), None),
    "States.ArrayPartition": (_partition, (2, 2)),
    "States.ArrayContains": (_contains, (2, 2)),
    "States.ArrayRange": (_range, (3, 3)),
    "States.ArrayGetItem": (_get_item, (2, 2)),
    "States.ArrayLength": (_length, (1, 1)),
    "States.ArrayUnique": (_unique, (1, 1)),
    "States.Base64Encode": (_b64encode, (1, 1)),
    "States.Base64Decode": (_b64decode, (1, 1)),
    "States.Hash": (_hash, (2, 2)),
    "States.JsonMerge": (_merge, (3, 3)),
    "States.MathRandom": (_random, (2, 3)),
    "States.MathAdd": (_add, (2, 2)),
    "States.StringSplit": (_split, (2, 2)),
    "States.UUID": (lambda rng: str(uuid.UUID(int=rng.getrandbits(128), version=4)), (0, 0)),
}
