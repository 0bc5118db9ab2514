"""OpenAI's Responses API as an upstream wire: the request it takes, its events read as chat-completion chunks.

The request is built from the chat-completions request the gateway prepared:
system text as ``instructions``, the history as input items (tool calls as
``function_call`` items, their results as ``function_call_output``), and
``store: false`` always, since the conversation's state is the gateway's to
keep, not the provider's. Its stream's items become chat deltas: output text
as ``content``, a ``function_call`` item as a tool call whose argument deltas
are its fragments, reasoning summaries and reasoning text as
``reasoning_content``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

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
    text_of,
)

__all__ = ["ResponsesReader", "responses_completion", "responses_request"]

# Why a response is incomplete, as a chat finish reason.
_INCOMPLETE: Final = {"max_output_tokens": "length", "content_filter": "content_filter"}
# Error codes another attempt may get past.
_RETRYABLE_CODES: Final = frozenset(("server_error", "rate_limit_exceeded", "server_is_overloaded", "slow_down"))
_EFFORTS: Final = frozenset(("none", "minimal", "low", "medium", "high", "xhigh"))


def responses_request(
    payload: Mapping[str, Any], *, stream: bool, max_tokens: int = 0, summaries: bool = False
) -> dict[str, Any]:
    """The Responses request for a chat-completions request; ``summaries`` asks for reasoning summaries.

    ``max_tokens`` is unused: the API needs no output limit, and the provider's own default applies.
    """
    instructions: list[str] = []
    items: list[dict[str, Any]] = []
    for position, role, message in chat_messages(payload, "a Responses"):
        if role in ("system", "developer"):
            if text := text_of(message.get("content")):
                instructions.append(text)
        elif role == "user":
            if content := _user_content(message.get("content")):
                items.append({"type": "message", "role": "user", "content": content})
        elif role == "assistant":
            if text := text_of(message.get("content")):
                items.append({"type": "message", "role": "assistant", "content": text})
            for call in as_list(message.get("tool_calls")):
                function = call.get("function") if isinstance(call, dict) else None
                if isinstance(function, dict):
                    items.append(
                        {
                            "type": "function_call",
                            "call_id": str(call.get("id") or ""),
                            "name": str(function.get("name") or ""),
                            "arguments": str(function.get("arguments") or "{}"),
                        }
                    )
        elif role == "tool":
            output = text_of(message.get("content"))
            items.append(
                {"type": "function_call_output", "call_id": str(message.get("tool_call_id") or ""), "output": output}
            )
        else:
            raise invalid(
                f"A message's role {role!r} cannot be sent to a Responses provider.", f"messages[{position}].role"
            )
    request: dict[str, Any] = {"model": payload.get("model"), "input": items, "store": False}
    if instructions:
        request["instructions"] = "\n\n".join(instructions)
    if (limit := max_tokens_of(payload)) is not None:
        request["max_output_tokens"] = limit
    for key in ("temperature", "top_p", "parallel_tool_calls", "metadata", "service_tier", "prompt_cache_key"):
        if key in payload and payload[key] is not None:
            request[key] = payload[key]
    user = payload.get("user")
    if isinstance(user, str) and user:
        request["safety_identifier"] = user
    effort = payload.get("reasoning_effort")
    effort = effort if isinstance(effort, str) and effort in _EFFORTS else None
    if effort is not None or summaries:
        reasoning: dict[str, Any] = {}
        if effort is not None:
            reasoning["effort"] = effort
        if summaries:
            reasoning["summary"] = "auto"
        request["reasoning"] = reasoning
    if (text_format := _text_format(payload.get("response_format"))) is not None:
        request["text"] = {"format": text_format}
    tools = [_tool(function) for function in function_tools(payload)]
    if tools:
        request["tools"] = tools
        if (choice := _tool_choice(payload.get("tool_choice"))) is not None:
            request["tool_choice"] = choice
    if stream:
        request["stream"] = True
    return request


def _user_content(content: Any) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else ():
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text" and isinstance(part.get("text"), str):
            parts.append({"type": "input_text", "text": part["text"]})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            detail = image.get("detail") if isinstance(image, dict) else None
            if isinstance(url, str):
                parts.append({"type": "input_image", "image_url": url, "detail": detail or "auto"})
    return parts


def _tool(function: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "function", "name": function.get("name")}
    for key in ("description", "parameters", "strict"):
        if function.get(key) is not None:
            out[key] = function[key]
    return out


def _tool_choice(choice: Any) -> Any:
    if choice in ("auto", "none", "required"):
        return choice
    if isinstance(choice, dict):
        function = choice.get("function")
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            return {"type": "function", "name": function["name"]}
    return None


def _text_format(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, dict):
        return None
    kind = response_format.get("type")
    if kind == "json_object":
        return {"type": "json_object"}
    schema = response_format.get("json_schema")
    if kind == "json_schema" and isinstance(schema, dict):
        return {"type": "json_schema", **schema}
    return None


def _usage(usage: Any) -> dict[str, Any] | None:
    if not isinstance(usage, dict):
        return None
    cached = usage.get("input_tokens_details")
    reasoning = usage.get("output_tokens_details")
    return chat_usage(
        count(usage.get("input_tokens")),
        count(usage.get("output_tokens")),
        cached=count(cached.get("cached_tokens")) if isinstance(cached, dict) else 0,
        reasoning=count(reasoning.get("reasoning_tokens")) if isinstance(reasoning, dict) else 0,
    )


def _failure(provider: str, error: Any, fallback: str) -> GatewayError:
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), str) else None
    message = error.get("message") if isinstance(error.get("message"), str) else fallback
    retryable = code in _RETRYABLE_CODES
    status = 429 if code == "rate_limit_exceeded" else 502
    return openai_error(
        provider,
        message,
        "api_error" if status >= 500 else "rate_limit_error",
        code=code,
        status=status,
        retryable=retryable,
    )


class ResponsesReader:
    """A Responses stream's events, decoded, in; chat-completion chunks out. ``ended`` once the response is over."""

    __slots__ = ("provider", "ended", "_maker", "_calls", "_sent", "_summaries")

    def __init__(self, provider: str, created: int) -> None:
        self.provider = provider
        self.ended = False
        self._maker = ChunkMaker(created)
        self._calls: dict[int, int] = {}  # a function_call item's tool-call index, by its output index
        self._sent: dict[int, int] = {}  # how much of each call's arguments went out, by its output index
        self._summaries: set[tuple[int, int]] = set()  # the summary parts seen, to set each next one off

    def read(self, event: Mapping[str, Any]) -> Sequence[dict[str, Any] | Fragment]:
        kind = event.get("type")
        maker = self._maker
        if kind == "response.output_text.delta" or kind == "response.refusal.delta":
            return [maker.chunk({"content": _delta(event)})]
        if kind == "response.function_call_arguments.delta":
            output = _index(event, "output_index")
            call = self._calls.get(output)
            if call is None:
                raise InvalidChunk("argument deltas of no function call")
            text = _delta(event)
            self._sent[output] += len(text)
            return [maker.fragment(call, text)]
        if kind == "response.reasoning_summary_text.delta":
            part = (_index(event, "output_index"), _index(event, "summary_index"))
            text = _delta(event)
            if part not in self._summaries:
                text = ("\n\n" if self._summaries else "") + text
                self._summaries.add(part)
            return [maker.chunk({"reasoning_content": text})]
        if kind == "response.reasoning_text.delta":
            return [maker.chunk({"reasoning_content": _delta(event)})]
        if kind == "response.output_item.added":
            return self._item_added(event)
        if kind == "response.output_item.done":
            return self._item_done(event)
        if kind in ("response.created", "response.in_progress"):
            self._response(event)
            return []
        if kind == "response.completed" or kind == "response.incomplete":
            response = self._response(event)
            self.ended = True
            if kind == "response.incomplete":
                details = response.get("incomplete_details")
                reason = details.get("reason") if isinstance(details, dict) else None
                finish = _INCOMPLETE.get(reason, "length") if isinstance(reason, str) else "length"
            else:
                finish = "tool_calls" if self._calls else "stop"
            chunks = [maker.chunk({}, finish)]
            if (usage := _usage(response.get("usage"))) is not None:
                chunks.append(maker.usage(usage))
            return chunks
        if kind == "response.failed":
            response = self._response(event)
            raise WireFailure(_failure(self.provider, response.get("error"), "The response failed."))
        if kind == "error":
            raise WireFailure(_failure(self.provider, event, "The upstream sent an error event."))
        return []  # content parts, the .done events of what the deltas said, and event types added later

    def _response(self, event: Mapping[str, Any]) -> Mapping[str, Any]:
        response = event.get("response")
        if not isinstance(response, dict):
            raise InvalidChunk(f"a {event.get('type')} event has no response")
        maker = self._maker
        maker.id = str(response.get("id") or maker.id)
        maker.model = str(response.get("model") or maker.model)
        return response

    def _item_added(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        item = event.get("item")
        if not isinstance(item, dict):
            raise InvalidChunk("an output item event has no item")
        if item.get("type") != "function_call":
            return []
        output = _index(event, "output_index")
        call = self._calls[output] = len(self._calls)
        arguments = item.get("arguments")
        arguments = arguments if isinstance(arguments, str) else ""
        self._sent[output] = len(arguments)
        function = {"name": str(item.get("name") or ""), "arguments": arguments}
        header = {
            "index": call,
            "id": str(item.get("call_id") or item.get("id") or ""),
            "type": "function",
            "function": function,
        }
        return [self._maker.chunk({"tool_calls": [header]})]

    def _item_done(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        """A finished function call whose arguments came whole, not as deltas, gets the rest of them here."""
        item = event.get("item")
        if not isinstance(item, dict) or item.get("type") != "function_call":
            return []
        output = _index(event, "output_index")
        if output not in self._calls:
            chunks = self._item_added(event)
            return chunks
        arguments = item.get("arguments")
        sent = self._sent[output]
        if not isinstance(arguments, str) or len(arguments) <= sent:
            return []
        self._sent[output] = len(arguments)
        fragment = {"index": self._calls[output], "function": {"arguments": arguments[sent:]}}
        return [self._maker.chunk({"tool_calls": [fragment]})]


def _index(event: Mapping[str, Any], key: str) -> int:
    value = event.get(key, 0)
    if type(value) is not int:
        raise InvalidChunk(f"a {event.get('type')} event's {key} is not an integer")
    return value


def _delta(event: Mapping[str, Any]) -> str:
    value = event.get("delta")
    if not isinstance(value, str):
        raise InvalidChunk(f"a {event.get('type')} event's delta is not a string")
    return value


def responses_completion(response: Mapping[str, Any], provider: str, created: int) -> dict[str, Any]:
    """A whole Responses answer as a ``chat.completion``; a failed one raises the ``GatewayError`` it says."""
    if isinstance(response.get("error"), dict) and not isinstance(response.get("output"), list):
        raise _failure(provider, response["error"], "The upstream answered with an error.")
    if response.get("status") == "failed":
        raise _failure(provider, response.get("error"), "The response failed.")
    output = response.get("output")
    if not isinstance(output, list):
        raise InvalidChunk("the response has no output")
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in as_list(item.get("content")):
                if isinstance(part, dict) and part.get("type") in ("output_text", "refusal"):
                    texts.append(str(part.get("text") or part.get("refusal") or ""))
        elif kind == "reasoning":
            for key in ("summary", "content"):
                reasoning += [str(part.get("text") or "") for part in as_list(item.get(key)) if isinstance(part, dict)]
        elif kind == "function_call":
            function = {"name": str(item.get("name") or ""), "arguments": str(item.get("arguments") or "")}
            calls.append(
                {"id": str(item.get("call_id") or item.get("id") or ""), "type": "function", "function": function}
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if reasoning:
        message["reasoning_content"] = "\n\n".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    if response.get("status") == "incomplete":
        details = response.get("incomplete_details")
        reason = details.get("reason") if isinstance(details, dict) else None
        finish = _INCOMPLETE.get(reason, "length") if isinstance(reason, str) else "length"
    else:
        finish = "tool_calls" if calls else "stop"
    completion: dict[str, Any] = {
        "id": str(response.get("id") or ""),
        "object": "chat.completion",
        "created": created,
        "model": str(response.get("model") or ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if (usage := _usage(response.get("usage"))) is not None:
        completion["usage"] = usage
    return completion
