"""The sample workflow (samples/main.py) runs end to end on the embedded backend.

Expected numbers are computed here, independently, from the shipped CSV with
the csv module, so the test fails if the sample's arithmetic or its data flow
between tasks is wrong.
"""

from __future__ import annotations

import csv
import datetime
import importlib.util
import json
import pathlib
import uuid
from collections import defaultdict

import pytest

from function_flow import backends
from function_flow.core.records import RunStatus, TaskStatus

SAMPLE = pathlib.Path(__file__).resolve().parent.parent / "samples" / "main.py"
CSV_PATH = SAMPLE.parent / "data" / "sales.csv"
EXPECTED_DEPS = {
    "task_1": [], "task_2": ["task_1"], "task_3": ["task_1"], "task_4": ["task_2"],
    "taskr1": ["task_4"], "taskr2": ["task_4"], "task_5": ["task_3", "task_4"],
    "task_6": ["task_5", "taskr1", "taskr2"],
}


def load_sample():
    """A fresh copy of the sample module (its Job is module state)."""
    spec = importlib.util.spec_from_file_location(f"sample_main_{uuid.uuid4().hex}", SAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def sample(tmp_path):
    module = load_sample()
    backend = backends.embedded(db_path=str(tmp_path / "runs.db"), workers=4)
    module.job.use_backend(backend)
    yield module
    backend.close()


def valid_rows() -> list[dict]:
    """The CSV rows a careful reader would keep, parsed independently."""
    rows = []
    with open(CSV_PATH, newline="") as handle:
        for row in csv.DictReader(handle):
            try:
                datetime.date.fromisoformat(row["date"])
                units, price = int(row["units"]), float(row["unit_price"])
            except ValueError:
                continue
            if row["region"] and row["product"] and units > 0 and price > 0:
                rows.append({"region": row["region"], "product": row["product"],
                             "units": units, "revenue": units * price})
    return rows


def test_sample_has_upstream_shape_and_entry_points():
    module = load_sample()
    assert {t.id: sorted(t.deps) for t in module.job.tasks} == EXPECTED_DEPS
    assert module.job.name == "sample_job"
    assert module.job.schedule_topic == "SCHEDULE"
    assert module.job.max_parallel_tasks == 5
    assert {t.id: t.task_args for t in module.job.tasks}["taskr1"] == {"region": "EMEA"}
    assert {t.id: t.task_args for t in module.job.tasks}["taskr2"] == {"region": "APAC"}
    for name in ("scheduler", "external_event_listener", "poller", "start", "callback",
                 "control"):
        assert callable(getattr(module, name))


def test_sample_run_computes_report_from_csv(sample, tmp_path):
    out = tmp_path / "out"
    run = sample.job.run({"region": "EMEA", "output_dir": str(out)}, timeout=60)

    assert run.status is RunStatus.SUCCEEDED, run.error
    records = {r.task_id: r for r in sample.job.engine.task_records(run.run_id)}
    assert set(records) == set(EXPECTED_DEPS)
    for record in records.values():
        assert record.status is TaskStatus.SUCCEEDED
        assert record.attempt == 1, f"{record.task_id} ran {record.attempt} times"

    rows = valid_rows()
    total = sum(r["revenue"] for r in rows)
    by_region = defaultdict(float)
    by_product = defaultdict(float)
    for r in rows:
        by_region[r["region"]] += r["revenue"]
        by_product[r["product"]] += r["revenue"]
    emea_rows = [r for r in rows if r["region"] == "EMEA"]
    reference = {p: by_product[p] / sum(r["units"] for r in rows if r["product"] == p)
                 for p in by_product}
    emea_index = sum(r["revenue"] for r in emea_rows) / \
        sum(r["units"] * round(reference[r["product"]], 2) for r in emea_rows)
    ranked_regions = sorted(by_region, key=lambda k: -by_region[k])

    summary = records["task_6"].result
    assert summary["total_revenue"] == pytest.approx(total, abs=0.005)
    assert summary["focus_region"] == "EMEA"
    assert summary["rows_used"] == len(rows)
    assert summary["rows_rejected"] == sum(1 for _ in open(CSV_PATH)) - 1 - len(rows)

    report_path = pathlib.Path(summary["report"])
    assert report_path.parent == out and report_path.exists()
    report = json.loads(report_path.read_text())
    assert report["run_id"] == run.run_id
    overview = report["overview"]
    assert overview["total_revenue"] == pytest.approx(total, abs=0.005)
    for region, revenue in by_region.items():
        assert overview["regions"][region]["revenue"] == pytest.approx(revenue, abs=0.005)
        assert overview["regions"][region]["share"] == pytest.approx(revenue / total, abs=1e-4)
    assert list(overview["regions"]) == ranked_regions
    assert overview["top_product"] == max(by_product, key=by_product.get)
    assert overview["focus"]["rank"] == ranked_regions.index("EMEA") + 1
    for product, revenue in by_product.items():
        assert report["products"][product]["revenue"] == pytest.approx(revenue, abs=0.005)
    emea = report["regional_pricing"][0]
    assert emea["region"] == "EMEA"
    assert emea["revenue"] == pytest.approx(by_region["EMEA"], abs=0.005)
    assert emea["price_index"] == pytest.approx(emea_index, abs=0.001)
    assert report["regional_pricing"][1]["region"] == "APAC"

    markdown = pathlib.Path(summary["markdown"]).read_text()
    assert f"{total:,.2f}" in markdown
    assert "Focus region **EMEA**" in markdown


def test_sample_tasks_start_after_their_dependencies(sample, tmp_path):
    run = sample.job.run({"output_dir": str(tmp_path)}, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    records = {r.task_id: r for r in sample.job.engine.task_records(run.run_id)}
    for task_id, deps in EXPECTED_DEPS.items():
        for dep in deps:
            assert records[task_id].started_at >= records[dep].finished_at, \
                f"{task_id} started before its dependency {dep} finished"


def test_sample_without_region_focuses_on_top_region(sample, tmp_path):
    run = sample.job.run({"output_dir": str(tmp_path)}, timeout=60)
    assert run.status is RunStatus.SUCCEEDED, run.error
    by_region = defaultdict(float)
    for r in valid_rows():
        by_region[r["region"]] += r["revenue"]
    summary = sample.job.get_task_result("task_6")
    assert summary["focus_region"] == max(by_region, key=by_region.get)


def test_sample_unknown_region_fails_first_task_with_choices(sample, tmp_path):
    run = sample.job.run({"region": "MARS", "output_dir": str(tmp_path)}, timeout=60)
    assert run.status is RunStatus.FAILED
    assert "task 'task_1' failed" in run.error
    assert "'MARS' is not in the data; choose one of AMER, APAC, EMEA" in run.error
    records = {r.task_id: r for r in sample.job.engine.task_records(run.run_id)}
    # Everything waited for task_1, so nothing else can run now, and says why.
    assert all(records[t].status is TaskStatus.UPSTREAM_FAILED
               for t in EXPECTED_DEPS if t != "task_1")
    assert not (tmp_path / "sales_report.json").exists()
