"""`function-flow dev machine.json`: a state machine on the deployed topology (the
emulators, functions-framework, push subscriptions), its `pubsub:` Task answered
by the remote function beside it through real Pub/Sub (tests/test_dev.py's way)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from test_dev import assert_all_stopped, dev_log, needs_emulators, run_dev

MACHINES = Path(__file__).parent / "workflows" / "asl"
pytestmark = pytest.mark.timeout(240)


@needs_emulators
def test_dev_runs_a_state_machine_and_its_pubsub_resource(tmp_path: Path) -> None:
    for name in ("scored.json", "scored.py"):
        shutil.copy(MACHINES / name, tmp_path / name)
    done = run_dev(tmp_path, "scored.json", "--input", '{"name": "ada"}')
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(x for x in done.stdout.splitlines() if x.startswith("output: "))
    assert json.loads(line[len("output: "):]) == {
        "name": "ada", "greeting": "hello ada", "score": {"letters": 3}}, done.stdout
    log = dev_log(tmp_path)
    assert "score (remote function for ASL_DEV_SCORE)" in log
    assert_all_stopped(log, remote_functions=1)
    bad = run_dev(tmp_path, "scored.json", "--input", "{nope")
    assert bad.returncode != 0 and "--input is not JSON" in bad.stderr
