"""JSON request bodies, decoded and re-encoded without changing a value.

orjson is fast but turns integers beyond 64 bits into floats. A forwarded
body must reach the upstream as the client wrote it, so a body that may hold
such an integer (any run of 19+ digits, a cheap over-approximation: the
int64 minimum has 19) takes the standard library's exact path instead.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

import orjson

__all__ = ["dumps", "loads"]

_LONG_DIGITS: Final = re.compile(rb"\d{19}")


def loads(body: bytes) -> Any:
    """Decode a JSON body; raises ``ValueError`` (as orjson does) when it is not JSON."""
    if _LONG_DIGITS.search(body) is None:
        return orjson.loads(body)
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError:  # an integer beyond 64 bits, kept exact by loads()
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()
