"""OpenAI's error conventions, shared by its two front doors (chat completions and the Responses API).

Not a dialect itself: the wording of a bad field (``Invalid type for
'input[0].role': expected a string.``, with ``param`` and ``code``), and the
error body OpenAI's SDKs raise from.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.fields import Expected, Path

__all__ = ["WORDING", "OpenAIWording", "error_body", "error_object", "error_type"]

_NOUNS: Final = {
    Expected.STRING: "a string",
    Expected.INTEGER: "an integer",
    Expected.NUMBER: "a number",
    Expected.BOOLEAN: "a boolean",
    Expected.OBJECT: "an object",
    Expected.ARRAY: "an array",
}


class OpenAIWording:
    """Paths as ``input[0].content[1].type``; messages and codes as OpenAI's API words them."""

    def where(self, path: Path) -> str:
        out = ""
        for part in path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
        return out

    def missing(self, where: str) -> GatewayError:
        return _error(where, f"Missing required parameter: '{where}'.", "missing_required_parameter")

    def wrong_type(self, where: str, expected: Expected) -> GatewayError:
        return _error(where, f"Invalid type for '{where}': expected {_NOUNS[expected]}.", "invalid_type")

    def too_small(self, where: str, minimum: int, expected: Expected) -> GatewayError:
        if expected is Expected.ARRAY:
            return _error(where, f"Invalid value for '{where}': it must hold at least one item.", "empty_array")
        if minimum == 1 and expected is Expected.STRING:
            return _error(where, f"Invalid value for '{where}': it must not be empty.", "invalid_value")
        return _error(where, f"Invalid value for '{where}': expected at least {minimum}.", "invalid_value")

    def too_many(self, where: str, maximum: int) -> GatewayError:
        return _error(where, f"Invalid value for '{where}': at most {maximum} entries are accepted.", "array_too_long")

    def invalid(self, where: str, message: str, code: str) -> GatewayError:
        return _error(where, message, code)


WORDING: Final = OpenAIWording()


def _error(param: str, message: str, code: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, code=code, param=param or None)


# OpenAI's error types by kind; a kind not named is an invalid request below 500, a server error from it.
_TYPES: Final = {
    ErrorKind.RATE_LIMITED: "rate_limit_exceeded",
    ErrorKind.QUOTA: "insufficient_quota",
    ErrorKind.INTERNAL: "server_error",
}


def error_type(error: GatewayError) -> str:
    """OpenAI's error type: an upstream's status keeps the usual split between 4xx and 5xx."""
    known = _TYPES.get(error.kind)
    if known is not None:
        return known
    return "invalid_request_error" if error.status < 500 else "api_error"


def error_object(error: GatewayError) -> dict[str, Any]:
    """The error as OpenAI's SDKs expect it: the upstream's own object when it sent one of this shape."""
    if error.upstream is not None and isinstance(error.upstream.get("error"), dict):
        return dict(error.upstream)
    return {"error": {"message": error.message, "type": error_type(error), "param": error.param, "code": error.code}}


def error_body(error: GatewayError) -> bytes:
    """OpenAI's error shape; an upstream's own OpenAI error goes out as the bytes it sent."""
    if error.upstream_bytes is not None:
        return error.upstream_bytes
    return orjson.dumps(error_object(error))
