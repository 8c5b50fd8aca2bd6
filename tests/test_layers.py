"""The layers hold: the core imports no database or cloud client, modules stay small.

Each check runs in a fresh interpreter, so that what the test process
itself imported (pytest plugins, other tests' adapters) cannot hide a leak.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "function_flow"

#: Modules a newcomer reads to understand the engine, and what they must not load.
CORE_MODULES = ["function_flow.core.engine", "function_flow.core.transitions",
                "function_flow.core.recovery", "function_flow.core.completion",
                "function_flow.core.graph", "function_flow.core.ports",
                "function_flow.core.records", "function_flow.core.definition"]


def loaded_after_import(modules: list[str]) -> set[str]:
    """Modules that importing `modules` loads, beyond what the interpreter starts with.

    The installed google-cloud packages' .pth files create the empty
    `google` and `google.cloud` namespaces at start-up: those do not count.
    """
    code = ("import sys\nbefore = set(sys.modules)\n" + "".join(f"import {m}\n" for m in modules)
            + "print('\\n'.join(sorted(set(sys.modules) - before)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return set(result.stdout.split())


def test_importing_the_core_loads_no_database_or_cloud_client() -> None:
    loaded = loaded_after_import(CORE_MODULES)
    assert "sqlite3" not in loaded and "_sqlite3" not in loaded
    assert not {m for m in loaded if m == "google" or m.startswith("google.")}
    assert not {m for m in loaded if m.startswith(("function_flow.store", "function_flow.bus",
                                                   "function_flow.cloud",
                                                   "function_flow.local"))}


def test_defining_a_workflow_loads_no_cloud_client() -> None:
    """A workflow file imports function_flow.tasks at import time, on every cold start."""
    loaded = loaded_after_import(["function_flow.tasks", "function_flow.futures"])
    assert not {m for m in loaded if m.startswith("google.cloud")}


def test_the_check_can_fail() -> None:
    assert "sqlite3" in loaded_after_import(["function_flow.store.sqlite"])


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(
    p.relative_to(PACKAGE)))
def test_no_module_is_much_over_400_lines(path: pathlib.Path) -> None:
    lines = len(path.read_text(encoding="utf-8").splitlines())
    assert lines <= 450, f"{path.relative_to(PACKAGE)} has {lines} lines: split it by concern"
