"""A translated request in no dialect in particular, and the one builder that makes a chat-completions request of it.

The Responses and Messages front doors each parse their clients' requests
into a ``Request``: messages made of parts (text, images, tool calls and their
results, earlier reasoning), tools, a tool choice and the sampling settings.
``to_chat`` then builds what a chat-completions upstream receives, so every
rule of that wire is written once: tool results come first in a user turn,
as ``tool`` messages; one assistant turn is one message; reasoning goes back
only on a route that exposes it; tool settings go only with tools.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final, Literal

from gateway.core import details
from gateway.core.options import Reasoning as ReasoningPolicy

__all__ = [
    "Image",
    "Message",
    "Part",
    "Reasoning",
    "Request",
    "Role",
    "Text",
    "Tool",
    "ToolCall",
    "ToolChoice",
    "ToolResult",
    "log_dropped",
    "to_chat",
]

logger = logging.getLogger("gateway.requests")

# The debug line naming dropped fields shows at most this many names, each cut to this length: they are the client's.
_LOGGED_NAMES: Final = 20
_LOGGED_NAME_CHARS: Final = 64


class Role(Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"


@dataclass(frozen=True, slots=True)
class Text:
    text: str


@dataclass(frozen=True, slots=True)
class Image:
    """An image as a URL, or a ``data:`` URL for inline data."""

    url: str
    detail: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A call the assistant made earlier; ``arguments`` is JSON text, as the client sent or encoded it."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    text: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class Reasoning:
    """Reasoning the client sends back with an assistant turn; it reaches the upstream only where the route
    exposes reasoning. ``signature`` is the provider's for the block (Anthropic's thinking signature);
    ``redacted`` a block the provider sent only encrypted, whose ``text`` is empty."""

    text: str
    signature: str | None = None
    redacted: str | None = None


Part = Text | Image | ToolCall | ToolResult | Reasoning


@dataclass(frozen=True, slots=True)
class Message:
    role: Role
    parts: tuple[Part, ...]


@dataclass(frozen=True, slots=True)
class Tool:
    """A client function tool; ``parameters`` is its JSON schema."""

    name: str
    description: str | None = None
    parameters: Mapping[str, Any] | None = None
    strict: bool | None = None


@dataclass(frozen=True, slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "function"]
    name: str | None = None


@dataclass(frozen=True, slots=True)
class Request:
    """What the client asked for; ``dropped`` names what its dialect has and chat completions do not."""

    model: str
    stream: bool
    messages: tuple[Message, ...]
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: int | float | None = None
    top_p: int | float | None = None
    stop: str | tuple[str, ...] | None = None
    user: str | None = None
    metadata: Mapping[str, Any] | None = None
    reasoning_effort: str | None = None
    response_format: Mapping[str, Any] | None = None
    dropped: frozenset[str] = frozenset()


def to_chat(request: Request, *, reasoning: ReasoningPolicy, reasoning_effort: bool) -> dict[str, Any]:
    """The chat-completions request; its ``model`` stays the client's, for the shell to replace.

    ``reasoning`` is the route's (earlier reasoning goes back only when it exposes it); ``reasoning_effort``
    says whether the provider takes that field.
    """
    dropped = set(request.dropped)
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        if message.role is Role.SYSTEM:
            messages.append({"role": "system", "content": _text(message.parts)})
        elif message.role is Role.USER:
            messages += _user(message.parts)
        elif (assistant := _assistant(message.parts, reasoning, dropped)) is not None:
            messages.append(assistant)
    chat: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.stream:
        chat["stream_options"] = {"include_usage": True}
    if request.tools:
        chat["tools"] = [_function_tool(tool) for tool in request.tools]
        if request.tool_choice is not None:
            chat["tool_choice"] = _tool_choice(request.tool_choice)
        if request.parallel_tool_calls is not None:
            chat["parallel_tool_calls"] = request.parallel_tool_calls
    else:
        # Chat providers refuse these without tools (an agent route adds its own tools and choice).
        dropped.update(
            name
            for name, value in (
                ("tool_choice", request.tool_choice),
                ("parallel_tool_calls", request.parallel_tool_calls),
            )
            if value is not None
        )
    if request.max_tokens is not None:
        chat["max_completion_tokens"] = request.max_tokens
    for key in ("temperature", "top_p", "user", "metadata", "response_format"):
        if (value := getattr(request, key)) is not None:
            chat[key] = value
    if request.stop:
        chat["stop"] = request.stop if isinstance(request.stop, str) else list(request.stop)
    if request.reasoning_effort is not None:
        if reasoning_effort:
            chat["reasoning_effort"] = request.reasoning_effort
        else:
            dropped.add("reasoning effort (the provider does not take reasoning_effort)")
    log_dropped(dropped)
    return chat


def log_dropped(names: set[str] | frozenset[str]) -> None:
    """One debug line naming what a request had that is not sent upstream (the names, never their content)."""
    if names and logger.isEnabledFor(logging.DEBUG):
        shown = ", ".join(name[:_LOGGED_NAME_CHARS] for name in sorted(names)[:_LOGGED_NAMES])
        logger.debug("request fields not sent upstream (no chat-completions counterpart): %s", shown)


def _text(parts: tuple[Part, ...]) -> str:
    return "".join(part.text for part in parts if isinstance(part, Text))


def _user(parts: tuple[Part, ...]) -> list[dict[str, Any]]:
    """Tool results first, as chat wants them right after the assistant's calls; then the rest as one message."""
    messages: list[dict[str, Any]] = []
    content: list[Text | Image] = []
    for part in parts:
        if isinstance(part, ToolResult):
            text = f"Error: {part.text}" if part.is_error else part.text
            messages.append({"role": "tool", "tool_call_id": part.call_id, "content": text})
        elif isinstance(part, Text | Image):
            content.append(part)
    if content and any(isinstance(part, Image) for part in content):
        messages.append({"role": "user", "content": [_content_part(part) for part in content]})
    elif content or not messages:
        messages.append({"role": "user", "content": _text(parts)})
    return messages


def _content_part(part: Text | Image) -> dict[str, Any]:
    if isinstance(part, Text):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _assistant(parts: tuple[Part, ...], reasoning: ReasoningPolicy, dropped: set[str]) -> dict[str, Any] | None:
    """One assistant message, or None when nothing of it goes upstream."""
    texts = [part.text for part in parts if isinstance(part, Text)]
    calls = [
        {"id": part.id, "type": "function", "function": {"name": part.name, "arguments": part.arguments}}
        for part in parts
        if isinstance(part, ToolCall)
    ]
    blocks = [part for part in parts if isinstance(part, Reasoning)]
    if blocks and reasoning is not ReasoningPolicy.EXPOSE:
        dropped.add("reasoning of earlier turns (the route hides reasoning)")
        blocks = []
    if not (texts or calls or blocks):
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    if blocks:
        message["reasoning_content"] = "".join(block.text for block in blocks)
    if any(block.signature is not None or block.redacted is not None for block in blocks):
        message["reasoning_details"] = [
            details.encrypted(block.redacted)
            if block.redacted is not None
            else details.signed(block.text, block.signature)
            for block in blocks
        ]
    return message


def _function_tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        function["description"] = tool.description
    if tool.parameters is not None:
        function["parameters"] = tool.parameters
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "function":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode
