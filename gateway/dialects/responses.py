"""The Responses front door (``POST /v1/responses``): a Responses request in, a chat-completions request upstream.

The providers behind the gateway speak chat completions, so a Responses
request is translated (``parse_request``, then ``to_chat``) and the rewritten
answer, as neutral events, is encoded back: as the Responses event stream the
SDKs' stream helpers read (``ResponsesStreamEncoder``) or as one ``response``
object (``build``), both from the same state. The gateway keeps no state, so
what needs a stored response, conversation or prompt is refused.

Output items follow each other as OpenAI sends them: an item is closed
(``output_item.done``) when the next one starts. The one exception is a client
tool call whose arguments are not yet a whole JSON value when the next item
starts (an upstream that interleaves parallel calls): it stays open until
the core ends it, and the events of both items interleave, told apart by
``output_index`` as the SDKs expect.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
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
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from gateway.core.options import Reasoning
from gateway.core.sse import encode_comment, encode_event
from gateway.dialects.chat import error_body

__all__ = [
    "ResponsesRequest",
    "ResponsesStreamEncoder",
    "build",
    "encoder",
    "error_status_and_body",
    "parse_request",
    "response_object",
    "to_chat",
]

logger = logging.getLogger("gateway.dialects.responses")

# Fields that need state the gateway does not keep: refused whenever they are set.
_STATEFUL: Final = {
    "previous_response_id": "a stored response",
    "conversation": "a stored conversation",
    "prompt": "a stored prompt template",
}
# Fields read by the translation; any other field has no chat-completions counterpart and is dropped.
_TRANSLATED: Final = frozenset(
    (
        "model",
        "input",
        "instructions",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "metadata",
        "stop",
        "text",
        "reasoning",
        "store",
        "background",
        *_STATEFUL,
    )
)
_TOOL_CHOICES: Final = frozenset(("auto", "none", "required"))
_TEXT_PARTS: Final = frozenset(("input_text", "output_text"))
# finish_reason values that end a response as incomplete, with the reason Responses gives.
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


# The request.


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses request, already in chat terms.

    ``messages`` are the chat messages without reasoning; ``reasoning`` maps a
    message's position to the reasoning the client sent back for it, which
    only a route that exposes reasoning sends upstream. ``chat`` holds the
    other chat fields, ``echo`` what the ``response`` object repeats.
    """

    model: str
    stream: bool
    messages: tuple[Mapping[str, Any], ...]
    reasoning: Mapping[int, str]
    chat: Mapping[str, Any]
    max_output_tokens: int | None
    echo: Mapping[str, Any]


def _invalid(param: str, message: str, code: str = "invalid_value") -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, code=code, param=param)


def _wrong_type(param: str, expected: str) -> GatewayError:
    return _invalid(param, f"Invalid type for '{param}': expected {expected}.", "invalid_type")


def _missing(param: str) -> GatewayError:
    return _invalid(param, f"Missing required parameter: '{param}'.", "missing_required_parameter")


def _field(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _string(obj: Mapping[str, Any], key: str, path: str = "", *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise _missing(_field(path, key))
        return None
    if not isinstance(value, str):
        raise _wrong_type(_field(path, key), "a string")
    return value


def _boolean(obj: Mapping[str, Any], key: str) -> bool | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, bool):
        raise _wrong_type(key, "a boolean")
    return value


def _number(obj: Mapping[str, Any], key: str) -> float | int | None:
    value = obj.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise _wrong_type(key, "a number")
    return value


def _object(obj: Mapping[str, Any], key: str, path: str = "") -> dict[str, Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, dict):
        raise _wrong_type(_field(path, key), "an object")
    return value


def _array(obj: Mapping[str, Any], key: str, path: str = "") -> list[Any] | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, list):
        raise _wrong_type(_field(path, key), "an array")
    return value


def _entry(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _wrong_type(param, "an object")
    return value


def parse_request(body: bytes) -> ResponsesRequest:
    """A Responses request body, validated and translated; a 400 whose ``param`` names the field otherwise."""
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
    for key, needs in _STATEFUL.items():
        if payload.get(key) is not None:
            raise _invalid(
                key,
                f"'{key}' is not supported: it refers to {needs}, and the gateway keeps no state. "
                "Send the whole conversation in 'input' instead.",
                "unsupported_parameter",
            )
    if _boolean(payload, "background"):
        raise _invalid(
            "background",
            "'background: true' is not supported: the gateway keeps no state to poll. Leave it unset or false.",
            "unsupported_value",
        )
    _boolean(payload, "store")  # accepted and ignored: the gateway stores nothing
    model = _string(payload, "model", required=True)
    assert model is not None
    if not model:
        raise _invalid("model", "Invalid value for 'model': it must not be empty.")
    stream = bool(_boolean(payload, "stream"))
    instructions = _string(payload, "instructions")
    history = _History()
    if instructions:
        history.messages.append({"role": "system", "content": instructions})
    history.read(payload.get("input"))

    chat: dict[str, Any] = {}
    dropped = sorted(key for key, value in payload.items() if key not in _TRANSLATED and value is not None)
    tools, echo_tools = _tools(payload)
    if tools:
        chat["tools"] = tools
    tool_choice = _tool_choice(payload.get("tool_choice"))
    parallel = _boolean(payload, "parallel_tool_calls")
    if tools:
        if tool_choice is not None:
            chat["tool_choice"] = _chat_tool_choice(tool_choice)
        if parallel is not None:
            chat["parallel_tool_calls"] = parallel
    else:
        # Chat providers refuse these without tools; an agent route adds its own tools and choice.
        dropped += [key for key in ("tool_choice", "parallel_tool_calls") if payload.get(key) is not None]
    max_output_tokens = payload.get("max_output_tokens")
    if max_output_tokens is not None and (
        isinstance(max_output_tokens, bool) or not isinstance(max_output_tokens, int)
    ):
        raise _wrong_type("max_output_tokens", "an integer")
    for key in ("temperature", "top_p"):
        if (number := _number(payload, key)) is not None:
            chat[key] = number
    if (user := _string(payload, "user")) is not None:
        chat["user"] = user
    if (metadata := _object(payload, "metadata")) is not None:
        chat["metadata"] = metadata
    if (stop := _stop(payload.get("stop"))) is not None:
        chat["stop"] = stop
    text = _object(payload, "text")
    if text is not None:
        dropped += [f"text.{key}" for key in text if key != "format"]
        response_format = _response_format(text)
        if response_format is not None:
            chat["response_format"] = response_format
    reasoning = _object(payload, "reasoning")
    if reasoning is not None:
        dropped += [f"reasoning.{key}" for key in reasoning if key != "effort"]
        if (effort := _string(reasoning, "effort", "reasoning")) is not None:
            chat["reasoning_effort"] = effort
    if dropped:
        logger.debug("responses request: not sent upstream (no chat-completions counterpart): %s", ", ".join(dropped))

    echo = {
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "metadata": metadata or {},
        "parallel_tool_calls": True if parallel is None else parallel,
        "temperature": chat.get("temperature"),
        "text": {"format": text.get("format") if text and text.get("format") else {"type": "text"}},
        "tool_choice": "auto" if tool_choice is None else tool_choice,
        "tools": echo_tools,
        "top_p": chat.get("top_p"),
        "reasoning": {"effort": chat.get("reasoning_effort"), "summary": None},
        "user": user,
    }
    return ResponsesRequest(
        model=model,
        stream=stream,
        messages=tuple(history.messages),
        reasoning={position: "".join(texts) for position, texts in history.reasoning.items()},
        chat=chat,
        max_output_tokens=max_output_tokens,
        echo=echo,
    )


def to_chat(request: ResponsesRequest, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
    """The chat-completions request for a route; ``model`` stays the client's, for the shell to replace.

    ``reasoning.effort`` goes upstream as ``reasoning_effort`` only to a provider that takes it.
    """
    messages = list(request.messages)
    if reasoning is Reasoning.EXPOSE:
        for position, text in request.reasoning.items():
            messages[position] = {**messages[position], "reasoning_content": text}
    elif request.reasoning:
        logger.debug(
            "responses request: %d reasoning items not sent upstream (the route hides reasoning)",
            len(request.reasoning),
        )
    chat: dict[str, Any] = {"model": request.model, "messages": messages, "stream": request.stream}
    if request.stream:
        chat["stream_options"] = {"include_usage": True}
    chat.update(request.chat)
    if not reasoning_effort and chat.pop("reasoning_effort", None) is not None:
        logger.debug("responses request: reasoning.effort not sent upstream (the provider does not take it)")
    if request.max_output_tokens is not None:
        chat["max_completion_tokens"] = request.max_output_tokens
    return chat


class _History:
    """Input items as chat messages.

    Consecutive assistant items (a message, function calls, reasoning) make
    one assistant message, as the chat answer they came from was one; a
    function call output becomes a ``tool`` message answering its call.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.reasoning: dict[int, list[str]] = {}
        self._assistant: dict[str, Any] | None = None  # the last message, while more of its turn may follow
        self._pending_reasoning: list[str] = []
        self._calls: set[str] = set()

    def read(self, items: Any) -> None:
        if items is None:
            raise _missing("input")
        if isinstance(items, str):
            self._append({"role": "user", "content": items})
            return
        if not isinstance(items, list):
            raise _wrong_type("input", "a string or an array of input items")
        if not items:
            raise _invalid("input", "Invalid value for 'input': it must hold at least one item.", "empty_array")
        for position, item in enumerate(items):
            path = f"input[{position}]"
            self._item(_entry(item, path), path)
        if self._pending_reasoning:
            logger.debug("responses request: reasoning with no assistant turn after it is not sent upstream")

    def _item(self, item: dict[str, Any], path: str) -> None:
        kind = _string(item, "type", path)
        if kind is None and "role" in item:
            kind = "message"
        if kind == "message":
            self._message(item, path)
        elif kind == "function_call":
            call_id = _string(item, "call_id", path, required=True)
            name = _string(item, "name", path, required=True)
            arguments = _string(item, "arguments", path, required=True)
            assert call_id is not None
            turn = self._assistant_turn(None)
            calls = turn.setdefault("tool_calls", [])
            calls.append({"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}})
            self._calls.add(call_id)
        elif kind == "function_call_output":
            call_id = _string(item, "call_id", path, required=True)
            if call_id not in self._calls:
                raise _invalid(
                    f"{path}.call_id",
                    f"No function_call item before {path} has the call_id {call_id!r} that this output answers.",
                )
            output = item.get("output")
            if output is None:
                raise _missing(f"{path}.output")
            content = _tool_output(output, f"{path}.output")
            self._append({"role": "tool", "tool_call_id": call_id, "content": content})
        elif kind == "reasoning":
            self._reasoning(item, path)
        elif kind == "item_reference" or (kind is None and "id" in item):
            raise _invalid(
                path,
                f"{path} refers to a stored item, and the gateway keeps no state: send the item itself.",
                "unsupported_parameter",
            )
        elif kind is None:
            raise _missing(f"{path}.type")
        else:
            raise _invalid(
                f"{path}.type",
                f"Input items of type {kind!r} are not supported: the gateway translates to chat completions, "
                "which carry messages, function calls, their outputs and reasoning.",
                "unsupported_value",
            )

    def _append(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        self._assistant = None

    def _assistant_turn(self, content: str | None) -> dict[str, Any]:
        """The assistant message the next assistant item belongs to; pending reasoning goes with it."""
        turn = self._assistant
        if turn is None or (content is not None and "tool_calls" not in turn):
            turn = {"role": "assistant", "content": content}
            self.messages.append(turn)
            self._assistant = turn
        elif content is not None:
            turn["content"] = content if turn["content"] is None else turn["content"] + content
        if self._pending_reasoning:
            self.reasoning.setdefault(len(self.messages) - 1, []).extend(self._pending_reasoning)
            self._pending_reasoning = []
        return turn

    def _message(self, item: dict[str, Any], path: str) -> None:
        role = _string(item, "role", path, required=True)
        if role not in ("user", "assistant", "system", "developer"):
            raise _invalid(
                f"{path}.role",
                f"Invalid value for '{path}.role': expected 'user', 'assistant', 'system' or 'developer'.",
            )
        content = item.get("content")
        if content is None:
            raise _missing(f"{path}.content")
        if isinstance(content, str):
            text: str | list[dict[str, Any]] = content
        elif isinstance(content, list):
            text = _parts(content, f"{path}.content", images=role == "user")
        else:
            raise _wrong_type(f"{path}.content", "a string or an array of content parts")
        if role == "assistant":
            assert isinstance(text, str)
            self._assistant_turn(text)
            return
        # Chat providers without a developer role are many; system is what the model sees either way.
        self._append({"role": "user" if role == "user" else "system", "content": text})

    def _reasoning(self, item: dict[str, Any], path: str) -> None:
        texts: list[str] = []
        for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
            parts = _array(item, key, path) or []
            for position, part in enumerate(parts):
                part_path = f"{path}.{key}[{position}]"
                if _string(_entry(part, part_path), "type", part_path) != part_type:
                    raise _invalid(
                        f"{part_path}.type", f"Invalid value for '{part_path}.type': expected {part_type!r}."
                    )
                text = _string(part, "text", part_path, required=True)
                assert text is not None
                texts.append(text)
            if texts:  # the reasoning itself when present, else its summary
                break
        if texts:
            self._pending_reasoning.append("".join(texts))


def _parts(parts: list[Any], path: str, *, images: bool) -> str | list[dict[str, Any]]:
    """Content parts as chat content: one string when they are all text, else chat parts (text and images)."""
    out: list[dict[str, Any]] = []
    for position, part in enumerate(parts):
        part_path = f"{path}[{position}]"
        kind = _string(_entry(part, part_path), "type", part_path)
        if kind in _TEXT_PARTS:
            out.append({"type": "text", "text": _string(part, "text", part_path, required=True)})
        elif kind == "refusal":
            out.append({"type": "text", "text": _string(part, "refusal", part_path, required=True)})
        elif kind == "input_image" and images:
            out.append(_image(part, part_path))
        elif kind == "input_image":
            raise _invalid(
                f"{part_path}.type",
                f"Images are supported in user messages only, not at '{part_path}'.",
                "unsupported_value",
            )
        elif kind is None:
            raise _missing(f"{part_path}.type")
        else:
            raise _invalid(
                f"{part_path}.type",
                f"Content parts of type {kind!r} are not supported: the gateway translates to chat completions "
                "and accepts input_text, output_text, refusal and input_image parts.",
                "unsupported_value",
            )
    if all(part["type"] == "text" for part in out):
        return "".join(part["text"] for part in out)
    return out


def _image(part: dict[str, Any], path: str) -> dict[str, Any]:
    url = _string(part, "image_url", path)
    if url is None:
        if part.get("file_id") is not None:
            raise _invalid(
                f"{path}.file_id",
                "Images by file_id are not supported (the gateway keeps no files): send an image_url or a data URL.",
                "unsupported_parameter",
            )
        raise _missing(f"{path}.image_url")
    image: dict[str, Any] = {"url": url}
    if (detail := _string(part, "detail", path)) is not None:
        image["detail"] = detail
    return {"type": "image_url", "image_url": image}


def _tool_output(output: Any, path: str) -> str:
    """A function call's output as a tool message's text."""
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _wrong_type(path, "a string or an array of content parts")
    texts = []
    for position, part in enumerate(output):
        part_path = f"{path}[{position}]"
        kind = _string(_entry(part, part_path), "type", part_path)
        if kind not in _TEXT_PARTS:
            raise _invalid(
                f"{part_path}.type",
                f"Function call outputs of type {kind!r} are not supported: chat tool messages carry text only.",
                "unsupported_value",
            )
        text = _string(part, "text", part_path, required=True)
        assert text is not None
        texts.append(text)
    return "".join(texts)


def _tools(payload: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat tools, and the tools as the ``response`` object repeats them."""
    chat: list[dict[str, Any]] = []
    echo: list[dict[str, Any]] = []
    for position, tool in enumerate(_array(payload, "tools") or ()):
        path = f"tools[{position}]"
        kind = _string(_entry(tool, path), "type", path)
        if kind != "function":
            if kind is None:
                raise _missing(f"{path}.type")
            raise _invalid(
                f"{path}.type",
                f"The tool {kind!r} ({path}) is not supported: the gateway translates to chat completions, "
                "which have function tools only. Built-in tools work on a route whose provider serves the "
                "Responses API natively.",
                "unsupported_value",
            )
        name = _string(tool, "name", path, required=True)
        if not name:
            raise _invalid(f"{path}.name", f"Invalid value for '{path}.name': it must not be empty.")
        description = _string(tool, "description", path)
        parameters = _object(tool, "parameters", path)
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise _wrong_type(f"{path}.strict", "a boolean")
        function: dict[str, Any] = {"name": name}
        if description is not None:
            function["description"] = description
        if parameters is not None:
            function["parameters"] = parameters
        if strict is not None:
            function["strict"] = strict
        chat.append({"type": "function", "function": function})
        echo.append(
            {"type": "function", "name": name, "description": description, "parameters": parameters, "strict": strict}
        )
    return chat, echo


def _tool_choice(choice: Any) -> str | dict[str, Any] | None:
    if choice is None or (isinstance(choice, str) and choice in _TOOL_CHOICES):
        return choice
    if isinstance(choice, str):
        raise _invalid(
            "tool_choice", "Invalid value for 'tool_choice': expected 'auto', 'none', 'required' or a function."
        )
    if not isinstance(choice, dict):
        raise _wrong_type("tool_choice", "a string or an object")
    kind = _string(choice, "type", "tool_choice")
    if kind != "function":
        raise _invalid(
            "tool_choice.type",
            f"tool_choice of type {kind!r} is not supported: the gateway translates to chat completions, "
            "where a tool choice names a function.",
            "unsupported_value",
        )
    name = _string(choice, "name", "tool_choice", required=True)
    return {"type": "function", "name": name}


def _chat_tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str):
        return choice
    return {"type": "function", "function": {"name": choice["name"]}}


def _stop(stop: Any) -> str | list[str] | None:
    if stop is None or isinstance(stop, str):
        return stop
    if isinstance(stop, list) and all(isinstance(item, str) for item in stop):
        return stop
    raise _wrong_type("stop", "a string or an array of strings")


def _response_format(text: Mapping[str, Any]) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format``; plain text is the default and needs none."""
    text_format = _object(text, "format", "text")
    if text_format is None:
        return None
    kind = _string(text_format, "type", "text.format")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = _string(text_format, "name", "text.format", required=True)
        schema = _object(text_format, "schema", "text.format")
        if schema is None:
            raise _missing("text.format.schema")
        json_schema: dict[str, Any] = {"name": name, "schema": schema}
        if (description := _string(text_format, "description", "text.format")) is not None:
            json_schema["description"] = description
        strict = text_format.get("strict")
        if strict is not None:
            if not isinstance(strict, bool):
                raise _wrong_type("text.format.strict", "a boolean")
            json_schema["strict"] = strict
        return {"type": "json_schema", "json_schema": json_schema}
    if kind is None:
        raise _missing("text.format.type")
    raise _invalid(
        "text.format.type", "Invalid value for 'text.format.type': expected 'text', 'json_object' or 'json_schema'."
    )


# The answer.


class _Kind(Enum):
    MESSAGE = "message"
    REASONING = "reasoning"
    FUNCTION_CALL = "function_call"


class _Stage(Enum):
    """Where an output item is; a function call stays PENDING until its arguments say more than ``{``."""

    PENDING = "not announced"
    OPEN = "announced"
    DONE = "done"


class _Phase(Enum):
    NEW = "nothing sent"
    STREAMING = "response created"
    ENDED = "completed, incomplete or failed"


# What carries the upstream's chunk fields for the chat encoder, and keep-alives: nothing for a Responses client.
_UNSEEN: Final = frozenset((ChunkStart, ChoiceStart, Comment))
_ID_PREFIX: Final = {_Kind.MESSAGE: "msg_", _Kind.REASONING: "rs_", _Kind.FUNCTION_CALL: "fc_"}


class _Item:
    """One output item: a message, exposed reasoning, or a client function call."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "pieces", "stage", "status")

    def __init__(self, kind: _Kind, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.id = _ID_PREFIX[kind] + secrets.token_hex(24)
        self.index = -1  # output_index, once announced
        self.stage = _Stage.PENDING
        self.pieces: list[str] = []  # text, reasoning or arguments so far
        self.status = "in_progress"
        self.call_id = call_id
        self.name = name

    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def body(self) -> dict[str, Any]:
        """The item as ``output_item.done`` and the ``response`` object carry it."""
        if self.kind is _Kind.MESSAGE:
            content = [_text_part(self.text())]
            return {"id": self.id, "type": "message", "status": self.status, "content": content, "role": "assistant"}
        if self.kind is _Kind.REASONING:
            return {
                "id": self.id,
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": self.text()}],
            }
        return {
            "id": self.id,
            "type": "function_call",
            "status": self.status,
            "arguments": self.text(),
            "call_id": self.call_id,
            "name": self.name,
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _whole_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


class _Answer:
    """The response being built from neutral events; each step returns the Responses events it makes.

    Only choice 0 is read: a translated request asks for one choice.
    """

    def __init__(self, request: ResponsesRequest, created: int) -> None:
        self.id = "resp_" + secrets.token_hex(24)
        self.phase = _Phase.NEW
        self._request = request
        self._created = created
        self._items: list[_Item] = []  # announced, in output order
        self._current: _Item | None = None  # the item the last event went to
        self._calls: dict[int, _Item] = {}
        self._usage: Mapping[str, Any] | None = None
        self._finish: Any = None
        self._sequence = 0
        # The response object of the last event, once the answer has ended.
        self.final: dict[str, Any] | None = None

    def start(self) -> list[dict[str, Any]]:
        self.phase = _Phase.STREAMING
        response = self.response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The events for one neutral event (none for what the client does not see)."""
        out: list[dict[str, Any]] = []
        if self.phase is _Phase.ENDED or type(event) in _UNSEEN:
            return out
        match event:
            case TextDelta(choice=0, text=text) if text:
                self._delta(self._focus(_Kind.MESSAGE, out), text, out)
            case ReasoningDelta(choice=0, text=text) if text:
                self._delta(self._focus(_Kind.REASONING, out), text, out)
            case ToolCallStart(choice=0):
                call = self._calls[event.call] = _Item(_Kind.FUNCTION_CALL, event.id, event.name)
                self._switch(call, out)
            case ToolCallDelta(choice=0):
                self._call_delta(event, out)
            case ToolCallEnd(choice=0, call=number):
                self._close(self._calls[number], "completed", out)
            case Finish(choice=0, reason=reason):
                self._finish = reason
                status = "incomplete" if _incomplete_reason(reason) else "completed"
                for item in [*self._items, *self._calls.values()]:
                    self._close(item, status, out)
                self._current = None
            case Usage(usage=usage):
                self._usage = usage
            case Done():
                for item in [*self._items, *self._calls.values()]:
                    self._close(item, "completed", out)
                reason = _incomplete_reason(self._finish)
                if reason is None:
                    self._end("response.completed", self.response("completed"), out)
                else:
                    self._end(
                        "response.incomplete", self.response("incomplete", incomplete_details={"reason": reason}), out
                    )
            case Error(error=error):
                for item in self._items:
                    if item.stage is _Stage.OPEN:
                        item.status = "incomplete"
                failure = {"code": _failure_code(error), "message": error.message}
                self._end("response.failed", self.response("failed", error=failure), out)
        return out

    def _end(self, kind: str, response: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self.phase = _Phase.ENDED
        self.final = response
        out.append(self._event(kind, response=response))

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        """The ``response`` object as it stands."""
        request = self._request
        response = {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": request.model,
            "output": [item.body() for item in self._items] if status != "in_progress" else [],
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            # Settings the gateway does not apply, as OpenAI reports settings that are not set.
            "max_tool_calls": None,
            "prompt_cache_key": None,
            "prompt_cache_retention": None,
            "safety_identifier": None,
            "service_tier": None,
            "top_logprobs": None,
            "usage": _usage(self._usage) if status != "in_progress" else None,
            **request.echo,
        }
        response.update(fields)
        return response

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _focus(self, kind: _Kind, out: list[dict[str, Any]]) -> _Item:
        """The open item of this kind that the last event went to, or a new one."""
        current = self._current
        if current is not None and current.kind is kind and current.stage is _Stage.OPEN:
            return current
        item = _Item(kind)
        self._switch(item, out)
        self._open(item, out)
        return item

    def _switch(self, item: _Item, out: list[dict[str, Any]]) -> None:
        """Events now go to ``item``: the item before it is done, unless it is a call still taking arguments."""
        current = self._current
        if current is item:
            return
        if (
            current is not None
            and current.stage is _Stage.OPEN
            and (current.kind is not _Kind.FUNCTION_CALL or _whole_json(current.text()))
        ):
            self._close(current, "completed", out)
        self._current = item

    def _open(self, item: _Item, out: list[dict[str, Any]]) -> None:
        item.stage = _Stage.OPEN
        item.index = len(self._items)
        self._items.append(item)
        added = item.body()
        if item.kind is _Kind.MESSAGE:
            added["content"] = []
        elif item.kind is _Kind.REASONING:
            del added["content"]
        else:
            added["arguments"] = ""
        out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        if item.kind is _Kind.FUNCTION_CALL:
            return
        part = _text_part("") if item.kind is _Kind.MESSAGE else {"type": "reasoning_text", "text": ""}
        out.append(
            self._event(
                "response.content_part.added", item_id=item.id, output_index=item.index, content_index=0, part=part
            )
        )

    def _delta(self, item: _Item, text: str, out: list[dict[str, Any]]) -> None:
        item.pieces.append(text)
        self._send_delta(item, text, out)

    def _send_delta(self, item: _Item, text: str, out: list[dict[str, Any]]) -> None:
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind is _Kind.MESSAGE:
            out.append(self._event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]))
        elif item.kind is _Kind.REASONING:
            out.append(self._event("response.reasoning_text.delta", **where, content_index=0, delta=text))
        else:
            out.append(self._event("response.function_call_arguments.delta", **where, delta=text))

    def _call_delta(self, event: ToolCallDelta, out: list[dict[str, Any]]) -> None:
        call = self._calls[event.call]
        if event.name:
            call.name += event.name
        if not event.arguments:
            return
        if call.stage is _Stage.DONE:
            # Closed because its arguments were a whole JSON value: what follows can only spoil them.
            logger.debug("responses answer: arguments after a call's complete JSON value were not sent")
            return
        if call.stage is _Stage.OPEN:
            self._switch(call, out)
            self._delta(call, event.arguments, out)
            return
        call.pieces.append(event.arguments)
        # Until its arguments say more than "{", the call is not announced: the reasoning an
        # agent-style model gives as its first argument then comes out before the call, as on OpenAI.
        if call.text().strip() not in ("", "{"):
            self._switch(call, out)
            self._announce(call, out)

    def _announce(self, call: _Item, out: list[dict[str, Any]]) -> None:
        """A pending call is announced, with the arguments it held back."""
        self._open(call, out)
        if held := call.text():
            self._send_delta(call, held, out)

    def _close(self, item: _Item, status: str, out: list[dict[str, Any]]) -> None:
        if item.stage is _Stage.DONE:
            return
        if item.stage is _Stage.PENDING:
            self._announce(item, out)
        item.stage = _Stage.DONE
        item.status = status
        if self._current is item:
            self._current = None
        where = {"item_id": item.id, "output_index": item.index}
        text = item.text()
        if item.kind is _Kind.MESSAGE:
            out.append(self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            out.append(self._event("response.content_part.done", **where, content_index=0, part=_text_part(text)))
        elif item.kind is _Kind.REASONING:
            out.append(self._event("response.reasoning_text.done", **where, content_index=0, text=text))
            part = {"type": "reasoning_text", "text": text}
            out.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        else:
            out.append(self._event("response.function_call_arguments.done", **where, arguments=text))
        out.append(self._event("response.output_item.done", output_index=item.index, item=item.body()))


def _incomplete_reason(finish: Any) -> str | None:
    return _INCOMPLETE.get(finish) if isinstance(finish, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The upstream's chat ``usage`` in Responses terms, with every detail the SDKs' types require."""
    if usage is None:
        return None
    prompt = usage.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = usage.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    input_tokens = _count(usage.get("prompt_tokens"))
    output_tokens = _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            # DeepSeek reports cache hits at the top level.
            "cached_tokens": _count(prompt.get("cached_tokens", usage.get("prompt_cache_hit_tokens"))),
            "cache_write_tokens": _count(prompt.get("cache_write_tokens")),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _count(completion.get("reasoning_tokens"))},
        "total_tokens": _count(total) if total is not None else input_tokens + output_tokens,
    }


def _failure_code(error: GatewayError) -> str:
    """The ``response.error.code``: the Responses API knows a fixed set, of which these two fit a gateway's faults."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class ResponsesStreamEncoder:
    """Encodes neutral events as the Responses event stream (``event:`` and ``data:`` lines, no ``[DONE]``).

    The first ``encode`` starts with ``response.created`` and
    ``response.in_progress``; the stream ends with exactly one of
    ``response.completed``, ``response.incomplete`` or ``response.failed``.
    """

    __slots__ = ("_answer",)

    raw_chunks = False

    def __init__(self, request: ResponsesRequest, *, created: int) -> None:
        self._answer = _Answer(request, created)

    def encode(self, events: Iterable[Event]) -> bytes:
        answer = self._answer
        out: list[bytes] = []
        if answer.phase is _Phase.NEW:
            out += map(_sse, answer.start())
        for event in events:
            if answer.phase is _Phase.ENDED:
                break
            if type(event) is Comment:
                out.append(encode_comment(event.text))
                continue
            out += map(_sse, answer.feed(event))
        return b"".join(out)


def _sse(event: dict[str, Any]) -> bytes:
    return encode_event(json_body.encode(event), event=event["type"].encode())


def encoder(request: ResponsesRequest, *, created: int) -> ResponsesStreamEncoder:
    return ResponsesStreamEncoder(request, created=created)


def build(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> bytes:
    """The non-streaming body: the ``response`` object (see ``response_object``)."""
    return json_body.encode(response_object(request, events, created=created))


def response_object(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> dict[str, Any]:
    """The non-streaming ``response`` object, from the events of the replayed completion.

    The object is the one ``response.completed`` (or ``.incomplete``) would
    carry. An ``Error`` among the events is raised: a non-streaming failure is
    an HTTP error, not a body.
    """
    answer = _Answer(request, created)
    answer.start()
    for event in events:
        if type(event) is Error:
            raise event.error
        answer.feed(event)
    answer.feed(Done())
    assert answer.final is not None
    return answer.final


def error_status_and_body(error: GatewayError) -> tuple[int, bytes]:
    """An error before the stream started (or of a non-streaming request): OpenAI's shape, as on chat completions."""
    return error.status, error_body(error)
