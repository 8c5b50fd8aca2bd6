"""Log lines: JSON that Cloud Logging understands when deployed, readable text in a terminal.

FUNCTION_FLOW_LOG_FORMAT=json or text chooses; unset, a deployed function
(FUNCTION_TARGET, which Cloud Functions and functions-framework set) logs
JSON and everything else text. A JSON line is one object per line on
stdout, the structured form Cloud Logging parses from a function's output:

    {"severity": "WARNING", "message": "...", "time": "2024-06-01T12:00:00.123456Z",
     "logger": "function_flow.engine",
     "logging.googleapis.com/labels": {"run_id": "...", "task_id": "...", "attempt": "2"},
     "logging.googleapis.com/trace": "projects/P/traces/TRACE_ID",
     "logging.googleapis.com/spanId": "...", "logging.googleapis.com/trace_sampled": true,
     "logging.googleapis.com/sourceLocation": {"file": "...", "line": "12", "function": "..."}}

The labels name the run, task and attempt the line is about: those of the
task body whose attempt is being captured (core/output.py), or those an
entry point set for the message it handles. The trace fields come from the
current OpenTelemetry span (`current_trace`), when opentelemetry is
installed and a span is active, so that logs sit under their trace; the
project is GOOGLE_CLOUD_PROJECT (or GCLOUD_PROJECT, GCP_PROJECT).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import sys
from typing import Any, Mapping, TextIO

from function_flow.core import output
from function_flow.errors import ConfigurationError

FORMAT_VARIABLE = "FUNCTION_FLOW_LOG_FORMAT"
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
#: Cloud Logging's severities by Python level (NOTICE has no Python level).
SEVERITIES = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARNING",
              logging.ERROR: "ERROR", logging.CRITICAL: "CRITICAL"}
_PROJECT_VARIABLES = ("GOOGLE_CLOUD_PROJECT", "GCLOUD_PROJECT", "GCP_PROJECT")
_NO_OPENTELEMETRY: list[bool] = []


def chosen_format(env: Mapping[str, str] | None = None, default: str | None = None) -> str:
    """"json" or "text": FUNCTION_FLOW_LOG_FORMAT, else `default`, else json
    for a deployed function and text elsewhere."""
    env = os.environ if env is None else env
    value = env.get(FORMAT_VARIABLE, "").strip().lower()
    if value in ("json", "text"):
        return value
    if value:
        raise ConfigurationError(f"{FORMAT_VARIABLE}={value!r} is not a log format; use "
                                 "'json' (Cloud Logging) or 'text'")
    if default is not None:
        return default
    return "json" if env.get("FUNCTION_TARGET") else "text"


def current_trace() -> tuple[str, str, bool] | None:
    """(trace id, span id, sampled) of the active OpenTelemetry span, as hex;
    None when opentelemetry is not installed or no span is active."""
    if _NO_OPENTELEMETRY:
        return None
    try:
        from opentelemetry import trace
    except ImportError:
        _NO_OPENTELEMETRY.append(True)
        return None
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return (format(context.trace_id, "032x"), format(context.span_id, "016x"),
            bool(context.trace_flags.sampled))


class CloudLoggingFormatter(logging.Formatter):
    """One JSON object per line, the form Cloud Logging parses into an entry's fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            message += "\n" + record.exc_text
        entry: dict[str, Any] = {
            "severity": SEVERITIES.get(record.levelno, record.levelname),
            "message": output.safe_text(message),
            "time": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "logger": record.name,
            "logging.googleapis.com/sourceLocation": {
                "file": record.pathname, "line": str(record.lineno),
                "function": record.funcName},
        }
        labels = {k: str(v) for k, v in output.labels().items()}
        if labels:
            entry["logging.googleapis.com/labels"] = labels
        trace = current_trace()
        if trace is not None:
            trace_id, span_id, sampled = trace
            project = next((os.environ[k] for k in _PROJECT_VARIABLES if os.environ.get(k)),
                           None)
            if project:
                entry["logging.googleapis.com/trace"] = f"projects/{project}/traces/{trace_id}"
            entry["logging.googleapis.com/spanId"] = span_id
            entry["logging.googleapis.com/trace_sampled"] = sampled
        return json.dumps(entry, ensure_ascii=False)


def formatter(kind: str) -> logging.Formatter:
    return CloudLoggingFormatter() if kind == "json" else logging.Formatter(TEXT_FORMAT)


class _CurrentStream(logging.StreamHandler):
    """Writes to whatever sys.stdout or sys.stderr is when it writes (a tee, a test's
    capture), not to the stream that was current when it was made."""

    def __init__(self, name: str) -> None:
        super().__init__()
        self._name = name

    @property  # type: ignore[override]
    def stream(self) -> TextIO:
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def install(logger_name: str = "", *, level: int = logging.INFO, kind: str | None = None,
            stream: str = "stderr", default: str | None = None) -> logging.Handler:
    """Log `logger_name` (the root logger by default) at `level` in the chosen
    format to sys.stdout or sys.stderr; returns the handler (at `level`).

    The root logger is set to INFO when it was at Python's default (WARNING),
    so that a task body's INFO records are made and captured with its
    attempt (core/output.py); what each handler prints is its own level's.
    """
    handler = _CurrentStream(stream)
    handler.setFormatter(formatter(kind or chosen_format(default=default)))
    logger = logging.getLogger(logger_name)
    for installed in [h for h in logger.handlers if isinstance(h, _CurrentStream)]:
        logger.removeHandler(installed)  # installed before (each CLI command installs)
    logger.addHandler(handler)
    handler.setLevel(level)
    # Its WARNING records are still made when the handler prints only ERROR
    # (function-flow without -v): a body's are captured with its attempt.
    logger.setLevel(min(level, logging.WARNING))
    root = logging.getLogger()
    if root.level == logging.WARNING:
        root.setLevel(logging.INFO)
    return handler


def install_for_functions() -> None:
    """A deployed function's logging: JSON lines on stdout, INFO and up.

    Only when running as a function (FUNCTION_TARGET is set) and the
    application has not configured logging itself (no handler on the root
    logger or on function_flow's).
    """
    if not os.environ.get("FUNCTION_TARGET"):
        return
    if logging.getLogger("function_flow").handlers or logging.getLogger().handlers:
        return
    install("", level=logging.INFO, stream="stdout")
