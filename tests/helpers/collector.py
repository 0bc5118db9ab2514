"""An OTLP/HTTP trace collector on 127.0.0.1: what a real one would receive, decoded from its protobuf."""

from __future__ import annotations

import contextlib
import gzip
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanMessage
from opentelemetry.proto.trace.v1.trace_pb2 import Status


@dataclass
class Span:
    """One received span, its ids in hex as a traceparent spells them."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[dict[str, Any]]
    status: str
    resource: dict[str, Any]
    start_ns: int
    end_ns: int


@dataclass
class Collector:
    url: str
    spans: list[Span] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def wait_for(self, found: Callable[[list[Span]], bool], timeout: float = 10) -> list[Span]:
        deadline = time.monotonic() + timeout
        while not found(self.spans):
            if time.monotonic() > deadline:
                raise AssertionError(f"the collector did not receive the spans expected; it has {self.spans}")
            time.sleep(0.02)
        return self.spans


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(item) for item in value.array_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs}


@contextlib.contextmanager
def collector() -> Iterator[Collector]:
    """A collector listening on a free port; its ``url`` is the OTLP base URL (spans go to ``/v1/traces``)."""
    received: list[Collector] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            request = ExportTraceServiceRequest.FromString(body)
            sink = received[0]
            sink.paths.append(self.path)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        sink.spans.append(
                            Span(
                                name=span.name,
                                kind=SpanMessage.SpanKind.Name(span.kind),
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                attributes=_attributes(span.attributes),
                                events=[
                                    {"name": e.name, "time_ns": e.time_unix_nano, **_attributes(e.attributes)}
                                    for e in span.events
                                ],
                                status=Status.StatusCode.Name(span.status.code),
                                resource=resource,
                                start_ns=span.start_time_unix_nano,
                                end_ns=span.end_time_unix_nano,
                            )
                        )
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    sink = Collector(f"http://127.0.0.1:{server.server_address[1]}")
    received.append(sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield sink
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
