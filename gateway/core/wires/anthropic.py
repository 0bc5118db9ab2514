"""Anthropic's Messages API as an upstream wire: the request it takes, its events read as chat-completion chunks.

The request is built from the chat-completions request the gateway prepared
(agent tools injected, history rewritten): system text at the top level,
``max_tokens`` always, tools with ``input_schema``, tool results as
``tool_result`` blocks in a user turn, and consecutive turns of one role
merged, as the API requires. Its stream's blocks become chat deltas: text as
``content``, a ``tool_use`` block as a tool call whose ``partial_json`` are
the argument fragments, thinking as ``reasoning_content`` (the rewrite hides
or exposes it as for any chat upstream).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from gateway.core import details
from gateway.core.errors import GatewayError
from gateway.core.rewriter import InvalidChunk
from gateway.core.wires.common import (
    ChunkMaker,
    Fragment,
    WireFailure,
    as_list,
    chat_messages,
    chat_usage,
    count,
    function_tools,
    invalid,
    max_tokens_of,
    openai_error,
    stops_of,
    text_of,
)

__all__ = ["AnthropicReader", "anthropic_completion", "anthropic_error", "anthropic_request"]

# Anthropic stop reasons as chat finish reasons; one not known is a natural end.
_FINISH: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Anthropic error types: the HTTP status each one comes with, and whether another attempt may succeed.
_ERRORS: Final = {
    "invalid_request_error": (400, False),
    "authentication_error": (401, False),
    "billing_error": (402, False),
    "permission_error": (403, False),
    "not_found_error": (404, False),
    "request_too_large": (413, False),
    "rate_limit_error": (429, True),
    "api_error": (500, True),
    "timeout_error": (504, True),
    "overloaded_error": (529, True),
}
# Chat's reasoning efforts as thinking budgets (Anthropic's smallest budget is 1024 tokens).
_BUDGETS: Final = {"low": 1024, "medium": 4096, "high": 16384, "xhigh": 32768}


def anthropic_request(
    payload: Mapping[str, Any], *, stream: bool, max_tokens: int, summaries: bool = False
) -> dict[str, Any]:
    """The Messages request for a chat-completions request; ``max_tokens`` is the provider's, for one that sets none.

    Thinking, when asked for, streams whatever ``summaries`` says: the rewrite decides what is shown.
    """
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for position, role, message in chat_messages(payload, "an Anthropic"):
        if role in ("system", "developer"):
            if text := text_of(message.get("content")):
                system.append(text)
        elif role == "user":
            _add(turns, "user", _user_blocks(message.get("content")))
        elif role == "assistant":
            _add(turns, "assistant", _assistant_blocks(message))
        elif role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": str(message.get("tool_call_id") or ""),
                "content": text_of(message.get("content")),
            }
            _add(turns, "user", [block])
        else:
            raise invalid(
                f"A message's role {role!r} cannot be sent to an Anthropic provider.", f"messages[{position}].role"
            )
    limit = max_tokens_of(payload) or max_tokens
    request: dict[str, Any] = {"model": payload.get("model"), "max_tokens": limit, "messages": turns}
    if system:
        request["system"] = "\n\n".join(system)
    for key in ("temperature", "top_p", "top_k"):
        if isinstance(payload.get(key), (int, float)):
            request[key] = payload[key]
    if stops := stops_of(payload):
        request["stop_sequences"] = stops
    effort = payload.get("reasoning_effort")
    thinking = _BUDGETS.get(effort) if isinstance(effort, str) else None
    if thinking is not None:
        request["thinking"] = {"type": "enabled", "budget_tokens": thinking}
        request["max_tokens"] = max(limit, thinking + 1024)
        request.pop("temperature", None)  # thinking takes no temperature but the default
        request.pop("top_k", None)
    tools = [_tool(function) for function in function_tools(payload)]
    if tools:
        request["tools"] = tools
        choice = _tool_choice(payload.get("tool_choice"), thinking is not None)
        if payload.get("parallel_tool_calls") is False and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
        request["tool_choice"] = choice
    user = payload.get("user")
    if isinstance(user, str) and user:
        request["metadata"] = {"user_id": user}
    if stream:
        request["stream"] = True
    return request


def _add(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    """A turn's blocks, merged into the one before when it has the same role (the API alternates them)."""
    if not blocks:
        return
    if turns and turns[-1]["role"] == role:
        previous = turns[-1]["content"]
        if role == "user" and blocks[0]["type"] == "tool_result":
            # Tool results come first in a user turn.
            results = [block for block in previous if block["type"] == "tool_result"]
            others = [block for block in previous if block["type"] != "tool_result"]
            turns[-1]["content"] = [*results, *blocks, *others]
        else:
            previous += blocks
        return
    turns.append({"role": role, "content": blocks})


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            blocks.append({"type": "text", "text": part["text"]})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append({"type": "image", "source": _image_source(url)})
    return blocks


def _image_source(url: str) -> dict[str, Any]:
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def _assistant_blocks(message: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An assistant turn's blocks: its sealed thinking first, as Anthropic requires it back (unsigned reasoning
    it refuses, so that is not sent), then its text and its tool calls."""
    blocks: list[dict[str, Any]] = []
    for detail in as_list(message.get("reasoning_details")):
        seal = details.seal_of(detail) if isinstance(detail, dict) else None
        if seal is not None and seal.encrypted is not None:
            blocks.append({"type": "redacted_thinking", "data": seal.encrypted})
        elif seal is not None and isinstance(text := detail.get("text"), str):
            blocks.append({"type": "thinking", "thinking": text, "signature": seal.signature})
    if text := text_of(message.get("content")):
        blocks.append({"type": "text", "text": text})
    for call in as_list(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            continue
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = None
        block = {
            "type": "tool_use",
            "id": str(call.get("id") or ""),
            "name": str(function.get("name") or ""),
            "input": arguments if isinstance(arguments, dict) else {},
        }
        blocks.append(block)
    return blocks


def _tool(function: Mapping[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters")
    out: dict[str, Any] = {
        "name": function.get("name"),
        "input_schema": parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}},
    }
    if isinstance(function.get("description"), str):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, thinking: bool) -> dict[str, Any]:
    """Chat's tool choice in Anthropic's words; with thinking on, only ``auto`` and ``none`` are accepted."""
    if choice == "none":
        return {"type": "none"}
    if thinking:
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "tool", "name": function["name"]}
    return {"type": "auto"}


def _usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    """Anthropic's usage in chat's shape: its input excludes the cache reads and writes, chat's prompt does not."""
    read = count(usage.get("cache_read_input_tokens"))
    written = count(usage.get("cache_creation_input_tokens"))
    prompt = count(usage.get("input_tokens")) + read + written
    return chat_usage(prompt, count(usage.get("output_tokens")), cached=read, cache_write=written)


def anthropic_error(provider: str, body: Any, status: int | None = None) -> GatewayError | None:
    """An Anthropic error body (``{"type": "error", "error": {...}}``) as the gateway reports it, else None.

    ``status`` is the HTTP status it came with; an error event mid-stream has the one its type goes with.
    """
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None
    kind = error.get("type")
    kind = kind if isinstance(kind, str) else "api_error"
    message = error.get("message")
    message = message if isinstance(message, str) else f"The upstream provider {provider!r} reported {kind}."
    known_status, retryable = _ERRORS.get(kind, (500, True))
    return openai_error(provider, message, kind, code=kind, status=status or known_status, retryable=retryable)


class AnthropicReader:
    """A Messages stream's events, decoded, in; chat-completion chunks out. ``ended`` once ``message_stop`` came."""

    __slots__ = ("provider", "ended", "_maker", "_blocks", "_calls", "_usage")

    def __init__(self, provider: str, created: int) -> None:
        self.provider = provider
        self.ended = False
        self._maker = ChunkMaker(created)
        self._blocks: dict[int, str] = {}  # each content block's type, by its index
        self._calls: dict[int, int] = {}  # a tool_use block's tool-call index, by the block's index
        self._usage: dict[str, Any] = {}

    def read(self, event: Mapping[str, Any]) -> Sequence[dict[str, Any] | Fragment]:
        kind = event.get("type")
        maker = self._maker
        if kind == "content_block_delta":
            delta = event.get("delta")
            if not isinstance(delta, dict):
                raise InvalidChunk("a content_block_delta has no delta")
            index = event.get("index")
            if type(index) is not int:
                raise InvalidChunk("a content_block_delta without an index")
            delta_type = delta.get("type")
            if delta_type == "text_delta":
                return [maker.chunk({"content": _string(delta, "text")})]
            if delta_type == "input_json_delta":
                call = self._calls.get(index)
                if call is None:
                    return []  # a server tool's input: the provider runs it, nothing for the client
                return [maker.fragment(call, _string(delta, "partial_json"))]
            if delta_type == "thinking_delta":
                return [maker.chunk({"reasoning_content": _string(delta, "thinking")})]
            if delta_type == "signature_delta":
                return [maker.chunk({"reasoning_details": [details.signed("", _string(delta, "signature"))]})]
            return []  # citations_delta: nothing a chat answer carries
        if kind == "content_block_start":
            return self._block(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_start":
            message = event.get("message")
            if not isinstance(message, dict):
                raise InvalidChunk("a message_start has no message")
            maker.id = str(message.get("id") or "")
            maker.model = str(message.get("model") or "")
            if isinstance(message.get("usage"), dict):
                self._usage.update(message["usage"])
            return []
        if kind == "message_stop":
            self.ended = True
            return []
        if kind == "error":
            error = anthropic_error(self.provider, event)
            if error is None:
                raise InvalidChunk("an error event without an error object")
            raise WireFailure(error)
        return []  # ping, content_block_stop, and event types added later

    def _block(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block")
        index = event.get("index")
        if not isinstance(block, dict) or type(index) is not int:
            raise InvalidChunk("a content_block_start without a block or an index")
        block_type = str(block.get("type"))
        self._blocks[index] = block_type
        maker = self._maker
        if block_type == "text" and isinstance(block.get("text"), str) and block["text"]:
            return [maker.chunk({"content": block["text"]})]
        if block_type == "thinking" and isinstance(block.get("thinking"), str) and block["thinking"]:
            return [maker.chunk({"reasoning_content": block["thinking"]})]
        if block_type == "redacted_thinking" and isinstance(block.get("data"), str):
            return [maker.chunk({"reasoning_details": [details.encrypted(block["data"])]})]
        if block_type != "tool_use":
            return []
        call = self._calls[index] = len(self._calls)
        given = block.get("input")
        arguments = orjson.dumps(given).decode() if isinstance(given, dict) and given else ""
        function = {"name": str(block.get("name") or ""), "arguments": arguments}
        header = {"index": call, "id": str(block.get("id") or ""), "type": "function", "function": function}
        return [maker.chunk({"tool_calls": [header]})]

    def _message_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if isinstance(event.get("usage"), dict):
            # Its counts are the totals so far; a count it leaves out keeps message_start's.
            self._usage.update({key: value for key, value in event["usage"].items() if value is not None})
        delta = event.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        if reason is None:
            return []
        finish = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
        maker = self._maker
        return [maker.chunk({}, finish), maker.usage(_usage(self._usage))]


def _string(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping.get(key)
    if not isinstance(value, str):
        raise InvalidChunk(f"a delta's {key} is not a string")
    return value


def anthropic_completion(message: Mapping[str, Any], provider: str, created: int) -> dict[str, Any]:
    """A whole Messages answer as a ``chat.completion``; an error body raises the ``GatewayError`` it says."""
    if message.get("type") == "error":
        error = anthropic_error(provider, message)
        if error is not None:
            raise error
    content = message.get("content")
    if not isinstance(content, list):
        raise InvalidChunk("the message has no content")
    texts: list[str] = []
    thinking: list[str] = []
    blocks: list[dict[str, Any]] = []  # each thinking block with its signature, and the redacted ones
    calls: list[dict[str, Any]] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "thinking" and isinstance(block.get("thinking"), str):
            thinking.append(block["thinking"])
            signature = block.get("signature")
            blocks.append(details.signed(block["thinking"], signature if isinstance(signature, str) else None))
        elif kind == "redacted_thinking" and isinstance(block.get("data"), str):
            blocks.append(details.encrypted(block["data"]))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") if isinstance(block.get("input"), dict) else {}).decode()
            function = {"name": str(block.get("name") or ""), "arguments": arguments}
            calls.append({"id": str(block.get("id") or ""), "type": "function", "function": function})
    answer: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if thinking:
        answer["reasoning_content"] = "\n\n".join(thinking)
    if blocks:
        answer["reasoning_details"] = blocks
    if calls:
        answer["tool_calls"] = calls
    reason = message.get("stop_reason")
    finish = _FINISH.get(reason, "stop") if isinstance(reason, str) else "stop"
    completion: dict[str, Any] = {
        "id": str(message.get("id") or ""),
        "object": "chat.completion",
        "created": created,
        "model": str(message.get("model") or ""),
        "choices": [{"index": 0, "message": answer, "finish_reason": finish}],
    }
    if isinstance(message.get("usage"), dict):
        completion["usage"] = _usage(message["usage"])
    return completion
