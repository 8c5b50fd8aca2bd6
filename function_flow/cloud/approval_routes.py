"""Approvals over HTTP: `POST /approve` and `POST /reject` on the callback entry point.

    POST {callback}/approve  {"token": "...", "data": <any JSON, the task's result>}
    POST {callback}/reject   {"token": "...", "reason": "why"}

Answers are JSON. 200 `{"outcome": "approved"|"rejected", "run_id", "task_id",
"run_status"}` when the decision was recorded. Refusals change nothing:
400 a body that is not a JSON object, without a string "token", a token that
is not one, data that cannot be stored or a reason that is not text; 404 an
unknown token, one already used, or one whose wait ended (a second, or a
concurrent, decision); 409 the run already ended; 410 the token expired
(its timeout passed: the task fails or takes its default); 405 not a POST;
413 a body over 1 MiB. Only the store or bus failing is a 5xx (503 when
transient: worth retrying).

Pluggable: `ROUTES` maps each path to a handler `handler(job, request) ->
(json, status)`; the callback entry point's route table takes them as they
are. `make_approval_callback(job)` is an HTTP function that serves only
these routes, for deployments (and tests) without the shared callback.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from function_flow import approvals
from function_flow.cloud import delivery
from function_flow.cloud.delivery import HttpError

if TYPE_CHECKING:
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.cloud.approvals")

Answer = tuple[dict[str, Any], int]
Handler = Callable[["Job", Any], Answer]
#: Largest body read: the data may be up to records.MAX_VALUE_BYTES of JSON.
MAX_BODY_BYTES = 1024 * 1024


def approve(job: "Job", request: Any) -> Answer:
    """POST /approve: the waiting task succeeds with the body's "data"."""
    body = _body(request, "approve")
    return _answer(lambda: approvals.approve(job.engine, body["token"], body.get("data")))


def reject(job: "Job", request: Any) -> Answer:
    """POST /reject: the waiting task fails with the body's "reason", without retries."""
    body = _body(request, "reject")
    return _answer(lambda: approvals.reject(job.engine, body["token"], body.get("reason")))


ROUTES: dict[str, Handler] = {"/approve": approve, "/reject": reject}


def handle(job: "Job", request: Any) -> Answer:
    """Serve one request on ROUTES; every refusal is a 4xx JSON error."""
    path = "/" + str(getattr(request, "path", "") or "").strip("/")
    handler = ROUTES.get(path)
    try:
        if handler is None:
            raise HttpError(404, f"no route {path}: POST a JSON body to "
                                 f"{' or '.join(ROUTES)}")
        return handler(job, request)
    except HttpError as exc:
        logger.warning("approval callback: refused (%d): %s", exc.status, exc)
        return exc.answer()


def make_approval_callback(job: "Job") -> Callable[[Any], Answer]:
    """An HTTP Cloud Function serving /approve and /reject for `job`."""

    def approval_callback(request: Any) -> Answer:
        try:
            return handle(job, request)
        except Exception as exc:  # the store or bus, not the request
            return delivery.not_done(request, "approval callback", exc)

    return approval_callback


def _body(request: Any, route: str) -> dict[str, Any]:
    if not delivery.is_http_request(request):
        raise HttpError(400, f"the approval callback is an HTTP function; it got "
                             f"{delivery.kind_of(request)}")
    if request.method != "POST":
        raise HttpError(405, f"{request.method} is not allowed: POST a JSON body to /{route}")
    try:
        body = delivery.parse_json(delivery.http_body(request, MAX_BODY_BYTES),
                                   "request body", allow_nan=False)
    except ValueError as exc:
        raise HttpError(400, str(exc)) from exc
    if not isinstance(body, dict):
        raise HttpError(400, f"the body must be a JSON object like "
                             f"{{\"token\": \"...\"}}, got {delivery.kind_of(body)}")
    if not isinstance(body.get("token"), str):
        raise HttpError(400, "the body needs \"token\": the approval token, a string")
    return body


def _answer(decide: Callable[[], approvals.Decision]) -> Answer:
    try:
        decision = decide()
    except approvals.ApprovalError as exc:
        raise HttpError(exc.status, str(exc)) from exc
    outcome = "approved" if decision.approved else "rejected"
    logger.info("approval callback: run %s task %s %s", decision.run_id, decision.task_id,
                outcome)
    return {"outcome": outcome, "run_id": decision.run_id, "task_id": decision.task_id,
            "run_status": decision.run_status.value}, 200
