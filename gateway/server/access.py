"""Request ids, the access log and request metrics: each request's record, opened, stamped and reported once.

``open_record`` gives a request its id (an incoming ``x-request-id`` when it
is safe to echo) and the ``RequestRecord`` handlers fill in; ``send_noted``
sends each message of its answer, noting it in the record and giving the
answer the gateway's own headers; ``report`` turns the finished record into
metrics and one log line. The hot path (``hotpath``) and the reply writer
(``exchange``) call them, so no middleware layer wraps the server's ``send``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.types import Message, Scope, Send

from gateway.server.logs import capped
from gateway.server.metrics import Metrics, RequestRecord
from gateway.server.recent import Recent

__all__ = ["PROBES", "open_record", "record_of", "report", "send_noted"]

logger = logging.getLogger("gateway.access")

# An incoming id is honoured only when it is short and printable, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"[!-~]{1,128}")
# Probes are logged at debug level and left out of the request metrics.
PROBES = frozenset({"/healthz", "/readyz", "/metrics"})


def record_of(scope: Scope) -> RequestRecord:
    record: RequestRecord = scope["state"]["record"]
    return record


def open_record(scope: Scope) -> RequestRecord:
    """A new request's record, kept in its scope's state for the handlers (``record_of``)."""
    start = time.perf_counter()
    incoming = _header(scope, b"x-request-id")
    request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else "req_" + uuid.uuid4().hex
    record = RequestRecord(request_id, start)
    scope.setdefault("state", {})["record"] = record
    return record


async def send_noted(send: Send, record: RequestRecord, message: Message) -> None:
    """``message`` sent, noted in the request's record: the answer's status as it starts (its headers given the
    gateway's own, once: a reply the writer sent passes here again on its way through Starlette), when its first
    body byte left, and, once sent, whether it was the last."""
    kind = message["type"]
    if kind == "http.response.start":
        if not record.status:
            record.status = message["status"]
            message["headers"] = _stamped(record, [*message.get("headers", ())])
    elif kind == "http.response.body" and record.first_byte is None:
        record.first_byte = time.perf_counter() - record.started
    await send(message)
    if kind == "http.response.body":
        record.complete = not message.get("more_body", False)


def _stamped(record: RequestRecord, headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """An answer's headers with the gateway's own: its request id, and for a whole answer the gateway's time."""
    headers.append((b"x-request-id", record.request_id.encode()))
    if not record.stream and record.route is not None:
        overhead = (time.perf_counter() - record.started - record.upstream_seconds) * 1000
        headers.append((b"x-gateway-overhead-ms", f"{max(0.0, overhead):.2f}".encode()))
    return headers


def report(metrics: Metrics, record: RequestRecord, scope: Scope, recent: Recent | None = None) -> None:
    """The finished request: its metrics (not for probes), the console's recent requests, its access-log line."""
    duration = time.perf_counter() - record.started
    probe = scope["path"] in PROBES
    if not probe:
        metrics.observe(record, record.status, duration, record.first_byte)
        if recent is not None:
            recent.add(record, scope, duration)
    if record.route is not None and logger.isEnabledFor(logging.DEBUG):
        stats = record.rewrite
        logger.debug(
            "rewrite",
            extra={
                "fields": {
                    "request_id": record.request_id,
                    "message_calls": stats.message_calls,
                    "client_calls": stats.client_calls,
                    "reasoning_chars": stats.reasoning_chars,
                    "reasoning": "exposed" if record.reasoning_exposed else "hidden",
                    "invalid_arguments": stats.invalid_arguments,
                }
            },
        )
    level = logging.DEBUG if probe else logging.INFO
    if logger.isEnabledFor(level):
        fields = _log_fields(record, scope, record.status, duration, record.first_byte)
        logger.log(level, "%s %s %d", scope["method"], capped(scope["path"]), record.status, extra={"fields": fields})


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
