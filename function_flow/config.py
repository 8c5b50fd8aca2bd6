"""Settings read from environment variables, with documented defaults.

| variable | default | meaning |
| --- | --- | --- |
| FUNCTION_FLOW_BACKEND | auto | `embedded` or `gcp`; auto picks `gcp` when Google Cloud settings are present |
| FUNCTION_FLOW_DB | .function_flow/function_flow.db | SQLite file of the embedded backend |
| FUNCTION_FLOW_WORKERS | 8 | worker threads of the embedded backend |
| GOOGLE_CLOUD_PROJECT | (from google.auth) | project of Firestore and Pub/Sub |
| FIRESTORE_EMULATOR_HOST, PUBSUB_EMULATOR_HOST | unset | use the emulators |
| FUNCTION_FLOW_FIRESTORE_DATABASE | (default) | named Firestore database |
| FUNCTION_FLOW_COLLECTION_PREFIX | empty | prefix of every collection name |
| FUNCTION_FLOW_SCHEDULE_TOPIC | Job(schedule_topic=...) | Pub/Sub topic of scheduling messages |
| FUNCTION_FLOW_EVENTS_TOPIC | Job(external_event_topic=...) | topic of external events |
| FUNCTION_FLOW_INLINE_LIMIT_BYTES | 262144 (256 KiB) | results and run arguments larger than this (compact JSON) are stored as blobs, their records keep a reference (at most 900000) |
| FUNCTION_FLOW_BUCKET | unset | Cloud Storage bucket (`name` or `gs://name/prefix`) of the gcp backend's blobs; unset: values stay in their record, up to 900,000 bytes |
| FUNCTION_FLOW_BLOBS_DIR | `<FUNCTION_FLOW_DB without .db>-blobs` | directory of the embedded backend's blobs |
| STORAGE_EMULATOR_HOST | unset | use gcp-storage-emulator for the bucket |
| FUNCTION_FLOW_FUNCTION_TIMEOUT | 540 | seconds after which Cloud Functions has stopped the scheduler (its deployed timeout); a task that overran its timeout is retried no earlier |
| FUNCTION_FLOW_OPENFAAS_GATEWAY | unset | URL of the OpenFaaS gateway that `remote.OpenFaaS` tasks call |
| FUNCTION_FLOW_OPENFAAS_USER | admin (when a password is set) | basic-auth user for the gateway |
| FUNCTION_FLOW_OPENFAAS_PASSWORD | unset | basic-auth password (e.g. a Secret Manager secret exposed as a variable) |
| FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE | unset | file holding the password instead, read at each call (a mounted secret) |
| FUNCTION_FLOW_CALLBACK_URL | unset | URL of the deployed `callback` function, where asynchronous answers (OpenFaaS) arrive; the embedded backend serves one on 127.0.0.1 when unset |
| FUNCTION_FLOW_GCS_POLL_INTERVAL | 10 | seconds between two checks (one `list_blobs` call) of a prefix a GCSFuture waits for, by one process |
| FUNCTION_FLOW_GCS_POLL_BATCH | 100 | most prefixes one poll checks; the others (checked longest ago last) wait for the next poll |
| FUNCTION_FLOW_DATAFLOW_ENDPOINT | https://dataflow.googleapis.com | root URL of the Dataflow REST API that DataFlowFuture asks for a job's state |
| FUNCTION_FLOW_HMAC_KEY | unset (required by the gcp backend) | key (at least 32 characters, e.g. `openssl rand -hex 32`) of the HMAC-SHA256 that signs and verifies every internal message (signing.py): scheduling messages, remote requests and answers, OpenFaaS and approval callbacks, completion callbacks. Deployed, from Secret Manager: `gcloud functions deploy --set-secrets FUNCTION_FLOW_HMAC_KEY=SECRET:latest` (Terraform: `secret_environment_variables`); the code reads only the variable. `function-flow dev` makes one in `.function_flow/hmac.key`; the embedded backend without it uses a random key of its own process |
| FUNCTION_FLOW_HMAC_PREVIOUS_KEY | unset | during a key rotation, the old key: it still verifies (never signs); unset it once every sender has the new key. Deployed: `--set-secrets FUNCTION_FLOW_HMAC_PREVIOUS_KEY=SECRET:VERSION` |
| FUNCTION_FLOW_HMAC_TOLERANCE | 300 | seconds a signed message may be old (or ahead, a clock's error) before it is refused as a replay |
| FUNCTION_FLOW_CALLBACK_ATTEMPTS | 36 | most POSTs of one completion callback (retried with backoff up to an hour apart: about a day) |
| FUNCTION_FLOW_CALLBACK_BACKOFF | 2 | most seconds before the first retry of a callback; each later wait may be twice as long, up to an hour |
| FUNCTION_FLOW_CALLBACK_TIMEOUT | 30 | seconds one callback POST may take |
| FUNCTION_FLOW_TRACING | off | `gcp` (Cloud Trace), `otlp` (OTEL_EXPORTER_OTLP_ENDPOINT), `console` (one JSON line per span on stderr) or `off`: where the spans of one trace per run go (tracing.py; the SDK and exporters are the `tracing` extra) |
| FUNCTION_FLOW_LOG_FORMAT | json in a deployed function (FUNCTION_TARGET set), else text | `json`: one Cloud Logging JSON object per log line; `text`: readable lines (log_format.py) |
| FUNCTION_FLOW_RUN_TTL_DAYS | unset | days after its start (at most 36,500) when Firestore's TTL policy deletes a run (the store writes `expire_at` on its documents, store/expiry.py); unset: no `expire_at` |
"""

from __future__ import annotations

import dataclasses
import math
import os
import urllib.parse
from typing import Callable, Mapping, TypeVar

from function_flow.errors import ConfigurationError

T = TypeVar("T", int, float)

#: Project id the emulators and the local backend use when none is set.
DEFAULT_PROJECT = "function-flow-local"

_CLOUD_MARKERS = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GCP_PROJECT",
                  "FIRESTORE_EMULATOR_HOST", "K_SERVICE", "FUNCTION_TARGET")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything configurable about where state lives and messages go."""

    backend: str = "embedded"
    db_path: str = os.path.join(".function_flow", "function_flow.db")
    #: SQLite's synchronous setting: "normal" (survives kill -9) or "full"
    #: (an fsync per commit: survives a power cut too), see store/sqlite.py.
    sqlite_synchronous: str = "normal"
    workers: int = 8
    project: str | None = None
    firestore_database: str = "(default)"
    collection_prefix: str = ""
    schedule_topic: str | None = None
    events_topic: str | None = None
    function_timeout: float = 540.0
    inline_limit_bytes: int = 256 * 1024
    bucket: str | None = None
    blobs_dir: str | None = None
    openfaas_gateway: str | None = None
    openfaas_user: str | None = None
    #: Kept out of repr, so a logged Settings never shows it.
    openfaas_password: str | None = dataclasses.field(default=None, repr=False)
    openfaas_password_file: str | None = None
    callback_url: str | None = None
    gcs_poll_interval: float = 10.0
    gcs_poll_batch: int = 100
    dataflow_endpoint: str = "https://dataflow.googleapis.com"
    #: Kept out of repr, so a logged Settings never shows it.
    hmac_key: str | None = dataclasses.field(default=None, repr=False)
    hmac_previous_key: str | None = dataclasses.field(default=None, repr=False)
    hmac_tolerance: float = 300.0
    callback_attempts: int = 36
    callback_backoff: float = 2.0
    callback_timeout: float = 30.0
    tracing: str = "off"
    run_ttl_days: float | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 cloud_hint: bool = False) -> "Settings":
        """Read the settings; `cloud_hint` makes auto pick `gcp`.

        The hint is a Job built the Function Flow way, with a Firestore
        client (`db=`), a Pub/Sub client (`pubsub=`) or a `project=`: its
        author asked for Google Cloud even when no variable says so.
        """
        from function_flow import tracing

        env = os.environ if env is None else env
        backend = env.get("FUNCTION_FLOW_BACKEND", "").strip().lower() or "auto"
        if backend == "auto":
            cloud = cloud_hint or any(env.get(k) for k in _CLOUD_MARKERS)
            backend = "gcp" if cloud else "embedded"
        if backend not in ("embedded", "gcp"):
            raise ConfigurationError(
                f"FUNCTION_FLOW_BACKEND={backend!r} is not a backend; "
                "use 'embedded' or 'gcp'")
        # Positive, as --workers is: 0 workers would not mean one, nor a
        # timeout of 0 s that an overrunning task may be retried at once.
        workers = positive_number(env, "FUNCTION_FLOW_WORKERS", 8, int)
        function_timeout = positive_number(env, "FUNCTION_FLOW_FUNCTION_TIMEOUT", 540.0, float)
        inline_limit = _inline_limit(env.get("FUNCTION_FLOW_INLINE_LIMIT_BYTES", ""))
        gcs_poll_interval = positive_number(env, "FUNCTION_FLOW_GCS_POLL_INTERVAL", 10.0, float)
        gcs_poll_batch = positive_number(env, "FUNCTION_FLOW_GCS_POLL_BATCH", 100, int)
        project = (env.get("GOOGLE_CLOUD_PROJECT") or env.get("GCLOUD_PROJECT")
                   or env.get("GCP_PROJECT") or None)
        return cls(
            backend=backend,
            db_path=env.get("FUNCTION_FLOW_DB") or cls.db_path,
            sqlite_synchronous=_synchronous(env.get("FUNCTION_FLOW_SQLITE_SYNCHRONOUS", "")),
            workers=workers,
            project=project,
            firestore_database=env.get("FUNCTION_FLOW_FIRESTORE_DATABASE") or "(default)",
            collection_prefix=env.get("FUNCTION_FLOW_COLLECTION_PREFIX", ""),
            schedule_topic=env.get("FUNCTION_FLOW_SCHEDULE_TOPIC") or None,
            events_topic=env.get("FUNCTION_FLOW_EVENTS_TOPIC") or None,
            function_timeout=function_timeout,
            inline_limit_bytes=inline_limit,
            bucket=env.get("FUNCTION_FLOW_BUCKET", "").strip() or None,
            blobs_dir=env.get("FUNCTION_FLOW_BLOBS_DIR") or None,
            openfaas_gateway=env.get("FUNCTION_FLOW_OPENFAAS_GATEWAY") or None,
            openfaas_user=env.get("FUNCTION_FLOW_OPENFAAS_USER") or None,
            openfaas_password=env.get("FUNCTION_FLOW_OPENFAAS_PASSWORD") or None,
            openfaas_password_file=env.get("FUNCTION_FLOW_OPENFAAS_PASSWORD_FILE") or None,
            callback_url=env.get("FUNCTION_FLOW_CALLBACK_URL") or None,
            gcs_poll_interval=gcs_poll_interval,
            gcs_poll_batch=gcs_poll_batch,
            dataflow_endpoint=http_root(env, "FUNCTION_FLOW_DATAFLOW_ENDPOINT",
                                        cls.dataflow_endpoint),
            hmac_key=env.get("FUNCTION_FLOW_HMAC_KEY") or None,
            hmac_previous_key=env.get("FUNCTION_FLOW_HMAC_PREVIOUS_KEY") or None,
            hmac_tolerance=positive_number(env, "FUNCTION_FLOW_HMAC_TOLERANCE", 300.0, float),
            callback_attempts=positive_number(env, "FUNCTION_FLOW_CALLBACK_ATTEMPTS", 36, int),
            callback_backoff=positive_number(env, "FUNCTION_FLOW_CALLBACK_BACKOFF", 2.0, float),
            callback_timeout=positive_number(env, "FUNCTION_FLOW_CALLBACK_TIMEOUT", 30.0, float),
            tracing=tracing.mode_of(env.get(tracing.VARIABLE)),
            run_ttl_days=run_ttl_days(env),
        )


#: Longest run TTL: a run's expire_at is a date, and dates end at the year 9999.
MAX_RUN_TTL_DAYS = 36_500


def run_ttl_days(env: Mapping[str, str]) -> float | None:
    """FUNCTION_FLOW_RUN_TTL_DAYS: positive, and at most MAX_RUN_TTL_DAYS (100 years)."""
    days = positive_number(env, "FUNCTION_FLOW_RUN_TTL_DAYS", None, float)
    if days is not None and days > MAX_RUN_TTL_DAYS:
        raise ConfigurationError(f"FUNCTION_FLOW_RUN_TTL_DAYS must be at most "
                                 f"{MAX_RUN_TTL_DAYS:,} days (100 years), got {days:g}")
    return days


def blobs_dir_for(db_path: str) -> str:
    """The blob directory of an embedded database: `<path without .db>-blobs`,
    one per database file, so two databases in one folder never share blobs."""
    stem, extension = os.path.splitext(db_path)
    return (stem if extension == ".db" else db_path) + "-blobs"


def _inline_limit(text: str) -> int:
    from function_flow.core.values import MAX_VALUE_BYTES

    if not text.strip():
        return Settings.inline_limit_bytes
    try:
        limit = int(text)
    except ValueError:
        limit = -1
    if not 0 <= limit <= MAX_VALUE_BYTES:
        raise ConfigurationError(
            f"FUNCTION_FLOW_INLINE_LIMIT_BYTES must be a number of bytes from 0 to "
            f"{MAX_VALUE_BYTES} (what a record can hold), got {text!r}")
    return limit


def positive_number(env: Mapping[str, str], name: str, default: T, kind: Callable[[str], T]) -> T:
    """A positive number from the environment, or `default` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = None
    # NaN is not > 0; infinity would mean "never" where a time is needed.
    if value is None or not value > 0 or value == math.inf:  # type: ignore[operator]
        what = "a whole number" if kind is int else \
            "a number of days" if name.endswith("_DAYS") else "a number of seconds"
        raise ConfigurationError(f"{name} must be {what} greater than 0, got {raw!r}")
    return value


def http_root(env: Mapping[str, str], name: str, default: str) -> str:
    """An http(s) root URL from the environment, without its trailing '/'.

    Checked here: a URL without its scheme failed every request later, in
    the listener, where the event it was asked for was lost."""
    raw = env.get(name, "").strip() or default
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{name} must be an http(s) URL such as {default}, "
                                 f"got {raw!r}")
    return raw.rstrip("/")


#: The values FUNCTION_FLOW_SQLITE_SYNCHRONOUS accepts.
SYNCHRONOUS_MODES = ("normal", "full")


def _synchronous(value: str) -> str:
    mode = value.strip().lower() or "normal"
    if mode not in SYNCHRONOUS_MODES:
        raise ConfigurationError(
            f"FUNCTION_FLOW_SQLITE_SYNCHRONOUS={value!r} is not a mode; use 'normal' "
            "(survives kill -9) or 'full' (an fsync per commit: survives a power cut)")
    return mode
