"""Sample workflow: a sales report, in the shape of Function Flow's own sample.

    task_1 ──> task_2 ──> task_4 ──┬──> taskr1 ──┐
      │                     │      └──> taskr2 ──┤
      │                     v                    v
      └──────> task_3 ──> task_5 ─────────────> task_6

    task_1  load data/sales.csv, reject rows that fail validation
    task_2  totals per product                task_3  totals per region
    task_4  product ranking and reference prices (volume-weighted averages)
    taskr1  pricing deep-dive for EMEA        taskr2  the same for APAC
            (remote tasks: the remote function regional_pricing answers them)
    task_5  overview: shares of revenue, and the focus region
    task_6  write output/sales_report.json and output/sales_report.md

Run it on this machine (no cloud account needed):

    function-flow run samples/main.py --arg region=EMEA

Run arguments (all optional):

    region      the region the report focuses on (default: the top region)
    output_dir  where to write the report (default: samples/output/)
    input       another CSV with the columns date,region,product,units,unit_price

Deployed, the names at the bottom are the Cloud Functions entry points, and
regional_pricing is one more function, triggered by PRICING_REQUESTS.
Task functions use both call styles Function Flow shows: `def f(task, job)`
and `def f(job, **context)`. Results are plain JSON data, because they are
stored between tasks.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import statistics
from typing import Any

from function_flow import futures, remote, tasks  # noqa: F401  (futures: see the README)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "sales.csv")
DEFAULT_OUTPUT_DIR = os.path.join(HERE, "output")
COLUMNS = ("date", "region", "product", "units", "unit_price")

job = tasks.Job(name="sample_job", schedule_topic="SCHEDULE", max_parallel_tasks=5)


# ---------------------------------------------------------------- helpers
# Plain functions, so the arithmetic is easy to test and reuse elsewhere.

def money(value: float) -> float:
    """Round an amount to cents for reports (sums are kept exact until then)."""
    return round(value, 2)


def validate_row(row: dict[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    """Return (clean row, None) or (None, why the row is rejected)."""
    try:
        datetime.date.fromisoformat((row.get("date") or "").strip())
    except ValueError:
        return None, f"bad date {row.get('date')!r}"
    region = (row.get("region") or "").strip().upper()
    product = (row.get("product") or "").strip().lower()
    if not region:
        return None, "missing region"
    if not product:
        return None, "missing product"
    try:
        units = int((row.get("units") or "").strip())
    except ValueError:
        return None, f"units {row.get('units')!r} is not a whole number"
    try:
        price = float((row.get("unit_price") or "").strip())
    except ValueError:
        return None, f"unit_price {row.get('unit_price')!r} is not a number"
    if units <= 0:
        return None, f"units must be positive, got {units}"
    if price <= 0:
        return None, f"unit_price must be positive, got {price}"
    return {"date": row["date"].strip(), "region": region, "product": product,
            "units": units, "unit_price": price, "revenue": units * price}, None


def totals(rows: list[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    """Units, revenue and order count grouped by `key` ('region' or 'product')."""
    grouped: dict[str, dict[str, Any]] = {}
    for row in rows:
        entry = grouped.setdefault(row[key], {"units": 0, "revenue": 0.0, "orders": 0})
        entry["units"] += row["units"]
        entry["revenue"] += row["revenue"]
        entry["orders"] += 1
    return {name: grouped[name] for name in sorted(grouped)}


def regional_pricing_for(rows: list[dict[str, Any]], reference: dict[str, float],
                         region: str) -> dict[str, Any]:
    """How a region's prices compare with the reference prices.

    price_index = revenue / (units valued at reference prices): above 1.0
    means the region sells above the company-wide average price.
    """
    mine = [r for r in rows if r["region"] == region]
    at_reference = sum(r["units"] * reference[r["product"]] for r in mine)
    revenue = sum(r["revenue"] for r in mine)
    products = {}
    for name, entry in totals(mine, "product").items():
        average = entry["revenue"] / entry["units"]
        products[name] = {"units": entry["units"], "revenue": money(entry["revenue"]),
                          "average_price": money(average),
                          "price_index": round(average / reference[name], 3)}
    return {"region": region, "orders": len(mine), "revenue": money(revenue),
            "units": sum(r["units"] for r in mine),
            "price_index": round(revenue / at_reference, 3) if at_reference else None,
            "products": products}


# ------------------------------------------------------------------ tasks

@job.task(task_id="task_1")
def load_sales(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Read the CSV and keep the rows that pass validation."""
    arguments = job.get_arguments()
    path = arguments.get("input") or DEFAULT_INPUT
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows, rejected = [], []
        for row in reader:
            clean, reason = validate_row(row)
            if clean is None:
                rejected.append({"line": reader.line_num, "reason": reason})
            else:
                rows.append(clean)
    if not rows:
        raise ValueError(f"{path}: no valid rows ({len(rejected)} rejected)")
    regions = sorted({r["region"] for r in rows})
    focus = str(arguments.get("region") or "").strip().upper()
    if focus and focus not in regions:  # fail before any work is done
        raise ValueError(f"region {focus!r} is not in the data; "
                         f"choose one of {', '.join(regions)}")
    return {"source": os.path.relpath(path, HERE) if path == DEFAULT_INPUT else path,
            "rows": rows, "rejected": rejected}  # relpath: no machine paths in reports


@job.task(task_id="task_2", deps=["task_1"])
def product_totals(job: tasks.Job, **context: Any) -> dict[str, Any]:
    """Units, revenue and prices per product, over all regions."""
    rows = job.get_task_result("task_1")["rows"]
    result = {}
    for name, entry in totals(rows, "product").items():
        prices = [r["unit_price"] for r in rows if r["product"] == name]
        result[name] = {"units": entry["units"], "revenue": money(entry["revenue"]),
                        "orders": entry["orders"],
                        "average_price": money(entry["revenue"] / entry["units"]),
                        "median_price": money(statistics.median(prices))}
    return result


@job.task(task_id="task_3", deps=["task_1"])
def region_totals(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Units, revenue and order count per region."""
    rows = job.get_task_result("task_1")["rows"]
    return {name: {"units": e["units"], "revenue": money(e["revenue"]), "orders": e["orders"]}
            for name, e in totals(rows, "region").items()}


@job.task(task_id="task_4", deps=["task_2"])
def product_ranking(job: tasks.Job, **context: Any) -> dict[str, Any]:
    """Rank products by revenue; their average price is the reference price."""
    products = job.get_task_result("task_2")
    ranking = sorted(products, key=lambda name: -products[name]["revenue"])
    return {"ranking": ranking,
            "reference_price": {name: products[name]["average_price"] for name in ranking}}


def pricing_inputs(job: tasks.Job, **context: Any) -> dict[str, Any]:
    """The body of taskr1 and taskr2: what their remote function needs.

    Its return value is sent to the PRICING_REQUESTS topic as Function Flow
    sends it: {"job_id", "job_args", "task_args", "result": this}.
    """
    return {"rows": job.get_task_result("task_1")["rows"],
            "reference_price": job.get_task_result("task_4")["reference_price"]}


# A remote task's timeout covers the wait for its answer (without one, 7 days).
job.task(task_id="taskr1", deps=["task_4"], remote_topic="PRICING_REQUESTS",
         task_args={"region": "EMEA"}, timeout=300, retries=1)(pricing_inputs)
job.task(task_id="taskr2", deps=["task_4"], remote_topic="PRICING_REQUESTS",
         task_args={"region": "APAC"}, timeout=300, retries=1)(pricing_inputs)


@remote.function(topic="PRICING_REQUESTS")
def regional_pricing(payload: dict[str, Any], context: Any) -> dict[str, Any]:
    """The remote function: a pricing deep-dive for the region in task_args.

    Deployed as its own Cloud Function (trigger topic PRICING_REQUESTS);
    `function-flow run` and `dev` host it locally. What it returns is the
    task's result.
    """
    inputs = payload["result"]
    return regional_pricing_for(inputs["rows"], inputs["reference_price"],
                                payload["task_args"]["region"])


@job.task(task_id="task_5", deps=["task_3", "task_4"])
def overview(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Revenue shares per region, the top product, and the focus region."""
    regions = job.get_task_result("task_3")
    ranking = job.get_task_result("task_4")["ranking"]
    total = sum(entry["revenue"] for entry in regions.values())
    by_revenue = sorted(regions, key=lambda name: -regions[name]["revenue"])
    focus = str(job.get_arguments().get("region") or by_revenue[0]).strip().upper()
    rows = [r for r in job.get_task_result("task_1")["rows"] if r["region"] == focus]
    focus_products = totals(rows, "product")
    return {
        "total_revenue": money(total),
        "top_product": ranking[0],
        "regions": {name: dict(regions[name], share=round(regions[name]["revenue"] / total, 4))
                    for name in by_revenue},
        "focus": {"region": focus, "revenue": regions[focus]["revenue"],
                  "share": round(regions[focus]["revenue"] / total, 4),
                  "rank": by_revenue.index(focus) + 1, "of": len(by_revenue),
                  "top_product": max(focus_products,
                                     key=lambda name: focus_products[name]["revenue"])},
    }


@job.task(task_id="task_6", deps=["task_5", "taskr1", "taskr2"])
def write_report(job: tasks.Job, **context: Any) -> dict[str, Any]:
    """Write the report as JSON and Markdown; return where it is."""
    loaded = job.get_task_result("task_1")
    report = {
        "run_id": job.id,
        "source": loaded["source"],
        "rows_used": len(loaded["rows"]),
        "rejected": loaded["rejected"],
        "overview": job.get_task_result("task_5"),
        "products": job.get_task_result("task_2"),
        "regional_pricing": [job.get_task_result("taskr1"), job.get_task_result("taskr2")],
    }
    output_dir = os.path.abspath(job.get_arguments().get("output_dir") or DEFAULT_OUTPUT_DIR)
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "sales_report.json")
    markdown_path = os.path.join(output_dir, "sales_report.md")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    with open(markdown_path, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(report))
    overview_ = report["overview"]
    return {"report": json_path, "markdown": markdown_path,
            "total_revenue": overview_["total_revenue"],
            "focus_region": overview_["focus"]["region"],
            "rows_used": report["rows_used"], "rows_rejected": len(report["rejected"])}


def render_markdown(report: dict[str, Any]) -> str:
    """The same report, for people."""
    overview_ = report["overview"]
    focus = overview_["focus"]
    lines = [
        "# Sales report", "",
        f"Run `{report['run_id']}`, source `{report['source']}`: "
        f"{report['rows_used']} rows used, {len(report['rejected'])} rejected.", "",
        f"Total revenue **{overview_['total_revenue']:,.2f}**; top product "
        f"**{overview_['top_product']}**.", "",
        f"Focus region **{focus['region']}**: {focus['revenue']:,.2f} "
        f"({focus['share']:.1%} of revenue, rank {focus['rank']} of {focus['of']}), "
        f"best seller {focus['top_product']}.", "",
        "## Regions", "", "| region | revenue | share | units | orders |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, entry in overview_["regions"].items():
        lines.append(f"| {name} | {entry['revenue']:,.2f} | {entry['share']:.1%} "
                     f"| {entry['units']} | {entry['orders']} |")
    lines += ["", "## Products", "",
              "| product | revenue | units | average price | median price |",
              "| --- | ---: | ---: | ---: | ---: |"]
    products = report["products"]
    for name in sorted(products, key=lambda n: -products[n]["revenue"]):
        entry = products[name]
        lines.append(f"| {name} | {entry['revenue']:,.2f} | {entry['units']} "
                     f"| {entry['average_price']:.2f} | {entry['median_price']:.2f} |")
    lines += ["", "## Regional pricing (price index 1.0 = average price)", "",
              "| region | revenue | price index |", "| --- | ---: | ---: |"]
    for entry in report["regional_pricing"]:
        lines.append(f"| {entry['region']} | {entry['revenue']:,.2f} | {entry['price_index']} |")
    if report["rejected"]:
        lines += ["", "## Rejected rows", "", "| line | reason |", "| ---: | --- |"]
        lines += [f"| {r['line']} | {r['reason']} |" for r in report["rejected"]]
    return "\n".join(lines) + "\n"


# ------------------------------------------------ Cloud Functions entry points

scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
start = job.make_start()
callback = job.make_callback()
control = job.make_control()  # pause, resume, cancel (HTTP); not public: invoke it with IAM
