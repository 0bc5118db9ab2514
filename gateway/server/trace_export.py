"""The OpenTelemetry SDK's pipeline for the gateway's spans: the tracer provider, its resource and sampler, and
batches over OTLP/HTTP from the SDK's own thread.

``tracing.tracing_of`` imports this module only when a collector is named: the SDK and the OTLP exporter (with
protobuf and requests) take about 5 MiB in every worker, which a gateway without tracing does not pay.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased
from opentelemetry.util.types import AttributeValue

from gateway import __version__
from gateway.config import OtelConfig

__all__ = ["tracer_provider"]


def tracer_provider(otel: OtelConfig | None) -> TracerProvider:
    """A provider exporting to ``server.otel``'s collector, else to the one the ``OTEL_*`` variables name (the SDK
    reads them: the endpoint, headers, batch sizes, the sampler), ``server.otel``'s fields winning."""
    endpoint = otel.endpoint if otel is not None else None
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces" if endpoint else None)
    resource = Resource.create({"service.version": __version__})
    service_name = otel.service_name if otel is not None else None
    if service_name is not None or str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": service_name or "agent-gateway"}))
    sampler: Sampler | None = None
    if otel is not None and otel.sample_ratio is not None:
        sampler = ParentBased(TraceIdRatioBased(otel.sample_ratio))
    resource = _ProcessResource(resource.attributes, resource.schema_url)
    provider = TracerProvider(sampler=sampler, resource=resource, shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


class _ProcessResource(Resource):
    """The process's resource, hashed once: the OTLP encoder groups every span it exports by its resource, and
    the SDK's ``Resource`` serialises its attributes to JSON for each hash (about a tenth of a span's cost)."""

    def __init__(self, attributes: Mapping[str, AttributeValue], schema_url: str | None = None) -> None:
        super().__init__(attributes, schema_url)
        self._hash = super().__hash__()

    def __hash__(self) -> int:
        return self._hash
