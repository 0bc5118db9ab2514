"""Request ids and the access log, as plain ASGI middleware.

Plain ASGI (not ``BaseHTTPMiddleware``) so streamed bodies pass through
unbuffered and client disconnects still reach the handlers.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["AccessLog", "request_id_of"]

logger = logging.getLogger("gateway.access")

# An incoming id is honoured only when it is short and printable, so it is safe in logs and headers.
_VALID_REQUEST_ID = re.compile(r"[!-~]{1,128}")


def request_id_of(scope: Scope) -> str:
    return scope["state"]["request_id"]


class AccessLog:
    """Assigns each request an id (returned as ``x-request-id``) and logs one line when it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _VALID_REQUEST_ID.fullmatch(incoming) else "req_" + uuid.uuid4().hex
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 0
        first_byte: float | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status, first_byte
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", request_id.encode())]
            elif first_byte is None and message["type"] == "http.response.body":
                first_byte = time.perf_counter()
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            end = time.perf_counter()
            logger.info(
                "%s %s route=%s status=%d duration_ms=%.1f ttfb_ms=%s request_id=%s",
                scope["method"],
                scope["path"],
                state.get("route", "-"),
                status,
                (end - start) * 1000,
                "-" if first_byte is None else f"{(first_byte - start) * 1000:.1f}",
                request_id,
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
