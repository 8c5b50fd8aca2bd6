"""The shape of a deployment: steps of gcloud argv lists, with shell variables.

One list of steps is both run (runner.py: subprocess, argv lists, no shell)
and printed (script.py: a bash script), so the two cannot differ. A word of
a command is literal text and `Var`s, values known only when the script runs
(the project number, a function's URL) or set at its top (PROJECT, REGION).
"""

from __future__ import annotations

import dataclasses
from typing import Union


@dataclasses.dataclass(frozen=True)
class Var:
    """A shell variable: set at the top of the script, or captured by a step."""

    name: str


Part = Union[str, Var]
#: One argument: its parts, concatenated.
Word = tuple[Part, ...]
Command = tuple[Word, ...]


def word(*parts: Part) -> Word:
    return tuple(p for p in parts if p != "")


def command(*words: Part | Word) -> Command:
    """An argv list: each item a literal, a Var or a Word (concatenated parts)."""
    return tuple(w if isinstance(w, tuple) else (w,) for w in words)


@dataclasses.dataclass(frozen=True)
class Run:
    """Run `argv`. With `unless` (a describe), only when that fails, i.e. when
    the resource is missing; then `update` (if any) runs instead, so a second
    deployment converges instead of failing on "already exists".

    capture: store argv's standard output (stripped) in this variable.
    secret_input: feed argv a newly generated secret on standard input.
    exists_if: for a create that has no describe (a Firestore composite
    index has no name of ours): its failure with this text in the error
    output means the resource exists already, which is success.
    """

    does: str
    argv: Command
    unless: Command | None = None
    update: Command | None = None
    capture: str | None = None
    secret_input: bool = False
    exists_if: str | None = None


@dataclasses.dataclass(frozen=True)
class Let:
    """Set a variable from others (the service account's e-mail from PROJECT)."""

    name: str
    value: Word


@dataclasses.dataclass(frozen=True)
class Say:
    """Tell the user something once the steps before it are done."""

    text: Word


Step = Union[Run, Let, Say]


def resolve(value: Word, variables: dict[str, str]) -> str:
    """A word's text, once its variables are known."""
    out = []
    for part in value:
        if isinstance(part, Var):
            if part.name not in variables:
                raise KeyError(f"${{{part.name}}} is used before it is set")
            out.append(variables[part.name])
        else:
            out.append(part)
    return "".join(out)
