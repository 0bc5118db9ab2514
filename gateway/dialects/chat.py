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
    FinishReason,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallStart,
)
from gateway.core.fields import Field
from gateway.core.options import Reasoning
from gateway.core.passthrough import ChunkBytes, ModelName, Shortcuts, same_chunks
from gateway.core.rewriter import REWRITTEN_DELTA_KEYS
from gateway.core.sse import encode_comment, encode_event
from gateway.dialects.openai_errors import WORDING, error_body, error_object

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
# Delta keys that leave nothing of their own in the client's delta (most chunks carry only these).
_OWNED_WITHOUT_CONTENT: Final = REWRITTEN_DELTA_KEYS - {"content"}
# Message keys the rewrite owns in a non-streaming answer; the rest of the message passes through.
_REWRITTEN_MESSAGE_KEYS: Final = frozenset(
    ("reasoning_content", "reasoning", "reasoning_details", "tool_calls", "function_call")
)


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

    @property
    def dropped_tools(self) -> tuple[str, ...]:
        return ()  # the payload goes upstream as it came


def parse_request(body: bytes) -> ChatRequest:
    """A chat request body, validated as far as the gateway relies on it; 400 otherwise. Every other field is the
    upstream's to judge, and reaches it as the client sent it."""
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
    root = Field(payload, WORDING)
    root.get("model").string(required=True, non_empty=True)
    for message in root.get("messages").array(required=True) or ():
        message.object(required=True)
    root.get("stream").boolean()
    for tool in root.get("tools").entries():
        tool.object(required=True)
    return ChatRequest(payload)


def to_chat(request: ChatRequest, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
    """The upstream speaks this dialect: the payload goes as it came (the shell sets the model)."""
    return dict(request.payload)


def encoder(request: ChatRequest, *, created: int) -> ChatStreamEncoder:
    options = request.payload.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return ChatStreamEncoder(usage_chunk=asked, model=request.model)


def build(request: ChatRequest, events: list[Event], *, created: int) -> bytes:
    """The non-streaming body: the upstream's own bytes when the rewrite left the completion alone (but for
    the model's name, which is the one the client asked for)."""
    start = events[0]
    assert isinstance(start, ChunkStart)
    named = ModelName(request.model)
    if start.raw is not None:
        return named.in_bytes(start.raw, start.fields)
    return orjson.dumps(named.in_fields(fold_completion(start.fields, events)))


def error_status_and_body(error: GatewayError) -> tuple[int, bytes]:
    return error.status, error_body(error)


class _Choice:
    """The client's choice being built from one upstream choice and the events the rewrite made of it."""

    __slots__ = ("index", "fields", "first", "had_delta", "delta", "functions", "finish")

    def __init__(self, start: ChoiceStart) -> None:
        self.index = start.choice
        self.fields = fields = start.fields
        self.first = start.first
        upstream = fields.get("delta") if fields is not None else None
        self.had_delta = isinstance(upstream, dict)
        delta: dict[str, Any] = {}
        if isinstance(upstream, dict) and not upstream.keys() <= _OWNED_WITHOUT_CONTENT:
            delta = {key: value for key, value in upstream.items() if key not in REWRITTEN_DELTA_KEYS}
            if "content" in upstream:
                content = upstream["content"]
                if not (isinstance(content, str) and content):
                    delta["content"] = content  # null or "" as the upstream sent it
        self.delta = delta
        # This chunk's function object of each client call it carries.
        self.functions: dict[int, dict[str, Any]] = {}
        self.finish: FinishReason | None = None

    def append(self, key: str, text: str) -> None:
        before = self.delta.get(key)
        self.delta[key] = before + text if isinstance(before, str) else text

    def function(self, call: int, legacy: bool) -> dict[str, Any]:
        """The function object this chunk carries for a client call, added on first use."""
        function = self.functions.get(call)
        if function is None:
            function = self.functions[call] = {}
            if legacy:
                self.delta["function_call"] = function
            else:
                self.delta.setdefault("tool_calls", []).append({"index": call, "function": function})
        return function

    def says_something(self) -> bool:
        """Whether the delta carries anything (or the upstream's choice its own usage)."""
        fields = self.fields
        return any(self.delta.values()) or (fields is not None and fields.get("usage") is not None)

    def built(self) -> dict[str, Any] | None:
        """The choice as the client gets it, or None when it has nothing left to say."""
        fields, delta = self.fields, self.delta
        if fields is None:  # settled at the end of the stream
            return {"index": self.index, "delta": delta, "finish_reason": None} if delta else None
        if not self.had_delta:
            # A choice the upstream sent without a delta carries other fields (Azure's content-filter
            # results after a finish): it goes out with an empty delta, which stock clients can read.
            return {**fields, "delta": delta}
        finished = fields.get("finish_reason") is not None
        if not (self.first or finished or self.says_something()):
            return None
        choice = dict(fields)
        choice["delta"] = delta
        if finished:
            choice["finish_reason"] = self.finish
        return choice


class ChatStreamEncoder:
    """Encodes neutral events as the chat-completions SSE stream a stock client reads.

    The gateway asks every upstream stream for its usage; ``usage_chunk`` says whether the client asked too
    (``stream_options.include_usage``). If not, the chunk that carries only the usage is dropped, and only it.
    Chunks go out as the upstream's bytes where they can (``gateway.core.passthrough``): ``shortcuts``.
    """

    __slots__ = ("_bytes", "_check", "_drop_usage", "_legacy")

    raw_chunks = True

    def __init__(self, *, usage_chunk: bool = True, model: str | None = None, shortcuts: Shortcuts = Shortcuts.ON):
        self._legacy: set[Hashable] = set()  # choices whose client call is a legacy function_call
        self._drop_usage = not usage_chunk
        # The model name every chunk says: the client's (None: the upstream's, as it came).
        self._bytes = ChunkBytes(model, shortcuts)
        self._check = ChunkBytes(model, Shortcuts.OFF) if shortcuts is Shortcuts.CHECK else None

    def encode(self, events: list[Event]) -> bytes:
        """The client's bytes for these events (a chunk's events always come in one call)."""
        sent = self._bytes.quick(events, drop_usage=self._drop_usage)
        if sent is None:
            sent = b"".join(self._encode(events, self._bytes))
        if self._check is not None:
            same_chunks(sent, b"".join(self._encode(events, self._check)))
        return sent

    def chunks(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        """The chunks as objects rather than bytes (for tests)."""
        encoded = self._encode(list(events), self._bytes)
        return [orjson.loads(data[6:-2]) for data in encoded if data.startswith(b"data: {")]

    def _encode(self, events: list[Event], chunk_bytes: ChunkBytes) -> list[bytes]:
        # A hot loop: type() tests, most frequent first, and the chunk being built in locals.
        out: list[bytes] = []
        chunk: ChunkStart | None = None  # the chunk being built
        choices: list[_Choice] = []
        choice: _Choice | None = None  # None: between chunks, or in a chunk that went out as it came
        for event in events:
            if type(event) is TextDelta:
                if choice is not None:
                    choice.append("content", event.text)
            elif type(event) is ChunkStart:
                if chunk is not None:
                    self._emit(chunk, choices, chunk_bytes, out)
                chunk, choices, choice = None, [], None
                if self._drop_usage and _usage_only(event.fields):
                    continue
                if event.raw is not None:
                    out.append(chunk_bytes.unchanged(event))
                else:
                    chunk = event
            elif type(event) is ChoiceStart:
                if chunk is not None:
                    choice = _Choice(event)
                    choices.append(choice)
            elif type(event) is ToolCallDelta:
                if choice is not None:
                    function = choice.function(event.call, event.choice in self._legacy)
                    if event.name:
                        function["name"] = function.get("name", "") + event.name
                    if event.arguments:
                        function["arguments"] = function.get("arguments", "") + event.arguments
            elif type(event) is Finish:
                if choice is not None:
                    choice.finish = event.reason
            elif type(event) is ReasoningDelta:
                if choice is not None:
                    choice.append("reasoning_content", event.text)
            elif type(event) is ToolCallStart:
                if choice is not None:
                    self._start_call(choice, event)
            elif type(event) is Done or type(event) is Error or type(event) is Comment:
                if chunk is not None:
                    self._emit(chunk, choices, chunk_bytes, out)
                chunk, choices, choice = None, [], None
                if type(event) is Done:
                    out.append(DONE)
                elif type(event) is Error:
                    out.append(encode_event(orjson.dumps(error_object(event.error))))
                elif type(event) is Comment:
                    out.append(encode_comment(event.text))
            # Usage and ToolCallEnd say nothing new to a chat client (usage is in the chunk's fields), nor do
            # reasoning seals, which only the Messages door gives its clients to send back.
        if chunk is not None:
            self._emit(chunk, choices, chunk_bytes, out)
        return out

    def _emit(self, start: ChunkStart, choices: list[_Choice], chunk_bytes: ChunkBytes, out: list[bytes]) -> None:
        """Encode a rewritten chunk, unless it has nothing left to say."""
        if start.frame is not None and chunk_bytes.taken:
            # Only the one choice's delta changed: the upstream's own bytes around the new one.
            [choice] = choices
            if not choice.says_something():
                return
            if (framed := chunk_bytes.framed(start, choice.delta)) is not None:
                out.append(framed)
                return
        if len(choices) == 1:  # the usual case, without the list machinery
            only = choices[0].built()
            built = [] if only is None else [only]
        else:
            built = [choice for choice in map(_Choice.built, choices) if choice is not None]
        fields = start.fields
        if built or fields.get("usage") is not None:
            chunk = dict(fields)
            chunk["choices"] = built
            out.append(encode_event(orjson.dumps(chunk_bytes.in_fields(chunk))))

    def _start_call(self, choice: _Choice, start: ToolCallStart) -> None:
        if start.legacy:
            self._legacy.add(start.choice)
        function = choice.function(start.call, start.legacy)
        function["name"] = start.name
        function["arguments"] = ""
        if not start.legacy:
            entry = choice.delta["tool_calls"][-1]
            entry.pop("function")
            entry.update({"id": start.id, "type": start.type, **(start.extra or {}), "function": function})


def _usage_only(fields: Mapping[str, Any]) -> bool:
    """The chunk ``include_usage`` adds at the end: no choices, a usage object."""
    return not fields.get("choices") and fields.get("usage") is not None


def fold_completion(completion: Mapping[str, Any], events: Iterable[Event]) -> dict[str, Any]:
    """A non-streaming ``chat.completion`` rebuilt from the events of its replay (``replay_completion``).

    Every field of the completion, its choices and their messages passes
    through, but for what the rewrite owns: the content, the reasoning, the
    tool calls and the finish reason.
    """
    folded: dict[Hashable, _Folded] = {}
    current: _Folded | None = None
    for event in events:
        if type(event) is ChoiceStart:
            current = folded.get(event.choice)
            if current is None:
                current = folded[event.choice] = _Folded()
        elif current is None:
            continue
        elif type(event) is TextDelta:
            current.content.append(event.text)
        elif type(event) is ReasoningDelta:
            current.reasoning.append(event.text)
        elif type(event) is ToolCallStart:
            function = current.functions[event.call] = {"name": event.name, "arguments": ""}
            if event.legacy:
                current.function_call = function
            else:
                current.calls.append({"id": event.id, "type": event.type, **(event.extra or {}), "function": function})
        elif type(event) is ToolCallDelta:
            function = current.functions[event.call]
            function["name"] += event.name
            function["arguments"] += event.arguments
        elif type(event) is Finish:
            current.finish = event.reason
    choices = []
    for position, choice in enumerate(completion["choices"]):
        out = folded.get(choice.get("index", position)) or _Folded()
        message = {key: value for key, value in choice["message"].items() if key not in _REWRITTEN_MESSAGE_KEYS}
        message["content"] = "".join(out.content) or None
        if out.reasoning:
            message["reasoning_content"] = "".join(out.reasoning)
        if out.calls:
            message["tool_calls"] = out.calls
        if out.function_call is not None:
            message["function_call"] = out.function_call
        new_choice = dict(choice)
        new_choice["message"] = message
        if "finish_reason" in choice:
            new_choice["finish_reason"] = out.finish
        choices.append(new_choice)
    return {**completion, "choices": choices}


class _Folded:
    """One choice of a non-streaming answer, as its events say."""

    __slots__ = ("content", "reasoning", "calls", "functions", "function_call", "finish")

    def __init__(self) -> None:
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.calls: list[dict[str, Any]] = []
        self.functions: dict[int, dict[str, Any]] = {}
        self.function_call: dict[str, Any] | None = None
        self.finish: FinishReason | None = None
