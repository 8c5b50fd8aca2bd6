"""Spans as the tests read them: from an in-memory exporter, or from console lines in logs.

Both are the SDK's JSON form of a span (`ReadableSpan.to_json`, which the
console exporter of FUNCTION_FLOW_TRACING=console writes one line each), so
one reader serves the embedded tests and the functions-framework processes.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


def memory_provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


class Spans:
    """Finished spans by name and id, with the questions the tests ask of a trace."""

    def __init__(self, spans: Iterable[dict[str, Any]]) -> None:
        self.all = list(spans)
        self.by_id = {s["context"]["span_id"]: s for s in self.all}

    @classmethod
    def of(cls, exporter: InMemorySpanExporter) -> "Spans":
        return cls(json.loads(s.to_json()) for s in exporter.get_finished_spans())

    @classmethod
    def in_logs(cls, text: str) -> "Spans":
        """The console exporter's lines among a process's other output."""
        found = []
        for line in text.splitlines():
            if line.startswith('{"name"') and '"context"' in line:
                found.append(json.loads(line))
        return cls(found)

    def named(self, verb: str, **attributes: Any) -> list[dict[str, Any]]:
        """Spans "VERB ..." ("claim TASK", "run JOB") with these function_flow.* attributes."""
        return [s for s in self.all if s["name"].split(" ")[0] == verb and all(
            s["attributes"].get(f"function_flow.{k}") == v for k, v in attributes.items())]

    def one(self, name: str, **attributes: Any) -> dict[str, Any]:
        found = self.named(name, **attributes)
        assert len(found) == 1, (name, attributes, [s["name"] for s in self.all])
        return found[0]

    def of_run(self, run_id: str) -> "Spans":
        """The spans of one run's trace (its run span's trace id)."""
        trace_id = self.one("run", run_id=run_id)["context"]["trace_id"] \
            if self.named("run", run_id=run_id) else None
        return Spans(s for s in self.all if s["context"]["trace_id"] == trace_id)

    def parent(self, span: dict[str, Any]) -> dict[str, Any] | None:
        return self.by_id.get(span["parent_id"]) if span["parent_id"] else None

