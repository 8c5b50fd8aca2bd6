"""Approvals over HTTP: `POST /approve` and `POST /reject` on the callback entry point.

    POST {callback}/approve    {"token": "...", "data": <any JSON, the task's result>}
    POST {callback}/reject     {"token": "...", "reason": "why"}
    POST {callback}/heartbeat  {"token": "..."}  (a task token's SendTaskHeartbeat)

The body is signed like every internal message (signing.py): headers
X-Function-Flow-Timestamp and X-Function-Flow-Signature, an HMAC-SHA256 of
`<timestamp>.<body>` keyed by FUNCTION_FLOW_HMAC_KEY; the token alone does
not decide over HTTP.

Answers are JSON. 200 `{"outcome": "approved"|"rejected", "run_id",
"task_id", "run_status"}` when the decision was recorded; 200 `{"outcome":
"heartbeat", "run_id", "task_id", "until"}` for a heartbeat (until: when the
wait now ends, epoch seconds; null for a wait that takes no heartbeats). Refusals change nothing:
400 a body that is not a JSON object, without a string "token", a token that
is not one, data that cannot be stored or a reason that is not text; 404 an
unknown token, one already used, or one whose wait ended (a second, or a
concurrent, decision); 409 the run already ended; 410 the token expired
(its timeout passed: the task fails or takes its default); 401 a body that
is unsigned, forged, signed with another key or over 5 minutes old (read
before anything is looked up); 405 not a POST;
413 a body over 1 MiB. Only the store or bus failing is a 5xx (503 when
transient: worth retrying).

They are two routes of the callback entry point (cloud/callback.py, which
also serves OpenFaaS's answers): `callback = job.make_callback()`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from function_flow import approvals
from function_flow.cloud import delivery
from function_flow.cloud.delivery import HttpError

if TYPE_CHECKING:
    from function_flow.cloud.callback import Site
    from function_flow.core.engine import Engine

logger = logging.getLogger("function_flow.cloud.approvals")

Answer = tuple[dict[str, Any], int]
#: Largest body read: the data may be up to values.MAX_VALUE_BYTES of JSON.
MAX_BODY_BYTES = 1024 * 1024


def approve(site: "Site", request: Any, rest: str) -> Answer:
    """POST /approve: the waiting task succeeds with the body's "data"."""
    body = _body(site, request, "approve", rest)
    return _answer(lambda: approvals.approve(_engine(site, body["token"]), body["token"],
                                             body.get("data")))


def reject(site: "Site", request: Any, rest: str) -> Answer:
    """POST /reject: the waiting task fails with the body's "reason", without retries."""
    body = _body(site, request, "reject", rest)
    return _answer(lambda: approvals.reject(_engine(site, body["token"]), body["token"],
                                            body.get("reason")))


def heartbeat(site: "Site", request: Any, rest: str) -> Answer:
    """POST /heartbeat: the waiting task's worker is alive (its HeartbeatSeconds restart)."""
    body = _body(site, request, "heartbeat", rest)
    try:
        waiting = approvals.find(site.store, body["token"], time.time())
        until = approvals.heartbeat(site.store, body["token"], time.time())
    except approvals.ApprovalError as exc:
        raise HttpError(exc.status, str(exc)) from exc
    return {"outcome": "heartbeat", "run_id": waiting.run.run_id,
            "task_id": waiting.task_id, "until": until}, 200


#: The callback entry point's routes this module serves (cloud/callback.py).
ROUTES: dict[str, Callable[["Site", Any, str], Answer]] = {
    "approve": approve, "reject": reject, "heartbeat": heartbeat}


def _engine(site: "Site", token: str) -> "Engine":
    """The engine of the job whose run the token's attempt belongs to."""
    waiting = approvals.find(site.store, token, time.time())
    engine = site.engine_for(waiting.run.job_name)
    if engine is None:
        raise approvals.UnknownToken(
            f"the token belongs to a run of job {waiting.run.job_name!r}, and this callback "
            f"serves {site.describe()}; nothing was changed")
    return engine


def _body(site: "Site", request: Any, route: str, rest: str) -> dict[str, Any]:
    if rest:
        raise HttpError(404, f"no route /{route}/{rest}: POST a JSON body to /{route}")
    body = delivery.posted_object(request, MAX_BODY_BYTES, '{"token": "..."}',
                                  signed_by=lambda: site.keys,
                                  what="an approval or a rejection")
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
