"""JSON request bodies, decoded and re-encoded without changing a value, and never into invalid JSON.

orjson is fast but turns integers beyond 64 bits into floats. A forwarded
body must reach the upstream as the client wrote it, so a body that may hold
such an integer (any run of 19+ digits, a cheap over-approximation: the
int64 minimum has 19) is decoded again by the standard library's exact
path, once orjson has judged it valid. orjson is strict where the standard
library is lenient: it refuses NaN, Infinity, numbers that overflow a double
(1e400) and lone surrogate escapes ("\\ud800"), so none of them can come back
out as a literal that is not JSON.

Every refusal is a 400 naming the problem.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

from gateway.core.errors import ErrorKind, GatewayError

__all__ = ["MAX_DEPTH", "dumps", "encode", "loads"]

_LONG_DIGITS: Final = re.compile(rb"\d{19}")
# The deepest nesting orjson encodes; anything deeper is refused rather than re-encoded some slower way.
MAX_DEPTH: Final = 254
_TOO_DEEP: Final = f"The request body is nested too deeply: more than {MAX_DEPTH} levels of arrays and objects."


def loads(body: bytes) -> Any:
    """Decode a JSON body, or raise a 400 saying why it is not one."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if str(exc).startswith("depth limit exceeded"):
            raise GatewayError(ErrorKind.INVALID_REQUEST, _TOO_DEEP) from None
        raise GatewayError(ErrorKind.INVALID_REQUEST, f"The request body is not valid JSON: {exc}.") from None
    if _LONG_DIGITS.search(body) is None:
        return value
    try:
        return json.loads(body)
    except RecursionError:
        raise GatewayError(ErrorKind.INVALID_REQUEST, _TOO_DEEP) from None


def dumps(value: Any) -> bytes:
    """Encode a decoded body (or one built from it) as JSON, or raise a 400 when it is nested too deeply."""
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, kept exact by loads(), or nesting past MAX_DEPTH
        pass
    if _deeper_than(value, MAX_DEPTH):
        raise GatewayError(ErrorKind.INVALID_REQUEST, _TOO_DEEP)
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def encode(value: Any) -> bytes:
    """Encode one of the gateway's own answers (an event, a response object): integers beyond 64 bits exact, and
    never refused, since an answer that repeats a request's settings nests a few levels deeper than the request."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether arrays and objects nest more than ``limit`` levels; iterative, so any depth is safe to measure."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False
