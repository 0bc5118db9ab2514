"""The Anthropic Messages answer: neutral events in, Anthropic's content blocks and stream events out.

One block is open at a time, as Anthropic sends them: ``text`` for visible
text, ``thinking`` for reasoning the route exposes, ``tool_use`` for the
client's own calls with their arguments streamed as ``input_json_delta``. The
stream encoder and the non-streaming builder share that block logic, so both
give the same message. Errors take Anthropic's shape and types.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import orjson

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import (
    ChoiceStart,
    Comment,
    Done,
    Error,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from gateway.core.sse import encode_event
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


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any]:
    """Chat usage as Anthropic's, whose ``input_tokens`` exclude the cached prompt tokens it reports apart."""
    if usage is None:
        return {"input_tokens": 0, "output_tokens": 0}
    prompt_details = usage.get("prompt_tokens_details")
    cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
    out: dict[str, Any] = {
        "input_tokens": max(_count(usage.get("prompt_tokens")) - cached, 0),
        "output_tokens": _count(usage.get("completion_tokens")),
    }
    if isinstance(prompt_details, Mapping) and "cached_tokens" in prompt_details:
        out["cache_read_input_tokens"] = cached
    completion_details = usage.get("completion_tokens_details")
    if isinstance(completion_details, Mapping) and "reasoning_tokens" in completion_details:
        out["output_tokens_details"] = {"thinking_tokens": _count(completion_details.get("reasoning_tokens"))}
    return out


class _Kind(Enum):
    """What a content block holds."""

    TEXT = "text"
    THINKING = "thinking"
    TOOL_USE = "tool_use"


@dataclass(slots=True)
class _Block:
    kind: _Kind
    index: int
    call: int = -1


@dataclass(slots=True)
class _PendingCall:
    """A client call whose block has not started: its name may still grow, and its arguments are only a brace so far."""

    call: int
    id: str
    name: str
    arguments: str = ""


class _Assembler:
    """Neutral events in, Anthropic's stream events (as objects) out; the encoder and the builder both use it.

    One block is open at a time, as Anthropic sends them. A client call's
    block starts once its arguments go past the opening brace, so inner
    thoughts the route exposes, which come first, become a ``thinking`` block
    before the call's ``tool_use`` block. Reasoning that arrives while a
    ``tool_use`` block is open is held and becomes a ``thinking`` block right
    after it, since the call's block cannot be closed early. A new call or new
    text closes the open call's block: chat upstreams send one call's
    arguments after the other's. Should one interleave them, the late pieces
    still go out, to their call's block index, where the SDKs accumulate them.
    """

    def __init__(self, request: MessagesRequest) -> None:
        self.id = "msg_" + secrets.token_hex(12)
        self._model = request.model
        self._stop_sequences = request.stop_sequences
        self._choice: Any = None
        self._choice_fields: Mapping[str, Any] | None = None
        self._blocks = 0
        self._open: _Block | None = None
        self._pending: _PendingCall | None = None
        self._held: list[str] = []
        self._closed_calls: dict[int, int] = {}  # client call -> the index of its (stopped) block
        self._finish: Any = None
        self._finish_fields: Mapping[str, Any] | None = None
        self._usage: Mapping[str, Any] | None = None

    def start(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return {"type": "message_start", "message": message}

    def feed(self, event: Event, out: list[dict[str, Any]]) -> None:
        match event:
            case Comment():
                out.append({"type": "ping"})
                return
            case Usage(usage=usage):
                self._usage = usage
                return
        choice = getattr(event, "choice", self._choice)
        if self._choice is None:
            self._choice = choice
        elif choice != self._choice:
            return  # a second choice: the translated request asks for one
        match event:
            case TextDelta(text=text):
                self._text(text, out)
            case ReasoningDelta(text=text):
                self._reasoning(text, out)
            case ToolCallDelta():
                self._call_delta(event, out)
            case ToolCallStart(call=call, id=call_id, name=name):
                self._clear(out)
                self._pending = _PendingCall(call, call_id, name)
            case ToolCallEnd(call=call):
                self._call_end(call, out)
            case ChoiceStart(fields=fields) if fields is not None:
                self._choice_fields = fields
            case Finish(reason=reason):
                self._clear(out)
                self._finish = reason
                self._finish_fields = self._choice_fields

    def finish(self, out: list[dict[str, Any]]) -> None:
        """The answer is whole: close what is open, then the stop reason and the usage."""
        self._clear(out)
        stop_reason, stop_sequence = stop_reason_of(self._finish, self._finish_fields, self._stop_sequences)
        out.append(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop_reason, "stop_sequence": stop_sequence},
                "usage": _usage(self._usage),
            }
        )
        out.append({"type": "message_stop"})

    def _text(self, text: str, out: list[dict[str, Any]]) -> None:
        if not text:
            return
        block = self._open
        if block is None or block.kind is not _Kind.TEXT:
            self._clear(out)
            block = self._start(_Kind.TEXT, {"type": "text", "text": ""}, out)
        out.append({"type": "content_block_delta", "index": block.index, "delta": {"type": "text_delta", "text": text}})

    def _reasoning(self, text: str, out: list[dict[str, Any]]) -> None:
        if not text:
            return
        block = self._open
        if block is not None and block.kind is _Kind.TOOL_USE:
            self._held.append(text)
            return
        if block is None or block.kind is not _Kind.THINKING:
            self._stop_all(out)
            block = self._start(_Kind.THINKING, {"type": "thinking", "thinking": "", "signature": ""}, out)
        out.append(
            {"type": "content_block_delta", "index": block.index, "delta": {"type": "thinking_delta", "thinking": text}}
        )

    def _call_delta(self, event: ToolCallDelta, out: list[dict[str, Any]]) -> None:
        pending = self._pending
        if pending is not None and pending.call == event.call:
            pending.name += event.name
            pending.arguments += event.arguments
            if pending.arguments.strip() not in ("", "{"):
                self._start_call(out)
            return
        if not event.arguments:
            return  # a name piece after the block started cannot be told to the client
        block = self._open
        if block is not None and block.kind is _Kind.TOOL_USE and block.call == event.call:
            index = block.index
        elif event.call in self._closed_calls:
            index = self._closed_calls[event.call]
        else:
            return
        out.append(_json_delta(index, event.arguments))

    def _call_end(self, call: int, out: list[dict[str, Any]]) -> None:
        if self._pending is not None and self._pending.call == call:
            self._start_call(out)
        block = self._open
        if block is not None and block.kind is _Kind.TOOL_USE and block.call == call:
            self._stop(out)

    def _start(self, kind: _Kind, content: dict[str, Any], out: list[dict[str, Any]], call: int = -1) -> _Block:
        block = self._open = _Block(kind, self._blocks, call)
        self._blocks += 1
        out.append({"type": "content_block_start", "index": block.index, "content_block": content})
        return block

    def _start_call(self, out: list[dict[str, Any]]) -> None:
        pending = self._pending
        assert pending is not None
        self._pending = None
        self._stop_all(out)
        content = {"type": "tool_use", "id": pending.id, "name": pending.name, "input": {}}
        block = self._start(_Kind.TOOL_USE, content, out, pending.call)
        if pending.arguments:
            out.append(_json_delta(block.index, pending.arguments))

    def _stop(self, out: list[dict[str, Any]]) -> None:
        """Stop the open block; reasoning held while it was a call's becomes the next, open, block."""
        block = self._open
        if block is None:
            return
        self._open = None
        out.append({"type": "content_block_stop", "index": block.index})
        if block.kind is _Kind.TOOL_USE:
            self._closed_calls[block.call] = block.index
            if self._held:
                held = "".join(self._held)
                self._held.clear()
                self._reasoning(held, out)

    def _stop_all(self, out: list[dict[str, Any]]) -> None:
        while self._open is not None:
            self._stop(out)

    def _clear(self, out: list[dict[str, Any]]) -> None:
        """Nothing open and nothing pending: before a new call, new text after a call, and at the end."""
        if self._pending is not None:
            self._start_call(out)
        self._stop_all(out)


def _json_delta(index: int, partial: str) -> dict[str, Any]:
    return {
        "type": "content_block_delta",
        "index": index,
        "delta": {"type": "input_json_delta", "partial_json": partial},
    }


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

    The first ``encode`` sends ``message_start``; ``Done`` ends the message
    with ``message_delta`` (stop reason, usage) and ``message_stop``; an
    ``Error`` ends it with one ``event: error`` and nothing after, so a
    truncated answer never looks whole. ``created`` is accepted for the
    front doors' common signature: Anthropic's messages carry no timestamp.
    """

    __slots__ = ("_assembler", "_phase")

    raw_chunks = False

    def __init__(self, request: MessagesRequest, *, created: int) -> None:
        self._assembler = _Assembler(request)
        self._phase = _Phase.NEW

    @property
    def message_id(self) -> str:
        return self._assembler.id

    def encode(self, events: Iterable[Event]) -> bytes:
        raw: list[dict[str, Any]] = []
        if self._phase is _Phase.NEW:
            self._phase = _Phase.STREAMING
            raw.append(self._assembler.start())
        if self._phase is _Phase.ENDED:
            return b""
        error: GatewayError | None = None
        for event in events:
            if isinstance(event, Done):
                self._assembler.finish(raw)
                self._phase = _Phase.ENDED
                break
            if isinstance(event, Error):
                error = event.error
                self._phase = _Phase.ENDED
                break
            self._assembler.feed(event, raw)
        out = [encode_event(orjson.dumps(item), _EVENT_NAMES[item["type"]]) for item in raw]
        if error is not None:
            out.append(encode_event(error_body(error), b"error"))
        return b"".join(out)


def encoder(request: MessagesRequest, *, created: int) -> AnthropicStreamEncoder:
    return AnthropicStreamEncoder(request, created=created)


def build(request: MessagesRequest, events: Iterable[Event], *, created: int) -> bytes:
    """The non-streaming Messages answer, from the same events and block logic as the stream.

    An ``Error`` among the events is raised, for the shell to answer with
    ``error_status_and_body``. A tool call's arguments that are not a JSON
    object give an empty ``input`` (Anthropic's ``input`` is always an object).
    """
    assembler = _Assembler(request)
    raw: list[dict[str, Any]] = []
    for event in events:
        if isinstance(event, Error):
            raise event.error
        if isinstance(event, Done):
            break
        assembler.feed(event, raw)
    assembler.finish(raw)
    message = assembler.start()["message"]
    content: list[dict[str, Any]] = message["content"]
    arguments: dict[int, list[str]] = {}
    for item in raw:
        kind = item["type"]
        if kind == "content_block_start":
            content.append(dict(item["content_block"]))
        elif kind == "content_block_delta":
            delta = item["delta"]
            block = content[item["index"]]
            if delta["type"] == "text_delta":
                block["text"] += delta["text"]
            elif delta["type"] == "thinking_delta":
                block["thinking"] += delta["thinking"]
            else:
                arguments.setdefault(item["index"], []).append(delta["partial_json"])
        elif kind == "message_delta":
            message.update(item["delta"])
            message["usage"] = item["usage"]
    for index, pieces in arguments.items():
        content[index]["input"] = _object("".join(pieces))
    return orjson.dumps(message)


def _object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        logger.debug("A tool call's arguments are not valid JSON; its input is empty.")
        return {}
    return value if isinstance(value, dict) else {}
