"""HTTP and Cloud Run tasks: POST the Function Flow payload as JSON to a URL.

    @job.task(task_id='enrich', deps=['load'],
              call=remote.Http('https://enrich-abc123-ew.a.run.app/',
                               audience='https://enrich-abc123-ew.a.run.app/', timeout=120))

With an audience, the request carries a Google-signed ID token for it
(google-auth's fetch_id_token: the runtime's service account on Google
Cloud, GOOGLE_APPLICATION_CREDENTIALS elsewhere), which Cloud Run and
Cloud Functions check when they do not allow unauthenticated calls. The
request's timeout is the call's, else the task's, else
web.DEFAULT_TIMEOUT_SECONDS. Like every call function_flow makes, it carries
the run id (X-Function-Flow-Run-Id) and, when there is a key, an HMAC
signature of the body (signing.py). The answer follows OpenFaaS's rules
(web.result_of): a 2xx body is the task's result, anything else fails the
attempt with the status and the start of the body.
"""

from __future__ import annotations

from typing import Any

from function_flow.core.definition import Call
from function_flow.core.ports import Request
from function_flow.errors import ConfigurationError
from function_flow.remote import web


class HttpCaller:
    """ports.Caller for `Call.kind == "http"` (synchronous only).

    keys: signing.Keys that sign each request (X-Function-Flow-Signature),
    or None to send it unsigned.
    """

    def __init__(self, keys: Any = None) -> None:
        self.keys = keys

    def call(self, call: Call, request: Request, timeout: float | None) -> Any:
        url = call.target
        what = f"HTTP endpoint {url}"
        audience = call.options.get("audience")
        headers = {"Authorization": f"Bearer {id_token(audience)}"} if audience else {}
        limit = call.options.get("timeout") or timeout or web.DEFAULT_TIMEOUT_SECONDS
        answer = web.post(what, url, request, headers=headers, timeout=limit, keys=self.keys)
        return web.result_of(what, answer.status, answer.body, answer.content_type,
                             hint=_hint(answer.status, audience))

    def send(self, call: Call, request: Request) -> None:
        raise ConfigurationError(f"task {request.task_id!r}: HTTP calls are synchronous; "
                                 f"{call.describe()} cannot be sent asynchronously")


def id_token(audience: str) -> str:
    """A Google-signed ID token for `audience`, from the ambient credentials."""
    import google.auth.exceptions
    import google.auth.transport.requests
    import google.oauth2.id_token

    try:
        return google.oauth2.id_token.fetch_id_token(google.auth.transport.requests.Request(),
                                                     audience)
    except google.auth.exceptions.GoogleAuthError as exc:
        raise web.RemoteCallError(
            f"cannot get a Google ID token for audience {audience!r}: {exc}. On Google Cloud "
            "the function's service account provides one; elsewhere set "
            "GOOGLE_APPLICATION_CREDENTIALS to a service account key file") from None


def _hint(status: int, audience: str | None) -> str:
    if status not in (401, 403):
        return ""
    if audience:
        return (f"; the ID token for audience {audience!r} was refused: the audience must be "
                "the service's URL, and the caller's service account needs permission to "
                "invoke it (roles/run.invoker)")
    return ("; if it is a Cloud Run service or Cloud Function that requires authentication, "
            "pass audience= (its URL) so the call carries a Google-signed ID token")
