"""Load a workflow file and find the Job it defines, for the command line.

Every problem a user can cause here (missing file, a module that fails to
import, no job, an ambiguous or unknown job name) raises `LoadError` with a
one-line message, so the CLI can print it and exit 2 without a traceback.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import traceback
from types import ModuleType

from function_flow.errors import DefinitionError, FunctionFlowError
from function_flow import subdags
from function_flow.tasks import Job


class LoadError(FunctionFlowError):
    """A workflow file cannot be loaded, or does not name one usable Job."""


def module_name_for(path: str) -> str:
    """The name the workflow module is imported under; the same on every load.

    The file's own stem when that is a free, valid name, so that a helper
    module doing `from pipeline import job` gets the very same module (and
    Job) instead of a second copy. Otherwise (a standard library name, a
    module already imported) a prefixed name that cannot shadow anything.
    """
    stem = os.path.splitext(os.path.basename(path))[0]
    if _free_name(stem):
        return stem
    return "function_flow_workflow_" + re.sub(r"\W", "_", stem)


def _free_name(stem: str) -> bool:
    """Whether importing the workflow as `stem` cannot clash with another module."""
    if not stem.isidentifier() or stem in sys.stdlib_module_names:
        return False
    existing = sys.modules.get(stem)
    return existing is None or getattr(existing, "__function_flow_workflow__", False)


def load_module(path: str) -> ModuleType:
    """Import the workflow file at `path` (its directory goes on sys.path).

    The directory is added so that the workflow can import modules next to
    it, as it would when run with `python path`.
    """
    if not os.path.exists(path):
        raise LoadError(f"no such file: {path}")
    if os.path.isdir(path) or not path.endswith(".py"):
        raise LoadError(f"{path} is not a Python file (expected FILE.py)")
    absolute = os.path.abspath(path)
    directory = os.path.dirname(absolute)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    name = module_name_for(absolute)
    existing = sys.modules.get(name)
    if existing is not None and getattr(existing, "__file__", None) == absolute:
        return existing
    spec = importlib.util.spec_from_file_location(name, absolute)
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot import {path}: not a loadable Python module")
    module = importlib.util.module_from_spec(spec)
    module.__function_flow_workflow__ = True  # type: ignore[attr-defined]
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DefinitionError as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"invalid workflow in {path}: {_one_line(str(exc))}") from exc
    except (Exception, SystemExit) as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"cannot import {path}: {_describe(exc)}") from exc
    return module


def jobs_in(module: ModuleType) -> list[Job]:
    """The distinct Job objects defined at module level, in definition order."""
    found: list[Job] = []
    for value in vars(module).values():
        if isinstance(value, Job) and all(value is not job for job in found):
            found.append(value)
    return found


def find_job(module: ModuleType, path: str, name: str | None = None) -> Job:
    """The module's Job: the only one, or the one called `name`.

    `name` matches a job's name (`Job(name=...)`) or, failing that, the
    variable that holds it.
    """
    jobs = jobs_in(module)
    if not jobs:
        raise LoadError(f"{path} defines no Job at module level "
                        "(expected e.g. `job = tasks.Job(name='my_job')`)")
    names = ", ".join(job.name for job in jobs)
    if name is None:
        # Jobs used as sub-DAGs of another job of the file are not candidates.
        jobs = [job for job in jobs if not any(subdags.contains(other, job) for other in jobs)]
        if len(jobs) > 1:
            raise LoadError(f"{path} defines several jobs ({names}); choose one with --job NAME")
        return jobs[0]
    for job in jobs:
        if job.name == name:
            return job
    variable = vars(module).get(name)
    if isinstance(variable, Job):
        return variable
    raise LoadError(f"{path} has no job named {name!r}; its jobs are: {names}")


def load_job(path: str, name: str | None = None) -> Job:
    """Load `path`, pick its Job and validate the definition now.

    A `.json` file is an Amazon States Language state machine (asl/files.py)."""
    if path.endswith(".json"):
        from function_flow.asl import files

        try:
            return files.load(path)
        except files.MachineFileError as exc:  # its message says all (no traceback to see)
            raise LoadError(str(exc)) from None
    module = load_module(path)
    job = find_job(module, path, name)
    try:
        job.validate()
    except DefinitionError as exc:
        raise LoadError(f"invalid workflow in {path}: {_one_line(str(exc))}") from exc
    return job


def _describe(exc: BaseException) -> str:
    """The last line of an exception as Python would print it."""
    if isinstance(exc, SyntaxError):
        where = f" (line {exc.lineno})" if exc.lineno else ""
        return f"SyntaxError: {exc.msg}{where}"
    if isinstance(exc, SystemExit):
        return f"it called sys.exit({exc.code!r})"
    lines = traceback.format_exception_only(type(exc), exc)
    return _one_line(lines[-1]) if lines else type(exc).__name__


def _one_line(text: str) -> str:
    return " ".join(text.split())
