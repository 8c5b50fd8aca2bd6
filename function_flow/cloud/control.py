"""The `control` entry point: pause, resume, cancel or redrive a run over HTTP.

    control = job.make_control()     # an HTTP function (--trigger-http), NOT public

    POST {"action": "pause" | "resume" | "cancel" | "redrive", "run_id": "<run id>"}

It is not public: deploy it without unauthenticated access
(`--no-allow-unauthenticated`), so that only principals granted
roles/cloudfunctions.invoker (roles/run.invoker on 2nd gen) may call it,
with an identity token (`Authorization: Bearer $(gcloud auth
print-identity-token)`). The function itself checks nothing: IAM in front
of it does.

Answers are JSON. 200 when the action was applied or already in effect:
`{"action", "run_id", "outcome", "run_status"}` where outcome is "paused"
or "already_paused", "resumed" or "not_paused", "cancelled", "redriven"; run_status
is what `status` shows (PAUSED for a paused run); a cancel adds
"tasks_cancelled", a resume "tasks_sent", a redrive "redrives". Refusals
change nothing: 400 a body that is not a JSON object, an unknown "action", a
"run_id" that is not a run id; 404 no such run (or a run of another job); 409
the run already ended (its "run_status" says how), or cannot be redriven; 405
not a POST; 413 a body over 64 KiB.
Only the store or bus failing is a 5xx (503 when transient: worth
retrying, and every action may be repeated safely).

The actions are core/control.ACTIONS: one more there (redrive) is one more
action here.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from function_flow.cloud import delivery
from function_flow.cloud.delivery import HttpError
from function_flow.core import control, starts
from function_flow.core.redrive import RedriveRefusedError
from function_flow.errors import RunEndedError, RunNotFoundError

if TYPE_CHECKING:
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.cloud.control")

Answer = tuple[dict[str, Any], int]
#: Largest body read: an action and a run id.
MAX_BODY_BYTES = 64 * 1024


def handle(job: "Job", request: Any) -> Answer:
    """One control request: parse it, act on the run, answer JSON."""
    if not delivery.is_http_request(request):
        return {"error": f"control is an HTTP function; it got {delivery.kind_of(request)}: "
                         "deploy it with --trigger-http"}, 400
    try:
        action, run_id = _parse(request)
        engine = job.engine
        run = engine.store.get_run(run_id)
        if run is None or run.job_name != job.name:
            where = f"; it is a run of job {run.job_name!r}" if run is not None else ""
            raise HttpError(404, f"no run {run_id!r} of job {job.name!r}{where}; "
                                 "nothing was changed")
        outcome = control.ACTIONS[action](engine, run_id)
    except HttpError as exc:
        logger.warning("control: refused (%d): %s", exc.status, exc)
        return exc.answer()
    except RunNotFoundError as exc:
        return {"error": str(exc)}, 404
    except RunEndedError as exc:
        logger.warning("control: refused: %s", exc)
        return {"error": str(exc), "run_id": exc.run_id, "run_status": exc.status}, 409
    except RedriveRefusedError as exc:  # running, succeeded, or a changed definition
        logger.warning("control: refused: %s", exc)
        return {"error": str(exc), "run_id": run_id}, 409
    except Exception as exc:
        return delivery.not_done(request, "control", exc)
    logger.info("control: %s run %s: %s", action, run_id, outcome.outcome)
    return outcome.to_json(), 200


def _parse(request: Any) -> tuple[str, str]:
    if (request.path or "/").strip("/"):
        raise HttpError(404, f"no control route {request.path!r}: POST a JSON body to /")
    body = delivery.posted_object(request, MAX_BODY_BYTES,
                                  '{"action": "pause", "run_id": "..."}',
                                  what="a control request")
    action, run_id = body.get("action"), body.get("run_id")
    if not isinstance(action, str) or action not in control.ACTIONS:
        raise HttpError(400, f"\"action\" must be one of {', '.join(control.ACTIONS)}; "
                             f"got {str(action)[:60]!r}")
    if not isinstance(run_id, str) or not starts.RUN_ID.fullmatch(run_id):
        raise HttpError(400, f"\"run_id\" must be a run id: {starts.RUN_ID_RULE}")
    return action, run_id


def make_control(job: "Job") -> Callable[[Any], Answer]:
    """Build the control HTTP function of `job` (its engine is built on first use)."""
    from function_flow.cloud import functions

    functions.log_like_a_cloud_function()

    def control_function(request: Any) -> Answer:
        return handle(job, request)

    return control_function
