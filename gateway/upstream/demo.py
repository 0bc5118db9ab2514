"""A built-in, offline stand-in for an agent-style model.

``gateway serve`` with no config and no API key routes to ``DemoTransport`` so
a newcomer can try the gateway without a network. It speaks the OpenAI wire
format and answers the way agent-style models do: through a ``send_message``
tool call carrying ``inner_thoughts`` and ``message``, plus a call to the
client's first tool when one is offered. Its streams are deliberately hostile:
tool arguments are cut inside escapes and surrogate pairs, and the SSE body
arrives in irregular byte pieces, so the demo exercises the rewrite path a
real provider would. Answers are deterministic: the same request always gets
the same bytes.

A request for structured output (``response_format`` of type ``json_schema``
or ``json_object``, which the Responses and Messages doors and agent routes
send as they got it) is answered with JSON as its content: an instance of the
schema (every property, of its type, within its bounds, enums, nested objects,
arrays, references), so ``parse()`` helpers and LangChain's
``with_structured_output`` work offline. Tool arguments are built the same way.

The model ``demo-thinker`` answers instead like a reasoning model served
without a reasoning parser (DeepSeek-R1, QwQ, Qwen3 on a bare vLLM): plain
content that begins with its reasoning between ``<think>`` tags, cut inside
the tags and across the end of the reasoning, then the answer or a call to the
client's tool. It shows what a route's ``reasoning: hide`` and ``expose`` do.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import re
from collections.abc import AsyncIterator
from typing import Any, Final, NamedTuple

import httpx
import orjson

from gateway.config import THINKER_MODEL

__all__ = ["DEMO_DELAY", "DemoTransport"]

_MODEL: Final = "demo-agent"
# Seconds slept before each piece of a streamed answer, so that it appears typed rather than arriving at once.
DEMO_DELAY: Final = 0.02
_MESSAGE_TOOL: Final = "send_message"
_THOUGHTS: Final = "inner_thoughts"
# Fixed rather than the clock, so that a request always gets the same answer.
_CREATED: Final = 1_735_689_600
_ECHO_LIMIT: Final = 200
_TOPIC_WORDS: Final = 6
_TOPIC_LIMIT: Final = 40
_FRAGMENT_SIZES: Final = (1, 7)
_PIECE_SIZES: Final = (1, 600)
# One JSON escape: a surrogate pair, another \uXXXX, or a one-character escape.
_ESCAPE: Final = re.compile(r"\\(?:u[dD][89abAB][0-9a-fA-F]{2}\\u[0-9a-fA-F]{4}|u[0-9a-fA-F]{4}|.)")
_TAG: Final = re.compile(r"</?think>")


class _Call(NamedTuple):
    id: str
    name: str
    arguments: str  # JSON text, ASCII-only so that escapes appear


class _Reply(NamedTuple):
    id: str
    model: str
    content: str | None  # plain content (the thinker's), streamed before the calls
    calls: list[_Call]
    usage: dict[str, int]


class DemoTransport(httpx.AsyncBaseTransport):
    """An in-process OpenAI-compatible upstream serving a fake agent-style model.

    ``delay`` is slept before each streamed byte piece, so the answer appears
    to be typed rather than arriving at once.
    """

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        seed = f"{request.method} {request.url}\n".encode() + body
        headers = {"x-request-id": "req_demo_" + _digest(seed, "request")}
        path = request.url.path.rstrip("/")
        if request.method == "POST" and path.endswith("/chat/completions"):
            return self._chat(body, seed, headers)
        if request.method == "GET" and path.endswith("/models"):
            models = [
                {"id": name, "object": "model", "created": _CREATED, "owned_by": "agent-gateway"}
                for name in (_MODEL, THINKER_MODEL)
            ]
            return _json(200, {"object": "list", "data": models}, headers)
        unknown = f"Unknown request URL: {request.method} {request.url.path}."
        return _error(404, f"{unknown} The demo serves chat/completions and models.", "not_found", headers)

    def _chat(self, body: bytes, seed: bytes, headers: dict[str, str]) -> httpx.Response:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "We could not parse the JSON body of your request.", None, headers)
        if not isinstance(request, dict):
            return _error(400, "The request body must be a JSON object.", None, headers)
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty array.", None, headers, param="messages")
        turns = [m for m in messages if isinstance(m, dict)]
        thinker = request.get("model") == THINKER_MODEL
        if (structured := _structured(request, _said(turns))) is not None:
            thought = "<think>\n(demo) Thinking: the client wants JSON of its schema.\n</think>\n\n" if thinker else ""
            reply = _made(request, turns, seed, thought + structured, [])
        else:
            reply = (_think_reply if thinker else _reply)(request, turns, seed)
        if request.get("stream") is not True:
            return _json(200, _completion(reply), headers)
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = b"".join(b"data: " + orjson.dumps(chunk) + b"\n\n" for chunk in _chunks(reply, include_usage))
        stream = _Pieces(_cut_bytes(events + b"data: [DONE]\n\n"), self.delay)
        return httpx.Response(200, headers={**headers, "content-type": "text/event-stream"}, stream=stream)


class _Pieces(httpx.AsyncByteStream):
    """A body delivered in fixed pieces, paced like a model that is typing."""

    def __init__(self, pieces: list[bytes], delay: float) -> None:
        self._pieces = pieces
        self._delay = delay

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for piece in self._pieces:
            if self._delay > 0:
                await asyncio.sleep(self._delay)
            yield piece


def _reply(request: dict[str, Any], messages: list[dict[str, Any]], seed: bytes) -> _Reply:
    """What the fake model says: call the client's tool first if it can, else answer."""
    said = _said(messages)
    last = messages[-1] if messages else {}
    tool = None if last.get("role") == "tool" else _client_tool(request.get("tools"))
    if tool is None:
        result = _text(last.get("content")) if last.get("role") == "tool" else None
        planned = [(_MESSAGE_TOOL, _answer(said, result))]
    else:
        name, parameters = tool
        topic = " ".join(said.split()[:_TOPIC_WORDS])[:_TOPIC_LIMIT] or "something"
        announce = {
            _THOUGHTS: f"(demo) Thinking: I will tell the user that I am calling {name}.",
            "message": f"Let me check that with {name}.",
        }
        planned = [(_MESSAGE_TOOL, announce), (name, _tool_arguments(name, parameters, topic))]
    return _made(request, messages, seed, None, planned)


def _think_reply(request: dict[str, Any], messages: list[dict[str, Any]], seed: bytes) -> _Reply:
    """What the thinker says: its reasoning between think tags, then a call to the client's tool or the answer."""
    said = _said(messages)
    last = messages[-1] if messages else {}
    result = _text(last.get("content")) if last.get("role") == "tool" else None
    tool = None if result is not None else _client_tool(request.get("tools"))
    quoted = f'"{_clip(said)}"' if said else "nothing I could read"
    if tool is not None:
        name, parameters = tool
        topic = " ".join(said.split()[:_TOPIC_WORDS])[:_TOPIC_LIMIT] or "something"
        thought = f"(demo) Thinking: the user wrote {quoted}. I should call {name} before I answer."
        arguments = _tool_arguments(name, parameters, topic, thoughts=False)
        return _made(request, messages, seed, f"<think>\n{thought}\n</think>\n\n", [(name, arguments)])
    thought = (
        f"(demo) Thinking: the user wrote {quoted}. A real reasoning model reasons here, in its visible text,"
        " where a client without the gateway would show it. Under reasoning: hide not a byte of this reaches"
        " the client; under reasoning: expose it arrives as reasoning, tags removed."
    )
    lines = [
        (
            "Hi! This is the demo thinker: it writes its reasoning in <think> tags before it answers, as"
            " DeepSeek-R1 or Qwen3 do on a server without a reasoning parser."
        ),
        f"You said: {_clip(said)}" if said else "I could not find any text in your message.",
    ]
    if result is not None:
        lines.append(f"The tool returned: {_clip(result) or 'nothing'}")
    return _made(request, messages, seed, f"<think>\n{thought}\n</think>\n\n" + "\n".join(lines), [])


def _made(
    request: dict[str, Any],
    messages: list[dict[str, Any]],
    seed: bytes,
    content: str | None,
    planned: list[tuple[str, dict[str, Any]]],
) -> _Reply:
    """The reply with its ids, model and usage: the content, then the planned calls."""
    # json, not orjson: only json escapes non-ASCII, which a real model's output does.
    calls = [
        _Call("call_demo_" + _digest(seed, f"call{index}"), name, json.dumps(arguments))
        for index, (name, arguments) in enumerate(planned)
    ]
    prompt = sum(4 + _tokens(_text(m.get("content"))) for m in messages)
    if request.get("tools"):
        prompt += _tokens(orjson.dumps(request["tools"]).decode())
    completion = sum(_tokens(call.name) + _tokens(call.arguments) for call in calls)
    completion += _tokens(content) if content else 0
    usage = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}
    model = request.get("model")
    model = model if isinstance(model, str) else _MODEL
    return _Reply("chatcmpl-demo-" + _digest(seed, "completion"), model, content, calls, usage)


def _answer(said: str, result: str | None) -> dict[str, str]:
    """The plain reply, written to need every kind of JSON escape."""
    lines = [
        'Hi! This is the "agent-gateway" demo provider: there is no real model behind me, so I echo you.',
        f"You said: {_clip(said)}" if said else "I could not find any text in your message.",
    ]
    if result is not None:
        lines.append(f"The tool returned: {_clip(result) or 'nothing'}")
    lines.append("My answer streams in awkward pieces, cut after a \\ and inside é or 😀, to show the gateway copes.")
    thoughts = "(demo) Thinking: this is only the demo, so I greet the user and echo what they said"
    thoughts += " and what the tool returned." if result is not None else "."
    return {_THOUGHTS: thoughts, "message": "\n".join(lines)}


def _said(messages: list[dict[str, Any]]) -> str:
    """The text of the last user message."""
    return next((_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")


def _structured(request: dict[str, Any], said: str) -> str | None:
    """The JSON a request for structured output gets as its content, or None when it asks for none."""
    response_format = request.get("response_format")
    kind = response_format.get("type") if isinstance(response_format, dict) else None
    topic = " ".join(said.split()[:_TOPIC_WORDS])[:_TOPIC_LIMIT] or "something"
    if kind == "json_object":
        return json.dumps({"answer": "This is the demo: no model behind me.", "you_said": _clip(said)})
    if kind != "json_schema":
        return None
    assert isinstance(response_format, dict)
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    root = schema if isinstance(schema, dict) else {}
    return json.dumps(_instance(root, root, topic, 0))


_MAX_DEPTH: Final = 12


def _instance(schema: Any, root: dict[str, Any], topic: str, depth: int) -> Any:
    """A value that the JSON schema accepts: the first of an enum, every property of an object, at least the
    fewest items of an array, numbers within their bounds, strings of their format and length."""
    if not isinstance(schema, dict) or depth > _MAX_DEPTH:
        return topic
    if isinstance(reference := schema.get("$ref"), str):
        return _instance(_resolve(reference, root), root, topic, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(enum := schema.get("enum"), list) and enum:
        return enum[0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")] or options
            return _instance(usable[0], root, topic, depth + 1)
    if isinstance(every := schema.get("allOf"), list) and every:
        merged: dict[str, Any] = {}
        for part in every:
            part = _resolve(part["$ref"], root) if isinstance(part, dict) and "$ref" in part else part
            if isinstance(part, dict):
                merged |= {k: v for k, v in part.items() if k not in ("properties", "required")}
                merged.setdefault("properties", {}).update(part.get("properties") or {})
                merged.setdefault("required", []).extend(part.get("required") or [])
        return _instance(merged, root, topic, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    match kind:
        case "object":
            properties = schema.get("properties")
            properties = properties if isinstance(properties, dict) else {}
            return {name: _instance(sub, root, topic, depth + 1) for name, sub in properties.items()}
        case "array":
            low = schema.get("minItems")
            count = max(1, low if isinstance(low, int) else 0)
            high = schema.get("maxItems")
            count = min(count, high) if isinstance(high, int) else count
            return [_instance(schema.get("items"), root, topic, depth + 1) for _ in range(count)]
        case "integer" | "number":
            return _number(schema, kind == "integer")
        case "boolean":
            return True
        case "null":
            return None
        case _:
            return _string(schema, topic)


def _resolve(reference: str, root: dict[str, Any]) -> Any:
    """A local reference (``#/$defs/Person``, ``#/definitions/Person``) in the root schema."""
    node: Any = root
    for part in reference.removeprefix("#").strip("/").split("/") if reference.startswith("#") else ["?"]:
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _number(schema: dict[str, Any], integer: bool) -> int | float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value: float = 1
    if isinstance(low, (int, float)) and not isinstance(low, bool):
        value = max(value, low + (1 if "exclusiveMinimum" in schema else 0))
    if isinstance(high, (int, float)) and not isinstance(high, bool):
        value = min(value, high - (1 if "exclusiveMaximum" in schema else 0))
    return int(value) if integer else value


_FORMATS: Final = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00",
    "email": "demo@example.com",
    "uri": "https://example.com/demo",
    "url": "https://example.com/demo",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def _string(schema: dict[str, Any], topic: str) -> str:
    text = _FORMATS.get(schema.get("format") or "", topic)
    low, high = schema.get("minLength"), schema.get("maxLength")
    if isinstance(low, int) and len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _client_tool(tools: Any) -> tuple[str, dict[str, Any]] | None:
    """The first function tool of the client's own, with its parameters schema."""
    for tool in tools if isinstance(tools, list) else ():
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if not isinstance(function, dict):
            continue
        name = function.get("name")
        if isinstance(name, str) and name and name != _MESSAGE_TOOL:
            parameters = function.get("parameters")
            return name, parameters if isinstance(parameters, dict) else {}
    return None


def _tool_arguments(name: str, parameters: dict[str, Any], topic: str, *, thoughts: bool = True) -> dict[str, Any]:
    """Inner thoughts first (the agent's, not the thinker's), then a plausible value for each required property."""
    arguments: dict[str, Any] = {}
    if thoughts:
        arguments[_THOUGHTS] = f'(demo) Thinking: the user asked about "{topic}"; I should call {name} first.'
    properties = parameters.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = parameters.get("required")
    for key in required if isinstance(required, list) else ():
        if isinstance(key, str) and key not in arguments:
            arguments[key] = _instance(properties.get(key), parameters, topic, 1)
    return arguments


def _completion(reply: _Reply) -> dict[str, Any]:
    calls = [
        {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        for call in reply.calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if calls:
        message["tool_calls"] = calls
    finish = "tool_calls" if calls else "stop"
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
    return {**_header(reply, "chat.completion"), "choices": [choice], "usage": reply.usage}


def _chunks(reply: _Reply, include_usage: bool) -> list[dict[str, Any]]:
    """The answer as OpenAI streams tool calls: an opening delta per call, then argument fragments."""
    header = _header(reply, "chat.completion.chunk")
    # With include_usage OpenAI sends "usage": null on every chunk but the last.
    tail = {"usage": None} if include_usage else {}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**header, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}], **tail}

    chunks: list[dict[str, Any]] = []
    if reply.content is not None:
        # As vLLM streams content: the role with an empty content first, then the text in pieces.
        chunks.append(chunk({"role": "assistant", "content": ""}))
        chunks += [chunk({"content": piece}) for piece in _content_pieces(reply.content)]
    for index, call in enumerate(reply.calls):
        opening = {"index": index, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        first = {"role": "assistant", "content": None} if index == 0 and not chunks else {}
        chunks.append(chunk({**first, "tool_calls": [opening]}))
        for fragment in _fragments(call.arguments):
            chunks.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
    chunks.append(chunk({}, "tool_calls" if reply.calls else "stop"))
    if include_usage:
        chunks.append({**header, "choices": [], "usage": reply.usage})
    return chunks


def _header(reply: _Reply, kind: str) -> dict[str, Any]:
    return {"id": reply.id, "object": kind, "created": _CREATED, "model": reply.model, "system_fingerprint": "demo"}


def _fragments(text: str) -> list[str]:
    """Cut JSON text where a naive incremental parser would break.

    Every escape is cut right after its backslash, a ``\\uXXXX`` escape also
    mid-hex, a surrogate pair also between its halves; elsewhere the cuts
    follow a pseudo-random run of sizes seeded by the text itself.
    """
    cuts: set[int] = set()
    for escape in _ESCAPE.finditer(text):
        start = escape.start()
        cuts.add(start + 1)
        if text[start + 1] == "u":
            cuts.add(start + 4)
        if escape.end() - start == 12:
            cuts.update((start + 6, start + 10))
    rng = random.Random(text)
    position = 0
    while position < len(text):
        position += rng.randint(*_FRAGMENT_SIZES)
        cuts.add(position)
    return _cut(text, cuts)


def _content_pieces(text: str) -> list[str]:
    """Cut content where a naive think-tag filter would break.

    Every tag is cut in its middle, with no other cut near it: one piece holds
    the end of the reasoning with the start of the closing tag, the next the
    rest of that tag, the whitespace after it and the start of the answer.
    Elsewhere the cuts follow a pseudo-random run of sizes seeded by the text.
    """
    cuts: set[int] = set()
    near_a_tag: set[int] = set()
    for tag in _TAG.finditer(text):
        start, end = tag.span()
        cuts.add((start + end) // 2)
        near_a_tag.update(range(start - 3, end + 6))
    rng = random.Random(text)
    position = 0
    while position < len(text):
        position += rng.randint(*_FRAGMENT_SIZES)
        if position not in near_a_tag:
            cuts.add(position)
    return _cut(text, cuts)


def _cut(text: str, cuts: set[int]) -> list[str]:
    """``text`` in the pieces between the cuts inside it."""
    bounds = sorted(cut for cut in cuts if 0 < cut < len(text))
    return [text[start:end] for start, end in zip([0, *bounds], [*bounds, len(text)], strict=True)]


def _cut_bytes(body: bytes) -> list[bytes]:
    """Irregular reads: some split an event, some carry several."""
    rng = random.Random(body)
    pieces: list[bytes] = []
    position = 0
    while position < len(body):
        size = rng.randint(*_PIECE_SIZES)
        pieces.append(body[position : position + size])
        position += size
    return pieces


def _text(content: Any) -> str:
    """The text of a message's content, a string or a list of parts."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip())
    return ""


def _clip(text: str) -> str:
    return text if len(text) <= _ECHO_LIMIT else text[: _ECHO_LIMIT - 1] + "…"


def _tokens(text: str) -> int:
    """A rough count, about four characters a token; there is no tokenizer offline."""
    return max(1, -(-len(text) // 4))


def _digest(seed: bytes, label: str) -> str:
    return hashlib.sha256(label.encode() + b"\0" + seed).hexdigest()[:24]


def _json(status: int, payload: Any, headers: dict[str, str]) -> httpx.Response:
    """A JSON response left unread, as a network transport returns it, so streaming reads work too."""
    body = orjson.dumps(payload)
    headers = {**headers, "content-type": "application/json", "content-length": str(len(body))}
    return httpx.Response(status, headers=headers, stream=httpx.ByteStream(body))


def _error(
    status: int, message: str, code: str | None, headers: dict[str, str], param: str | None = None
) -> httpx.Response:
    error = {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    return _json(status, {"error": error}, headers)
