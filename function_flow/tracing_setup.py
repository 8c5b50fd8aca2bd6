"""Where function_flow's spans go: the TracerProvider FUNCTION_FLOW_TRACING installs.

tracing.py opens the spans; this module sets up, once per process, the
SDK provider and exporter a mode asks for (console, OTLP, Cloud Trace),
and flushes it at the end of each entry point. Its public names are
importable from function_flow.tracing as well.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import threading
import warnings
from typing import Any, Callable, TypeVar

from opentelemetry import trace

from function_flow.errors import ConfigurationError

logger = logging.getLogger("function_flow.tracing")

VARIABLE = "FUNCTION_FLOW_TRACING"
MODES = ("off", "console", "otlp", "gcp")
EXTRA = "pip install 'function-flow-orchestrator[tracing]'"
#: The distributions each mode imports (of the `tracing` extra): what a
#: deployment with `function-flow deploy --tracing MODE` installs.
PACKAGES = {"off": (), "console": ("opentelemetry-sdk",),
            "otlp": ("opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-http"),
            "gcp": ("opentelemetry-sdk", "opentelemetry-exporter-gcp-trace")}
#: How long the end of an entry point waits for its spans to be exported.
FLUSH_TIMEOUT_MILLIS = 10_000

_lock = threading.Lock()
#: The provider `configure` installed (it flushes it), and for which mode.
_installed: tuple[str, Any] | None = None
F = TypeVar("F", bound=Callable[..., Any])


# ------------------------------------------------------------ exporting


def flush() -> None:
    """Export the spans `configure`'s provider still holds (the end of a function call:
    Cloud Functions may freeze the instance until the next request)."""
    installed = _installed
    if installed is not None:
        installed[1].force_flush(FLUSH_TIMEOUT_MILLIS)


def flushed(entry_point: F) -> F:
    """An entry point that exports its spans before it returns."""
    @functools.wraps(entry_point)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return entry_point(*args, **kwargs)
        finally:
            flush()

    return call  # type: ignore[return-value]


def mode_of(value: str | None) -> str:
    """FUNCTION_FLOW_TRACING checked: one of MODES (unset: off)."""
    mode = (value or "").strip().lower() or "off"
    if mode not in MODES:
        raise ConfigurationError(f"{VARIABLE}={value!r} is not a tracing mode; use "
                                 "'gcp' (Cloud Trace), 'otlp' (OTEL_EXPORTER_OTLP_ENDPOINT), "
                                 "'console' or 'off'")
    return mode


def configure(settings: Any) -> None:
    """Install the TracerProvider FUNCTION_FLOW_TRACING asks for, once per process.

    Nothing for `off`, or when the application installed a provider of its
    own (function_flow's spans then go to it). ConfigurationError naming the
    `tracing` extra when the SDK or the exporter is not installed.
    """
    global _installed
    mode = mode_of(getattr(settings, "tracing", None))
    if mode == "off" or (_installed is not None and _installed[0] == mode):
        return
    with _lock:
        if _installed is not None:
            if _installed[0] != mode:
                logger.warning("%s=%s ignored: this process already traces with %s",
                               VARIABLE, mode, _installed[0])
            return
        from function_flow.tracing import recording  # (it imports this module)

        if recording():
            logger.warning("%s=%s ignored: the application set its own TracerProvider, "
                           "which gets function_flow's spans", VARIABLE, mode)
            return
        provider = provider_for(mode, getattr(settings, "project", None))
        trace.set_tracer_provider(provider)
        _installed = (mode, provider)
    logger.info("tracing: spans are exported to %s", mode)


def provider_for(mode: str, project: str | None = None) -> Any:
    """A new SDK TracerProvider exporting to `mode`'s exporter (not installed)."""
    sdk = _require("opentelemetry.sdk.trace", "opentelemetry-sdk", mode)
    export = _require("opentelemetry.sdk.trace.export", "opentelemetry-sdk", mode)
    resources = _require("opentelemetry.sdk.resources", "opentelemetry-sdk", mode)
    # The function's name, unless OTEL_SERVICE_NAME or a service.name in
    # OTEL_RESOURCE_ATTRIBUTES names the service: attributes given to
    # Resource.create would win over both, so give none then.
    name = os.environ.get("K_SERVICE") or os.environ.get("FUNCTION_TARGET") or "function-flow"
    named = "service.name" in resources.OTELResourceDetector().detect().attributes
    attributes = {} if named else {"service.name": name}
    provider = sdk.TracerProvider(resource=resources.Resource.create(attributes))
    if mode == "console":
        exporter = export.ConsoleSpanExporter(
            out=_Stderr(), formatter=lambda span: span.to_json(indent=None) + "\n")
        provider.add_span_processor(export.SimpleSpanProcessor(exporter))
        return provider
    if mode == "otlp":
        protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                    or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
        module, package = ("opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                           "opentelemetry-exporter-otlp-proto-grpc") if protocol == "grpc" \
            else ("opentelemetry.exporter.otlp.proto.http.trace_exporter",
                  "opentelemetry-exporter-otlp-proto-http")
        exporter = _require(module, package, mode).OTLPSpanExporter()
    else:
        cloud_trace = _require("opentelemetry.exporter.cloud_trace",
                               "opentelemetry-exporter-gcp-trace", mode)
        from google.auth.exceptions import DefaultCredentialsError

        with warnings.catch_warnings():  # it points to Google's OTLP endpoint (otlp does)
            warnings.simplefilter("ignore", DeprecationWarning)
            try:
                exporter = cloud_trace.CloudTraceSpanExporter(project_id=project)
            except DefaultCredentialsError:
                raise ConfigurationError(
                    f"{VARIABLE}=gcp needs Google credentials to write to Cloud Trace, and "
                    "none were found: run `gcloud auth application-default login` (or set "
                    "GOOGLE_APPLICATION_CREDENTIALS), or trace locally with "
                    f"{VARIABLE}=otlp or console") from None
    provider.add_span_processor(export.BatchSpanProcessor(exporter))
    return provider


def _require(module: str, package: str, mode: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        # The extra installs what PACKAGES names; the gRPC exporter (OTLP over
        # grpc) is not among them, and the extra would not help.
        extra = any(package in packages for packages in PACKAGES.values())
        how = EXTRA if extra else f"pip install {package} (not in the tracing extra)"
        raise ConfigurationError(
            f"{VARIABLE}={mode} needs {package}, which is not installed: {how}; deployed "
            f"with function-flow deploy, add {package} to the requirements.txt beside the "
            f"workflow file; or unset {VARIABLE}") from None


class _Stderr:
    """Writes to whatever sys.stderr is at the time (a test's capture, a redirect)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()
