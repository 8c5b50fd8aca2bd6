"""The flow-control sample (samples/demand_forecast.py), run as a user runs it.

`function-flow run` in a subprocess: the branch both ways (auto, then the
refresh argument), the foreach with one region failing within tolerance
and one retried, too many failing regions, and an incremental refresh that
must give what a full one gives. Then once under `function-flow dev` (the
deployed topology on the emulators). The model's arithmetic is checked on
series whose forecast is known exactly, and the report's numbers against
the CSV read here with the csv module.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import uuid
from collections import defaultdict
from pathlib import Path

import pytest

from test_dev import assert_all_stopped, clean_env, dev_log, needs_emulators, run_dev

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "demand_forecast.py"
DATA = ROOT / "samples" / "data" / "demand.csv"
REGIONS = ["AMER", "APAC", "EMEA", "LATAM"]  # item order: the mapping's (sorted) keys


def load_sample():
    spec = importlib.util.spec_from_file_location(f"demand_{uuid.uuid4().hex}", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "function_flow.cli", "run", str(SAMPLE), *args],
                          cwd=cwd, env=clean_env(), capture_output=True, text=True, timeout=120)


def status_of(out: str, task_id: str) -> tuple[str, int]:
    """(status, attempts) of `task_id` in the final table `run` prints."""
    found = re.findall(rf"^\s*{re.escape(task_id)}\s+([A-Z_]+)\s+(\d+)\s", out, re.M)
    assert found, f"{task_id} is not in the table:\n{out}"
    status, attempts = found[-1]
    return status, int(attempts)


def report(out_dir: Path) -> dict:
    return json.loads((out_dir / "forecast_report.json").read_text())


def history(path: Path) -> dict[str, list[int]]:
    """Each region's units in date order, read independently of the sample."""
    by_region: dict[str, list[tuple[str, int]]] = defaultdict(list)
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            by_region[row["region"]].append((row["date"], int(row["units"])))
    return {region: [u for _, u in sorted(rows)] for region, rows in by_region.items()}


def append_day(path: Path, date: str, units: dict[str, int]) -> None:
    with open(path, "a") as handle:
        for region, value in units.items():
            handle.write(f"{date},{region},{value}\n")


# ------------------------------------------------------------- the model

def test_the_model_continues_a_weekly_pattern_and_a_trend_exactly() -> None:
    sample = load_sample()
    dates = [f"2024-03-{d:02d}" for d in range(1, 29)]  # 2024-03-01 is a Friday
    pattern = [130, 80, 60, 100, 105, 105, 110]  # Fri..Thu
    weekly = [pattern[i % 7] for i in range(28)]
    predicted = sample.predict(dates, weekly, 7)
    assert [d for d, _ in predicted] == [f"2024-03-{d}" for d in range(29, 32)] + [
        f"2024-04-0{d}" for d in range(1, 5)]
    assert [round(v, 6) for _, v in predicted] == pattern
    line = [50 + 2 * i for i in range(28)]  # no season: the line goes on
    assert [round(v, 6) for _, v in sample.predict(dates, line, 3)] == [106, 108, 110]
    result = sample.forecast_region("X", dates, weekly, ["2024-03-29"])
    assert result["backtest_mape"] == 0.0
    assert result["days"][0] == {"date": "2024-03-29", "units": 65, "holiday": True}
    assert result["next_week"] == sum(pattern) - 65 and result["last_week"] == sum(pattern)
    with pytest.raises(ValueError, match="X has 20 days of history; a forecast needs at "
                                         "least 21"):
        sample.forecast_region("X", dates[:20], weekly[:20], [])
    with pytest.raises(ValueError, match="X has no row for the day after 2024-03-10"):
        sample.forecast_region("X", dates[:10] + dates[11:], weekly[:27], [])


# ------------------------------------------------------- function-flow run

def test_run_refreshes_fully_then_incrementally_and_tolerates_a_new_region(
        tmp_path: Path) -> None:
    data, out = tmp_path / "demand.csv", tmp_path / "out"
    shutil.copy(DATA, data)
    first = run_cli(tmp_path, "--arg", f"input={data}", "--arg", f"output_dir={out}")
    assert first.returncode == 0, first.stdout + first.stderr
    assert status_of(first.stdout, "full_refresh") == ("SUCCEEDED", 1)
    assert status_of(first.stdout, "incremental_refresh") == ("SKIPPED", 0)
    assert status_of(first.stdout, "training_data") == ("SUCCEEDED", 1)
    # APAC's first calendar call fails and is retried; LATAM's 6 days fail
    # at once (only ConnectionError is retried); one failure is tolerated.
    statuses = {region: status_of(first.stdout, f"forecast[{i}]")
                for i, region in enumerate(REGIONS)}
    assert statuses == {"AMER": ("SUCCEEDED", 1), "APAC": ("SUCCEEDED", 2),
                        "EMEA": ("SUCCEEDED", 1), "LATAM": ("FAILED", 1)}
    assert "LATAM has 6 days of history; a forecast needs at least 21" in first.stdout
    assert status_of(first.stdout, "forecast") == ("SUCCEEDED", 1)
    assert status_of(first.stdout, "write_report") == ("SUCCEEDED", 1)
    assert re.search(r"^run demand_forecast-\S+ SUCCEEDED in ", first.stdout, re.M)

    full = report(out)
    units = history(data)
    assert full["refresh"]["mode"] == "full" and full["refresh"]["rows_read"] == 90
    assert full["refresh"]["reason"] == f"no saved state in {out}"
    assert full["not_forecast"] == {"LATAM": 6}
    assert list(full["forecasts"]) == ["AMER", "APAC", "EMEA"]
    for region, entry in full["forecasts"].items():
        assert entry["history_days"] == len(units[region]) == 28
        assert entry["last_week"] == sum(units[region][-7:])
        assert [d["date"] for d in entry["days"]][0] == "2024-03-29"
        assert 0 <= entry["backtest_mape"] < 0.1  # the model fits this data
    assert entry["attempts"] == 1 and full["forecasts"]["APAC"]["attempts"] == 2
    holidays = {r: [d["date"] for d in e["days"] if d["holiday"]]
                for r, e in full["forecasts"].items()}
    assert holidays == {"AMER": [], "APAC": ["2024-03-29"], "EMEA": ["2024-03-29", "2024-04-01"]}
    markdown = (out / "forecast_report.md").read_text()
    assert "- LATAM: 6 days of history; a forecast needs 21" in markdown
    assert "| EMEA | 612 |" in markdown

    # A day of new data: the second run (auto) reads only those rows.
    append_day(data, "2024-03-29", {"AMER": 180, "APAC": 70, "EMEA": 60, "LATAM": 45})
    second = run_cli(tmp_path, "--arg", f"input={data}", "--arg", f"output_dir={out}")
    assert second.returncode == 0, second.stdout + second.stderr
    assert status_of(second.stdout, "full_refresh") == ("SKIPPED", 0)
    assert status_of(second.stdout, "incremental_refresh") == ("SUCCEEDED", 1)
    incremental = report(out)
    assert incremental["refresh"] == {"mode": "incremental", "rows_read": 4,
                                      "reason": "saved state up to 2024-03-28",
                                      "data_until": "2024-03-29"}
    assert incremental["forecasts"]["AMER"]["days"][0]["date"] == "2024-03-30"
    assert incremental["forecasts"]["AMER"]["last_week"] == sum(history(data)["AMER"][-7:])

    # ... and gives exactly what a full refresh of the same data gives.
    again = tmp_path / "again"
    rebuilt = run_cli(tmp_path, "--arg", f"input={data}", "--arg", f"output_dir={again}",
                      "--arg", "refresh=full")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    assert report(again)["forecasts"] == incremental["forecasts"]
    assert report(again)["refresh"]["rows_read"] == 94


def test_the_refresh_argument_picks_the_branch_or_fails_saying_what_to_do(
        tmp_path: Path) -> None:
    out = tmp_path / "out"
    no_state = run_cli(tmp_path, "--arg", "refresh=incremental", "--arg", f"output_dir={out}")
    assert no_state.returncode == 1, no_state.stdout + no_state.stderr
    assert (f"error: task 'plan_refresh' failed: ValueError: cannot refresh incrementally: "
            f"no saved state in {out}; run with --arg refresh=full (or auto) first"
            ) in no_state.stderr
    for task_id in ("full_refresh", "incremental_refresh", "training_data", "forecast",
                    "write_report"):
        assert status_of(no_state.stdout, task_id) == ("UPSTREAM_FAILED", 0)
    assert not out.exists()

    done = run_cli(tmp_path, "--arg", "refresh=full", "--arg", f"output_dir={out}",
                   "--arg", "flaky=none")
    assert done.returncode == 0, done.stdout + done.stderr
    assert status_of(done.stdout, "forecast[1]") == ("SUCCEEDED", 1)  # APAC not flaky now
    # With a saved state, refresh=full still takes the full branch, and
    # refresh=incremental the other one.
    full = run_cli(tmp_path, "--arg", "refresh=full", "--arg", f"output_dir={out}")
    assert status_of(full.stdout, "full_refresh") == ("SUCCEEDED", 1)
    assert status_of(full.stdout, "incremental_refresh") == ("SKIPPED", 0)
    assert report(out)["refresh"]["reason"] == "asked for (refresh=full)"
    incremental = run_cli(tmp_path, "--arg", "refresh=incremental", "--arg",
                          f"output_dir={out}")
    assert status_of(incremental.stdout, "full_refresh") == ("SKIPPED", 0)
    assert status_of(incremental.stdout, "incremental_refresh") == ("SUCCEEDED", 1)
    assert report(out)["refresh"]["rows_read"] == 0

    bad = run_cli(tmp_path, "--arg", "refresh=sometimes", "--arg", f"output_dir={out}")
    assert bad.returncode == 1
    assert ("ValueError: refresh must be one of auto, full, incremental, got 'sometimes'"
            in bad.stderr)


def test_more_failed_regions_than_tolerated_fail_the_run_before_the_report(
        tmp_path: Path) -> None:
    data, out = tmp_path / "demand.csv", tmp_path / "out"
    shutil.copy(DATA, data)
    for date in ("2024-03-26", "2024-03-27", "2024-03-28"):  # MEA opened 3 days ago
        append_day(data, date, {"MEA": 20})
    result = run_cli(tmp_path, "--arg", f"input={data}", "--arg", f"output_dir={out}")
    assert result.returncode == 1, result.stdout + result.stderr
    assert ("error: task 'forecast' failed: ForEachFailed: 2 of 5 items of foreach task "
            "'forecast' failed, more than the 1 it tolerates") in result.stderr
    # MEA sorts between LATAM and the end: items are AMER APAC EMEA LATAM MEA.
    assert status_of(result.stdout, "forecast[3]") == ("FAILED", 1)
    assert status_of(result.stdout, "forecast[4]") == ("FAILED", 1)
    assert status_of(result.stdout, "write_report") == ("UPSTREAM_FAILED", 0)
    assert not (out / "forecast_report.json").exists()


# ------------------------------------------------------- function-flow dev

@needs_emulators
@pytest.mark.timeout(240)
def test_dev_runs_the_sample_with_its_retry_through_the_poller(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_dev(tmp_path, str(SAMPLE), "--arg", f"output_dir={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert status_of(result.stdout, "incremental_refresh") == ("SKIPPED", 0)
    assert status_of(result.stdout, "forecast[1]") == ("SUCCEEDED", 2)
    assert status_of(result.stdout, "forecast[3]") == ("FAILED", 1)
    assert re.search(r"^run demand_forecast-\S+ SUCCEEDED in ", result.stdout, re.M)
    assert report(out)["not_forecast"] == {"LATAM": 6}
    assert list(report(out)["forecasts"]) == ["AMER", "APAC", "EMEA"]
    log = dev_log(tmp_path)
    # Each item ran in the scheduler function; APAC's retry was a timer the
    # poller published after the backoff.
    for index in (0, 2):
        assert re.search(rf" scheduler .*task forecast\[{index}\] attempt 1: succeeded", log)
    assert re.search(r" scheduler .*task forecast\[1\] attempt 2: succeeded", log), log
    assert re.search(r" poller .*[1-9]\d* due timer\(s\) published", log), log
    assert_all_stopped(log)
