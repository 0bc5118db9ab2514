"""Errors in OpenAI's shape, so stock clients raise the exception they know."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

__all__ = ["GatewayError", "error_body"]


def error_body(message: str, type: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class GatewayError(Exception):
    """A failure the client is told about: an HTTP status and an OpenAI error object."""

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.retryable = retryable  # whether another attempt upstream may succeed
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    @property
    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.code, self.param)

    def response(self) -> Response:
        return Response(orjson.dumps(self.body), self.status, self.headers, media_type="application/json")

    @classmethod
    def bad_request(cls, message: str, param: str | None = None, code: str | None = None) -> GatewayError:
        return cls(400, message, param=param, code=code)

    @classmethod
    def upstream_unreachable(cls, provider: str) -> GatewayError:
        message = f"The upstream provider {provider!r} could not be reached."
        return cls(502, message, "api_error", "upstream_unreachable", retryable=True)

    @classmethod
    def upstream_timeout(cls, provider: str) -> GatewayError:
        return cls(504, f"The upstream provider {provider!r} timed out.", "api_error", "upstream_timeout", retryable=True)
