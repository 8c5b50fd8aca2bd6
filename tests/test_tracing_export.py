"""Where spans go: FUNCTION_FLOW_TRACING=console|otlp|gcp, and the errors when it cannot.

The OTLP exporter posts to a real local HTTP receiver that decodes the
protobuf as a collector would; Cloud Trace is replaced at its client
boundary (TraceServiceClient.batch_write_spans), the exporter is real.
"""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import subprocess
import sys
import threading

import pytest

from function_flow import tracing
from function_flow.config import Settings
from function_flow.errors import ConfigurationError
from function_flow.local.credentials import offline_credentials_env

pytestmark = pytest.mark.timeout(120)


def one_body_span(provider) -> tuple[str, str]:
    """Record one body span through `provider`; its (trace id, span id) as hex."""
    with tracing.use(provider), tracing.body("r", "t", 1) as span:
        context = span.get_span_context()
    provider.force_flush()
    return format(context.trace_id, "032x"), format(context.span_id, "016x")


def test_console_writes_one_json_line_per_span_on_stderr(capsys):
    provider = tracing.provider_for("console")
    trace_id, span_id = one_body_span(provider)
    captured = capsys.readouterr()
    assert captured.out == ""
    line, = captured.err.splitlines()
    span = json.loads(line)
    assert span["name"] == "body t" and span["context"]["trace_id"] == f"0x{trace_id}"
    assert span["resource"]["attributes"]["service.name"] == "function-flow"


@pytest.mark.parametrize("environment, expected", [
    ({}, "function-flow"),
    ({"FUNCTION_TARGET": "scheduler"}, "scheduler"),  # functions-framework's target
    ({"K_SERVICE": "sales-scheduler", "FUNCTION_TARGET": "scheduler"}, "sales-scheduler"),
    ({"K_SERVICE": "sales-scheduler", "OTEL_SERVICE_NAME": "mine"}, "mine"),
    ({"K_SERVICE": "sales-scheduler",
      "OTEL_RESOURCE_ATTRIBUTES": "team=data,service.name=mine"}, "mine"),
])
def test_the_service_name_is_the_functions_unless_otel_variables_name_one(
        monkeypatch, environment, expected):
    """README: the function's name (K_SERVICE or FUNCTION_TARGET); OTEL_SERVICE_NAME
    and OTEL_RESOURCE_ATTRIBUTES win over it."""
    for name in ("K_SERVICE", "FUNCTION_TARGET", "OTEL_SERVICE_NAME",
                 "OTEL_RESOURCE_ATTRIBUTES"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    provider = tracing.provider_for("console")
    assert provider.resource.attributes["service.name"] == expected


class OtlpReceiver:
    """POST /v1/traces, OTLP over HTTP with protobuf bodies, as a collector takes it."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import \
            ExportTraceServiceRequest

        self.requests: list = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.requests.append((self.path, request))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"


def test_otlp_exports_to_the_standard_endpoint_variable(monkeypatch):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("OTEL_SERVICE_NAME", "my-pipeline")
    provider = tracing.provider_for("otlp")
    processor, = provider._active_span_processor._span_processors
    assert isinstance(processor.span_exporter, OTLPSpanExporter)  # http/protobuf
    try:
        trace_id, span_id = one_body_span(provider)
    finally:
        provider.shutdown()
        receiver.server.shutdown()
    (path, request), = receiver.requests
    assert path == "/v1/traces"
    resource_spans, = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "my-pipeline"
    span, = resource_spans.scope_spans[0].spans
    assert (span.name, span.trace_id.hex(), span.span_id.hex()) == ("body t", trace_id,
                                                                     span_id)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # inside the exporter
def test_gcp_writes_to_cloud_trace_under_the_project(monkeypatch, tmp_path):
    from google.cloud.trace_v2 import TraceServiceClient
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

    for name, value in offline_credentials_env(str(tmp_path)).items():
        monkeypatch.setenv(name, value)
    written = []
    monkeypatch.setattr(TraceServiceClient, "batch_write_spans",
                        lambda self, request=None, **kw: written.append(request))
    provider = tracing.provider_for("gcp", "traced-project")
    processor, = provider._active_span_processor._span_processors
    assert isinstance(processor.span_exporter, CloudTraceSpanExporter)
    trace_id, span_id = one_body_span(provider)
    provider.shutdown()
    request, = written
    assert request.name == "projects/traced-project"
    span, = request.spans
    # The form Cloud Logging's logging.googleapis.com/trace field points into.
    assert span.name == f"projects/traced-project/traces/{trace_id}/spans/{span_id}"
    assert span.display_name.value == "body t"


def test_gcp_without_credentials_is_one_configuration_error(monkeypatch):
    import google.auth
    from google.auth.exceptions import DefaultCredentialsError

    def no_credentials(*args, **kwargs):
        raise DefaultCredentialsError("Your default credentials were not found.")

    monkeypatch.setattr(google.auth, "default", no_credentials)
    with pytest.raises(ConfigurationError) as error:
        tracing.provider_for("gcp", "traced-project")
    assert str(error.value).startswith("FUNCTION_FLOW_TRACING=gcp needs Google credentials")
    assert "gcloud auth application-default login" in str(error.value)


@pytest.mark.parametrize("mode, package", [
    ("gcp", "opentelemetry-exporter-gcp-trace"),
    ("otlp", "opentelemetry-exporter-otlp-proto-http"),
    ("console", "opentelemetry-sdk")])
def test_a_missing_package_names_the_tracing_extra(monkeypatch, mode, package):
    for module in ("opentelemetry.exporter.cloud_trace",
                   "opentelemetry.exporter.otlp.proto.http.trace_exporter"):
        monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    if mode == "console":
        monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    with pytest.raises(ConfigurationError) as error:
        tracing.configure(Settings(tracing=mode))
    assert package in str(error.value)
    assert "function-flow-orchestrator[tracing]" in str(error.value)
    assert not tracing.recording()


def test_otlp_over_grpc_names_its_exporter_which_the_extra_does_not_install(monkeypatch):
    """The tracing extra has the OTLP/HTTP exporter only: for grpc, the error says
    to install the gRPC exporter itself, not the extra (which would not help)."""
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                        None)  # as if not installed (it is not, in the test extra)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(ConfigurationError) as error:
        tracing.configure(Settings(tracing="otlp"))
    assert "pip install opentelemetry-exporter-otlp-proto-grpc" in str(error.value)
    assert "[tracing]" not in str(error.value)
    assert not tracing.recording()


def test_an_unknown_mode_is_refused_and_off_is_the_default():
    assert Settings.from_env({}).tracing == "off"
    assert Settings.from_env({"FUNCTION_FLOW_TRACING": " GCP "}).tracing == "gcp"
    with pytest.raises(ConfigurationError, match="FUNCTION_FLOW_TRACING='jaeger'.*'gcp'"):
        Settings.from_env({"FUNCTION_FLOW_TRACING": "jaeger"})


def test_configure_installs_the_provider_once_for_the_process():
    """In a process of its own: the global TracerProvider can be set once."""
    code = """
from function_flow import tracing
from function_flow.config import Settings
from opentelemetry import trace
assert not tracing.recording()
tracing.configure(Settings(tracing="off"))
assert not tracing.recording()
tracing.configure(Settings(tracing="console"))
provider = trace.get_tracer_provider()
tracing.configure(Settings(tracing="console"))
tracing.configure(Settings(tracing="otlp"))  # a second mode is ignored, with a warning
assert trace.get_tracer_provider() is provider and tracing.recording()
with tracing.body("r", "t", 1):
    pass
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    spans = [json.loads(line) for line in result.stderr.splitlines()
             if line.startswith('{"name"')]
    assert [s["name"] for s in spans] == ["body t"]


def test_an_application_provider_keeps_function_flows_spans():
    code = """
import logging
from function_flow import tracing
from function_flow.config import Settings
from opentelemetry import trace
from spans import memory_provider
logging.basicConfig()
provider, exporter = memory_provider()
trace.set_tracer_provider(provider)
tracing.configure(Settings(tracing="console"))  # ignored, with a warning
with tracing.body("r", "t", 1):
    pass
assert [s.name for s in exporter.get_finished_spans()] == ["body t"]
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, cwd=pathlib.Path(__file__).parent)
    assert result.returncode == 0, result.stderr
    assert "FUNCTION_FLOW_TRACING=console ignored: the application set its own " \
        "TracerProvider" in result.stderr
    assert '{"name"' not in result.stderr  # nothing on the console


def test_an_entry_point_exports_its_spans_before_it_returns(tmp_path):
    """Batched spans would wait seconds for their export: a frozen instance loses them."""
    receiver = OtlpReceiver()
    code = """
import sys
from function_flow import tasks
from functions_stack import http_client
job = tasks.Job(name="flushed")

@job.task(task_id="only")
def only(task, job):
    return 1

answer = http_client(job.make_start(), "start").post("/", json={})
print(answer.status_code, flush=True)
sys.stdin.read()  # alive until the test has looked
"""
    env = dict(os.environ, FUNCTION_FLOW_TRACING="otlp", OTEL_BSP_SCHEDULE_DELAY="600000",
               OTEL_EXPORTER_OTLP_ENDPOINT=receiver.url,
               FUNCTION_FLOW_DB=str(tmp_path / "runs.db"))
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env,
                             cwd=pathlib.Path(__file__).parent)
    try:
        assert child.stdout.readline().strip() == "200"
        names = [span.name for _, request in receiver.requests
                 for resource in request.resource_spans
                 for scope in resource.scope_spans for span in scope.spans]
        assert "run flushed" in names
    finally:
        child.communicate("", timeout=60)
        receiver.server.shutdown()
