"""The chat-completions front door: the request as clients send it, the answer as they expect it.

The request needs no translation (it is the upstream's own dialect), only
validation. The encoder turns neutral events back into ``chat.completion.chunk``
events: a chunk the rewrite left alone goes out as the upstream's bytes, and a
rewritten one keeps every field the rewrite does not own (ids, ``created``,
``model``, ``system_fingerprint``, ``usage``, ``logprobs``, fields the gateway
has never heard of). ``fold_completion`` builds a non-streaming answer from
the same events.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError

from gateway.core import json_body
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import (
    ChoiceStart,
    ChunkStart,
    Comment,
    Done,
    Error,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
    Usage,
)
from gateway.core.options import Reasoning
from gateway.core.rewriter import REWRITTEN_DELTA_KEYS
from gateway.core.sse import encode_comment, encode_event

__all__ = [
    "ChatRequest",
    "ChatStreamEncoder",
    "build",
    "encoder",
    "error_body",
    "error_status_and_body",
    "fold_completion",
    "parse_request",
    "to_chat",
]

DONE: Final = b"data: [DONE]\n\n"
# Message keys the rewrite owns in a non-streaming answer; the rest of the message passes through.
_REWRITTEN_MESSAGE_KEYS: Final = frozenset(("reasoning_content", "reasoning", "reasoning_details", "tool_calls", "function_call"))


class _Fields(BaseModel):
    """The fields the gateway relies on; every other field is forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    messages: list[dict[str, Any]]
    stream: StrictBool | None = None
    tools: list[dict[str, Any]] | None = None


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A validated chat request: the client's payload as it came."""

    payload: dict[str, Any]

    @property
    def model(self) -> str:
        return str(self.payload["model"])

    @property
    def stream(self) -> bool:
        return self.payload.get("stream") is True


def parse_request(body: bytes) -> ChatRequest:
    """A chat request body, validated as far as the gateway relies on it; 400 otherwise."""
    try:
        payload = json_body.loads(body)
    except ValueError:
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
    try:
        _Fields.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"])
        raise GatewayError(ErrorKind.INVALID_REQUEST, f"Invalid value for '{param}': {first['msg']}.", param=param) from None
    return ChatRequest(payload)


def to_chat(request: ChatRequest, *, reasoning: Reasoning) -> dict[str, Any]:
    """The upstream speaks this dialect: the payload goes as it came (the shell sets the model)."""
    return dict(request.payload)


def encoder(request: ChatRequest, *, created: int) -> ChatStreamEncoder:
    return ChatStreamEncoder()


def build(request: ChatRequest, events: list[Event], *, created: int) -> bytes:
    """The non-streaming body: the upstream's own bytes when the rewrite left the completion alone."""
    start = events[0]
    assert isinstance(start, ChunkStart)
    if start.raw is not None:
        return start.raw
    return orjson.dumps(fold_completion(start.fields, events))


def error_body(error: GatewayError) -> bytes:
    """OpenAI's error shape; an upstream's own OpenAI error goes out as the bytes it sent."""
    if error.upstream_bytes is not None:
        return error.upstream_bytes
    return orjson.dumps(error.openai_body())


def error_status_and_body(error: GatewayError) -> tuple[int, bytes]:
    return error.status, error_body(error)


class _ChoiceOut:
    """What one choice of the chunk being built says: its upstream fields and the rewritten output."""

    __slots__ = ("index", "fields", "first", "content", "reasoning", "calls", "function", "finish")

    def __init__(self, index: Hashable, fields: Mapping[str, Any] | None, first: bool = False) -> None:
        self.index = index
        self.fields = fields
        self.first = first
        self.content: list[str] = []
        self.reasoning: list[str] = []
        # This chunk's entry for each client call: (tool-call object, its function object).
        self.calls: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}
        self.function: dict[str, Any] | None = None  # a legacy function_call
        self.finish: Any = None


class ChatStreamEncoder:
    """Encodes neutral events as the chat-completions SSE stream a stock client reads."""

    __slots__ = ("_chunk", "_choices", "_current", "_legacy")

    def __init__(self) -> None:
        self._chunk: ChunkStart | None = None
        self._choices: list[_ChoiceOut] = []
        self._current: _ChoiceOut | None = None
        self._legacy: set[Hashable] = set()  # choices whose client call is a legacy function_call

    def encode(self, events: Iterable[Event]) -> bytes:
        return b"".join(self._encode(events))

    def chunks(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        """The chunks as objects rather than bytes (for folding and for tests)."""
        return [orjson.loads(data[6:-2]) for data in self._encode(events) if data.startswith(b"data: {")]

    def _encode(self, events: Iterable[Event]) -> list[bytes]:
        out: list[bytes] = []
        for event in events:
            match event:
                case ChunkStart(raw=raw):
                    self._flush(out)
                    if raw is not None:
                        out.append(encode_event(raw))
                    else:
                        self._chunk = event
                case Comment(text=text):
                    self._flush(out)
                    out.append(encode_comment(text))
                case Done():
                    self._flush(out)
                    out.append(DONE)
                case Error(error=error):
                    self._flush(out)
                    out.append(encode_event(orjson.dumps(error.openai_body())))
                case Usage():
                    pass  # a chat client gets the usage where the upstream put it, in the chunk's fields
                case _ if self._chunk is None:
                    pass  # the rest of a chunk that goes out as it came
                case ChoiceStart(choice=choice, fields=fields, first=first):
                    self._current = _ChoiceOut(choice, fields, first)
                    self._choices.append(self._current)
                case _:
                    assert self._current is not None
                    self._add(self._current, event)
        self._flush(out)
        return out

    def _add(self, choice: _ChoiceOut, event: Event) -> None:
        """An event inside a choice of the chunk being built."""
        match event:
            case TextDelta(text=text):
                choice.content.append(text)
            case ReasoningDelta(text=text):
                choice.reasoning.append(text)
            case ToolCallStart():
                function = {"name": event.name, "arguments": ""}
                if event.legacy:
                    self._legacy.add(event.choice)
                    choice.function = function
                else:
                    entry = {"index": event.call, "id": event.id, "type": event.type, **(event.extra or {})}
                    entry["function"] = function
                    choice.calls[event.call] = (entry, function)
            case ToolCallDelta():
                if event.choice in self._legacy:
                    if choice.function is None:
                        choice.function = {}
                    function = choice.function
                elif (entry_and_function := choice.calls.get(event.call)) is not None:
                    function = entry_and_function[1]
                else:
                    function = {}
                    choice.calls[event.call] = ({"index": event.call, "function": function}, function)
                if event.name:
                    function["name"] = function.get("name", "") + event.name
                if event.arguments:
                    function["arguments"] = function.get("arguments", "") + event.arguments
            case Finish(reason=reason):
                choice.finish = reason

    def _flush(self, out: list[bytes]) -> None:
        """Encode the chunk being built, unless it has nothing left to say."""
        start = self._chunk
        if start is None:
            return
        self._chunk = None
        self._current = None
        choices = [built for choice in self._choices if (built := self._choice(choice)) is not None]
        self._choices = []
        fields = start.fields
        if not choices and fields.get("usage") is None:
            return
        chunk = dict(fields)
        chunk["choices"] = choices
        out.append(encode_event(orjson.dumps(chunk)))

    def _choice(self, out: _ChoiceOut) -> dict[str, Any] | None:
        fields = out.fields
        if fields is None:  # settled at the end of the stream
            delta = _output({}, out)
            return {"index": out.index, "delta": delta, "finish_reason": None} if delta else None
        upstream = fields.get("delta")
        if not isinstance(upstream, dict):
            # A choice the upstream sent without a delta carries other fields (Azure's content-filter
            # results after a finish): it goes out with an empty delta, which stock clients can read.
            return {**fields, "delta": _output({}, out)}
        delta = {key: value for key, value in upstream.items() if key not in REWRITTEN_DELTA_KEYS}
        if "content" in upstream:
            content = upstream["content"]
            if not (isinstance(content, str) and content):
                delta["content"] = content
        _output(delta, out)
        finish = fields.get("finish_reason")
        if not out.first and finish is None and not any(delta.values()) and fields.get("usage") is None:
            return None
        choice = dict(fields)
        choice["delta"] = delta
        if finish is not None:
            choice["finish_reason"] = out.finish
        return choice


def _output(delta: dict[str, Any], out: _ChoiceOut) -> dict[str, Any]:
    """Put a choice's rewritten output into ``delta``: content, reasoning, then tool calls."""
    if out.content:
        delta["content"] = "".join(out.content)
    if out.reasoning:
        delta["reasoning_content"] = "".join(out.reasoning)
    if out.calls:
        delta["tool_calls"] = [entry for entry, _ in out.calls.values()]
    if out.function is not None:
        delta["function_call"] = out.function
    return delta


def fold_completion(completion: Mapping[str, Any], events: Iterable[Event]) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` rebuilt from the events of its replay (``replay_completion``).

    Every field of the completion, its choices and their messages passes
    through, but for what the rewrite owns: the content, the reasoning, the
    tool calls and the finish reason.
    """
    folded: dict[Hashable, _ChoiceOut] = {}
    functions: dict[tuple[Hashable, int], dict[str, Any]] = {}
    current: _ChoiceOut | None = None
    for event in events:
        match event:
            case ChoiceStart(choice=index, fields=fields):
                current = folded.get(index) or folded.setdefault(index, _ChoiceOut(index, fields))
            case _ if current is None:
                pass
            case TextDelta(text=text):
                current.content.append(text)
            case ReasoningDelta(text=text):
                current.reasoning.append(text)
            case ToolCallStart():
                function = {"name": event.name, "arguments": ""}
                functions[event.choice, event.call] = function
                if event.legacy:
                    current.function = function
                else:
                    entry = {"id": event.id, "type": event.type, **(event.extra or {}), "function": function}
                    current.calls[event.call] = (entry, function)
            case ToolCallDelta():
                function = functions[event.choice, event.call]
                function["name"] += event.name
                function["arguments"] += event.arguments
            case Finish(reason=reason):
                current.finish = reason
    choices = []
    for position, choice in enumerate(completion["choices"]):
        out = folded.get(choice.get("index", position))
        message = choice["message"]
        new_message = {key: value for key, value in message.items() if key not in _REWRITTEN_MESSAGE_KEYS}
        new_message["content"] = "".join(out.content) if out is not None and out.content else None
        if out is not None:
            if out.reasoning:
                new_message["reasoning_content"] = "".join(out.reasoning)
            if out.calls:
                new_message["tool_calls"] = [entry for entry, _ in out.calls.values()]
            if out.function is not None:
                new_message["function_call"] = out.function
        new_choice = dict(choice)
        new_choice["message"] = new_message
        if "finish_reason" in choice and out is not None:
            new_choice["finish_reason"] = out.finish
        choices.append(new_choice)
    return {**completion, "choices": choices}
