"""Realistic external events: Cloud Logging entries as a log sink publishes them,
Cloud Storage notifications, and a local stand-in for the Dataflow API.

The log entries copy the shape of real ones (logName, resource, insertId,
timestamps, protoPayload or textPayload); the Dataflow server answers
projects.locations.jobs.get of the v1b3 REST API and an OAuth token
endpoint, so google.auth and AuthorizedSession run for real against it.
"""

from __future__ import annotations

import base64
import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PROJECT = "analytics-prod"
STAMP = "2024-03-01T04:05:06.789012Z"


def pubsub_event(data: bytes, attributes: dict[str, str] | None = None) -> dict[str, Any]:
    """The `event` dict a 1st gen Pub/Sub-triggered Cloud Function receives."""
    return {"@type": "type.googleapis.com/google.pubsub.v1.PubsubMessage",
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": attributes or {}}


def encoded(entry: dict[str, Any]) -> bytes:
    return json.dumps(entry).encode()


# ------------------------------------------------------------------ BigQuery


def bigquery_jobcompleted(job_id: str, error: str | None = None,
                          location: str | None = "EU") -> dict[str, Any]:
    """The older AuditData form: methodName jobservice.jobcompleted."""
    job_name = {"projectId": PROJECT, "jobId": job_id}
    if location:
        job_name["location"] = location
    return {
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "status": {"code": 3, "message": error} if error else {},
            "authenticationInfo": {"principalEmail": f"runner@{PROJECT}.iam.gserviceaccount.com"},
            "requestMetadata": {"callerIp": "10.1.2.3"},
            "serviceName": "bigquery.googleapis.com",
            "methodName": "jobservice.jobcompleted",
            "resourceName": f"projects/{PROJECT}/jobs/{job_id}",
            "serviceData": {
                "@type": "type.googleapis.com/google.cloud.bigquery.logging.v1.AuditData",
                "jobCompletedEvent": {
                    "eventName": "query_job_completed",
                    "job": {
                        "jobName": job_name,
                        "jobConfiguration": {"query": {"query": "SELECT id FROM t",
                                                       "createDisposition": "CREATE_IF_NEEDED"}},
                        "jobStatus": {"state": "DONE",
                                      **({"error": {"code": 3, "message": error}}
                                         if error else {})},
                        "jobStatistics": {"createTime": STAMP, "startTime": STAMP,
                                          "endTime": STAMP, "totalBilledBytes": "10485760"},
                    },
                },
            },
        },
        "insertId": "-x8k2f3e1a2b",
        "resource": {"type": "bigquery_resource", "labels": {"project_id": PROJECT}},
        "timestamp": STAMP,
        "severity": "ERROR" if error else "INFO",
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access",
        "receiveTimestamp": STAMP,
    }


def bigquery_job_change(job_id: str, error: str | None = None, before: str = "RUNNING",
                        after: str = "DONE", location: str = "EU") -> dict[str, Any]:
    """The BigQueryAuditMetadata form: protoPayload.metadata.jobChange."""
    status: dict[str, Any] = {"jobState": after}
    if error:
        status["errorResult"] = {"code": 3, "message": error}
        status["errors"] = [{"code": 3, "message": error}]
    return {
        "protoPayload": {
            "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
            "status": {"code": 3, "message": error} if error else {},
            "authenticationInfo": {"principalEmail": f"runner@{PROJECT}.iam.gserviceaccount.com"},
            "requestMetadata": {"callerIp": "10.1.2.3", "callerSuppliedUserAgent": "gl-python"},
            "serviceName": "bigquery.googleapis.com",
            "methodName": "google.cloud.bigquery.v2.JobService.InsertJob",
            "authorizationInfo": [{"resource": f"projects/{PROJECT}",
                                   "permission": "bigquery.jobs.create", "granted": True}],
            "resourceName": f"projects/{PROJECT}/jobs/{job_id}",
            "metadata": {
                "@type": "type.googleapis.com/google.cloud.audit.BigQueryAuditMetadata",
                "jobChange": {
                    "before": before,
                    "after": after,
                    "job": {
                        "jobName": f"projects/{PROJECT}/jobs/{job_id}",
                        "jobConfig": {"type": "QUERY",
                                      "queryConfig": {"query": "SELECT id FROM t",
                                                      "statementType": "SELECT"}},
                        "jobStatus": status,
                        "jobStats": {"createTime": STAMP, "startTime": STAMP,
                                     **({"endTime": STAMP} if after == "DONE" else {})},
                    },
                },
            },
        },
        "insertId": "1a2b3c4d5e6f",
        "resource": {"type": "bigquery_project",
                     "labels": {"project_id": PROJECT, "location": location}},
        "timestamp": STAMP,
        "severity": "ERROR" if error else "INFO",
        "logName": f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Fdata_access",
        "receiveTimestamp": STAMP,
    }


# ------------------------------------------------------------------ Dataflow


def dataflow_worker_pool_stopped(job_id: str, job_name: str = "daily-aggregation",
                                 region: str = "europe-west1",
                                 project: str | None = PROJECT) -> dict[str, Any]:
    """The job-message entry a batch job logs when its workers are gone."""
    labels = {"job_id": job_id, "job_name": job_name, "region": region, "step_id": ""}
    if project:
        labels["project_id"] = project
    return {
        "textPayload": "Worker pool stopped.",
        "insertId": "1d2e3f4a5b6c",
        "resource": {"type": "dataflow_step", "labels": labels},
        "timestamp": STAMP,
        "severity": "INFO",
        "labels": {"dataflow.googleapis.com/job_id": job_id,
                   "dataflow.googleapis.com/job_name": job_name,
                   "dataflow.googleapis.com/log_type": "system",
                   "dataflow.googleapis.com/region": region},
        "logName": f"projects/{PROJECT}/logs/dataflow.googleapis.com%2Fjob-message",
        "receiveTimestamp": STAMP,
    }


class DataflowApi:
    """A local Dataflow v1b3 endpoint plus the OAuth token endpoint it trusts.

    `states[job_id]` is the list of states successive GETs answer (the last
    one repeats); `status` forces an HTTP status for every GET (a 503).
    """

    TOKEN = "ya29.local-token"

    def __init__(self) -> None:
        self.states: dict[str, list[str]] = {}
        self.status: int | None = None
        self.requests: list[dict[str, Any]] = []
        self.tokens_issued = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # the token endpoint
                length = int(self.headers.get("Content-Length") or 0)
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"] \
                        or not form.get("assertion"):
                    return self._answer(400, {"error": "invalid_grant"})
                api.tokens_issued += 1
                self._answer(200, {"access_token": api.TOKEN, "expires_in": 3600,
                                   "token_type": "Bearer"})

            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                api.requests.append({"path": url.path,
                                     "query": urllib.parse.parse_qs(url.query),
                                     "authorization": self.headers.get("Authorization")})
                parts = url.path.split("/")
                # /v1b3/projects/{p}/locations/{r}/jobs/{id}
                if len(parts) != 8 or parts[1:3] != ["v1b3", "projects"] \
                        or parts[4] != "locations" or parts[6] != "jobs":
                    return self._answer(404, {"error": {"code": 404, "message": "no route"}})
                if api.status is not None:
                    return self._answer(api.status, {"error": {
                        "code": api.status, "message": "The service is currently unavailable.",
                        "status": "UNAVAILABLE"}})
                project, region, job_id = (urllib.parse.unquote(parts[i]) for i in (3, 5, 7))
                states = api.states.get(job_id)
                if not states:
                    return self._answer(404, {"error": {
                        "code": 404, "status": "NOT_FOUND",
                        "message": f"(8a1b) Could not find job with ID {job_id}"}})
                state = states.pop(0) if len(states) > 1 else states[0]
                self._answer(200, {
                    "id": job_id, "projectId": project, "name": "daily-aggregation",
                    "type": "JOB_TYPE_BATCH", "currentState": state,
                    "currentStateTime": STAMP, "createTime": STAMP, "location": region,
                    **({"replacedByJobId": "2024-03-01_02_00_00-99"}
                       if state == "JOB_STATE_UPDATED" else {})})

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def credentials_file(self, path: str) -> str:
        """A service account key file (Application Default Credentials) whose
        token_uri is this server: google.auth signs a real JWT for it."""
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import rsa

        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        with open(path, "w", encoding="utf-8") as out:
            json.dump({"type": "service_account", "project_id": "key-project",
                       "private_key_id": "0123456789abcdef", "private_key": pem,
                       "client_email": "listener@key-project.iam.gserviceaccount.com",
                       "client_id": "100000000000000000001",
                       "token_uri": f"{self.url}/token"}, out)
        return path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# ------------------------------------------------------------- Cloud Storage


def storage_notification(bucket: str, name: str, event_type: str = "OBJECT_FINALIZE",
                         payload: bool = True) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of a Cloud Storage Pub/Sub notification (JSON_API_V1 or NONE)."""
    attributes = {"notificationConfig": f"projects/_/buckets/{bucket}/notificationConfigs/3",
                  "eventType": event_type, "payloadFormat": "JSON_API_V1" if payload else "NONE",
                  "bucketId": bucket, "objectId": name,
                  "objectGeneration": "1709265906789012", "eventTime": STAMP}
    resource = {"kind": "storage#object", "id": f"{bucket}/{name}/1709265906789012",
                "selfLink": f"https://www.googleapis.com/storage/v1/b/{bucket}/o/"
                            f"{urllib.parse.quote(name, safe='')}",
                "name": name, "bucket": bucket, "generation": "1709265906789012",
                "metageneration": "1", "contentType": "text/csv", "timeCreated": STAMP,
                "updated": STAMP, "storageClass": "STANDARD", "size": "12",
                "md5Hash": "XUFAKrxLKna5cZ2REBfFkg==", "crc32c": "yZRlqg==",
                "etag": "CJTc6YK+2YQDEAE="}
    return (json.dumps(resource).encode() if payload else b""), attributes
