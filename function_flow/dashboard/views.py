"""The dashboard's pages: the runs, one run (its graph and tasks), one task, a foreach's items.

Every page reads the store when it is asked for (nothing is cached but
the workflow definitions), so a reload always shows the records as they
are. Query parameters are checked, and a bad one is a 400 page saying
which; an unknown run or task is a 404 page. What api.py answers as JSON
comes from the same functions (`run_page`, `runs_page`, `items_page`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from flask import Blueprint, abort, render_template, request, url_for

from function_flow.cli import inspect, progress
from function_flow.core.control import shown_status
from function_flow.core.graph import RunGraph
from function_flow.core.records import RunRecord, RunStatus, TaskStatus
from function_flow.dashboard import graph, layout, model, responses
from function_flow.dashboard.app import Dashboard, dashboard
from function_flow.dashboard.details import task_detail

blueprint = Blueprint("pages", __name__)

PAGE_SIZE, MAX_PAGE_SIZE = 50, 500
ITEMS_PER_PAGE = 100
MAX_PARAMETER_CHARS = 500


class BadRequest(Exception):
    """A query parameter that cannot be used: 400, saying which."""


@blueprint.errorhandler(BadRequest)
def _bad_request(exc: BadRequest) -> Any:
    return responses.error(400, str(exc))


def parameter(name: str) -> str | None:
    value = request.args.get(name)
    if value is not None and len(value) > MAX_PARAMETER_CHARS:
        raise BadRequest(f"the {name!r} parameter is longer than {MAX_PARAMETER_CHARS} "
                         "characters")
    return value or None


def number(name: str, default: int, low: int, high: int) -> int:
    text = parameter(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise BadRequest(f"the {name!r} parameter must be a whole number, got {text[:40]!r}")
    if not low <= value <= high:
        raise BadRequest(f"the {name!r} parameter must be from {low} to {high}, got {value}")
    return value


def status_parameter(choices: tuple[str, ...]) -> str | None:
    status = parameter("status")
    if status is not None and status not in choices:
        raise BadRequest(f"status must be one of {', '.join(choices)}; got {status[:40]!r}")
    return status


def found_run(dash: Dashboard, run_id: str) -> RunRecord:
    store = dash.store()
    run = store.get_run(run_id) if store is not None else None
    if run is None:
        abort(responses.error(404, f"no run with id {run_id!r} in {dash.description}",
                              run_id=run_id))
    return run


# ------------------------------------------------------------------ runs


@dataclasses.dataclass
class RunsPage:
    runs: list[RunRecord]
    notes: dict[str, str]
    job: str | None
    status: str | None
    limit: int
    #: (created_at, run_id) of the page's last run when there are older ones.
    older: tuple[float, str] | None

    def to_json(self) -> dict[str, Any]:
        return {"runs": [{"run_id": r.run_id, "job_name": r.job_name,
                          "status": shown_status(r), "note": self.notes.get(r.run_id),
                          "created_at": r.created_at, "finished_at": r.finished_at,
                          "redrives": r.redrives} for r in self.runs],
                "older": f"{self.older[0]!r}:{self.older[1]}" if self.older else None}


def runs_page() -> RunsPage:
    """The runs the query asks for: newest first, by job and status, a page at a time."""
    dash = dashboard()
    job = parameter("job")
    status = status_parameter(tuple(s.value for s in RunStatus if s.name == s.value))
    limit = number("limit", PAGE_SIZE, 1, MAX_PAGE_SIZE)
    before = _cursor(parameter("before"))
    store = dash.store()
    found = [] if store is None else store.list_runs(
        limit + 1, RunStatus(status) if status else None, job_name=job, before=before,
        newest_first=True)
    runs = found[:limit]
    notes = {}
    for run in runs:
        state = inspect.owner_of(dash.kind, run)
        if state == "gone":
            notes[run.run_id] = "process gone"
        elif run.blocked and run.status is RunStatus.RUNNING:
            notes[run.run_id] = "blocked: its definition changed"
    older = (runs[-1].created_at, runs[-1].run_id) if len(found) > limit else None
    return RunsPage(runs, notes, job, status, limit, older)


def _cursor(text: str | None) -> tuple[float, str] | None:
    """`before=<created_at>:<run_id>` (what an "older" link carries)."""
    if text is None:
        return None
    stamp, sep, run_id = text.partition(":")
    try:
        value = float(stamp)
    except ValueError:
        value = math.nan
    if not sep or not run_id or not math.isfinite(value):
        raise BadRequest("the 'before' parameter must be <created_at>:<run_id>, as the "
                         "dashboard's 'older' link gives it")
    return value, run_id


@blueprint.get("/")
def runs() -> Any:
    page = runs_page()
    older = url_for(".runs", job=page.job, status=page.status, limit=page.limit,
                    before=f"{page.older[0]!r}:{page.older[1]}") if page.older else None
    return render_template("runs.html", page=page, older=older, progress=progress,
                           shown_status=shown_status, statuses=[s.value for s in RunStatus
                                                                if s.name == s.value])


# ------------------------------------------------------------------ a run


def run_page(run_id: str, live: bool = False) -> tuple[RunRecord, model.RunView]:
    """The run and everything its page shows (`open=` names the groups shown open).

    The page reads all of the run's records; its live updates (`live`) read
    only those that can have changed since (dashboard/live.py).
    """
    dash = dashboard()
    run = found_run(dash, run_id)
    store = dash.store()
    assert store is not None
    expanded = [g for g in request.args.getlist("open") if len(g) <= MAX_PARAMETER_CHARS]
    dag, why = dash.definitions.dag_for(run)
    records = dash.live.read(store, run, lambda found: RunGraph(
        dag or graph.from_records(run.job_name, found)), full=not live)
    view = model.run_view(run, records, dag, expanded)
    view.undefined_because = why
    return run, view


def poll_seconds(view: model.RunView) -> float:
    """How often the page asks for news: each look draws the whole run again."""
    return min(10.0, max(1.0, view.records / 1000))


@blueprint.get("/runs/<run_id>")
def run(run_id: str) -> Any:
    run, view = run_page(run_id)
    opened = request.args.getlist("open")

    def toggle(node: str) -> str:
        groups = [g for g in opened if g != node] if node in opened else opened + [node]
        return url_for(".run", run_id=run_id, open=groups)

    dash = dashboard()
    return render_template(
        "run.html", run=run, view=view, toggle=toggle, progress=progress,
        interval=poll_seconds(view), layout=layout, model=model,
        owner=inspect.owner_of(dash.kind, run), kind=dash.kind,
        live_url=url_for("api.run_state", run_id=run_id, open=opened))


@blueprint.get("/runs/<run_id>/tasks/<path:task_id>")
def task(run_id: str, task_id: str) -> Any:
    dash = dashboard()
    run = found_run(dash, run_id)
    store = dash.store()
    assert store is not None
    detail = task_detail(store, run_id, task_id)
    if detail is None:
        return responses.error(404, f"run {run_id} has no task {task_id!r}", run_id=run_id)
    return render_template("task.html", run=run, task=detail, shown_status=shown_status,
                           live_url=url_for("api.task_state", run_id=run_id,
                                            task_id=task_id))


# ------------------------------------------------------- a foreach's items


@dataclasses.dataclass
class ItemsPage:
    node: str
    items: list[Any]
    total: int
    page: int
    pages: int
    status: str | None


def items_page(run_id: str, node: str) -> tuple[RunRecord, ItemsPage]:
    """One page of a foreach's items; with `status`, only items in that status.

    Reads the page's records only (by id), or, filtered, the run's tasks in
    that status (an indexed query): never all 10,000 items.
    """
    from function_flow.core import foreach

    dash = dashboard()
    run = found_run(dash, run_id)
    store = dash.store()
    assert store is not None
    status = status_parameter(tuple(s.value for s in TaskStatus if s.name == s.value))
    page = number("page", 1, 1, 10**9)
    found = store.get_tasks(run_id, [node])
    if not found:
        abort(responses.error(404, f"run {run_id} has no task {node!r}", run_id=run_id))
    if not foreach.is_summary_of(node, found[0].result) and not _may_have_items(
            dash, run, node, found[0]):
        abort(responses.error(404, f"task {node!r} of run {run_id} is not a foreach: it has "
                                   "no items", run_id=run_id))
    start = (page - 1) * ITEMS_PER_PAGE
    if status is None:
        summary = found[0].result
        total = int(summary.get("items", 0)) if foreach.is_summary(summary) else 0
        ids = [foreach.item_id(node, i) for i in range(start, min(total, start + ITEMS_PER_PAGE))]
        items = store.get_tasks(run_id, ids)
    else:
        matching = sorted((t for t in store.find_tasks(run_id, TaskStatus(status), 10**6)
                           if graph.is_item(t) and graph.foreach_node(t) == node),
                          key=graph.item_index)
        total, items = len(matching), matching[start:start + ITEMS_PER_PAGE]
    pages = max(1, -(-total // ITEMS_PER_PAGE))
    return run, ItemsPage(node, items, total, page, pages, status)


def _may_have_items(dash: Any, run: RunRecord, node: str, record: Any) -> bool:
    """Whether `node` is a foreach whose items are not added yet: by its
    definition when the dashboard has it, else by its record (not ended)."""
    job = dash.definitions.job_for(run).job
    if job is not None:
        spec = job.dag.spec_of(node)
        return spec is not None and spec.foreach is not None
    return not record.status.is_final


@blueprint.get("/runs/<run_id>/items/<path:node>")
def items(run_id: str, node: str) -> Any:
    run, page = items_page(run_id, node)
    return render_template("items.html", run=run, page=page, progress=progress,
                           statuses=[s.value for s in TaskStatus if s.name == s.value])
