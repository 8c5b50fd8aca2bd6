"""What the command-line tests share (tests/test_cli*.py and the other *_cli tests).

`flow` runs `function-flow` as a user runs it: in a subprocess, in a working
directory of the test's own, with no FUNCTION_FLOW_* setting of this process
leaking in, so the embedded backend's database is private to the test.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

WORKFLOWS = Path(__file__).parent / "workflows"


def flow(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `function-flow ARGS` in `cwd` and capture its output."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("FUNCTION_FLOW_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "function_flow.cli", *args], cwd=cwd,
                          env=full_env, capture_output=True, text=True, timeout=100)


def workflow(name: str) -> str:
    return str(WORKFLOWS / f"{name}.py")


def run_id_of(output: str) -> str:
    match = re.search(r"function-flow status (\S+)", output)
    assert match, f"no status hint in output:\n{output}"
    return match.group(1)


def assert_one_error_line(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Usage and definition errors: exit 2, exactly one `error:` line, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.stdout + result.stderr
