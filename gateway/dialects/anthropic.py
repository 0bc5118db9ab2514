"""The Anthropic Messages front door: ``POST /v1/messages`` answered by any chat-completions upstream.

Request side: the Messages body is validated (400 naming the field, in
Anthropic's error shape) and becomes one chat-completions request: the system
prompt leads, ``tool_use`` blocks become assistant ``tool_calls``,
``tool_result`` blocks become ``tool`` messages, client tools become function
tools. Anthropic features with no chat counterpart either fail with a 400 that
names them (server tools, documents) or are dropped and named in a debug log
line (``top_k``, ``cache_control``, ...).

Answer side: the route's neutral events become Anthropic's content blocks, one
open at a time as Anthropic sends them: ``text`` for visible text, ``thinking``
for reasoning the route exposes, ``tool_use`` for the client's own calls with
their arguments streamed as ``input_json_delta``. The stream encoder and the
non-streaming builder share that block logic, so both give the same message.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Final, Literal, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, StrictStr, ValidationError
from pydantic_core import PydanticCustomError

from gateway.core import json_body
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
from gateway.core.options import Reasoning
from gateway.core.sse import encode_event

__all__ = [
    "AnthropicStreamEncoder",
    "Image",
    "MessagesRequest",
    "Text",
    "Thinking",
    "ThinkingMode",
    "ToolChoice",
    "ToolResult",
    "ToolSpec",
    "ToolUse",
    "Turn",
    "build",
    "encoder",
    "error_body",
    "error_status_and_body",
    "error_type",
    "parse_count_tokens_request",
    "parse_request",
    "reasoning_effort_of",
    "stop_reason_of",
    "to_chat",
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
# Reasoning budgets (Anthropic's ``budget_tokens``) below these map to "low", then "medium"; above, "high".
_EFFORT_LOW_BELOW: Final = 4096
_EFFORT_MEDIUM_BELOW: Final = 16384
# The debug line naming dropped fields shows at most this many names, each cut to this length.
_LOGGED_NAMES: Final = 20
_LOGGED_NAME_CHARS: Final = 64


# The request, validated.


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image as chat takes it: a URL, or a ``data:`` URL for base64 data."""

    url: str


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolResult:
    tool_use_id: str
    text: str
    is_error: bool


@dataclass(frozen=True, slots=True)
class Thinking:
    """Earlier reasoning the client sends back; it reaches the upstream only on a route that exposes reasoning."""

    text: str


Block = Text | Image | ToolUse | ToolResult | Thinking


@dataclass(frozen=True, slots=True)
class Turn:
    role: Literal["user", "assistant"]
    blocks: tuple[Block, ...]


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """A client tool: Anthropic's ``input_schema`` is chat's ``parameters``."""

    name: str
    description: str | None
    input_schema: dict[str, Any]
    strict: bool | None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    type: Literal["auto", "any", "tool", "none"]
    name: str | None
    disable_parallel_tool_use: bool


class ThinkingMode(Enum):
    """What the client's ``thinking`` asked for."""

    ENABLED = "enabled"
    ADAPTIVE = "adaptive"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A Messages request the gateway can translate; ``dropped`` names what has no chat counterpart."""

    model: str
    stream: bool
    max_tokens: int | None
    system: str | None
    turns: tuple[Turn, ...]
    tools: tuple[ToolSpec, ...]
    tool_choice: ToolChoice | None
    stop_sequences: tuple[str, ...]
    temperature: int | float | None
    top_p: int | float | None
    user: str | None
    thinking: ThinkingMode | None
    thinking_budget: int | None
    dropped: frozenset[str]


def _number(value: Any) -> Any:
    """A JSON number, not a bool or a numeric string; an integer stays exact, whatever its size."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number_type", "Input should be a number")
    return value


Number = Annotated[int | float, PlainValidator(_number)]


class _Lenient(BaseModel):
    """Known fields validated; the others kept aside, to be named as dropped."""

    model_config = ConfigDict(extra="allow")


class _Message(_Lenient):
    role: Literal["user", "assistant"]
    content: Any = Field()


class _Metadata(_Lenient):
    user_id: StrictStr | None = None


class _Params(_Lenient):
    model: StrictStr = Field(min_length=1)
    max_tokens: StrictInt = Field(ge=1)
    messages: list[_Message] = Field(min_length=1)
    system: Any = None
    stream: StrictBool = False
    temperature: Number | None = None
    top_p: Number | None = None
    stop_sequences: list[StrictStr] | None = None
    metadata: _Metadata | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    thinking: Any = None
    mcp_servers: list[Any] | None = None


class _CountParams(_Params):
    """``count_tokens`` takes the same body without ``max_tokens``."""

    max_tokens: StrictInt | None = Field(default=None, ge=1)  # type: ignore[assignment]


class _Typed(_Lenient):
    """A content block or an image source: its ``type`` has been checked before it is validated."""

    type: StrictStr


class _TextBlock(_Typed):
    text: StrictStr


class _ImageBlock(_Typed):
    source: dict[str, Any]


class _Base64Source(_Typed):
    media_type: StrictStr = Field(min_length=1)
    data: StrictStr


class _UrlSource(_Typed):
    url: StrictStr = Field(min_length=1)


class _ToolUseBlock(_Typed):
    id: StrictStr = Field(min_length=1)
    name: StrictStr = Field(min_length=1)
    input: dict[str, Any]


class _ToolResultBlock(_Typed):
    tool_use_id: StrictStr = Field(min_length=1)
    content: Any = ""
    is_error: StrictBool = False


class _ThinkingBlock(_Typed):
    thinking: StrictStr
    signature: StrictStr | None = None


class _RedactedThinkingBlock(_Typed):
    data: StrictStr


class _ToolDef(_Lenient):
    type: StrictStr | None = None
    name: StrictStr = Field(min_length=1)
    description: StrictStr | None = None
    input_schema: dict[str, Any]
    strict: StrictBool | None = None


class _ToolChoiceDef(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: StrictStr | None = None
    disable_parallel_tool_use: StrictBool = False


class _ThinkingDef(_Lenient):
    type: StrictStr
    budget_tokens: StrictInt | None = Field(default=None, ge=0)


_M = TypeVar("_M", bound=_Lenient)


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param)


def _validate(model: type[_M], data: Any, param: str, dropped: set[str]) -> _M:
    """``data`` as ``model``, or a 400 naming the first bad field under ``param``; unknown fields go to ``dropped``."""
    try:
        parsed = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join([*([param] if param else []), *(str(part) for part in first["loc"])]) or param
        raise _invalid(f"{where}: {first['msg']}", where or None) from None
    dropped.update(parsed.model_extra or ())
    return parsed


def _load(body: bytes) -> dict[str, Any]:
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise _invalid("The request body must be a JSON object.")
    return payload


def parse_request(body: bytes) -> MessagesRequest:
    """A Messages request body, validated as far as the translation relies on it; 400 otherwise."""
    dropped: set[str] = set()
    return _request(_validate(_Params, _load(body), "", dropped), dropped)


def parse_count_tokens_request(body: bytes) -> MessagesRequest:
    """A ``count_tokens`` body: the Messages body without ``max_tokens`` (nor ``stream``)."""
    dropped: set[str] = set()
    return _request(_validate(_CountParams, _load(body), "", dropped), dropped)


def _request(params: _Params, dropped: set[str]) -> MessagesRequest:
    if params.mcp_servers:
        raise _invalid("mcp_servers: MCP servers are not supported by this gateway.", "mcp_servers")
    turns: list[Turn] = []
    for position, message in enumerate(params.messages):
        param = f"messages.{position}"
        dropped.update(message.model_extra or ())
        previous = turns[-1] if turns else None
        called = (
            {b.id for b in previous.blocks if isinstance(b, ToolUse)}
            if previous and previous.role == "assistant"
            else set()
        )
        turns.append(Turn(message.role, _blocks(message.role, message.content, param, called, dropped)))
    if params.metadata is not None:
        dropped.update(f"metadata.{key}" for key in params.metadata.model_extra or ())
    tools = tuple(_tool(tool, f"tools.{i}", dropped) for i, tool in enumerate(params.tools or ()))
    thinking, budget = _thinking(params.thinking, dropped)
    return MessagesRequest(
        model=params.model,
        stream=params.stream,
        max_tokens=params.max_tokens,
        system=_system(params.system, dropped),
        turns=tuple(turns),
        tools=tools,
        tool_choice=_tool_choice(params.tool_choice, tools, dropped),
        stop_sequences=tuple(params.stop_sequences or ()),
        temperature=params.temperature,
        top_p=params.top_p,
        user=params.metadata.user_id if params.metadata is not None else None,
        thinking=thinking,
        thinking_budget=budget,
        dropped=frozenset(dropped),
    )


def _system(system: Any, dropped: set[str]) -> str | None:
    if system is None or isinstance(system, str):
        return system or None
    if not isinstance(system, list):
        raise _invalid("system: Input should be a string or a list of text blocks", "system")
    texts = []
    for i, block in enumerate(system):
        _block_type(block, f"system.{i}", ("text",))
        texts.append(_validate(_TextBlock, block, f"system.{i}", dropped).text)
    return "\n\n".join(texts) or None


def _block_type(block: Any, param: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(block, dict):
        raise _invalid(f"{param}: Input should be a content block object", param)
    kind = block.get("type")
    if not isinstance(kind, str):
        raise _invalid(f"{param}.type: Field required", f"{param}.type")
    if kind == "document":
        raise _invalid(f"{param}.type: document blocks are not supported by this gateway.", f"{param}.type")
    if kind not in allowed:
        raise _invalid(
            f"{param}.type: a {kind!r} block is not supported here (expected one of {', '.join(allowed)}).",
            f"{param}.type",
        )
    return kind


_USER_BLOCKS: Final = ("text", "image", "tool_result")
_ASSISTANT_BLOCKS: Final = ("text", "tool_use", "thinking", "redacted_thinking")


def _blocks(role: str, content: Any, param: str, called: set[str], dropped: set[str]) -> tuple[Block, ...]:
    if isinstance(content, str):
        return (Text(content),)
    if not isinstance(content, list):
        raise _invalid(f"{param}.content: Input should be a string or a list of content blocks", f"{param}.content")
    allowed = _USER_BLOCKS if role == "user" else _ASSISTANT_BLOCKS
    blocks: list[Block] = []
    for i, block in enumerate(content):
        where = f"{param}.content.{i}"
        kind = _block_type(block, where, allowed)
        if kind == "text":
            blocks.append(Text(_validate(_TextBlock, block, where, dropped).text))
        elif kind == "image":
            blocks.append(_image(_validate(_ImageBlock, block, where, dropped), where, dropped))
        elif kind == "tool_use":
            use = _validate(_ToolUseBlock, block, where, dropped)
            blocks.append(ToolUse(use.id, use.name, use.input))
        elif kind == "tool_result":
            result = _validate(_ToolResultBlock, block, where, dropped)
            if result.tool_use_id not in called:
                raise _invalid(
                    f"{where}.tool_use_id: {result.tool_use_id!r} matches no tool_use block "
                    "of the previous assistant message.",
                    f"{where}.tool_use_id",
                )
            blocks.append(
                ToolResult(
                    result.tool_use_id, _result_text(result.content, f"{where}.content", dropped), result.is_error
                )
            )
        elif kind == "thinking":
            thought = _validate(_ThinkingBlock, block, where, dropped)
            blocks.append(Thinking(thought.thinking))
        else:
            _validate(_RedactedThinkingBlock, block, where, dropped)
            dropped.add("redacted_thinking block")
    return tuple(blocks)


def _image(block: _ImageBlock, param: str, dropped: set[str]) -> Image:
    source = block.source
    kind = source.get("type")
    where = f"{param}.source"
    if kind == "base64":
        data = _validate(_Base64Source, source, where, dropped)
        return Image(f"data:{data.media_type};base64,{data.data}")
    if kind == "url":
        return Image(_validate(_UrlSource, source, where, dropped).url)
    raise _invalid(f"{where}.type: only base64 and url image sources are supported by this gateway.", f"{where}.type")


def _result_text(content: Any, param: str, dropped: set[str]) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise _invalid(f"{param}: Input should be a string or a list of text blocks", param)
    texts = []
    for i, block in enumerate(content):
        where = f"{param}.{i}"
        if isinstance(block, dict) and block.get("type") == "image":
            raise _invalid(f"{where}.type: images in tool results are not supported by this gateway.", f"{where}.type")
        _block_type(block, where, ("text",))
        texts.append(_validate(_TextBlock, block, where, dropped).text)
    return "\n\n".join(texts)


def _tool(tool: Any, param: str, dropped: set[str]) -> ToolSpec:
    if not isinstance(tool, dict):
        raise _invalid(f"{param}: Input should be a tool object", param)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        name = tool.get("name")
        label = f"{name!r} ({kind})" if isinstance(name, str) else repr(kind)
        raise _invalid(
            f"{param}.type: the server tool {label} is not supported by this gateway; only client tools "
            "(name, description, input_schema) are.",
            f"{param}.type",
        )
    spec = _validate(_ToolDef, tool, param, dropped)
    return ToolSpec(spec.name, spec.description, spec.input_schema, spec.strict)


def _tool_choice(choice: Any, tools: tuple[ToolSpec, ...], dropped: set[str]) -> ToolChoice | None:
    if choice is None:
        return None
    if not isinstance(choice, dict):
        raise _invalid("tool_choice: Input should be an object", "tool_choice")
    spec = _validate(_ToolChoiceDef, choice, "tool_choice", dropped)
    if spec.type == "tool":
        if spec.name is None:
            raise _invalid("tool_choice.name: Field required", "tool_choice.name")
        if all(tool.name != spec.name for tool in tools):
            raise _invalid(f"tool_choice.name: {spec.name!r} is not one of the tools.", "tool_choice.name")
    return ToolChoice(spec.type, spec.name, spec.disable_parallel_tool_use)


def _thinking(thinking: Any, dropped: set[str]) -> tuple[ThinkingMode | None, int | None]:
    if thinking is None:
        return None, None
    if not isinstance(thinking, dict):
        raise _invalid("thinking: Input should be an object", "thinking")
    spec = _validate(_ThinkingDef, thinking, "thinking", dropped)
    try:
        mode = ThinkingMode(spec.type)
    except ValueError:
        dropped.add(f"thinking.type={spec.type[:_LOGGED_NAME_CHARS]}")
        return None, None
    if mode is ThinkingMode.ENABLED and spec.budget_tokens is None:
        raise _invalid("thinking.budget_tokens: Field required", "thinking.budget_tokens")
    return mode, spec.budget_tokens


# The request, translated.


def reasoning_effort_of(request: MessagesRequest) -> str | None:
    """The ``reasoning_effort`` an explicit ``thinking: enabled`` budget asks for; None for anything else."""
    if request.thinking is not ThinkingMode.ENABLED or request.thinking_budget is None:
        return None
    if request.thinking_budget < _EFFORT_LOW_BELOW:
        return "low"
    return "medium" if request.thinking_budget < _EFFORT_MEDIUM_BELOW else "high"


def to_chat(request: MessagesRequest, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
    """The chat-completions request for this Messages request.

    ``reasoning`` is the route's: earlier thinking blocks go upstream (as the
    assistant's ``reasoning_content``) only when it exposes reasoning.
    ``reasoning_effort`` says whether the route's provider takes that field;
    otherwise ``thinking`` is accepted and ignored. ``model`` stays the
    client's (the shell puts the route's upstream model in).
    """
    dropped = set(request.dropped)
    messages: list[dict[str, Any]] = []
    if request.system is not None:
        messages.append({"role": "system", "content": request.system})
    for turn in request.turns:
        if turn.role == "user":
            messages += _user_messages(turn.blocks)
        elif (message := _assistant_message(turn.blocks, reasoning, dropped)) is not None:
            messages.append(message)
    chat: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.stream:
        chat["stream_options"] = {"include_usage": True}
    if request.max_tokens is not None:
        chat["max_completion_tokens"] = request.max_tokens
    if request.stop_sequences:
        chat["stop"] = list(request.stop_sequences)
    if request.temperature is not None:
        chat["temperature"] = request.temperature
    if request.top_p is not None:
        chat["top_p"] = request.top_p
    if request.user is not None:
        chat["user"] = request.user
    if request.tools:
        chat["tools"] = [_function_tool(tool) for tool in request.tools]
    choice = request.tool_choice
    if choice is not None:
        chat["tool_choice"] = _chat_tool_choice(choice)
        if choice.disable_parallel_tool_use and choice.type != "none":
            chat["parallel_tool_calls"] = False
    effort = reasoning_effort_of(request)
    if effort is not None and reasoning_effort:
        chat["reasoning_effort"] = effort
    elif request.thinking is not None:
        dropped.add("thinking")
    if dropped:
        names = ", ".join(name[:_LOGGED_NAME_CHARS] for name in sorted(dropped)[:_LOGGED_NAMES])
        logger.debug("Messages request fields with no chat counterpart, dropped: %s", names)
    return chat


def _user_messages(blocks: tuple[Block, ...]) -> list[dict[str, Any]]:
    """Tool results first, as chat wants them right after the assistant's calls; then the rest as one user message.

    A user's text blocks are separate inputs, so they are joined by a blank line.
    """
    messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for block in blocks:
        if isinstance(block, ToolResult):
            text = f"Error: {block.text}" if block.is_error else block.text
            messages.append({"role": "tool", "tool_call_id": block.tool_use_id, "content": text})
        elif isinstance(block, Text):
            parts.append({"type": "text", "text": block.text})
        elif isinstance(block, Image):
            parts.append({"type": "image_url", "image_url": {"url": block.url}})
    if parts:
        if all(part["type"] == "text" for part in parts):
            messages.append({"role": "user", "content": "\n\n".join(part["text"] for part in parts)})
        else:
            messages.append({"role": "user", "content": parts})
    elif not messages:
        messages.append({"role": "user", "content": ""})
    return messages


def _assistant_message(blocks: tuple[Block, ...], reasoning: Reasoning, dropped: set[str]) -> dict[str, Any] | None:
    """One assistant message; None when nothing of it goes upstream.

    Its text blocks, and its thinking blocks, are pieces of one answer: the
    gateway splits an answer's text only where a block of another kind came
    between, and the rewrite has already set segments apart, so they are
    joined as they are.
    """
    texts = [block.text for block in blocks if isinstance(block, Text)]
    calls = [
        {"id": b.id, "type": "function", "function": {"name": b.name, "arguments": json_body.dumps(b.input).decode()}}
        for b in blocks
        if isinstance(b, ToolUse)
    ]
    thoughts = [block.text for block in blocks if isinstance(block, Thinking)]
    if thoughts and reasoning is not Reasoning.EXPOSE:
        dropped.add("thinking block")
        thoughts = []
    if not (texts or calls or thoughts):
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    return message


def _function_tool(tool: ToolSpec) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    function["parameters"] = tool.input_schema
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _chat_tool_choice(choice: ToolChoice) -> Any:
    if choice.type == "any":
        return "required"
    if choice.type == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.type


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
