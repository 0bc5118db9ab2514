"""Token counts: from an upstream's ``usage`` object, found at the end of a body, or estimated. Pure.

Upstreams report usage in several shapes: chat completions' ``prompt_tokens``
and ``completion_tokens``, the Responses API's ``input_tokens`` and
``output_tokens``, embeddings' ``prompt_tokens`` and ``total_tokens``. A
request is charged its prompt plus its completion, whichever shape says so.

When no usage comes (a stream cut short, a provider that reports none), the
gateway estimates, erring high: it cannot run the upstream model's tokenizer,
and an estimate that errs low would let a client spend past its limits.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.core import json_body
from gateway.core.sse import SSEComment, SSEDecoder, SSEEvent, encode_comment

__all__ = ["TokenUsage", "UsageChunkFilter", "UsageTail", "estimate_prompt", "estimate_size", "usage_of"]

_KEY: Final = b'"usage"'
_DECODER: Final = json.JSONDecoder()
# A usage object is a few counts and their details: more than this after the key is something else.
_MAX_USAGE_BYTES: Final = 4096
# Estimates: UTF-8 bytes per token (low, so the estimate errs high; English runs about four characters a token,
# CJK text about one), a message's framing, and an image (Anthropic's figure for a full-size one).
_BYTES_PER_TOKEN: Final = 3
_TOKENS_PER_MESSAGE: Final = 4
_TOKENS_PER_IMAGE: Final = 1600


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """An answer's token counts, whatever shape the upstream reported them in.

    ``prompt`` includes ``cached`` (the prompt tokens read from a cache) and ``cache_write`` (those written to
    one); ``completion`` includes ``reasoning``. A count the upstream did not report is 0.
    """

    prompt: int
    completion: int
    cached: int = 0
    cache_write: int = 0
    reasoning: int = 0

    @property
    def tokens(self) -> int:
        """What a request is charged: its prompt and its completion."""
        return self.prompt + self.completion


def _count(value: object) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _detail(usage: Mapping[str, Any], details: str, key: str) -> int:
    found = usage.get(details)
    return (_count(found.get(key)) or 0) if isinstance(found, Mapping) else 0


def usage_of(usage: object) -> TokenUsage | None:
    """A usage object as the gateway counts it: chat completions' ``prompt_tokens``/``completion_tokens``, the
    Responses API's and Anthropic's ``input_tokens``/``output_tokens`` (Anthropic's input excludes its cache
    reads and writes, which are added back), embeddings' ``total_tokens``; None when it says none of them."""
    if not isinstance(usage, Mapping):
        return None
    prompt, completion = _count(usage.get("prompt_tokens")), _count(usage.get("completion_tokens"))
    if prompt is not None or completion is not None:
        return TokenUsage(
            prompt or 0,
            completion or 0,
            # DeepSeek reports cache hits at the top level.
            cached=_detail(usage, "prompt_tokens_details", "cached_tokens")
            or _count(usage.get("prompt_cache_hit_tokens"))
            or 0,
            cache_write=_detail(usage, "prompt_tokens_details", "cache_write_tokens"),
            reasoning=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        )
    prompt, completion = _count(usage.get("input_tokens")), _count(usage.get("output_tokens"))
    if prompt is not None or completion is not None:
        read = _count(usage.get("cache_read_input_tokens")) or 0
        written = _count(usage.get("cache_creation_input_tokens")) or 0
        return TokenUsage(
            (prompt or 0) + read + written,
            completion or 0,
            cached=read or _detail(usage, "input_tokens_details", "cached_tokens"),
            cache_write=written,
            reasoning=_detail(usage, "output_tokens_details", "reasoning_tokens"),
        )
    total = _count(usage.get("total_tokens"))
    return TokenUsage(total, 0) if total is not None else None


class UsageTail:
    """The last bytes of a forwarded answer, where its usage is: a JSON body's ``usage`` field, a stream's
    last usage chunk, or the ``response.usage`` of a Responses stream's ``response.completed`` event.

    Only the tail is kept, so a large body (a batch of embeddings) costs no more than a small one; and the
    head, for a Messages stream, whose ``message_start`` has the input tokens that its last usage (in
    ``message_delta``) may leave out.
    """

    __slots__ = ("_head", "_size", "_tail")

    def __init__(self, size: int = 64 * 1024) -> None:
        self._size = size
        self._head = bytearray()
        self._tail = bytearray()

    def feed(self, data: bytes) -> None:
        if len(self._head) < _MAX_USAGE_BYTES:
            self._head += data[: 2 * _MAX_USAGE_BYTES - len(self._head)]
        self._tail += data
        if len(self._tail) > 2 * self._size:
            del self._tail[: -self._size]

    def usage(self) -> Mapping[str, Any] | None:
        """The last usage object in the tail; with no input count in it, the head's first one's added under it."""
        last = _usage_object(bytes(self._tail[-self._size :]), last=True)
        if last is None or "input_tokens" in last or "prompt_tokens" in last:
            return last
        first = _usage_object(bytes(self._head), last=False)
        return {**first, **last} if first is not None and "input_tokens" in first else last


def _usage_object(data: bytes, *, last: bool) -> dict[str, Any] | None:
    """The last (or first) ``"usage": {...}`` object in ``data``. A key in a JSON string has its quotes escaped,
    so every unescaped ``"usage"`` is a key; one whose value is not an object (null) is passed over."""
    start, end = 0, len(data)
    while (at := data.rfind(_KEY, 0, end) if last else data.find(_KEY, start)) >= 0:
        end, start = at, at + len(_KEY)
        rest = data[at + len(_KEY) : at + _MAX_USAGE_BYTES].lstrip()
        if not rest.startswith(b":"):
            continue
        try:
            value, _ = _DECODER.raw_decode(rest[1:].lstrip().decode("utf-8", "replace"))
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def estimate_size(size: int) -> int:
    """The tokens of ``size`` bytes of text or JSON: a token per three bytes."""
    return math.ceil(size / _BYTES_PER_TOKEN)


def estimate_prompt(chat: Mapping[str, Any]) -> int:
    """The prompt tokens of a chat-completions request, as the upstream would receive it (pass it with the
    injected tools and system prompt: those are tokens too).

    Every text counts a token per three UTF-8 bytes, plus four tokens of framing per message and 1,600 per image.
    """
    size = 0
    tokens = 0
    messages = chat.get("messages")
    for message in messages if isinstance(messages, list) else ():
        if not isinstance(message, Mapping):
            continue
        tokens += _TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            size += len(content.encode())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and part.get("type") == "image_url":
                    tokens += _TOKENS_PER_IMAGE
                elif isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    size += len(part["text"].encode())
        if isinstance(message.get("reasoning_content"), str):
            size += len(message["reasoning_content"].encode())
        calls = message.get("tool_calls")
        if isinstance(calls, list) and calls:
            size += len(json_body.encode(calls))
    if chat.get("tools"):
        size += len(json_body.encode(chat["tools"]))
    return tokens + estimate_size(size)


class UsageChunkFilter:
    """A forwarded event stream without its usage-only chunk (``"choices": []`` and a ``usage`` object), which the
    gateway asked for (``stream_options.include_usage``) to charge a client that did not ask for it.

    Every other event goes on as the upstream framed its data (``data:`` lines; comments kept).
    """

    __slots__ = ("_decoder",)

    def __init__(self, max_event_bytes: int) -> None:
        self._decoder = SSEDecoder(max_event_bytes)

    def feed(self, data: bytes) -> bytes:
        return self._encode(self._decoder.feed(data))

    def close(self) -> bytes:
        return self._encode(self._decoder.close())

    @staticmethod
    def _encode(events: list[SSEEvent]) -> bytes:
        out = []
        for event in events:
            if isinstance(event, SSEComment):
                out.append(encode_comment(event.text))
            elif not _usage_only(event):
                out.append(b"".join(b"data: " + line + b"\n" for line in event.split(b"\n")) + b"\n")
        return b"".join(out)


def _usage_only(data: bytes) -> bool:
    if b'"usage"' not in data:
        return False
    try:
        chunk = json.loads(data)
    except ValueError:
        return False
    return isinstance(chunk, dict) and not chunk.get("choices") and isinstance(chunk.get("usage"), dict)
