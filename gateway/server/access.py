"""Request ids, the access log and request metrics, as plain ASGI middleware.

Plain ASGI (not ``BaseHTTPMiddleware``) so streamed bodies pass through
unbuffered and client disconnects still reach the handlers. Handlers fill in
the request's ``RequestRecord``; this middleware reports it once, at the end.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.server.logs import capped
from gateway.server.metrics import Metrics, RequestRecord

__all__ = ["AccessLog", "record_of"]

logger = logging.getLogger("gateway.access")

# An incoming id is honoured only when it is short and printable, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"[!-~]{1,128}")
# Probes are logged at debug level and left out of the request metrics.
_PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


def record_of(scope: Scope) -> RequestRecord:
    record: RequestRecord = scope["state"]["record"]
    return record


class AccessLog:
    """Assigns each request an id (returned as ``x-request-id``), then reports it: metrics and one log line."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else "req_" + uuid.uuid4().hex
        record = RequestRecord(request_id, start)
        scope.setdefault("state", {})["record"] = record
        status = 0
        first_byte: float | None = None
        complete = False

        async def send_observed(message: Message) -> None:
            nonlocal status, first_byte, complete
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
                if not record.stream and record.route is not None:
                    overhead = (time.perf_counter() - start - record.upstream_seconds) * 1000
                    headers.append((b"x-gateway-overhead-ms", f"{max(0.0, overhead):.2f}".encode()))
                message["headers"] = headers
            elif message["type"] == "http.response.body":
                if first_byte is None:
                    first_byte = time.perf_counter() - start
                complete = not message.get("more_body", False)
            await send(message)

        probe = scope["path"] in _PROBES
        if not probe:
            self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_observed)
        except Exception:
            # Starlette re-raises what its error handler has answered (a 500 that says connection: close); the
            # server would then cut the connection, and the client's next request on it with it. Only an answer
            # cut short must go that way.
            if not complete:
                raise
        finally:
            duration = time.perf_counter() - start
            if not probe:
                self.metrics.in_flight.dec()
                self.metrics.observe(record, status, duration, first_byte)
            if record.route is not None and logger.isEnabledFor(logging.DEBUG):
                stats = record.rewrite
                logger.debug(
                    "rewrite",
                    extra={
                        "fields": {
                            "request_id": request_id,
                            "message_calls": stats.message_calls,
                            "client_calls": stats.client_calls,
                            "reasoning_chars": stats.reasoning_chars,
                            "reasoning": "exposed" if record.reasoning_exposed else "hidden",
                            "invalid_arguments": stats.invalid_arguments,
                        }
                    },
                )
            logger.log(
                logging.DEBUG if probe else logging.INFO,
                "%s %s %d",
                scope["method"],
                capped(scope["path"]),
                status,
                extra={"fields": _log_fields(record, scope, status, duration, first_byte)},
            )


def _log_fields(
    record: RequestRecord, scope: Scope, status: int, duration: float, first_byte: float | None
) -> dict[str, object]:
    """The access-log line: timings, the client key's name, route and counts; never content, never keys."""
    return {
        "request_id": record.request_id,
        "method": scope["method"],
        "path": capped(scope["path"]),
        "key": record.key,
        "route": record.route,
        "provider": record.provider,
        "upstream_model": capped(record.upstream_model),
        "status": status,
        "stream": record.stream,
        "duration_ms": round(duration * 1000, 2),
        "ttfb_ms": None if first_byte is None else round(first_byte * 1000, 2),
        "upstream_ms": round(record.upstream_seconds * 1000, 2),
        "retries": record.retries,
        "fallbacks": record.fallbacks,
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "estimated_tokens": record.estimated_tokens,
        "error_kind": record.error_kind,
        "client_disconnected": record.disconnected,
    }


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None
