"""OpenFaaS functions, called through a gateway as faas-flow calls them.

    @job.task(task_id='score', deps=['load'], call=remote.OpenFaaS('scorer'))
    @job.task(task_id='render', call=remote.OpenFaaS('render', asynchronous=True),
              timeout=600)

Synchronous: POST `{gateway}/function/NAME`; the answer is the task's result
(web.result_of: a 2xx body, JSON-decoded when it parses as JSON).

Asynchronous: POST `{gateway}/async-function/NAME` with `X-Callback-Url:
{callback}/openfaas/{job id}?function_flow_timestamp=...&function_flow_signature=...`.
The gateway answers 202 and an X-Call-Id; its queue worker later POSTs the
function's answer to that URL, with the function's status in
X-Function-Status, and cloud/callback.py completes the attempt. The job id
names the attempt's trigger, which is committed before this sends, and only
the gateway learns it: the URL is unguessable, and signed (signing.py, over
`openfaas/<job id>`), so the callback refuses a made-up one before reading
the store. The queue worker forwards the function's answer as it is, so
the signature cannot cover the body; the URL stays valid while the attempt
waits (its timeout), and works once. The
X-Call-Id is logged here and by the callback, to match the two in logs.
A gateway accepts calls of functions that do not exist (202, and no answer
ever comes): the task's timeout is what fails such an attempt.

Where the gateway is, and its basic-auth credentials, come from settings
(config.py: FUNCTION_FLOW_OPENFAAS_GATEWAY, _USER, _PASSWORD or
_PASSWORD_FILE), never from the workflow's code.
"""

from __future__ import annotations

import logging
import urllib.parse
from typing import Any, Callable

from function_flow.config import Settings
from function_flow.core.definition import Call
from function_flow.core.ports import Request
from function_flow.errors import ConfigurationError
from function_flow.remote import web
from function_flow.signing import ATTRIBUTES, Keys

logger = logging.getLogger("function_flow.remote.openfaas")

#: OpenFaaS's default basic-auth user (faas-cli login's default too).
DEFAULT_USER = "admin"
#: How long the gateway may take to accept an asynchronous call (it only queues it).
SEND_TIMEOUT_SECONDS = 30.0
#: The callback route (cloud/callback.py) of OpenFaaS answers.
CALLBACK_ROUTE = "openfaas"

_AUTH_HINT = ("; check FUNCTION_FLOW_OPENFAAS_USER and FUNCTION_FLOW_OPENFAAS_PASSWORD "
              "(or FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE): the gateway refused them")
_MISSING_HINT = "; is the function deployed on this gateway (faas-cli list)?"


class OpenFaaSCaller:
    """ports.Caller for `Call.kind == "openfaas"`.

    callback_base: returns the base URL of the callback entry point (or
    None when there is none), asked at each asynchronous call: on the
    embedded backend it starts a local server the first time.
    """

    def __init__(self, settings: Settings,
                 callback_base: Callable[[], str | None] = lambda: None,
                 keys: Keys | None = None, callback_keys: Keys | None = None) -> None:
        self.gateway = settings.openfaas_gateway
        self.user = settings.openfaas_user
        self.password = settings.openfaas_password
        self.password_file = settings.openfaas_password_file
        self.callback_base = callback_base
        #: Sign the requests (None: unsigned), and the callback URLs (None:
        #: the settings' keys, ConfigurationError when there are none).
        self.keys = keys
        self.callback_keys = callback_keys
        self._settings = settings

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        """POST /function/NAME and return the function's answer."""
        url = f"{self._gateway(call, request)}/function/{call.target}"
        what = f"OpenFaaS function {call.target!r} ({url})"
        answer = web.post(what, url, request, auth=self._auth(call, request),
                          timeout=timeout or web.DEFAULT_TIMEOUT_SECONDS, keys=self.keys)
        return web.result_of(what, answer.status, answer.body, answer.content_type,
                             hint=hint(answer.status))

    def send(self, call: Call, request: Request) -> None:
        """POST /async-function/NAME with our callback URL; the gateway must accept it."""
        url = f"{self._gateway(call, request)}/async-function/{call.target}"
        callback = self._callback_url(call, request)
        what = f"OpenFaaS function {call.target!r} ({url})"
        answer = web.post(what, url, request, headers={"X-Callback-Url": callback},
                          auth=self._auth(call, request), timeout=SEND_TIMEOUT_SECONDS,
                          keys=self.keys)
        web.result_of(what, answer.status, answer.body, hint=hint(answer.status))
        logger.info("run %s task %s: OpenFaaS accepted job %s for %s as call id %s; "
                    "its answer goes to %s", request.run_id, request.task_id, request.job_id,
                    call.target, answer.headers.get("X-Call-Id") or "(none given)", callback)

    # -------------------------------------------------------------- settings

    def _gateway(self, call: Call, request: Request) -> str:
        gateway = (self.gateway or "").strip()
        if not gateway:
            raise ConfigurationError(
                f"task {request.task_id!r} calls OpenFaaS function {call.target!r}, but no "
                "gateway is configured: set FUNCTION_FLOW_OPENFAAS_GATEWAY to its URL "
                "(e.g. http://127.0.0.1:8080)")
        parsed = urllib.parse.urlparse(gateway)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ConfigurationError(
                f"task {request.task_id!r} calls OpenFaaS, but "
                f"FUNCTION_FLOW_OPENFAAS_GATEWAY={gateway!r} is not an http:// or https:// URL")
        return gateway.rstrip("/")

    def _auth(self, call: Call, request: Request) -> tuple[str, str] | None:
        """Basic-auth credentials, the password file read at each call (secrets rotate)."""
        if self.password and self.password_file:
            raise ConfigurationError(
                f"task {request.task_id!r} calls OpenFaaS: set FUNCTION_FLOW_OPENFAAS_PASSWORD "
                "or FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE, not both")
        password = self.password
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as secret:
                    password = secret.read().strip()
            except OSError as exc:
                raise ConfigurationError(
                    f"task {request.task_id!r} calls OpenFaaS function {call.target!r}, but "
                    f"FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE={self.password_file!r} cannot be "
                    f"read: {exc.strerror or exc}") from None
        if not password:
            if self.user:
                raise ConfigurationError(
                    f"task {request.task_id!r} calls OpenFaaS: FUNCTION_FLOW_OPENFAAS_USER is "
                    "set but no password: set FUNCTION_FLOW_OPENFAAS_PASSWORD or "
                    "FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE")
            return None
        return (self.user or DEFAULT_USER, password)

    def _callback_url(self, call: Call, request: Request) -> str:
        base = self.callback_base()
        if not base:
            raise ConfigurationError(
                f"task {request.task_id!r} calls OpenFaaS function {call.target!r} "
                "asynchronously, but FUNCTION_FLOW_CALLBACK_URL is not set: deploy the "
                "callback function (callback = job.make_callback() in the workflow file) and "
                "set FUNCTION_FLOW_CALLBACK_URL to its URL, where the gateway's queue worker "
                "posts the answer")
        keys = self.callback_keys
        if keys is None:
            try:
                keys = Keys.from_settings(self._settings)
            except ConfigurationError as exc:
                raise ConfigurationError(
                    f"task {request.task_id!r} calls OpenFaaS function {call.target!r} "
                    f"asynchronously, and its callback URL must be signed: {exc}") from None
        return callback_url(base, request.job_id, keys)


def callback_path(job_id: str) -> str:
    """What a callback URL's signature covers: `openfaas/<job id>`."""
    return f"{CALLBACK_ROUTE}/{job_id}"


def callback_url(base: str, job_id: str, keys: Keys) -> str:
    """`{base}/openfaas/{job id}?<timestamp and signature>`: where the answer goes."""
    query = urllib.parse.urlencode(keys.sign(callback_path(job_id).encode(), ATTRIBUTES))
    return f"{base.rstrip('/')}/{callback_path(job_id)}?{query}"


def hint(status: int) -> str:
    """What to check after a gateway answered `status` (added to the error)."""
    if status in (401, 403):
        return _AUTH_HINT
    if status == 404:
        return _MISSING_HINT
    return ""
