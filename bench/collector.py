"""An OTLP/HTTP trace sink for the benchmark's traced gateway: decodes each export, counts its spans, answers 200.

``python bench/collector.py --port N``; ``GET /healthz`` answers ``{"spans": <received so far>}``, so the
benchmark can tell that the traced gateway's spans did arrive. Its own process: decoding costs the sink's CPU,
not the gateway's or the load generator's.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ANSWER = ExportTraceServiceResponse().SerializeToString()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    options = parser.parse_args()
    lock = threading.Lock()
    received = {"spans": 0, "exports": 0}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["content-length"])))
            spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with lock:
                received["spans"] += spans
                received["exports"] += 1
            self._answer(_ANSWER, "application/x-protobuf")

        def do_GET(self) -> None:
            with lock:
                body = json.dumps(received).encode()
            self._answer(body, "application/json")

        def _answer(self, body: bytes, content_type: str) -> None:
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", options.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
