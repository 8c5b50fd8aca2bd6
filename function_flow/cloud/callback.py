"""The callback entry point: HTTP requests that complete waiting attempts.

    callback = job.make_callback()   # an HTTP function: --trigger-http

One deployed function serves every kind of answer, routed by the first
segment of the request's path (ROUTES):

    POST /openfaas/<job id>?<signature>   the OpenFaaS queue worker's answer to an async call
    POST /approve, /reject, /heartbeat    signed approvals (approval_routes.py)

Every route checks a signature (signing.py) before it reads the store: an
OpenFaaS answer's URL carries the one this function_flow made; an
approval's body is signed in its headers. Without FUNCTION_FLOW_HMAC_KEY
nothing can be checked: 501, saying to set it.

Bad input changes nothing and never gets a 5xx (a 5xx means "try again"):
a request we cannot read (wrong method, path or headers) gets a 4xx JSON
error; a well-formed answer nothing waits for (an unknown or forged job id,
a duplicate, one that came after the attempt timed out, one for another
job) is logged and answered 200 {"outcome": "ignored", "reason": ...}.
OpenFaaS's queue worker never retries a callback, whatever the status, so
the status only informs logs and people; 200 is what a sender that does
retry must get for an answer that can never be used. Only a store failure
answers 503/500 (delivery.not_done).

A route is `handler(site, request, rest) -> (json, status)`, where `rest`
is the path after the route's segment and `site` (a Site) finds the
attempt a trigger id names and the engine that completes it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from typing import TYPE_CHECKING, Any, Callable, Protocol

from function_flow import signing
from function_flow.cloud import approval_routes, delivery
from function_flow.cloud.delivery import HttpError
from function_flow.core.records import RunRecord, TaskRecord, TaskStatus, Trigger
from function_flow.errors import ConfigurationError
from function_flow.remote import openfaas, web

if TYPE_CHECKING:
    from function_flow.core.definition import TaskSpec
    from function_flow.core.engine import Engine
    from function_flow.core.ports import Store
    from function_flow.tasks import Job

logger = logging.getLogger("function_flow.cloud.callback")

#: Largest callback body read (a result is stored: see values.MAX_VALUE_BYTES).
MAX_CALLBACK_BODY_BYTES = web.MAX_ANSWER_BYTES
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,199}")

Answer = tuple[dict[str, Any], int]


class Site(Protocol):
    """Where a callback's attempt is found and completed."""

    @property
    def store(self) -> "Store": ...

    def engine_for(self, job_name: str) -> "Engine | None":
        """The engine of that job, or None when this site does not serve it."""

    def describe(self) -> str:
        """What this site serves, for "ignored" reasons."""

    @property
    def keys(self) -> signing.Keys:
        """The keys that verify what arrives (ConfigurationError when there are none)."""


class JobSite:
    """A deployed callback function: one job's engine (built on first use)."""

    def __init__(self, job: "Job") -> None:
        self.job = job

    @property
    def store(self) -> "Store":
        return self.job.engine.store

    def engine_for(self, job_name: str) -> "Engine | None":
        return self.job.engine if job_name == self.job.name else None

    def describe(self) -> str:
        return f"job {self.job.name!r}"

    @property
    def keys(self) -> signing.Keys:
        return delivery.receiver_keys(self.job.backend)


@dataclasses.dataclass
class Waiting:
    """An attempt that waits for the event a trigger id names."""

    trigger: Trigger
    run: RunRecord
    task: TaskRecord
    spec: "TaskSpec"
    engine: "Engine"


def find_waiting(site: Site, trigger_id: str) -> Waiting | str:
    """The attempt waiting for `trigger_id`, or why none is (an "ignored" reason)."""
    trigger = site.store.get_trigger(trigger_id)
    if trigger is None:
        return (f"no attempt waits for {trigger_id!r}: an unknown id, or its answer "
                "already arrived")
    run = site.store.get_run(trigger.run_id)
    engine = site.engine_for(run.job_name) if run is not None else None
    if run is None or engine is None:
        owner = f"job {run.job_name!r}" if run is not None else "a run that no longer exists"
        return (f"{trigger_id!r} belongs to {owner}; this callback serves "
                f"{site.describe()}: point the answer at that job's own callback")
    task = site.store.get_tasks(run.run_id, [trigger.task_id])
    spec = engine.graph.spec(trigger.task_id, task[0]) if task else None
    if not task or spec is None:
        return f"{trigger_id!r} names task {trigger.task_id!r}, which run {run.run_id} lacks"
    record = task[0]
    if record.status is not TaskStatus.RUNNING or record.attempt != trigger.attempt:
        return (f"attempt {trigger.attempt} of task {trigger.task_id!r} (run {run.run_id}) "
                f"no longer waits: the task is {record.status.value} at attempt "
                f"{record.attempt} (a late answer, e.g. after the task's timeout)")
    return Waiting(trigger, run, record, spec, engine)


def ignored(where: str, reason: str) -> Answer:
    logger.warning("callback %s ignored: %s", where, reason)
    return {"outcome": "ignored", "reason": reason}, 200


# ------------------------------------------------------------------ OpenFaaS


def openfaas_answer(site: Site, request: Any, rest: str) -> Answer:
    """The queue worker's POST: X-Function-Status and the function's answer as body."""
    if request.method != "POST":
        raise HttpError(405, "OpenFaaS answers are POSTed by the gateway's queue worker")
    job_id = rest.strip("/")
    if not _ID.fullmatch(job_id):
        raise HttpError(400, "the path must be /openfaas/<job id>, the callback URL this "
                             "function_flow gave the gateway")
    status_header = request.headers.get("X-Function-Status", "")
    if not status_header.strip().isdigit() or not 100 <= int(status_header) <= 599:
        raise HttpError(400, "X-Function-Status must be the function's HTTP status; got "
                             f"{status_header[:40]!r}: is this the OpenFaaS queue worker?")
    where = f"/openfaas/{job_id}"
    try:  # before the body is read or the store asked
        delivery.check_signature(openfaas.callback_path(job_id).encode(), request.args,
                                 signing.ATTRIBUTES, site.keys, max_age=math.inf)
    except delivery.Unsigned as exc:
        return ignored(where, f"{exc} (the callback URL this function_flow gave the "
                              "gateway carries its signature)")
    body = delivery.http_body(request, MAX_CALLBACK_BODY_BYTES, "a function's answer")
    found = find_waiting(site, job_id)
    if isinstance(found, str):
        return ignored(where, found)
    call = found.spec.call
    if call is None or call.kind != "openfaas" or not call.asynchronous:
        return ignored(where, f"{job_id!r} is not an asynchronous OpenFaaS call "
                              f"(task {found.trigger.task_id!r} waits for something else)")
    name = request.headers.get("X-Function-Name")
    if name and name.strip("/") != call.target:
        return ignored(where, f"the answer is from OpenFaaS function {name!r}, but job "
                              f"{job_id!r} called {call.target!r}")
    call_id = request.headers.get("X-Call-Id") or "unknown"
    what = f"OpenFaaS function {call.target!r} (async, call id {call_id})"
    ok, value, error = True, None, None
    try:
        value = web.result_of(what, int(status_header), body, request.headers.get(
            "Content-Type"), hint=openfaas.hint(int(status_header)))
    except web.RemoteCallError as exc:
        ok, error = False, f"RemoteCallError: {exc}"
    outcome = found.engine.complete_trigger(job_id, ok=ok, value=value, error=error)
    if outcome in ("stale", "unknown_trigger"):  # a duplicate that raced this one
        return ignored(where, f"the attempt waiting for {job_id!r} was completed meanwhile")
    logger.info("callback %s: OpenFaaS call id %s, status %s: %s", where, call_id,
                status_header, outcome)
    return {"outcome": outcome, "job_id": job_id}, 200


#: Routes by the first path segment. Add one as ROUTES["name"] = handler.
ROUTES: dict[str, Callable[[Site, Any, str], Answer]] = {
    openfaas.CALLBACK_ROUTE: openfaas_answer,
    **approval_routes.ROUTES,
}


# ------------------------------------------------------------ the function


def handle(site: Site, request: Any) -> Answer:
    """Route one HTTP request; every bad request gets a 4xx JSON error."""
    if not delivery.is_http_request(request):
        return {"error": f"callback is an HTTP function; it got {delivery.kind_of(request)}: "
                         "deploy it with --trigger-http"}, 400
    segment, _, rest = (request.path or "/").strip("/").partition("/")
    route = ROUTES.get(segment)
    if route is None:
        known = ", ".join(f"/{name}" for name in sorted(ROUTES))
        logger.warning("callback: no route for %s %s", request.method, request.path)
        return {"error": f"no callback route {request.path!r}; this function serves "
                         f"POSTs to {known}"}, 404
    try:
        return route(site, request, rest)
    except ConfigurationError as exc:  # the deployment's fault, not the sender's
        logger.error("callback %s: %s", request.path, exc)
        return {"error": f"this deployment cannot check signatures: {exc}"}, 501
    except HttpError as exc:
        logger.warning("callback %s: bad request (%d): %s", request.path, exc.status, exc)
        return exc.answer()
    except Exception as exc:
        return delivery.not_done(request, f"callback {request.path}", exc)


def make_callback(job: "Job") -> Callable[[Any], Answer]:
    """Build the callback HTTP function of `job` (its engine is built on first use)."""
    from function_flow.cloud import functions

    functions.log_like_a_cloud_function()
    site = JobSite(job)

    def callback(request: Any) -> Answer:
        return handle(site, request)

    return callback
