"""The directory `gcloud functions deploy --source` uploads, built from a workflow file.

    main.py            the workflow (or, for another file name, a module
                       importing its entry points from it; for a state
                       machine file, one building its Job: machine_main)
    the rest of the workflow's directory (its data, its helper modules)
    function_flow/     this package, as the CLI runs it: no release needed
    function_flow_orchestrator-VERSION.dist-info/METADATA
                       so the vendored package knows its version
    requirements.txt   function_flow's runtime dependencies (with
                       `tracing`, the SDK and exporter that mode needs, from
                       the `tracing` extra), then the workflow directory's
                       own requirements.txt

The dependencies are pyproject.toml's `dependencies` when the package runs
from a checkout (the vendored code is that checkout's), else the installed
distribution's: never the command line's (click, rich) or the tests'.
"""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import sys
from typing import Iterable

from function_flow.errors import FunctionFlowError

DISTRIBUTION = "function-flow-orchestrator"
#: Written into every directory built here: only such a directory is ever replaced.
MARKER = ".function-flow-source"
#: Not copied from the workflow's directory.
SKIPPED_NAMES = {"__pycache__", "node_modules", "venv", "function_flow"}
SKIPPED_SUFFIXES = (".pyc", ".pyo")
#: More than this in the workflow's directory is surely not meant to be uploaded.
MAX_FILES = 2000
MAX_BYTES = 100 * 1024 * 1024


class SourceError(FunctionFlowError):
    """The source directory cannot be built; says why."""


def package_dir() -> pathlib.Path:
    import function_flow

    return pathlib.Path(function_flow.__file__).resolve().parent


def checkout_project() -> dict | None:
    """pyproject.toml's [project] when the package runs from its checkout, else None."""
    pyproject = package_dir().parent / "pyproject.toml"
    if pyproject.is_file():
        project = _toml(pyproject).get("project", {})
        if project.get("name") == DISTRIBUTION:
            return project
    return None


def runtime_requirements() -> list[str]:
    """What a deployed function installs for function_flow (see module docstring)."""
    project = checkout_project()
    if project is not None:
        return list(project.get("dependencies", []))
    from importlib.metadata import PackageNotFoundError, requires

    try:
        listed = requires(DISTRIBUTION) or []
    except PackageNotFoundError:
        raise SourceError("cannot tell function_flow's dependencies: it is neither installed "
                          "nor run from a checkout with its pyproject.toml") from None
    return [r for r in listed if "extra ==" not in r.replace('"', "").replace("'", "")]


def tracing_requirements(mode: str) -> list[str]:
    """The `tracing` extra's requirements FUNCTION_FLOW_TRACING=mode imports (none for off)."""
    from function_flow.tracing import PACKAGES

    wanted = set(PACKAGES[mode])
    if not wanted:
        return []
    project = checkout_project()
    if project is not None:
        listed = list(project.get("optional-dependencies", {}).get("tracing", []))
    else:
        from importlib.metadata import PackageNotFoundError, requires

        try:
            every = requires(DISTRIBUTION) or []
        except PackageNotFoundError:
            raise SourceError("cannot tell the tracing extra's requirements: function_flow is "
                              "neither installed nor run from a checkout") from None
        listed = [r.split(";")[0].strip() for r in every
                  if re.search(r"extra\s*==\s*['\"]tracing['\"]", r)]
    found = [r for r in listed if _name(r) in wanted]
    missing = wanted - {_name(r) for r in found}
    if missing:
        raise SourceError(f"the tracing extra lists no {', '.join(sorted(missing))}: "
                          "reinstall function_flow")
    return found


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    return match.group(0).lower().replace("_", "-") if match else ""


def version() -> str:
    """The vendored package's version: its checkout's, else the installed one's."""
    project = checkout_project()
    if project is not None and project.get("version"):
        return str(project["version"])
    from function_flow import __version__

    return __version__


def _toml(path: pathlib.Path) -> dict:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    with open(path, "rb") as handle:
        return tomllib.load(handle)


def build(workflow: str, target: str, entry_points: Iterable[str],
          tracing: str = "off") -> pathlib.Path:
    """Build the upload directory for `workflow` at `target` (replacing an older build);
    its requirements include what FUNCTION_FLOW_TRACING=`tracing` needs. A state
    machine file (.json) gets a generated main.py (machine_main)."""
    source = pathlib.Path(workflow).resolve()
    folder = source.parent
    out = pathlib.Path(target).resolve()
    if out == folder or folder.is_relative_to(out):
        raise SourceError(f"--source-dir {target} would hold the workflow's own directory: "
                          "choose a directory elsewhere")
    files = _files_of(folder, out, source)
    machine = source.suffix == ".json"
    if source.name != "main.py" and any(f.name == "main.py" and f.parent == folder
                                        for f in files):
        deployed = f"generated for {source.name}" if machine else f"{source.name}"
        raise SourceError(f"{folder} has a main.py of its own, and the deployed main.py must "
                          f"be {deployed}: rename one of them")
    if not machine and source.name != "main.py" and not _importable(source.stem):
        raise SourceError(f"{source.name} cannot be imported by the deployed main.py: name the "
                          "workflow file main.py, or give it a Python module name")
    _replace(out, target)
    for path in files:
        destination = out / path.relative_to(folder)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)
    if machine:
        (out / "main.py").write_text(machine_main(source, list(entry_points)), encoding="utf-8")
    elif source.name != "main.py":
        names = ", ".join(entry_points)
        (out / "main.py").write_text(
            f'"""The Cloud Functions of {source.name} (written by function-flow deploy)."""\n\n'
            f"from {source.stem} import {names}  # noqa: F401\n", encoding="utf-8")
    shutil.copytree(package_dir(), out / "function_flow",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    _write_metadata(out)
    _write_requirements(out, folder / "requirements.txt", tracing)
    (out / MARKER).write_text(f"built from {source} by function-flow deploy\n",
                              encoding="utf-8")
    return out


def machine_main(source: pathlib.Path, entry_points: list[str]) -> str:
    """main.py of a state machine file: the Job built from the bundled JSON (with the
    RESOURCES of the Python file beside it, asl/files.py), its entry points, and the
    companion's remote functions (the other `entry_points`), from the very module
    files.load imported."""
    from function_flow.deploy.plan import ENTRY_POINTS

    companion = source.with_suffix(".py").name
    lines = [f'"""The Cloud Functions of {source.name} (written by function-flow deploy): '
             "its Job is built",
             f'from the bundled definition and the RESOURCES of {companion}, if any."""',
             "", "import os", "", "from function_flow import loader",
             "from function_flow.asl import files", "",
             "_HERE = os.path.dirname(os.path.abspath(__file__))",
             f"job = files.load(os.path.join(_HERE, {source.name!r}))", ""]
    lines += [f"{name} = job.make_{name}()" for name in entry_points if name in ENTRY_POINTS]
    remote = [name for name in entry_points if name not in ENTRY_POINTS]
    if remote:
        lines += ["", f"_companion = loader.load_module(os.path.join(_HERE, {companion!r}))"]
        lines += [f"{name} = _companion.{name}" for name in remote]
    return "\n".join(lines) + "\n"


def _importable(stem: str) -> bool:
    return stem.isidentifier() and stem not in sys.stdlib_module_names


def _files_of(folder: pathlib.Path, out: pathlib.Path, source: pathlib.Path
              ) -> list[pathlib.Path]:
    """The workflow directory's files worth uploading, checked for size."""
    found: list[pathlib.Path] = []
    size = 0
    for root, dirs, names in os.walk(folder):
        here = pathlib.Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_NAMES
                         and (here / d).resolve() != out)
        for name in sorted(names):
            path = here / name
            if name.startswith(".") or name.endswith(SKIPPED_SUFFIXES) or not path.is_file():
                continue
            if here == folder and name == "requirements.txt":
                continue  # merged into ours
            found.append(path)
            size += path.stat().st_size
            if len(found) > MAX_FILES or size > MAX_BYTES:
                raise SourceError(
                    f"{folder} holds more than {MAX_FILES} files or {MAX_BYTES // 2**20} MB, "
                    f"all of which would be uploaded with {source.name}: put the workflow in "
                    "a directory of its own")
    return found


def _replace(out: pathlib.Path, target: str) -> None:
    if out.exists():
        if not (out / MARKER).is_file():
            raise SourceError(f"--source-dir {target} exists and was not built by function-flow "
                              "deploy: choose a new directory (it is replaced on each deploy)")
        shutil.rmtree(out)
    out.mkdir(parents=True)


def _write_metadata(out: pathlib.Path) -> None:
    """The vendored package's distribution metadata: importlib.metadata finds its version."""
    name = DISTRIBUTION.replace("-", "_")
    info = out / f"{name}-{version()}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\n"
                                   f"Version: {version()}\n", encoding="utf-8")


def _write_requirements(out: pathlib.Path, own: pathlib.Path, tracing: str) -> None:
    lines = ["# function_flow's runtime dependencies (it is vendored in function_flow/)",
             *runtime_requirements()]
    traced = tracing_requirements(tracing)
    if traced:
        lines += [f"# FUNCTION_FLOW_TRACING={tracing}: the OpenTelemetry SDK and exporter",
                  *traced]
    if own.is_file():
        extra = [line.strip() for line in own.read_text(encoding="utf-8").splitlines()]
        extra = [line for line in extra if line and not line.startswith("#")
                 and not line.lower().replace("_", "-").startswith(DISTRIBUTION)]
        if extra:
            lines += [f"# from {own.name} of the workflow's directory", *extra]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
