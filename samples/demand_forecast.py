"""Sample workflow: next week's demand per region, with a branch, a foreach and retries.

    inspect_source ──> plan_refresh ──┬──> full_refresh ────────┐
                       (branch)       └──> incremental_refresh ─┤  one of the two runs,
                                                                v  the other is SKIPPED
                                                          training_data
                                                                │  (none_failed_min_one_success)
                                                                v
                                        forecast[AMER], forecast[APAC], ...  (foreach, 2 at once)
                                                                │
                                                                v
                                                          write_report

    inspect_source       which regions data/demand.csv has, and up to which date
    plan_refresh         branch: rebuild every series from the whole file (full),
                         or append only the days since the saved state (incremental)
    full_refresh         read every row, build each region's daily series, save the state
    incremental_refresh  read the rows after the saved state's last day, append them
    training_data        the series of whichever refresh ran
    forecast             one item per region: a backtest on the last week, then the
                         next 7 days, lowered on the region's public holidays (fetched
                         from a calendar service that fails now and then: retried)
    write_report         output/forecast_report.json and .md, from every item's result

Run it on this machine (no cloud account needed):

    function-flow run samples/demand_forecast.py                        # full, then...
    function-flow run samples/demand_forecast.py                        # ...incremental
    function-flow run samples/demand_forecast.py --arg refresh=full

Run arguments (all optional):

    refresh     auto (default): full when there is no saved state for this input, else
                incremental; or full, or incremental (which needs a saved state)
    output_dir  where the report and the saved state go (default: samples/output/)
    input       another CSV with the columns date,region,units (one row per region and day)
    flaky       regions whose first calendar call fails (default APAC; none for no failure)

LATAM, in the shipped data, opened a week ago: 6 days of history are too few
to forecast, so its item fails (not retried: only connection errors are), and
the foreach tolerates one failed region. The report says which regions have
no forecast. Results are plain JSON data, because they are stored between
tasks; the saved state is a file in output_dir (deployed, put it on a bucket).
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import statistics
from typing import Any

from function_flow import tasks

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_INPUT = os.path.join(HERE, "data", "demand.csv")
DEFAULT_OUTPUT_DIR = os.path.join(HERE, "output")
STATE_FILE = "forecast_state.json"
COLUMNS = ("date", "region", "units")
REFRESH_MODES = ("auto", "full", "incremental")
#: Days the model looks at (two weeks), plus the week it is backtested on.
FIT_DAYS, BACKTEST_DAYS, HORIZON_DAYS = 14, 7, 7
MIN_HISTORY_DAYS = FIT_DAYS + BACKTEST_DAYS
#: Demand on a public holiday, as a share of a normal day's.
HOLIDAY_FACTOR = 0.5
#: What the calendar service knows (a stand-in for the company's calendar API).
HOLIDAYS = {"EMEA": ["2024-03-29", "2024-04-01"], "APAC": ["2024-03-29"],
            "LATAM": ["2024-03-28", "2024-03-29"]}

job = tasks.Job(name="demand_forecast", schedule_topic="SCHEDULE", max_parallel_tasks=5)


# ---------------------------------------------------------------- helpers
# Plain functions, so the arithmetic is easy to test and reuse elsewhere.

def day(text: str) -> datetime.date:
    return datetime.date.fromisoformat(text)


def read_rows(path: str, after: str | None = None) -> list[dict[str, Any]]:
    """The CSV's rows (dated after `after`, if given); ValueError naming a bad line."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = []
        for row in reader:
            where = f"{path} line {reader.line_num}"
            try:
                date = day((row["date"] or "").strip()).isoformat()
            except ValueError:
                raise ValueError(f"{where}: bad date {row['date']!r}") from None
            region = (row["region"] or "").strip().upper()
            if not region:
                raise ValueError(f"{where}: missing region")
            try:
                units = int((row["units"] or "").strip())
            except ValueError:
                raise ValueError(f"{where}: units {row['units']!r} is not a whole number") \
                    from None
            if units < 0:
                raise ValueError(f"{where}: units must not be negative, got {units}")
            if after is None or date > after:
                rows.append({"date": date, "region": region, "units": units})
    return rows


def add_to_series(series: dict[str, dict[str, list]], rows: list[dict[str, Any]]
                  ) -> dict[str, dict[str, list]]:
    """Each region's daily series ({"dates": [...], "units": [...]}), with `rows` appended."""
    merged = {region: {"dates": list(s["dates"]), "units": list(s["units"])}
              for region, s in series.items()}
    for row in sorted(rows, key=lambda r: (r["region"], r["date"])):
        entry = merged.setdefault(row["region"], {"dates": [], "units": []})
        if entry["dates"] and row["date"] <= entry["dates"][-1]:
            raise ValueError(f"{row['region']} has two rows for {row['date']} "
                             "(or one older than the saved state)")
        entry["dates"].append(row["date"])
        entry["units"].append(row["units"])
    return {region: merged[region] for region in sorted(merged)}


def load_state(output_dir: str) -> dict[str, Any] | None:
    path = os.path.join(output_dir, STATE_FILE)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_state(output_dir: str, source: str, series: dict[str, dict[str, list]]) -> str:
    """Write the series as the state the next incremental refresh starts from.

    Written to a temporary file and renamed, so that a retried or repeated
    task never leaves half a state behind."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, STATE_FILE)
    last = max((s["dates"][-1] for s in series.values() if s["dates"]), default=None)
    with open(path + ".tmp", "w", encoding="utf-8") as handle:
        json.dump({"source": source, "last_date": last, "series": series}, handle)
    os.replace(path + ".tmp", path)
    return last or ""


def predict(dates: list[str], units: list[int], horizon: int) -> list[tuple[str, float]]:
    """The next `horizon` days after `dates[-1]`, from the last FIT_DAYS days:
    last week's mean (the level, centred 3 days before the last day), its
    change from the week before (the trend), and each weekday's ratio to
    that trend line (the season)."""
    window = list(zip(dates[-FIT_DAYS:], units[-FIT_DAYS:]))
    last_week = statistics.fmean(units[-7:])
    trend = (last_week - statistics.fmean(units[-14:-7])) / 7

    def level(position: int) -> float:  # position 0 = the window's first day
        return last_week + trend * (position - (FIT_DAYS - 4))

    ratios: dict[int, list[float]] = {}
    for position, (date, value) in enumerate(window):
        expected = level(position)
        ratios.setdefault(day(date).weekday(), []).append(
            value / expected if expected > 0 else 1.0)
    season = {weekday: statistics.fmean(r) for weekday, r in ratios.items()}
    start = day(dates[-1])
    out = []
    for ahead in range(1, horizon + 1):
        date = start + datetime.timedelta(days=ahead)
        value = level(FIT_DAYS - 1 + ahead) * season.get(date.weekday(), 1.0)
        out.append((date.isoformat(), max(0.0, value)))
    return out


def check_history(region: str, dates: list[str], units: list[int]) -> None:
    """ValueError unless the series is long enough and has a row for every day."""
    if len(units) < MIN_HISTORY_DAYS:
        raise ValueError(f"{region} has {len(units)} days of history; a forecast needs "
                         f"at least {MIN_HISTORY_DAYS}")
    for previous, current in zip(dates, dates[1:]):
        if day(current) - day(previous) != datetime.timedelta(days=1):
            raise ValueError(f"{region} has no row for the day after {previous}")


def forecast_region(region: str, dates: list[str], units: list[int],
                    holidays: list[str]) -> dict[str, Any]:
    """Backtest the model on the last week, then forecast the next HORIZON_DAYS."""
    check_history(region, dates, units)
    backtest = predict(dates[:-BACKTEST_DAYS], units[:-BACKTEST_DAYS], BACKTEST_DAYS)
    actual = units[-BACKTEST_DAYS:]
    errors = [abs(p - a) / a for (_, p), a in zip(backtest, actual) if a]
    days = []
    for date, value in predict(dates, units, HORIZON_DAYS):
        holiday = date in holidays
        days.append({"date": date, "units": round(value * (HOLIDAY_FACTOR if holiday else 1)),
                     "holiday": holiday})
    return {"region": region, "history_days": len(units), "last_week": sum(units[-7:]),
            "next_week": sum(d["units"] for d in days),
            "backtest_mape": round(statistics.fmean(errors), 4) if errors else None,
            "days": days}


def holiday_calendar(region: str, attempt: int, flaky: set[str]) -> list[str]:
    """The region's public holidays, from the (stand-in) calendar service.

    Like a rate-limited API, it fails the first call for the regions in
    `flaky`; the retry (attempt 2) gets the answer. Deterministic on purpose,
    so every run shows the same retry."""
    if region in flaky and attempt == 1:
        raise ConnectionError(f"calendar service: 503 Service Unavailable for {region}, "
                              "try again later")
    return HOLIDAYS.get(region, [])


def output_dir_of(job: tasks.Job) -> str:
    return os.path.abspath(job.get_arguments().get("output_dir") or DEFAULT_OUTPUT_DIR)


def flaky_regions(job: tasks.Job) -> set[str]:
    value = job.get_arguments().get("flaky", "APAC")
    names = value if isinstance(value, list) else str(value or "").split(",")
    return {str(n).strip().upper() for n in names if str(n).strip().lower() not in ("", "none")}


# ------------------------------------------------------------------ tasks

@job.task(task_id="inspect_source")
def inspect_source(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Which regions the source has, and up to which day.

    A warehouse would answer this from metadata (MAX(date), a partition
    list); a CSV has to be read."""
    path = os.path.abspath(job.get_arguments().get("input") or DEFAULT_INPUT)
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return {"path": path, "rows": len(rows),
            "source": os.path.relpath(path, HERE) if path == DEFAULT_INPUT else path,
            "regions": sorted({r["region"] for r in rows}),
            "first_date": min(r["date"] for r in rows),
            "last_date": max(r["date"] for r in rows)}


@job.task(task_id="plan_refresh", deps=["inspect_source"], branch=True)
def plan_refresh(task: tasks.Task, job: tasks.Job) -> str:
    """Branch: which refresh to run. The other one is SKIPPED."""
    mode = str(job.get_arguments().get("refresh") or "auto").strip().lower()
    if mode not in REFRESH_MODES:
        raise ValueError(f"refresh must be one of {', '.join(REFRESH_MODES)}, got {mode!r}")
    source = job.get_task_result("inspect_source")
    output_dir = output_dir_of(job)
    state = load_state(output_dir)
    usable, why_not = False, f"no saved state in {output_dir}"
    if state is not None and state.get("source") != source["path"]:
        why_not = f"the saved state was built from {state.get('source')}"
    elif state is not None and (state.get("last_date") or "") > source["last_date"]:
        why_not = (f"the source ends on {source['last_date']}, before the saved state "
                   f"({state['last_date']}): it was rewritten")
    elif state is not None:
        usable = True
    if mode == "incremental" and not usable:
        raise ValueError(f"cannot refresh incrementally: {why_not}; "
                         "run with --arg refresh=full (or auto) first")
    if mode == "full" or not usable:
        reason = "asked for (refresh=full)" if mode == "full" else why_not
        choice = "full_refresh"
    else:
        reason = f"saved state up to {state['last_date']}"  # type: ignore[index]
        choice = "incremental_refresh"
    job.context.set("refresh_reason", reason)  # for the report: small, shared per run
    return choice


@job.task(task_id="full_refresh", deps=["plan_refresh"])
def full_refresh(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Rebuild every region's series from the whole source, and save it."""
    path = job.get_task_result("inspect_source")["path"]
    rows = read_rows(path)
    series = add_to_series({}, rows)
    last = save_state(output_dir_of(job), path, series)
    return {"mode": "full", "rows_read": len(rows), "last_date": last, "series": series}


@job.task(task_id="incremental_refresh", deps=["plan_refresh"])
def incremental_refresh(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """Append the days after the saved state's last day, and save the result."""
    path = job.get_task_result("inspect_source")["path"]
    output_dir = output_dir_of(job)
    state = load_state(output_dir) or {}
    rows = read_rows(path, after=state.get("last_date"))
    series = add_to_series(state.get("series") or {}, rows)
    last = save_state(output_dir, path, series)
    return {"mode": "incremental", "rows_read": len(rows), "last_date": last,
            "series": series}


@job.task(task_id="training_data", deps=["full_refresh", "incremental_refresh"],
          trigger_rule="none_failed_min_one_success")
def training_data(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """The series of whichever refresh ran (the other is SKIPPED): region -> series."""
    refreshed = job.get_task_result("full_refresh") or job.get_task_result("incremental_refresh")
    return refreshed["series"]


@job.foreach(task_id="forecast", over="training_data", max_concurrency=2,
             tolerated_failures=1, retries=2, retry_backoff=0.5, retry_on=(ConnectionError,))
def forecast(item: dict[str, list], task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """One region (task.item_key): check its history, fetch its holidays, forecast.

    Only ConnectionError is retried: a region with too little history fails
    at once, and the foreach tolerates one such region."""
    region = task.item_key
    check_history(region, item["dates"], item["units"])  # before calling any service
    holidays = holiday_calendar(region, task.attempt, flaky_regions(job))
    result = forecast_region(region, item["dates"], item["units"], holidays)
    result["attempts"] = task.attempt
    return result


@job.task(task_id="write_report", deps=["forecast"])
def write_report(task: tasks.Task, job: tasks.Job) -> dict[str, Any]:
    """The aggregator: every region's forecast (None where its item failed)."""
    forecasts = job.get_task_result("forecast")  # {region: result or None}, by region
    series = job.get_task_result("training_data")
    refreshed = job.get_task_result("full_refresh") or job.get_task_result("incremental_refresh")
    source = job.get_task_result("inspect_source")
    report = {
        "run_id": job.id, "source": source["source"],
        "refresh": {"mode": refreshed["mode"], "rows_read": refreshed["rows_read"],
                    "reason": job.context.get("refresh_reason"),
                    "data_until": refreshed["last_date"]},
        "forecasts": {region: value for region, value in forecasts.items() if value},
        "not_forecast": {region: len(series[region]["units"])
                         for region, value in forecasts.items() if value is None},
    }
    output_dir = output_dir_of(job)
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, "forecast_report.json")
    markdown_path = os.path.join(output_dir, "forecast_report.md")
    with open(json_path, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=2)
        handle.write("\n")
    with open(markdown_path, "w", encoding="utf-8") as handle:
        handle.write(render_markdown(report))
    return {"report": json_path, "markdown": markdown_path, "refresh": refreshed["mode"],
            "rows_read": refreshed["rows_read"], "forecast": sorted(report["forecasts"]),
            "not_forecast": sorted(report["not_forecast"]),
            "next_week_units": sum(f["next_week"] for f in report["forecasts"].values())}


def render_markdown(report: dict[str, Any]) -> str:
    """The same report, for people."""
    refresh = report["refresh"]
    forecasts = report["forecasts"]
    lines = [
        "# Demand forecast", "",
        f"Run `{report['run_id']}`, source `{report['source']}`, data until "
        f"{refresh['data_until']}: {refresh['mode']} refresh ({refresh['reason']}), "
        f"{refresh['rows_read']} rows read.", "",
        "| region | last week | next week | change | backtest error | holidays |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for region, entry in forecasts.items():
        change = entry["next_week"] / entry["last_week"] - 1 if entry["last_week"] else 0.0
        holidays = ", ".join(d["date"] for d in entry["days"] if d["holiday"]) or "-"
        error = "-" if entry["backtest_mape"] is None else f"{entry['backtest_mape']:.1%}"
        lines.append(f"| {region} | {entry['last_week']} | {entry['next_week']} "
                     f"| {change:+.1%} | {error} | {holidays} |")
    if forecasts:
        dates = [d["date"] for d in next(iter(forecasts.values()))["days"]]
        lines += ["", "## Next days", "", "| region | " + " | ".join(dates) + " |",
                  "| --- |" + " ---: |" * len(dates)]
        for region, entry in forecasts.items():
            lines.append(f"| {region} | " + " | ".join(
                f"{d['units']}{'*' if d['holiday'] else ''}" for d in entry["days"]) + " |")
        lines += ["", "\\* public holiday"]
    if report["not_forecast"]:
        lines += ["", "## Not forecast", ""]
        for region, days in report["not_forecast"].items():
            why = (f"a forecast needs {MIN_HISTORY_DAYS}" if days < MIN_HISTORY_DAYS
                   else f"see `function-flow status {report['run_id']}`")
            lines.append(f"- {region}: {days} days of history; {why}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------ Cloud Functions entry points

scheduler = job.make_scheduler()
external_event_listener = job.make_external_event_listener()
poller = job.make_poller()
start = job.make_start()
