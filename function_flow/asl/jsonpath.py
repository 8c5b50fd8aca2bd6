"""The JSONPath subset Step Functions accepts, with the errors AWS gives.

AWS evaluates paths with Jayway JsonPath: a *definite* path (names and
indexes only, `$.a.b[0]`) selects one value and fails when it is missing;
an *indefinite* one (wildcards, slices, filters, unions, `..`) selects a
list, empty when nothing matches (cases 004-008 of the corpus). Paths
starting with `$$` read the context object instead of the state's input.
Parsed paths are cached: a definition's paths are parsed once per process.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from function_flow.asl.errors import PathError

_NAME = re.compile(r"[^.\[\]\s()=<>!,'\"*]+")
_FILTER = re.compile(
    r"^\s*@((?:\.[^.\s=<>!]+|\[\d+\])*)\s*(?:(==|!=|<=|>=|<|>)\s*(.+?))?\s*$")


def _quoted(path: str, at: int) -> tuple[str, int]:
    """A quoted name at path[at] (' or "), with backslash escapes; (name, next index)."""
    quote, out, i = path[at], [], at + 1
    while i < len(path):
        char = path[i]
        if char == "\\" and path[i + 1:i + 2] in (quote, "\\"):
            out.append(path[i + 1])  # Jayway keeps any other backslash as it is
            i += 2
            continue
        if char == quote:
            return "".join(out), i + 1
        out.append(char)
        i += 1
    raise PathError(f"unterminated string in path {path!r}")


def _bracket(path: str, at: int) -> tuple[tuple[Any, ...], int]:
    """The segment inside [...] starting at path[at] == '['."""
    i = at + 1
    if path.startswith("?(", i):
        depth, j = 1, i + 2
        while j < len(path) and depth:
            depth += {"(": 1, ")": -1}.get(path[j], 0)
            j += 1
        if depth or j >= len(path) or path[j] != "]":
            raise PathError(f"unterminated filter in path {path!r}")
        return ("filter", _parse_filter(path[i + 2:j - 1], path)), j + 1
    if i < len(path) and path[i] in "'\"":
        names = []
        while True:
            name, i = _quoted(path, i)
            names.append(name)
            if path.startswith("]", i):
                break
            if not path.startswith(",", i):
                raise PathError(f"expected ']' in path {path!r}")
            i += 1
            while path.startswith(" ", i):
                i += 1
        segment = ("name", names[0]) if len(names) == 1 else ("union", tuple(names))
        return segment, i + 1
    end = path.find("]", i)
    if end < 0:
        raise PathError(f"unterminated '[' in path {path!r}")
    inner = path[i:end].strip()
    try:
        if inner == "*":
            return ("wild",), end + 1
        if ":" in inner:
            parts = [int(p) if p.strip() else None for p in inner.split(":")]
            if len(parts) > 3:
                raise ValueError
            return ("slice", *(parts + [None] * (3 - len(parts)))), end + 1
        if "," in inner:
            return ("union", tuple(int(p) for p in inner.split(","))), end + 1
        return ("index", int(inner)), end + 1
    except ValueError:
        raise PathError(f"invalid index [{inner}] in path {path!r}") from None


def _parse_filter(text: str, path: str) -> tuple[Any, ...]:
    match = _FILTER.match(text)
    if not match:
        raise PathError(f"unsupported filter ?({text}) in path {path!r}")
    sub, operator, literal = match.groups()
    value = None
    if operator:
        try:
            value = json.loads(literal.replace("'", '"'))
        except ValueError:
            raise PathError(f"invalid value {literal!r} in the filter of path {path!r}") \
                from None
    return (parse("$" + sub), operator, value)


@functools.lru_cache(maxsize=4096)
def parse(path: str) -> tuple[tuple[Any, ...], ...]:
    """The segments of `path` ('$' then names, indexes, ...); PathError if invalid."""
    if not isinstance(path, str) or not path.startswith("$"):
        raise PathError(f"a path must start with '$', got {path!r}")
    segments: list[tuple[Any, ...]] = []
    i = 1
    while i < len(path):
        if path.startswith("..", i):
            match = _NAME.match(path, i + 2)
            if not match:
                raise PathError(f"expected a name after '..' in path {path!r}")
            segments.append(("deep", match.group()))
            i = match.end()
        elif path[i] == ".":
            if path.startswith("*", i + 1):
                segments.append(("wild",))
                i += 2
                continue
            match = _NAME.match(path, i + 1)
            if not match:
                raise PathError(f"expected a name after '.' at {i} in path {path!r}")
            segments.append(("name", match.group()))
            i = match.end()
        elif path[i] == "[":
            segment, i = _bracket(path, i)
            segments.append(segment)
        else:
            raise PathError(f"unexpected {path[i]!r} at {i} in path {path!r}")
    return tuple(segments)


def is_definite(path: str) -> bool:
    return all(s[0] in ("name", "index") for s in parse(path))


def _render(segments: tuple[tuple[Any, ...], ...]) -> str:
    """Jayway's spelling of a definite path: $['a'][0]."""
    return "$" + "".join(f"['{s[1]}']" if s[0] == "name" else f"[{s[1]}]" for s in segments)


def _definite(segments: tuple[tuple[Any, ...], ...], value: Any) -> Any:
    for depth, (kind, key) in enumerate(segments):
        if kind == "name" and isinstance(value, dict) and key in value:
            value = value[key]
        elif kind == "index" and isinstance(value, list) and -len(value) <= key < len(value):
            value = value[key]
        else:
            what = "Missing property" if depth < len(segments) - 1 else "No results for path:"
            where = _render(segments[:depth + 1])
            raise PathError(f"{what} in path {where}" if what != "No results for path:"
                            else f"No results for path: {where}")
    return value


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value.values())
    if isinstance(value, list):
        return list(value)
    return []


def _compare(left: Any, operator: str, right: Any) -> bool:
    if operator == "==":
        return left == right and type(left) is not bool or left is right
    if operator == "!=":
        return not _compare(left, "==", right)
    numbers = (int, float)
    if isinstance(left, numbers) and isinstance(right, numbers) or \
            isinstance(left, str) and isinstance(right, str):
        return {"<": left < right, "<=": left <= right,
                ">": left > right, ">=": left >= right}[operator]
    return False


def _matches(value: Any, condition: tuple[Any, ...]) -> bool:
    sub, operator, literal = condition
    try:
        found = _definite(sub, value)
    except PathError:
        return False
    return True if operator is None else _compare(found, operator, literal)


def _step(values: list[Any], segment: tuple[Any, ...]) -> list[Any]:
    kind, out = segment[0], []
    for value in values:
        if kind == "name":
            if isinstance(value, dict) and segment[1] in value:
                out.append(value[segment[1]])
        elif kind == "index":
            if isinstance(value, list) and -len(value) <= segment[1] < len(value):
                out.append(value[segment[1]])
        elif kind == "wild":
            out += _children(value)
        elif kind == "slice":
            if isinstance(value, list):
                out += value[slice(*segment[1:])]
        elif kind == "union":
            for key in segment[1]:
                out += _step([value], ("name" if isinstance(key, str) else "index", key))
        elif kind == "filter":
            out += [v for v in _children(value) if _matches(v, segment[1])]
        elif kind == "deep":
            stack = [value]
            while stack:
                node = stack.pop(0)
                if isinstance(node, dict) and segment[1] in node:
                    out.append(node[segment[1]])
                stack += _children(node)
    return out


def select(path: str, data: Any, context: Any = None) -> Any:
    """The value `path` selects in `data` (or in `context` for `$$...`).

    PathError when a definite path selects nothing; an indefinite path
    always selects a list.
    """
    if path.startswith("$$"):
        data, path = context, path[1:]
    segments = parse(path)
    if all(s[0] in ("name", "index") for s in segments):
        return _definite(segments, data)
    values = [data]
    for segment in segments:
        values = _step(values, segment)
    return values


def assign(path: str, data: Any, value: Any) -> Any:
    """`data` with `value` placed at reference path `path` (ResultPath).

    Missing objects on the way are created; PathError when the path is
    not a reference path or crosses a value that is not an object.
    """
    segments = parse(path)
    if not segments:
        return value
    if not all(s[0] in ("name", "index") for s in segments):
        raise PathError(f"{path!r} is not a reference path (names and indexes only)")
    # Copy only the containers on the way: the input is never changed.
    root = _copy(data) if isinstance(data, (dict, list)) else {}
    node = root
    for depth, (kind, key) in enumerate(segments):
        last = depth == len(segments) - 1
        if kind == "name":
            if not isinstance(node, dict):
                raise PathError(f"Missing property in path {_render(segments[:depth + 1])}")
            if last:
                node[key] = value
            else:
                child = node.get(key)
                node[key] = _copy(child) if isinstance(child, (dict, list)) else {}
                node = node[key]
        else:
            if not isinstance(node, list) or not -len(node) <= key < len(node):
                raise PathError(f"No results for path: {_render(segments[:depth + 1])}")
            if last:
                node[key] = value
            else:
                if isinstance(node[key], (dict, list)):
                    node[key] = _copy(node[key])
                node = node[key]
    return root


def _copy(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else list(value)
