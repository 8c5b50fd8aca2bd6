"""Run a deployment's steps: each an argv list for subprocess, never a shell.

What the script (script.py) does, step by step: a describe first where a
step has one (its output hidden; success means the resource exists), then
the create, or the update, or nothing; captured output becomes a variable
for later steps. gcloud's own output reaches the user as it comes. The
first command that fails stops the deployment: the steps before it are
done and running the deployment again picks up from there.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from typing import Callable

from function_flow.deploy.script import render_command
from function_flow.deploy.steps import Command, Let, Run, Say, Step, resolve
from function_flow.errors import FunctionFlowError


class DeployError(FunctionFlowError):
    """A gcloud command failed, or gcloud is missing."""


def find_gcloud() -> str:
    """The gcloud on PATH; DeployError saying how to get one otherwise."""
    path = shutil.which("gcloud")
    if path is None:
        raise DeployError("gcloud is not on PATH: install the Google Cloud CLI "
                          "(https://cloud.google.com/sdk/docs/install), or print the commands "
                          "with --dry-run")
    return path


def run_steps(steps: list[Step], variables: dict[str, str],
              say: Callable[[str], None]) -> dict[str, str]:
    """Run every step in order; returns the variables, captured ones included."""
    gcloud = find_gcloud()
    variables = dict(variables)
    env = {"CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    for step in steps:
        if isinstance(step, Let):
            variables[step.name] = resolve(step.value, variables)
        elif isinstance(step, Say):
            say(resolve(step.text, variables))
        else:
            _run(step, variables, gcloud, env, say)
    return variables


def _argv(argv: Command, variables: dict[str, str], gcloud: str) -> list[str]:
    words = [resolve(w, variables) for w in argv]
    return [gcloud, *words[1:]] if words and words[0] == "gcloud" else words


def _run(step: Run, variables: dict[str, str], gcloud: str, env: dict[str, str],
         say: Callable[[str], None]) -> None:
    environment = {**os.environ, **env}
    argv = step.argv
    if step.unless is not None:
        found = subprocess.run(_argv(step.unless, variables, gcloud), env=environment,
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        if found.returncode == 0:
            if step.update is None:
                say(f"# {step.does}: exists")
                return
            argv = step.update
    say(f"# {step.does}\n{render_command(argv)}")
    secret = secrets.token_urlsafe(48) if step.secret_input and argv is step.argv else None
    result = subprocess.run(_argv(argv, variables, gcloud), env=environment, text=True,
                            input=secret if secret is not None else None,
                            stdin=None if secret is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE if step.capture else None,
                            stderr=subprocess.PIPE if step.exists_if else None)
    if step.exists_if and result.returncode != 0 and step.exists_if in result.stderr:
        say(f"# {step.does}: exists")
        return
    if step.exists_if and result.stderr:
        say(result.stderr.rstrip())
    if result.returncode != 0:
        raise DeployError(f"{' '.join(_argv(argv, variables, '')[1:4]) or 'a command'} "
                          f"failed ({step.does}), exit code {result.returncode}: see gcloud's "
                          "message above; the steps before it are done, and deploying again "
                          "continues from there")
    if step.capture:
        value = (result.stdout or "").strip()
        if not value:
            raise DeployError(f"{step.does}: gcloud printed nothing "
                              f"({' '.join(_argv(argv, variables, 'gcloud'))})")
        variables[step.capture] = value
