"""Task fingerprints: a short hash of what decides one task's behaviour.

Three parts, "deps.settings.body", so that a difference can be named: the
task's dependencies; its settings (every TaskSpec field but its id,
dependencies and function: retries, backoff, timeout, task_args, retry_on,
the remote call, and whatever fields the spec grows); and its body's own
code: the function's source from its `def` on, as tokens, so comments,
layout and decorators do not count and every Python version agrees, or its
code object when there is no source. Defaults and closure values count;
helpers the body calls and globals it reads do not. Nothing here raises:
a lambda, a builtin, a partial or a callable object each get a hash.
core/versions.py compares them.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import inspect
import io
import json
import linecache
import textwrap
import tokenize
import types
from typing import Any

from function_flow.core.definition import END_TASK_ID, TaskSpec
from function_flow.core.graph import Dag

#: Hex digits per part: 26 characters per task keep the fingerprints of a
#: 1,000-task DAG near 40 KB, well inside a Firestore document (1 MiB).
PART_DIGITS = 8
PARTS = ("dependencies", "settings", "body")
#: json.dumps(value, sort_keys=True, separators=(",", ":")), without making an
#: encoder per call (a 1,000-task DAG digests 4,000 values).
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"))


def digest(value: Any) -> str:
    """sha256 of `value`'s canonical JSON (or of the text itself), in hex."""
    text = value if isinstance(value, str) else _CANONICAL.encode(value)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def changed_parts(was: str, now: str) -> list[str]:
    """Which parts of two fingerprints of one task differ ("body", ...)."""
    before, after = was.split("."), now.split(".")
    if len(before) != len(PARTS) or len(after) != len(PARTS):
        return ["definition"]
    return [part for part, a, b in zip(PARTS, before, after) if a != b]


def of_dag(dag: Dag) -> dict[str, str]:
    """Every task's fingerprint, and the virtual end task's: the sinks it waits
    for, since they decide when (and whether) a run ends."""
    codes: dict[int, str] = {}
    bodies: dict[int, str] = {}  # per function object: tasks often share one
    found = {}
    for task_id, spec in dag.tasks.items():
        body = bodies.get(id(spec.func))
        if body is None:
            body = bodies[id(spec.func)] = body_hash(spec.func, codes)
        found[task_id] = fingerprint(spec, codes, body)
    found[END_TASK_ID] = digest(list(dag.sinks))[:PART_DIGITS]
    return found


def definition_hash(fingerprints: dict[str, str]) -> str:
    """The hash of a whole definition: what `RunRecord.dag_hash` holds."""
    return digest(sorted(fingerprints.items()))[:16]


def fingerprint(spec: TaskSpec, codes: dict[int, str] | None = None,
                body: str | None = None) -> str:
    """"deps.settings.body": a short hash of each part that decides the task's behaviour
    (`body`: its function's body_hash, if known)."""
    settings = {f.name: _plain(getattr(spec, f.name), 8, deep=True)
                for f in dataclasses.fields(spec) if f.name not in ("task_id", "deps", "func")}
    if body is None:
        body = body_hash(spec.func, codes if codes is not None else {})
    parts = (list(spec.deps), settings, body)
    return ".".join(digest(part)[:PART_DIGITS] for part in parts)


def body_hash(func: Any, codes: dict[int, str], depth: int = 3) -> str:
    """A hash of what a task function does; never raises (lambdas, builtins, partials)."""
    if func is None:
        return "none"
    if isinstance(func, functools.partial):
        return digest(["partial", body_hash(func.func, codes, depth),
                        _plain(func.args, 4), _plain(func.keywords, 4)])
    try:
        func = inspect.unwrap(func)
    except ValueError:  # a __wrapped__ cycle
        pass
    if inspect.ismethod(func):
        return digest(["method", _name(type(func.__self__)),
                        body_hash(func.__func__, codes, depth)])
    code = getattr(func, "__code__", None)
    if not isinstance(code, types.CodeType):
        call = getattr(type(func), "__call__", None)
        if not inspect.isroutine(func) and isinstance(getattr(call, "__code__", None),
                                                      types.CodeType):
            return digest(["instance", _name(type(func)), body_hash(call, codes, depth)])
        return digest(["builtin", getattr(func, "__module__", None) or "",
                        getattr(func, "__qualname__", None) or _name(type(func))])
    if id(code) not in codes:
        codes[id(code)] = digest(_source_form(code))
    cells = []
    for cell in getattr(func, "__closure__", None) or ():
        try:
            cells.append(_plain(cell.cell_contents, depth))
        except ValueError:  # an empty cell
            cells.append("empty")
    return digest(["function", codes[id(code)], _plain(func.__defaults__, 4),
                    _plain(getattr(func, "__kwdefaults__", None), 4), cells])


def _source_form(code: types.CodeType) -> str:
    """The function's source from its `def` on, as tokens: comments and layout
    do not count, and neither do its decorators (the task's declaration,
    fingerprinted as its dependencies and settings). Source text is the
    same on every Python version, unlike bytecode."""
    # What inspect.getsource does, without its search of sys.modules for
    # the function's module on every call (a DAG of 1,000 bodies calls it
    # 1,000 times).
    lines = linecache.getlines(code.co_filename)
    if not 0 < code.co_firstlineno <= len(lines):
        return _code_form(code)
    try:
        source = textwrap.dedent("".join(inspect.getblock(lines[code.co_firstlineno - 1:])))
    except (IndentationError, SyntaxError, tokenize.TokenError):
        return _code_form(code)
    lines = source.splitlines(keepends=True)
    first = next((i for i, line in enumerate(lines)
                  if line.lstrip().startswith(("def ", "async def "))), 0)
    text = "".join(lines[first:]) if not lines[:1] or lines[0].startswith("@") else source
    kept = []
    try:
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE):
                kept.append(tokenize.tok_name[token.type])  # structure, not spaces
            elif token.type not in (tokenize.COMMENT, tokenize.NL, tokenize.ENCODING,
                                    tokenize.ENDMARKER):
                kept.append(token.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return "text:" + " ".join(text.split())  # a lambda inside a larger expression
    return "tokens:" + " ".join(kept)


def _code_form(code: types.CodeType) -> Any:
    """For a function without source (exec'd, a REPL): its code object."""
    consts = [_code_form(c) if isinstance(c, types.CodeType) else _plain(c, 4)
              for c in code.co_consts]
    return ["code", code.co_code.hex(), consts, list(code.co_names),
            list(code.co_varnames), list(code.co_freevars)]


def _name(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _plain(value: Any, depth: int, deep: bool = False) -> Any:
    """`value` as JSON that is the same in every process (no addresses, no order
    of sets). `deep` also looks into the public attributes of plain objects
    (in settings); elsewhere (defaults, closures) an object counts by its type."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, bytes):
        return {"bytes": hashlib.sha256(value).hexdigest()}
    if depth <= 0:
        return {"type": _name(type(value))}
    inner = depth - 1
    if isinstance(value, enum.Enum):
        return {"enum": _name(type(value)), "name": value.name}
    if isinstance(value, type):
        return {"class": _name(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(item, inner, deep) for item in value]
    if isinstance(value, (set, frozenset)):
        return {"set": sorted((_plain(item, inner, deep) for item in value), key=json.dumps)}
    if isinstance(value, dict):
        return {"dict": sorted(([_plain(k, inner, deep), _plain(v, inner, deep)]
                                for k, v in value.items()), key=json.dumps)}
    if isinstance(value, Dag):  # a sub-DAG
        return {"dag": definition_hash(of_dag(value))}
    if dataclasses.is_dataclass(value):
        return {"dataclass": _name(type(value)),
                "fields": {f.name: _plain(getattr(value, f.name), inner, deep)
                           for f in dataclasses.fields(value)}}
    if inspect.isroutine(value) or isinstance(value, functools.partial):
        return {"code": body_hash(value, {}, inner)}
    if deep and hasattr(value, "__dict__"):
        return {"object": _name(type(value)),
                "attrs": {k: _plain(v, inner, deep) for k, v in sorted(vars(value).items())
                          if not k.startswith("_")}}
    return {"type": _name(type(value))}


