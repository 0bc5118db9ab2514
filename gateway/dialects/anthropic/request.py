"""A Messages request, read field by field into the neutral ``Request``, in Anthropic's words when it is wrong.

The system prompt leads; a user turn's ``tool_result`` blocks become tool
results, its text and images the message; an assistant turn's ``tool_use``
blocks become its tool calls and its ``thinking`` blocks its reasoning; a
``system`` message among the turns (Claude Code's mid-conversation system
messages) is a system message where it stands. ``output_config`` says the
effort (``reasoning_effort``) and the output format (``response_format``).
What has no chat counterpart either fails with a 400 that names it (server
tools, documents) or is dropped and named (``top_k``, ``cache_control``,
``context_management``, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

from gateway.core import json_body
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.fields import Expected, Field, Path
from gateway.core.request import (
    Image,
    Message,
    Part,
    Reasoning,
    Request,
    Role,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)

__all__ = ["AnthropicWording", "MessagesRequest", "ThinkingMode", "parse_count_tokens_request", "parse_request"]

# Reasoning budgets (Anthropic's ``budget_tokens``) below these map to "low", then "medium"; above, "high".
_EFFORT_LOW_BELOW: Final = 4096
_EFFORT_MEDIUM_BELOW: Final = 16384
_LOGGED_NAME_CHARS: Final = 64
_KNOWN: Final = frozenset(
    (
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "stop_sequences",
        "metadata",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "mcp_servers",
    )
)
# Anthropic's ``output_config.effort`` as chat's ``reasoning_effort`` (which has no level above ``high``).
_EFFORTS: Final = {"low": "low", "medium": "medium", "high": "high", "max": "high"}
_USER_BLOCKS: Final = ("text", "image", "tool_result")
_ASSISTANT_BLOCKS: Final = ("text", "tool_use", "thinking", "redacted_thinking")
# The fields each block type has; any other is dropped and named.
_BLOCK_FIELDS: Final = {
    "text": ("type", "text"),
    "image": ("type", "source"),
    "tool_use": ("type", "id", "name", "input"),
    "tool_result": ("type", "tool_use_id", "content", "is_error"),
    "thinking": ("type", "thinking", "signature"),
    "redacted_thinking": ("type", "data"),
}
_TOOL_CHOICES: Final = {"auto": "auto", "any": "required", "tool": "function", "none": "none"}
_NOUNS: Final = {
    Expected.STRING: "Input should be a valid string",
    Expected.INTEGER: "Input should be a valid integer",
    Expected.NUMBER: "Input should be a number",
    Expected.BOOLEAN: "Input should be a valid boolean",
    Expected.OBJECT: "Input should be a valid dictionary",
    Expected.ARRAY: "Input should be a valid list",
}


class AnthropicWording:
    """Paths as ``messages.0.content.1.type``; messages as Anthropic's API words them (``<path>: <problem>``)."""

    def where(self, path: Path) -> str:
        return ".".join(map(str, path))

    def missing(self, where: str) -> GatewayError:
        return _invalid(f"{where}: Field required", where)

    def wrong_type(self, where: str, expected: Expected) -> GatewayError:
        return _invalid(f"{where}: {_NOUNS[expected]}", where)

    def too_small(self, where: str, minimum: int, expected: Expected) -> GatewayError:
        if expected is Expected.STRING:
            return _invalid(f"{where}: String should have at least {minimum} character", where)
        if expected is Expected.ARRAY:
            return _invalid(f"{where}: List should have at least {minimum} item", where)
        return _invalid(f"{where}: Input should be greater than or equal to {minimum}", where)

    def too_many(self, where: str, maximum: int) -> GatewayError:
        return _invalid(f"{where}: List should have at most {maximum} items", where)

    def invalid(self, where: str, message: str, code: str) -> GatewayError:
        return _invalid(message, where)


WORDING: Final = AnthropicWording()


def _invalid(message: str, param: str | None = None) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param or None)


class ThinkingMode(Enum):
    """What the client's ``thinking`` asked for."""

    ENABLED = "enabled"
    ADAPTIVE = "adaptive"
    DISABLED = "disabled"


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A Messages request: the neutral request, and what the answer needs of it (its stop sequences)."""

    request: Request
    stop_sequences: tuple[str, ...]

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def stream(self) -> bool:
        return self.request.stream

    @property
    def max_tokens(self) -> int | None:
        return self.request.max_tokens

    @property
    def dropped(self) -> frozenset[str]:
        return self.request.dropped

    @property
    def dropped_tools(self) -> tuple[str, ...]:
        return ()  # server tools are refused, never left out


def parse_request(body: bytes) -> MessagesRequest:
    """A Messages request body, validated as far as the translation relies on it; 400 otherwise."""
    return _request(_root(body), max_tokens_required=True)


def parse_count_tokens_request(body: bytes) -> MessagesRequest:
    """A ``count_tokens`` body: the Messages body without ``max_tokens`` (nor ``stream``)."""
    return _request(_root(body), max_tokens_required=False)


def _root(body: bytes) -> Field:
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise _invalid("The request body must be a JSON object.")
    return Field(payload, WORDING)


def _request(root: Field, *, max_tokens_required: bool) -> MessagesRequest:
    dropped = {key for key in root.members() if key not in _KNOWN}
    model = root.get("model").string(required=True, non_empty=True)
    max_tokens = root.get("max_tokens").integer(required=max_tokens_required, minimum=1)
    messages = root.get("messages").array(required=True, min_items=1)
    assert model is not None and messages is not None
    stream = bool(root.get("stream").boolean())
    temperature = root.get("temperature").number()
    top_p = root.get("top_p").number()
    stop_sequences = tuple(_strings(root.get("stop_sequences")))
    metadata = root.get("metadata")
    user = None
    if metadata.object() is not None:
        dropped.update(f"metadata.{key}" for key in metadata.members() if key != "user_id")
        user = metadata.get("user_id").string()
    if root.get("mcp_servers").array():
        raise _invalid("mcp_servers: MCP servers are not supported by this gateway.", "mcp_servers")
    turns: list[Message] = []
    system = _system(root.get("system"), dropped)
    if system:
        turns.append(Message(Role.SYSTEM, (Text(system),)))
    called: set[str] = set()
    for message in messages:
        message.object(required=True)
        dropped.update(key for key in message.members() if key not in ("role", "content"))
        role = message.get("role")
        if role.string(required=True) not in ("user", "assistant", "system"):
            raise _invalid(f"{role.where}: Input should be 'user', 'assistant' or 'system'", role.where)
        content = message.get("content")
        if not content.present and not (isinstance(message.value, dict) and "content" in message.value):
            raise WORDING.missing(content.where)
        if role.value == "system":
            # A system message where it stands; the tool calls it may sit after stay answerable.
            turns.append(Message(Role.SYSTEM, (Text(_system(content, dropped) or ""),)))
        elif role.value == "user":
            turns.append(Message(Role.USER, _user_blocks(content, called, dropped)))
            called = set()
        else:
            parts = _assistant_blocks(content, dropped)
            called = {part.id for part in parts if isinstance(part, ToolCall)}
            turns.append(Message(Role.ASSISTANT, parts))
    tools = tuple(_tool(tool, dropped) for tool in root.get("tools").entries())
    tool_choice, parallel = _tool_choice(root.get("tool_choice"), tools, dropped)
    effort = _reasoning_effort(root.get("thinking"), dropped)
    output_effort, response_format = _output_config(root.get("output_config"), dropped)
    request = Request(
        model=model,
        stream=stream,
        messages=tuple(turns),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop_sequences or None,
        user=user,
        reasoning_effort=output_effort or effort,
        response_format=response_format,
        dropped=frozenset(dropped),
    )
    return MessagesRequest(request, stop_sequences)


def _strings(field: Field) -> list[str]:
    values = []
    for entry in field.entries():
        value = entry.string(required=True)
        assert value is not None
        values.append(value)
    return values


def _system(system: Field, dropped: set[str]) -> str | None:
    if system.value is None or isinstance(system.value, str):
        return system.value or None
    if not isinstance(system.value, list):
        raise _invalid(f"{system.where}: Input should be a string or a list of text blocks", system.where)
    texts = [_text(block, ("text",), dropped) for block in system.entries()]
    return "\n\n".join(texts) or None


def _block_type(block: Field, allowed: tuple[str, ...], dropped: set[str]) -> str:
    if not isinstance(block.value, dict):
        raise _invalid(f"{block.where}: Input should be a content block object", block.where)
    kind = block.get("type")
    name = kind.string(required=True)
    assert name is not None
    if name == "document":
        raise _invalid(f"{kind.where}: document blocks are not supported by this gateway.", kind.where)
    if name not in allowed:
        raise _invalid(
            f"{kind.where}: a {name!r} block is not supported here (expected one of {', '.join(allowed)}).", kind.where
        )
    dropped.update(key for key in block.members() if key not in _BLOCK_FIELDS[name])
    return name


def _text(block: Field, allowed: tuple[str, ...], dropped: set[str]) -> str:
    _block_type(block, allowed, dropped)
    text = block.get("text").string(required=True)
    assert text is not None
    return text


def _required_string(field: Field) -> str:
    value = field.string(required=True, non_empty=True)
    assert value is not None
    return value


def _user_blocks(content: Field, called: set[str], dropped: set[str]) -> tuple[Part, ...]:
    """A user turn: its tool results, then its text and images; texts alone are one text, set apart by blank lines."""
    if isinstance(content.value, str):
        return (Text(content.value),)
    if not isinstance(content.value, list):
        raise _invalid(f"{content.where}: Input should be a string or a list of content blocks", content.where)
    results: list[Part] = []
    parts: list[Text | Image] = []
    for block in content.entries():
        kind = _block_type(block, _USER_BLOCKS, dropped)
        if kind == "text":
            text = block.get("text").string(required=True)
            assert text is not None
            parts.append(Text(text))
        elif kind == "image":
            parts.append(_image(block, dropped))
        else:
            use = block.get("tool_use_id")
            call_id = _required_string(use)
            if call_id not in called:
                raise _invalid(
                    f"{use.where}: {call_id!r} matches no tool_use block of the previous assistant message.", use.where
                )
            is_error = bool(block.get("is_error").boolean())
            results.append(ToolResult(call_id, _result_text(block.get("content"), dropped), is_error))
    if parts and all(isinstance(part, Text) for part in parts):
        parts = [Text("\n\n".join(part.text for part in parts if isinstance(part, Text)))]
    return (*results, *parts)


def _assistant_blocks(content: Field, dropped: set[str]) -> tuple[Part, ...]:
    if isinstance(content.value, str):
        return (Text(content.value),)
    if not isinstance(content.value, list):
        raise _invalid(f"{content.where}: Input should be a string or a list of content blocks", content.where)
    parts: list[Part] = []
    for block in content.entries():
        kind = _block_type(block, _ASSISTANT_BLOCKS, dropped)
        if kind == "text":
            text = block.get("text").string(required=True)
            assert text is not None
            parts.append(Text(text))
        elif kind == "tool_use":
            call_id, name = _required_string(block.get("id")), _required_string(block.get("name"))
            arguments = block.get("input").object(required=True)
            parts.append(ToolCall(call_id, name, json_body.dumps(arguments).decode()))
        elif kind == "thinking":
            thought = block.get("thinking").string(required=True)
            assert thought is not None
            parts.append(Reasoning(thought, signature=block.get("signature").string() or None))
        else:
            data = block.get("data").string(required=True)
            assert data is not None
            parts.append(Reasoning("", redacted=data))
    return tuple(parts)


def _image(block: Field, dropped: set[str]) -> Image:
    source = block.get("source")
    source.object(required=True)
    kind = source.get("type")
    if kind.string() == "base64":
        dropped.update(f"source.{key}" for key in source.members() if key not in ("type", "media_type", "data"))
        media_type = _required_string(source.get("media_type"))
        data = source.get("data").string(required=True)
        return Image(f"data:{media_type};base64,{data}")
    if kind.value == "url":
        return Image(_required_string(source.get("url")))
    raise _invalid(f"{kind.where}: only base64 and url image sources are supported by this gateway.", kind.where)


def _result_text(content: Field, dropped: set[str]) -> str:
    if content.value is None or isinstance(content.value, str):
        return content.value or ""
    if not isinstance(content.value, list):
        raise _invalid(f"{content.where}: Input should be a string or a list of text blocks", content.where)
    texts = []
    for block in content.entries():
        if isinstance(block.value, dict) and block.value.get("type") == "image":
            kind = block.get("type")
            raise _invalid(f"{kind.where}: images in tool results are not supported by this gateway.", kind.where)
        texts.append(_text(block, ("text",), dropped))
    return "\n\n".join(texts)


def _tool(tool: Field, dropped: set[str]) -> Tool:
    if not isinstance(tool.value, dict):
        raise _invalid(f"{tool.where}: Input should be a tool object", tool.where)
    kind = tool.get("type")
    if kind.value not in (None, "custom"):
        name = tool.value.get("name")
        label = f"{name!r} ({kind.value})" if isinstance(name, str) else repr(kind.value)
        raise _invalid(
            f"{kind.where}: the server tool {label} is not supported by this gateway; only client tools "
            "(name, description, input_schema) are.",
            kind.where,
        )
    dropped.update(
        key for key in tool.members() if key not in ("type", "name", "description", "input_schema", "strict")
    )
    name = _required_string(tool.get("name"))
    description = tool.get("description").string()
    schema = tool.get("input_schema").object(required=True)
    return Tool(name, description, schema, tool.get("strict").boolean())


def _tool_choice(choice: Field, tools: tuple[Tool, ...], dropped: set[str]) -> tuple[ToolChoice | None, bool | None]:
    """The tool choice, and whether parallel calls are off (``disable_parallel_tool_use``)."""
    if not choice.present:
        return None, None
    if not isinstance(choice.value, dict):
        raise _invalid(f"{choice.where}: Input should be an object", choice.where)
    dropped.update(
        f"tool_choice.{key}" for key in choice.members() if key not in ("type", "name", "disable_parallel_tool_use")
    )
    kind = choice.get("type")
    mode = _TOOL_CHOICES.get(kind.string(required=True) or "")
    if mode is None:
        raise _invalid(f"{kind.where}: Input should be 'auto', 'any', 'tool' or 'none'", kind.where)
    name = choice.get("name")
    disable_parallel = bool(choice.get("disable_parallel_tool_use").boolean())
    if mode == "function":
        wanted = name.string(required=True)
        if all(tool.name != wanted for tool in tools):
            raise _invalid(f"{name.where}: {wanted!r} is not one of the tools.", name.where)
        return ToolChoice("function", wanted), False if disable_parallel else None
    name.string()
    return ToolChoice(mode), False if disable_parallel and mode != "none" else None  # type: ignore[arg-type]


def _reasoning_effort(thinking: Field, dropped: set[str]) -> str | None:
    """The ``reasoning_effort`` an explicit ``thinking: enabled`` budget asks for: below 4096 tokens ``low``, below
    16384 ``medium``, else ``high``. Any other thinking is accepted and sends nothing."""
    if not thinking.present:
        return None
    if not isinstance(thinking.value, dict):
        raise _invalid(f"{thinking.where}: Input should be an object", thinking.where)
    kind = thinking.get("type").string(required=True)
    budget = thinking.get("budget_tokens").integer(minimum=0)
    try:
        mode = ThinkingMode(kind)
    except ValueError:
        dropped.add(f"thinking.type={(kind or '')[:_LOGGED_NAME_CHARS]}")
        return None
    if mode is not ThinkingMode.ENABLED:
        dropped.add("thinking")
        return None
    if budget is None:
        raise WORDING.missing(thinking.get("budget_tokens").where)
    if budget < _EFFORT_LOW_BELOW:
        return "low"
    return "medium" if budget < _EFFORT_MEDIUM_BELOW else "high"


def _output_config(config: Field, dropped: set[str]) -> tuple[str | None, dict[str, Any] | None]:
    """``output_config``: its ``effort`` as a ``reasoning_effort`` (``max`` is ``high``), its ``format`` (a JSON
    schema) as a chat ``response_format``; other members are dropped and named."""
    if config.object() is None:
        return None, None
    dropped.update(f"output_config.{key}" for key in config.members() if key not in ("effort", "format"))
    effort_field = config.get("effort")
    effort = effort_field.string()
    if effort is not None and effort not in _EFFORTS:
        raise _invalid(f"{effort_field.where}: Input should be 'low', 'medium', 'high' or 'max'", effort_field.where)
    output_format = config.get("format")
    if output_format.object() is None:
        return _EFFORTS.get(effort or ""), None
    kind = output_format.get("type")
    if kind.string(required=True) != "json_schema":
        raise _invalid(f"{kind.where}: Input should be 'json_schema'", kind.where)
    schema = output_format.get("schema").object(required=True)
    json_schema = {"name": "output", "schema": schema, "strict": True}
    return _EFFORTS.get(effort or ""), {"type": "json_schema", "json_schema": json_schema}
