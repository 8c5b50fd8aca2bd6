"""The Dataflow API for DataFlowFuture: a job's current state.

One REST call, projects.locations.jobs.get of Dataflow v1b3, made with
google-auth (`google.auth.default` and an `AuthorizedSession`), the way
Google's own discovery client would make it, without that client's weight.
The root URL is FUNCTION_FLOW_DATAFLOW_ENDPOINT (default
https://dataflow.googleapis.com); the session is made once per endpoint and
refreshes its token itself.

Errors: a 429, a 5xx or a network failure is TransientBackendError (the
listener then leaves the event unacknowledged, so Pub/Sub delivers it
again); any other refusal is JobLookupError, saying what to fix.
"""

from __future__ import annotations

import functools
import urllib.parse
from typing import Any

from function_flow.config import Settings
from function_flow.errors import FunctionFlowError, TransientBackendError

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
#: Seconds one call may take.
TIMEOUT_SECONDS = 30.0


class JobLookupError(FunctionFlowError):
    """The Dataflow API refused to say how a job is doing (no such job, no permission)."""


class DataflowJobs:
    """`get` of the jobs of one Dataflow endpoint, through an authorized session."""

    def __init__(self, endpoint: str, session: Any, project: str | None) -> None:
        self.endpoint = endpoint.rstrip("/")
        self.session = session
        #: The credentials' project, for log entries that do not name theirs.
        self.project = project

    def get(self, project: str | None, region: str, job_id: str) -> dict[str, Any]:
        """The job resource (its "currentState" among the rest)."""
        project = project or self.project
        if not project:
            raise JobLookupError(f"cannot ask about Dataflow job {job_id}: no project (set "
                                 "GOOGLE_CLOUD_PROJECT)")
        quote = functools.partial(urllib.parse.quote, safe="")
        url = (f"{self.endpoint}/v1b3/projects/{quote(project)}/locations/{quote(region)}"
               f"/jobs/{quote(job_id)}")
        from google.auth import exceptions as auth_errors
        import requests

        try:
            response = self.session.get(url, params={"view": "JOB_VIEW_SUMMARY"},
                                        timeout=TIMEOUT_SECONDS)
        except (requests.ConnectionError, requests.Timeout,
                auth_errors.TransportError) as exc:
            raise TransientBackendError(f"Dataflow API unreachable ({url}): {exc}") from exc
        except auth_errors.RefreshError as exc:
            raise JobLookupError(f"the credentials for the Dataflow API were refused: "
                                 f"{exc}") from exc
        where = f"Dataflow job {job_id} (project {project}, region {region})"
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientBackendError(f"{where}: the Dataflow API answered "
                                        f"{response.status_code}: {_message(response)}")
        if response.status_code == 404:
            raise JobLookupError(f"{where} does not exist: {_message(response)}")
        if response.status_code in (401, 403):
            raise JobLookupError(f"{where} may not be read ({_message(response)}): give the "
                                 "listener's service account roles/dataflow.viewer")
        if response.status_code != 200:
            raise JobLookupError(f"{where}: the Dataflow API answered "
                                 f"{response.status_code}: {_message(response)}")
        try:
            job = response.json()
        except ValueError as exc:
            raise TransientBackendError(f"{where}: the Dataflow API answered with no "
                                        "JSON") from exc
        return job if isinstance(job, dict) else {}


def _message(response: Any) -> str:
    """The error message of a Google API error answer, or the start of its body."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


def jobs() -> DataflowJobs:
    """The jobs API of the configured endpoint, with Application Default Credentials."""
    return _jobs(Settings.from_env().dataflow_endpoint)


@functools.lru_cache(maxsize=4)
def _jobs(endpoint: str) -> DataflowJobs:
    import google.auth
    from google.auth import exceptions as auth_errors
    from google.auth.transport.requests import AuthorizedSession

    try:
        credentials, project = google.auth.default(scopes=list(SCOPES))
    except auth_errors.DefaultCredentialsError as exc:
        raise JobLookupError(f"no credentials to ask the Dataflow API about a job: {exc}; "
                             "run `gcloud auth application-default login`, or deploy "
                             "with a service account") from exc
    return DataflowJobs(endpoint, AuthorizedSession(credentials), project)
