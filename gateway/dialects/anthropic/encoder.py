"""The Anthropic Messages answer: neutral events in, Anthropic's content blocks and stream events out.

One block is open at a time, as Anthropic sends them: ``text`` for visible
text, ``thinking`` for reasoning the route exposes (with the provider's
``signature``, where it signed the block, for the client to send back), a
``redacted_thinking`` block as it came, ``tool_use`` for the client's own
calls with their arguments streamed as ``input_json_delta``. The
stream encoder and the non-streaming builder share that block logic, so both
give the same message. Errors take Anthropic's shape and types.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Final

import orjson

from gateway.core import json_body
from gateway.core.answer import Answer, AnswerDone, AnswerFailed, Item, ItemDelta, ItemDone, ItemKind, ItemStarted
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import Comment, Done, Event
from gateway.core.passthrough import ItemBytes, Shortcuts
from gateway.core.sse import encode_event
from gateway.core.usage import TokenUsage
from gateway.dialects.anthropic.request import MessagesRequest

__all__ = [
    "AnthropicStreamEncoder",
    "build",
    "encoder",
    "error_body",
    "error_status_and_body",
    "error_type",
    "stop_reason_of",
]

logger = logging.getLogger("gateway.dialects.anthropic")

# Chat finish reasons as Anthropic stop reasons; anything else an upstream says is a natural end.
_STOP_REASONS: Final = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}
# Error types by HTTP status; other 4xx are invalid requests, other 5xx API errors.
_ERROR_TYPES: Final = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}
# Choice fields in which some upstreams (vLLM, SGLang) say which stop string ended the answer.
_MATCHED_STOP_FIELDS: Final = ("stop_reason", "matched_stop")


# Errors.


def error_type(error: GatewayError) -> str:
    """Anthropic's error type for a failure; the HTTP status stays the gateway's (an upstream's own, if it sent one)."""
    if error.kind is ErrorKind.QUOTA:
        return "billing_error"
    known = _ERROR_TYPES.get(error.status)
    if known is not None:
        return known
    return "invalid_request_error" if error.status < 500 else "api_error"


def error_body(error: GatewayError) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(error), "message": error.message}})


def error_status_and_body(error: GatewayError) -> tuple[int, bytes]:
    return error.status, error_body(error)


# The answer.


def stop_reason_of(
    reason: Any, choice: Mapping[str, Any] | None, stop_sequences: tuple[str, ...]
) -> tuple[str, str | None]:
    """Anthropic's ``stop_reason`` and ``stop_sequence`` for a chat finish reason.

    A ``stop`` is a ``stop_sequence`` only when the upstream says which of the
    request's stop strings matched (vLLM's ``stop_reason``, SGLang's
    ``matched_stop``); OpenAI does not say, so its stops are ``end_turn``.
    """
    if reason == "stop" and choice is not None and stop_sequences:
        for key in _MATCHED_STOP_FIELDS:
            matched = choice.get(key)
            if isinstance(matched, str) and matched in stop_sequences:
                return "stop_sequence", matched
    return (_STOP_REASONS.get(reason, "end_turn") if isinstance(reason, str) else "end_turn"), None


def _usage(usage: TokenUsage | None, *, whole: bool = True) -> dict[str, Any]:
    """The usage as Anthropic's, every field it sends: its ``input_tokens`` exclude the prompt tokens read from a
    cache and written to one, which it reports apart. A whole message's usage (``message_start``'s, a
    non-streaming body's) also breaks the cache writes down and names the tier, as Anthropic's does;
    ``message_delta``'s has the counts only (``whole=False``)."""
    counted: dict[str, Any] = {
        "input_tokens": max(usage.prompt - usage.cached - usage.cache_write, 0) if usage else 0,
        "cache_creation_input_tokens": usage.cache_write if usage else 0,
        "cache_read_input_tokens": usage.cached if usage else 0,
        "output_tokens": usage.completion if usage else 0,
    }
    if whole:
        # A chat upstream says nothing of cache lifetimes: its cache writes count as the default, 5 minutes.
        counted["cache_creation"] = {
            "ephemeral_5m_input_tokens": counted["cache_creation_input_tokens"],
            "ephemeral_1h_input_tokens": 0,
        }
        counted["service_tier"] = "standard"
        counted["inference_geo"] = "not_available"
    if usage is not None and usage.reasoning:
        counted["output_tokens_details"] = {"thinking_tokens": usage.reasoning}
    return counted


class _Message:
    """The message being built from the answer's items: one content block per item, one open at a time, as
    Anthropic sends them. A block stops when the next starts; a call the answer keeps open (its arguments not yet
    whole, its upstream interleaving parallel calls) gets its late pieces at its block's index, where the SDKs
    put them together."""

    def __init__(self, request: MessagesRequest) -> None:
        self.id = "msg_" + secrets.token_hex(12)
        self.answer = Answer()
        self._model = request.model
        self._stop_sequences = request.stop_sequences
        self._open: Item | None = None

    def start(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(None),
        }
        return {"type": "message_start", "message": message}

    def feed(self, events: Iterable[Event], out: list[dict[str, Any]]) -> GatewayError | None:
        """Append the stream events of these neutral ones; a failure is returned, for the caller to end with."""
        for event in self.answer.feed(events):
            if type(event) is ItemDelta:
                out.append(_delta(event.item, event.text))
            elif type(event) is ItemStarted:
                self._stop(out)
                self._open = event.item
                out.append(
                    {"type": "content_block_start", "index": event.item.index, "content_block": _block(event.item)}
                )
            elif type(event) is ItemDone:
                if self._open is event.item:
                    self._stop(out)
            elif type(event) is AnswerDone:
                self._stop(out)
                stop_reason, stop_sequence = stop_reason_of(event.finish, event.choice, self._stop_sequences)
                delta = {"stop_reason": stop_reason, "stop_sequence": stop_sequence}
                out.append({"type": "message_delta", "delta": delta, "usage": _usage(event.usage, whole=False)})
                out.append({"type": "message_stop"})
            elif type(event) is AnswerFailed:
                return event.error
        return None

    def _stop(self, out: list[dict[str, Any]]) -> None:
        item = self._open
        if item is not None:
            if item.signature is not None:
                signed = {"type": "signature_delta", "signature": item.signature}
                out.append({"type": "content_block_delta", "index": item.index, "delta": signed})
            out.append({"type": "content_block_stop", "index": item.index})
            self._open = None


def _block(item: Item) -> dict[str, Any]:
    """A content block as it starts."""
    if item.kind is ItemKind.TEXT:
        return {"type": "text", "text": ""}
    if item.kind is ItemKind.REASONING:
        if item.redacted is not None:
            return {"type": "redacted_thinking", "data": item.redacted}
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "tool_use", "id": item.call_id, "name": item.name, "input": {}}


def _delta(item: Item, text: str) -> dict[str, Any]:
    if item.kind is ItemKind.TEXT:
        delta = {"type": "text_delta", "text": text}
    elif item.kind is ItemKind.REASONING:
        delta = {"type": "thinking_delta", "thinking": text}
    else:
        delta = {"type": "input_json_delta", "partial_json": text}
    return {"type": "content_block_delta", "index": item.index, "delta": delta}


_EVENT_NAMES: Final = {
    name: name.encode()
    for name in (
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
        "ping",
    )
}


class _Phase(Enum):
    """Where the client's stream is."""

    NEW = "nothing sent"
    STREAMING = "message started"
    ENDED = "ended with message_stop or error"


class AnthropicStreamEncoder:
    """Encodes neutral events as Anthropic's Messages stream: ``event: <type>`` and ``data: <json>`` per event.

    The first ``encode`` sends ``message_start``; the answer's end sends ``message_delta`` (stop reason, usage)
    and ``message_stop``; a failure ends it with one ``event: error`` and nothing after, so a truncated answer
    never looks whole. Upstream keep-alives become ``ping``. A chunk that only adds to the open block's text
    is that block's delta event from a template (``gateway.core.passthrough``): ``shortcuts``. ``created`` is
    accepted for the front doors' common signature: Anthropic's messages carry no timestamp.
    """

    __slots__ = ("_message", "_phase", "_items")

    raw_chunks = False

    def __init__(self, request: MessagesRequest, *, created: int, shortcuts: Shortcuts = Shortcuts.ON) -> None:
        self._message = _Message(request)
        self._phase = _Phase.NEW
        self._items = ItemBytes(self._message.answer, _delta_bytes, self._encode, shortcuts=shortcuts)

    def encode(self, events: Iterable[Event]) -> bytes:
        return self._items.encode(events)

    def _encode(self, events: Iterable[Event]) -> bytes:
        if self._phase is _Phase.ENDED:
            return b""
        raw: list[dict[str, Any]] = []
        if self._phase is _Phase.NEW:
            self._phase = _Phase.STREAMING
            raw.append(self._message.start())
        error: GatewayError | None = None
        for event in events:
            if type(event) is Comment:
                raw.append({"type": "ping"})
                continue
            error = self._message.feed((event,), raw)
            if error is not None or self._message.answer.ended:
                self._phase = _Phase.ENDED
                break
        out = [_sse(item) for item in raw]
        if error is not None:
            out.append(encode_event(error_body(error), b"error"))
        return b"".join(out)


def _sse(event: dict[str, Any]) -> bytes:
    return encode_event(json_body.encode(event), _EVENT_NAMES[event["type"]])


def _delta_bytes(item: Item, text: str, number: int | str) -> bytes:
    """A delta's event (Anthropic numbers none)."""
    return _sse(_delta(item, text))


def encoder(request: MessagesRequest, *, created: int, shortcuts: Shortcuts = Shortcuts.ON) -> AnthropicStreamEncoder:
    return AnthropicStreamEncoder(request, created=created, shortcuts=shortcuts)


def build(request: MessagesRequest, events: Iterable[Event], *, created: int) -> bytes:
    """The non-streaming Messages answer, from the same items as the stream.

    An ``Error`` among the events is raised, for the shell to answer with ``error_status_and_body``. A tool
    call's arguments that are not a JSON object give an empty ``input`` (Anthropic's is always an object).
    """
    message = _Message(request)
    done: AnswerDone | None = None
    for event in message.answer.feed([*events, Done()]):
        if type(event) is AnswerFailed:
            raise event.error
        if type(event) is AnswerDone:
            done = event
    assert done is not None
    body = message.start()["message"]
    for item in message.answer.items:
        block = _block(item)
        if item.kind is ItemKind.TEXT:
            block["text"] = item.text
        elif item.kind is ItemKind.REASONING and item.redacted is None:
            block["thinking"], block["signature"] = item.text, item.signature or ""
        elif item.kind is ItemKind.TOOL_CALL:
            block["input"] = _object(item.text)
        body["content"].append(block)
    body["stop_reason"], body["stop_sequence"] = stop_reason_of(done.finish, done.choice, request.stop_sequences)
    body["usage"] = _usage(done.usage)
    return json_body.encode(body)


def _object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        logger.debug("A tool call's arguments are not valid JSON; its input is empty.")
        return {}
    return value if isinstance(value, dict) else {}
