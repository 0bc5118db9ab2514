"""OpenTelemetry traces: a server span per request, a client span per upstream attempt, W3C trace context both ways.

Off unless ``server.otel`` or the standard variables (``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) name a collector: then ``tracing_of``
is None and every caller skips its one ``is None`` check, so a gateway
without a collector makes no span and pays nothing. On, spans leave in
batches over OTLP/HTTP from the SDK's own thread; the rest of the standard
variables (``OTEL_SERVICE_NAME``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``...) apply as the SDK reads them, and
``server.otel``'s fields win over them.

Spans carry names, numbers and statuses only, never content: the client's
key by its name, the provider's key not at all. An incoming ``traceparent``
is continued; an upstream request carries the gateway's own ``traceparent``
(its client span's), and nothing else of the client's trace context.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

import httpx
from opentelemetry import context, trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from starlette.types import Scope

from gateway import __version__
from gateway.config import ServerConfig
from gateway.core.errors import GatewayError
from gateway.dialects import FRONT_DOORS
from gateway.server.logs import capped as _capped
from gateway.server.metrics import RequestRecord
from gateway.server.recent import PLAYGROUND

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["Attempt", "ServerSpan", "Tracing", "tracing_of"]

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_DOORS: Final = frozenset(door.path for door in FRONT_DOORS)
# The requests that get a server span: those to the API (the doors, count_tokens, forwarded ones) and the
# console's playground, which reach providers; not probes, metrics scrapes or the console's page and data.
_TRACED_PREFIX: Final = "/v1/"


def tracing_of(server: ServerConfig, env: Mapping[str, str] = os.environ) -> Tracing | None:
    """The process's tracing, or None when nothing names a collector (or ``OTEL_SDK_DISABLED`` says no)."""
    otel = server.otel
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return None
    named = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if otel is None and not named:
        return None
    from gateway.server.trace_export import tracer_provider  # the SDK, imported only for a gateway that traces

    return Tracing(tracer_provider(otel))


class _ScopeHeaders(Getter[Scope]):
    """An ASGI scope's headers, as the propagator reads a carrier."""

    def get(self, carrier: Scope, key: str) -> list[str] | None:
        name = key.encode("latin-1")
        values = [bytes(value).decode("latin-1") for header, value in carrier["headers"] if header == name]
        return values or None

    def keys(self, carrier: Scope) -> list[str]:
        return [bytes(header).decode("latin-1") for header, _ in carrier["headers"]]


_SCOPE_HEADERS: Final = _ScopeHeaders()


def capped(text: str) -> str:
    """A client-chosen value, as long as a log line would keep it."""
    return _capped(text) or ""


class Tracing:
    """One process's tracer, over its own provider (no global state: each app its own)."""

    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("agent-gateway", __version__)

    def traces(self, scope: Scope) -> bool:
        path: str = scope["path"]
        return path.startswith(_TRACED_PREFIX) or path == PLAYGROUND

    def start(self, scope: Scope) -> ServerSpan:
        """The request's server span, continuing the client's trace, current until ``ServerSpan.finish``."""
        parent = _PROPAGATOR.extract(scope, getter=_SCOPE_HEADERS)
        span = self._tracer.start_span(scope["method"], context=parent, kind=SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(span, parent))
        return ServerSpan(span, token)

    def attempt(self, provider: str, method: str, base: httpx.URL, path: str) -> Attempt:
        """A client span for one upstream request, a child of the current (server) span; ``base`` is the
        provider's base URL without credentials or query."""
        span = self._tracer.start_span(f"{method} {capped(path)}", kind=SpanKind.CLIENT)
        port = base.port or (443 if base.scheme == "https" else 80)
        span.set_attributes(
            {
                "http.request.method": method,
                "server.address": base.host,
                "server.port": port,
                "url.full": capped(f"{str(base).rstrip('/')}/{path.lstrip('/')}"),
                "gen_ai.provider.name": provider,
            }
        )
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
        return Attempt(span, carrier["traceparent"])

    def shutdown(self) -> None:
        """Export what is left and stop the exporter's thread (blocking: call it off the event loop)."""
        self._provider.shutdown()


class ServerSpan:
    """A request's server span: current while the request runs, filled in from its record at its end."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: trace.Span, token: object) -> None:
        self._span = span
        self._token = token

    def finish(self, record: RequestRecord, scope: Scope) -> None:
        context.detach(self._token)  # type: ignore[arg-type]  # the token attach returned
        span = self._span
        door = scope["path"] in _DOORS
        if door:
            span.update_name(f"chat {capped(record.model)}" if record.model else "chat")
        else:
            span.update_name(f"{scope['method']} {capped(scope['path'])}")
        attributes: dict[str, str | int | float | bool | tuple[str, ...]] = {
            "http.request.method": scope["method"],
            "url.path": capped(scope["path"]),
            "http.response.status_code": record.status,
            "gateway.request_id": record.request_id,
            "gateway.stream": record.stream,
        }
        if door:
            attributes["gen_ai.operation.name"] = "chat"
        optional: dict[str, str | int | None] = {
            "gen_ai.request.model": capped(record.model) if record.model else None,
            "gen_ai.provider.name": record.provider,
            "gen_ai.response.model": capped(record.upstream_model) if record.upstream_model else None,
            "gen_ai.usage.input_tokens": record.prompt_tokens,
            "gen_ai.usage.output_tokens": record.completion_tokens,
            "gateway.route": record.route,
            "gateway.key.name": record.key,
            "gateway.retries": record.retries or None,
            "gateway.fallbacks": record.fallbacks or None,
        }
        attributes.update({name: value for name, value in optional.items() if value is not None})
        if record.rewrite.finish_reasons:
            attributes["gen_ai.response.finish_reasons"] = tuple(record.rewrite.finish_reasons)
        if record.stream and record.first_byte is not None:
            # The first body byte of a stream is its first token's event (the head goes with it). An attribute,
            # not a span event too: an event would cost a tenth of the span pair's export again.
            attributes["gen_ai.server.time_to_first_token"] = record.first_byte
        error = record.error_kind or ("client_disconnected" if record.disconnected else None)
        if error is None and record.status >= 400:
            error = str(record.status)
        if error is not None:
            attributes["error.type"] = error
        span.set_attributes(attributes)
        if record.status >= 500 or record.error_kind is not None:
            span.set_status(Status(StatusCode.ERROR))
        span.end()


class Attempt:
    """One upstream request's client span, and the ``traceparent`` that request carries."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, span: trace.Span, traceparent: str) -> None:
        self._span = span
        self.traceparent = traceparent

    def answered(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self._span.set_attribute("error.type", str(status))
            self._span.set_status(Status(StatusCode.ERROR))

    def failed(self, error: BaseException) -> None:
        """The request got no answer (a timeout, a refused connection, the gateway's own cap)."""
        kind = error.kind.name.lower() if isinstance(error, GatewayError) else type(error).__qualname__
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR))
        self._span.end()

    def end(self) -> None:
        self._span.end()
