"""Branches, trigger rules and a foreach as `function-flow run`, `status` and `graph` show them."""

from __future__ import annotations

from pathlib import Path

from cli_runs import flow, run_id_of, workflow


def test_run_and_status_count_a_foreach_and_show_its_failures(tmp_path: Path) -> None:
    done = flow(tmp_path, "run", workflow("flow_control"))
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    # 40 items in one row, with the two that failed (tolerated) listed under it.
    assert "square[0..39]" in out and "38 SUCCEEDED, 2 FAILED" in out
    assert "square[5] " in out and "square[17] " in out and "square[6] " not in out
    assert "small             SKIPPED" in out and 'report: "big"' in out
    shown = flow(tmp_path, "status", run_id_of(out))
    assert shown.returncode == 0
    assert "ValueError: bad item 5" in shown.stdout and "SKIPPED" in shown.stdout
    assert shown.stdout.count("Traceback") == 2


def test_a_few_items_are_listed_one_by_one(tmp_path: Path) -> None:
    done = flow(tmp_path, "run", workflow("flow_control"), "--arg", "count=4")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "square[3]" in done.stdout and "square[0..3]" not in done.stdout
    assert 'report: "small"' in done.stdout  # 0+1+4+9 is not > 1000: the other branch


def test_graph_marks_branches_foreach_and_trigger_rules(tmp_path: Path) -> None:
    shown = flow(tmp_path, "graph", workflow("flow_control"))
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert "  square  <- list  (foreach over list)" in lines
    assert "  decide  <- square  (branch)" in lines
    assert "  report  <- big, small  [none_failed_min_one_success]" in lines
