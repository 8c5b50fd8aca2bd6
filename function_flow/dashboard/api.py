"""The dashboard's JSON, and its actions (POSTs, checked by guard.py first).

    GET  /api/runs?job=&status=&before=&limit=    the runs list
    GET  /api/runs/<run>?open=...                 what the run page updates live
    GET  /api/runs/<run>/tasks/<task>             details.task_detail
    GET  /api/runs/<run>/items/<node>?page=&status=
    POST /runs/<run>/actions/<pause|resume|cancel|redrive>
    POST /runs/<run>/approvals   decision=approve|reject, token, data (JSON), reason

An action answers JSON {"message"} (200) or {"error"} (404 unknown run,
409 finished run or refused redrive, 400 bad input, 403 cross-site) to a
script, and to a form a redirect to the run's page showing the message,
or the error page.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, request, url_for

from function_flow.dashboard import actions, responses, views
from function_flow.dashboard.app import dashboard
from function_flow.dashboard.details import preview, task_detail

blueprint = Blueprint("api", __name__)


@blueprint.errorhandler(views.BadRequest)
def _bad_request(exc: views.BadRequest) -> Any:
    return responses.error(400, str(exc))


@blueprint.errorhandler(actions.Refused)
def _refused(exc: actions.Refused) -> Any:
    return responses.error(exc.status, str(exc))


@blueprint.get("/api/runs")
def runs() -> Any:
    return jsonify(views.runs_page().to_json())


@blueprint.get("/api/runs/<run_id>")
def run_state(run_id: str) -> Any:
    _, view = views.run_page(run_id, live=True)
    return jsonify(view.live_state())


@blueprint.get("/api/runs/<run_id>/tasks/<path:task_id>")
def task_state(run_id: str, task_id: str) -> Any:
    dash = dashboard()
    views.found_run(dash, run_id)
    store = dash.store()
    assert store is not None
    detail = task_detail(store, run_id, task_id)
    if detail is None:
        return responses.error(404, f"run {run_id} has no task {task_id!r}")
    return jsonify(detail)


@blueprint.get("/api/runs/<run_id>/items/<path:node>")
def items(run_id: str, node: str) -> Any:
    _, page = views.items_page(run_id, node)
    return jsonify({"node": page.node, "total": page.total, "page": page.page,
                    "pages": page.pages, "status": page.status,
                    "items": [{"task_id": t.task_id, "status": t.status.value,
                               "attempt": t.attempt, "key": preview(t.item_key),
                               "error": t.error} for t in page.items]})


@blueprint.post("/runs/<run_id>/actions/<action>")
def act(run_id: str, action: str) -> Any:
    return _answer(run_id, actions.act(dashboard(), run_id, action))


@blueprint.post("/runs/<run_id>/approvals")
def decide(run_id: str) -> Any:
    form = request.form
    decision = form.get("decision")
    if decision not in ("approve", "reject"):
        raise actions.Refused(400, "decision must be approve or reject; nothing was changed")
    token = form.get("token", "")
    data = None
    if decision == "approve" and form.get("data", "").strip():
        from function_flow.cloud.delivery import parse_json

        try:
            data = parse_json(form["data"], "the data", allow_nan=False)
        except ValueError as exc:
            raise actions.Refused(400, f"{exc}; nothing was changed") from None
    message = actions.decide(dashboard(), run_id, token, approve=decision == "approve",
                             data=data, reason=form.get("reason") or None)
    return _answer(run_id, message)


def _answer(run_id: str, message: str) -> Any:
    if responses.wants_json():
        return jsonify({"message": message})
    flash(message)
    return redirect(url_for("pages.run", run_id=run_id), code=303)
