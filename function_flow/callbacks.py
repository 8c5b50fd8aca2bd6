"""The completion callback: a run's final status POSTed, signed, to the URL its start gave.

`job.start(args, callback_url=URL)`, the `start` function's
X-Function-Flow-Callback-Url header, or `function-flow run --callback-url`
give a run a `__callback__` hook (core/hooks.py): the last thing the run
does, after its on_failure and on_end hooks. It POSTs

    {"run_id", "job", "status", "error", "results", "failed_tasks",
     "created_at", "finished_at", "redrives"}

as JSON (results: each succeeded sink's result; one stored as a blob is
sent as its reference, {"function_flow_blob": {...}}), with the run id in
X-Function-Flow-Run-Id and an HMAC-SHA256 signature (signing.py) of the
timestamp and body, keyed by FUNCTION_FLOW_HMAC_KEY.

Delivered means the receiver answered 2xx. No answer, a 5xx, 408, 425 or
429 is retried with exponential backoff (FUNCTION_FLOW_CALLBACK_ATTEMPTS,
default 36 POSTs up to an hour apart: about a day). Any other answer (a
4xx, or a redirect, which is not followed) means the receiver refuses this
request, and sending it again would not change that: the callback fails at
once, and `status` says so. Delivery is at least once, like Pub/Sub's: a
receiver that must act once keys on the run id and its redrives (a
redriven run ends again, and calls back again).
"""

from __future__ import annotations

import json
from typing import Any

from function_flow import signing
from function_flow.config import Settings
from function_flow.core import hooks
from function_flow.core.definition import Backoff, TaskSpec
from function_flow.errors import ConfigurationError, TransientBackendError
from function_flow.remote import web

#: The header of the `start` function that gives a run its callback URL
#: (faas-flow's X-Faas-Flow-Callback-Url; the body stays the run's arguments).
CALLBACK_URL_HEADER = "X-Function-Flow-Callback-Url"
#: Longest wait between two POSTs of one callback.
MAX_BACKOFF_SECONDS = 3600.0
#: Answers worth sending the same callback again for, besides 5xx.
RETRIED_STATUSES = frozenset({408, 425, 429})


class CallbackNotDelivered(web.RemoteCallError):
    """No 2xx answer, but a later POST may get one (retried with backoff)."""


class CallbackRefused(web.RemoteCallError):
    """The receiver refused the callback (a 4xx, a redirect): not sent again."""


def spec(job_name: str, settings: Settings | None = None) -> TaskSpec:
    """The `__callback__` hook of a job, with the retry policy of `settings`."""
    settings = settings or Settings.from_env()
    backoff = Backoff(initial=settings.callback_backoff,
                      maximum=max(MAX_BACKOFF_SECONDS, settings.callback_backoff))
    # A lost lease (the process died), a store that failed for a moment and
    # a missing key (fixed meanwhile) are worth a retry too; a refusal is not.
    return hooks.hook_spec(hooks.CALLBACK, deliver, job_name=job_name,
                           retries=settings.callback_attempts - 1, retry_backoff=backoff,
                           retry_on=(CallbackNotDelivered, TimeoutError,
                                     TransientBackendError, ConfigurationError))


def check_start(callback_url: str | None, settings: Settings | None = None) -> None:
    """Refuse a start with a callback URL that could not be signed (ConfigurationError),
    or that is not http(s) (ValueError)."""
    if callback_url is None:
        return
    hooks.check_callback_url(callback_url)
    signing.check_key((settings or Settings.from_env()).hmac_key)


def payload(run: hooks.RunInfo) -> bytes:
    """The callback's JSON body (standard JSON: NaN results are refused)."""
    body = {"run_id": run.run_id, "job": run.job_name, "status": run.status.value,
            "error": run.error, "results": run.results, "failed_tasks": run.failed_tasks,
            "created_at": run.created_at, "finished_at": run.finished_at,
            "redrives": run.redrives}
    try:
        return json.dumps(body, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except ValueError as exc:
        raise CallbackRefused(f"the callback of run {run.run_id} cannot be sent as "
                              f"standard JSON ({exc}): a sink's result holds NaN or "
                              "Infinity") from None


def deliver(run: hooks.RunInfo) -> dict[str, Any]:
    """POST the run's final status to its callback URL; the hook's result on a 2xx."""
    settings = Settings.from_env()
    url = hooks.check_callback_url(run.callback_url)
    body = payload(run)
    what = f"the callback to {url}"
    try:
        key = signing.check_key(settings.hmac_key)
    except ConfigurationError as exc:
        raise ConfigurationError(f"cannot sign {what}: {exc}") from None
    try:
        answer = web.post_bytes(what, url, body, run.run_id, headers={
            "User-Agent": "function-flow", **signing.sign(body, key)},
            timeout=settings.callback_timeout)
    except web.RemoteCallError as exc:
        raise CallbackNotDelivered(str(exc)) from None
    status = answer.status
    if 200 <= status < 300:
        return {"delivered": True, "status_code": status}
    said = f"{what} answered HTTP {status}"
    try:
        web.result_of(what, status, answer.body)
    except web.RemoteCallError as exc:
        said = str(exc)
    if status >= 500 or status in RETRIED_STATUSES:
        raise CallbackNotDelivered(said)
    raise CallbackRefused(
        f"{said}; not sent again: an answer other than 2xx, 5xx, 408, 425 or 429 means "
        "the receiver refuses this callback")
