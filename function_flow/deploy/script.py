"""Steps as a bash script: what `deploy --dry-run` prints and deploy/deploy.sh is.

Literal text is quoted with shlex.quote and variables are "${NAME}", so the
script runs the very argv lists runner.py runs. A step with `unless`
becomes `describe >/dev/null 2>&1 || create`, or an if/then/else when it
has an update; a capture becomes `NAME="$(command)"`.
"""

from __future__ import annotations

import shlex

from function_flow.deploy.steps import Command, Let, Run, Say, Step, Var, Word

#: A command longer than this is written one option per line.
WIDTH = 88
#: Generates the HMAC key where the secret is created (48 random bytes, URL-safe).
SECRET_GENERATOR = "python3 -c 'import secrets; print(secrets.token_urlsafe(48), end=\"\")'"


def render_word(value: Word) -> str:
    """One argument as shell text: `--name=` stays bare before a quoted value."""
    out = []
    for i, part in enumerate(value):
        if isinstance(part, Var):
            out.append(f'"${{{part.name}}}"')
        elif i == 0 and part.startswith("--") and "=" in part:
            name, value_text = part.split("=", 1)
            out.append(f"{name}={shlex.quote(value_text) if value_text else ''}")
        else:
            out.append(shlex.quote(part))
    return "".join(out) or "''"


def _is_option(value: Word) -> bool:
    return bool(value) and isinstance(value[0], str) and value[0].startswith("--")


def render_command(argv: Command, indent: str = "") -> str:
    words = [render_word(w) for w in argv]
    line = indent + " ".join(words)
    if len(line) <= WIDTH:
        return line
    # Positional words on the first line while they fit, then one word per line.
    first = next((i for i, w in enumerate(argv) if _is_option(w)), len(words))
    head = [words[0]]
    for w in words[1:first]:
        if len(indent) + len(" ".join([*head, w])) > WIDTH:
            break
        head.append(w)
    lines = [indent + " ".join(head)] + [f"{indent}    {w}" for w in words[len(head):]]
    return " \\\n".join(lines)


def render_step(step: Step) -> str:
    if isinstance(step, Let):
        return f"{step.name}={render_word(step.value)}"
    if isinstance(step, Say):
        return f"echo {render_word(step.text)}"
    return _render_run(step)


def _render_run(step: Run) -> str:
    comment = f"# {step.does}\n"
    if step.capture:
        return f'{comment}{step.capture}="$({render_command(step.argv)})"'
    create = render_command(step.argv, "  " if step.update else "")
    if step.secret_input:
        create = f"{SECRET_GENERATOR} |\n    {create.lstrip()}"
    if step.exists_if:
        marker = shlex.quote(step.exists_if)
        return (f'{comment}if ! out="$({create} 2>&1)"; then\n'
                f'  grep -q {marker} <<<"$out" || {{ echo "$out" >&2; exit 1; }}\nfi')
    if step.unless is None:
        return comment + create
    check = render_command(step.unless) + " >/dev/null 2>&1"
    if step.update is None:
        joined = f"{check} ||\n    {create.lstrip()}" if "\n" in create or \
            len(check) + len(create) > WIDTH else f"{check} || {create}"
        return comment + joined
    return (f"{comment}if {check}; then\n{render_command(step.update, '  ')}\n"
            f"else\n{create}\nfi")


def render(steps: list[Step], header: list[str], inputs: list[str]) -> str:
    """The whole script: comment lines, the strict-mode preamble, the lines that
    set PROJECT, REGION and SOURCE, then the steps."""
    lines = ["#!/usr/bin/env bash", *(f"# {line}" if line else "#" for line in header),
             "set -euo pipefail", "export CLOUDSDK_CORE_DISABLE_PROMPTS=1", *inputs, ""]
    body = "\n\n".join(render_step(step) for step in steps)
    return "\n".join(lines) + "\n" + body + "\n"
