"""Token counts from an upstream's ``usage`` object, and finding that object at the end of a body. Pure.

Upstreams report usage in several shapes: chat completions' ``prompt_tokens``
and ``completion_tokens``, the Responses API's ``input_tokens`` and
``output_tokens``, embeddings' ``prompt_tokens`` and ``total_tokens``. A
request is charged its prompt plus its completion, whichever shape says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["UsageTail", "tokens_of"]

_PAIRS: Final = (("prompt_tokens", "completion_tokens"), ("input_tokens", "output_tokens"))
_KEY: Final = b'"usage"'
_DECODER: Final = json.JSONDecoder()
# A usage object is a few counts and their details: more than this after the key is something else.
_MAX_USAGE_BYTES: Final = 4096


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def tokens_of(usage: object) -> int | None:
    """Prompt plus completion tokens of a usage object; None when it says neither (nor a total)."""
    if not isinstance(usage, Mapping):
        return None
    for prompt_key, completion_key in _PAIRS:
        prompt, completion = _count(usage.get(prompt_key)), _count(usage.get(completion_key))
        if prompt is not None or completion is not None:
            return (prompt or 0) + (completion or 0)
    return _count(usage.get("total_tokens"))


class UsageTail:
    """The last bytes of a forwarded answer, where its usage is: a JSON body's ``usage`` field, a stream's
    last usage chunk, or the ``response.usage`` of a Responses stream's ``response.completed`` event.

    Only the tail is kept, so a large body (a batch of embeddings) costs no more than a small one.
    """

    __slots__ = ("_size", "_tail")

    def __init__(self, size: int = 64 * 1024) -> None:
        self._size = size
        self._tail = bytearray()

    def feed(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > 2 * self._size:
            del self._tail[: -self._size]

    def usage(self) -> Mapping[str, Any] | None:
        """The last ``"usage": {...}`` object in the tail. A key in a JSON string has its quotes escaped,
        so every unescaped ``"usage"`` is a key; one whose value is not an object (null) is passed over."""
        tail = bytes(self._tail[-self._size :])
        end = len(tail)
        while (at := tail.rfind(_KEY, 0, end)) >= 0:
            end = at
            rest = tail[at + len(_KEY) : at + _MAX_USAGE_BYTES].lstrip()
            if not rest.startswith(b":"):
                continue
            try:
                value, _ = _DECODER.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
            except ValueError:
                continue
            if isinstance(value, dict):
                return value
        return None
