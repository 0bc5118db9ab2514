"""One failure type for the whole gateway: a kind, a message, and what the client is told.

A failure travels unchanged from where it is found (a request translator, the
stream translator, the upstream client, the retry policy) to the front door
that answers, and only there becomes an HTTP response or a stream's last
event in the client's own dialect (each dialect maps the kind to its error
types). The kind is neutral: an HTTP status and a short code, no dialect's
vocabulary, so no layer maps one failure type onto another on the way.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum, unique
from typing import Any

__all__ = ["ErrorKind", "GatewayError"]


@unique  # a member whose value repeated another's would silently be an alias of it
class ErrorKind(Enum):
    """What went wrong: ``(HTTP status, default code)``."""

    INVALID_REQUEST = (400, None)
    UNAUTHORIZED = (401, "invalid_api_key")
    FORBIDDEN = (403, "permission_denied")
    NOT_FOUND = (404, "not_found")
    METHOD_NOT_ALLOWED = (405, "method_not_allowed")
    REQUEST_TIMEOUT = (408, "request_timeout")
    TOO_LARGE = (413, "request_too_large")
    RATE_LIMITED = (429, "rate_limit_exceeded")
    QUOTA = (429, "insufficient_quota")
    INTERNAL = (500, None)
    # The upstream answered with an error status; the error keeps that status.
    UPSTREAM_STATUS = (502, "upstream_error")
    UNREACHABLE = (502, "upstream_unreachable")
    DISCONNECTED = (502, "upstream_disconnected")
    INCOMPLETE = (502, "upstream_incomplete")
    INVALID_RESPONSE = (502, "upstream_invalid_event")
    RESPONSE_TOO_LARGE = (502, "upstream_too_large")
    # The upstream sent its own error object in place of an answer (an SSE error event).
    UPSTREAM_ERROR = (502, "upstream_error_event")
    BUSY = (503, "provider_busy")
    UNAVAILABLE = (503, "gateway_unavailable")
    TIMEOUT = (504, "upstream_timeout")

    @property
    def status(self) -> int:
        return int(self.value[0])

    @property
    def code(self) -> str | None:
        code = self.value[1]
        return None if code is None else str(code)


class GatewayError(Exception):
    """A failure the client is told about.

    ``status`` overrides the kind's status (an upstream error keeps its own);
    ``upstream`` is the upstream's own error body (``{"error": {...}}``) and
    ``upstream_bytes`` its bytes, which a dialect of the same shape relays as
    they came; ``retryable`` says whether another attempt
    upstream may succeed; ``headers`` go on the HTTP answer (``retry-after``).
    """

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        code: str | None = None,
        param: str | None = None,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool = False,
        upstream: Mapping[str, Any] | None = None,
        upstream_bytes: bytes | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.code = code if code is not None else kind.code
        self.param = param
        self.status = status if status is not None else kind.status
        self.headers = dict(headers or {})
        self.retryable = retryable
        self.upstream = upstream
        self.upstream_bytes = upstream_bytes

    def __repr__(self) -> str:
        return f"GatewayError({self.kind.name}, {self.message!r}, status={self.status})"
