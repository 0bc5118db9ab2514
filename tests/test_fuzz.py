"""Property-based fuzzing with real oracles.

A request body, however hostile, gets a 4xx OpenAI error with nothing sent
upstream, or is forwarded as valid JSON equal to what the client sent (the
model replaced; on an agent route, the injection added around the client's
own fields and user messages). A broken upstream stream never raises
through the stream path: the client gets valid chunks, then one end.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.config import parse_config
from gateway.core.errors import GatewayError
from gateway.core.events import Done, Error
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.passthrough import Shortcuts
from gateway.core.rewriter import InvalidChunk, replay_completion
from gateway.core.sse import SSEDecoder, SSEError
from gateway.core.translator import StreamTranslator
from gateway.core.wires import WIRES
from gateway.dialects.chat import ChatStreamEncoder, fold_completion
from gateway.dialects.chat import parse_request as parse_chat_request
from gateway.server.app import create_app
from tests.helpers.servers import RecordingTransport, completion_of
from tests.helpers.streams import agent_stream

json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=10),
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)


class Raw(str):
    """JSON text written into a body as it is: a token a JSON encoder would never produce."""


def render(value: Any) -> str:
    """A body's text, with ``Raw`` tokens left as they are."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(key)}:{render(item)}" for key, item in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(render(item) for item in value) + "]"
    return json.dumps(value)


def nested(depth: int) -> Raw:
    return Raw("[" * depth + "]" * depth)


# What a hostile client writes: non-finite and overflowing numbers, lone surrogates, integers beyond
# 64 bits (which make the gateway decode exactly), and nesting around the limits of both decoders.
hostile = st.one_of(
    st.sampled_from(
        [
            Raw("NaN"),
            Raw("Infinity"),
            Raw("-Infinity"),
            Raw("1e400"),
            Raw("-1E+999"),
            Raw('"\\ud800"'),
            Raw('"\\udc00"'),
            Raw('"x\\ud83d"'),
            Raw('"\\ud83d\\ude00"'),
            Raw("1.5e308"),
            Raw("-0.0"),
        ]
    ),
    st.integers(10**18, 10**40).map(lambda n: Raw(str(n))),
    st.integers(-(10**40), -(10**18)).map(lambda n: Raw(str(n))),
    st.sampled_from([10, 253, 254, 255, 400, 1023, 1100]).map(nested),
)
leaves = st.one_of(json_values, hostile)
fields = st.sampled_from(
    [
        "model",
        "messages",
        "stream",
        "tools",
        "tool_choice",
        "functions",
        "role",
        "content",
        "text",
        "tool_calls",
        "function",
        "type",
        "parameters",
        "properties",
        "required",
        "name",
    ]
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(fields, inner, max_size=4)),
    max_leaves=12,
)
parts = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url"]) | values, "text": st.text(max_size=5) | values}
)
messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | values},
    optional={
        "content": st.text(max_size=5) | st.none() | st.lists(parts, max_size=3) | values,
        "tool_calls": values,
        "name": values,
    },
)
tools = st.fixed_dictionaries(
    {"type": st.just("function") | values},
    optional={
        "function": st.fixed_dictionaries({"name": st.text(max_size=5) | values}, optional={"parameters": values})
    },
)
chat_bodies = st.fixed_dictionaries(
    {
        "model": st.sampled_from(["agent", "agent-content", "plain"]) | values,
        "messages": st.lists(messages, max_size=4) | values,
    },
    optional={
        "tools": st.lists(tools, max_size=3) | values,
        "tool_choice": st.sampled_from(["auto", "none", "required"]) | values,
        "stream": st.booleans() | values,
        "x_vendor": values,
        "functions": values,
    },
)
embedding_bodies = st.fixed_dictionaries(
    {"model": st.sampled_from(["agent", "plain"]) | values, "input": values}, optional={"x_vendor": values}
)

CONFIG = """
providers: {up: {base_url: "http://upstream.test/v1"}}
models:
  - {name: plain, provider: up, model: upstream-plain, max_retries: 0}
  - {name: agent, provider: up, model: upstream-agent, rewrite: {}, max_retries: 0}
  - {name: agent-content, provider: up, model: upstream-agent, rewrite: {inner_thoughts: content, system_prompt: ""},
     max_retries: 0}
"""
COMPLETION = orjson.dumps(completion_of(agent_stream(['{"inner_thoughts": "t", "message": "Hello"}'])))


RECORDER = RecordingTransport(COMPLETION)
APP = create_app(parse_config(CONFIG, "fuzz.yaml", env={}), {"up": RECORDER})


def through_the_gateway(path: str, body: bytes) -> tuple[httpx.Response, list[httpx.Request]]:
    """The client's answer and what the upstream received, for one request."""
    RECORDER.requests = []

    async def main() -> httpx.Response:
        gateway = APP.service
        await gateway.start()
        try:
            transport = httpx.ASGITransport(app=APP, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
                return await client.post(path, content=body, headers={"content-type": "application/json"})
        finally:
            await gateway.stop()

    return asyncio.run(main()), RECORDER.requests


def assert_refused_or_forwarded_equal(path: str, body: bytes) -> tuple[Any, Any] | None:
    """The oracle: a 4xx OpenAI error and nothing sent, or a success whose one upstream request is valid
    JSON; returns (what the client sent, what the upstream received) for a forward, decoded exactly."""
    response, sent = through_the_gateway(path, body)
    if 400 <= response.status_code < 500:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["message"]
        assert sent == []
        event(f"refused {response.status_code}")
        return None
    assert response.status_code == 200, response.text
    [request] = sent
    orjson.loads(request.content)  # strict: no NaN, no Infinity, no lone surrogate, no 1e400
    event("forwarded")
    return json.loads(body), json.loads(request.content)


@settings(max_examples=300)
@given(chat_bodies)
def test_a_chat_request_is_refused_or_forwarded_as_valid_json_equal_to_what_was_sent(body: dict[str, Any]) -> None:
    forwarded = assert_refused_or_forwarded_equal("/v1/chat/completions", render(body).encode())
    if forwarded is None:
        return
    client, upstream = forwarded
    if client["model"] == "plain":
        # A stream's upstream is asked for its usage (the client gets that chunk only if it asked too).
        usage = {"stream_options": {"include_usage": True}} if client.get("stream") is True else {}
        assert upstream == {**client, "model": "upstream-plain", **usage}
        return
    # An agent route adds the message tool, forces a tool call and rewrites past assistant turns;
    # the client's other fields and its user messages reach the upstream as they were sent.
    assert upstream["model"] == "upstream-agent"
    for key in set(client) - {"model", "messages", "tools", "tool_choice"}:
        assert upstream[key] == client[key]
    users = [m for m in client["messages"] if m.get("role") == "user"]
    assert [m for m in upstream["messages"] if m.get("role") == "user"] == users


@settings(max_examples=200)
@given(embedding_bodies)
def test_a_forwarded_body_is_refused_or_sent_as_valid_json_equal_to_what_was_sent(body: dict[str, Any]) -> None:
    forwarded = assert_refused_or_forwarded_equal("/v1/embeddings", render(body).encode())
    if forwarded is not None:
        client, upstream = forwarded
        model = client["model"]  # a route's name is replaced; a model that is not a string names no route
        models = {"plain": "upstream-plain", "agent": "upstream-agent"}
        assert upstream == {**client, "model": models[model] if isinstance(model, str) else model}


@given(st.binary(max_size=200))
def test_request_parser_on_arbitrary_bytes(body: bytes) -> None:
    try:
        payload = parse_chat_request(body).payload
    except GatewayError as error:
        assert error.status == 400 and error.message
        return
    assert payload == json.loads(body) and isinstance(payload["model"], str) and isinstance(payload["messages"], list)


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_sse_decoder_on_arbitrary_bytes(reads: list[bytes]) -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    try:
        for read in reads:
            for event in decoder.feed(read):
                assert isinstance(event, bytes) or isinstance(event.text, bytes)
        decoder.close()
    except SSEError:
        pass


# Streams shaped like chat completion chunks, with any value in any field, as a broken upstream might send.
chunk_fields = st.sampled_from(
    [
        "choices",
        "index",
        "delta",
        "message",
        "tool_calls",
        "function_call",
        "function",
        "name",
        "arguments",
        "id",
        "type",
        "content",
        "reasoning_content",
        "reasoning",
        "role",
        "finish_reason",
        "usage",
    ]
)
chunk_shaped = st.recursive(
    json_values,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(chunk_fields, inner, max_size=5)),
    max_leaves=25,
)
rewrite_options = st.builds(
    RewriteOptions,
    inner_thoughts=st.sampled_from(list(Thoughts)),
    reasoning=st.sampled_from(list(Reasoning)),
    message_tool=st.sampled_from(["send_message", "", "name"]),
    passthrough=st.booleans(),
)


@settings(max_examples=400)
@given(st.lists(chunk_shaped, max_size=6), rewrite_options)
def test_translator_turns_any_chunk_shaped_stream_into_valid_chunks_or_one_error(
    chunks: list[object], options: RewriteOptions
) -> None:
    """A broken upstream never raises through the stream path: the client gets valid chunks, then Done or one Error."""
    body = b"".join(b"data: " + orjson.dumps(item) + b"\n\n" for item in chunks) + b"data: [DONE]\n\n"
    translator = StreamTranslator(options, "up", raw_chunks=True, shortcuts=Shortcuts.CHECK)
    events = translator.feed(body) + translator.end()
    assert isinstance(events[-1], (Done, Error)) and sum(isinstance(e, (Done, Error)) for e in events) == 1
    client = ChatStreamEncoder(shortcuts=Shortcuts.CHECK).encode(events)
    for line in client.split(b"\n\n")[:-1]:
        assert line.startswith(b"data: ")
        if line != b"data: [DONE]":
            orjson.loads(line[6:])


@settings(max_examples=400)
@given(chunk_shaped, rewrite_options)
def test_replayed_completions_raise_only_invalid_chunk_and_fold_to_json(item: object, options: RewriteOptions) -> None:
    if not isinstance(item, dict):
        return
    try:
        events = replay_completion(item, options)
    except InvalidChunk:
        return
    orjson.dumps(fold_completion(item, events))


DEEP = b"[" * 1000 + b"]" * 1000
LONG = b"1234567890123456789012"


@pytest.mark.parametrize(
    ("path", "body", "problem"),
    [
        ("/v1/chat/completions", b'{"model": "agent", "messages": [], "x": %s}' % DEEP, "nested too deeply"),
        ("/v1/chat/completions", b'{"model": "plain", "messages": [], "x": %s}' % DEEP, "nested too deeply"),
        ("/v1/embeddings", b'{"model": "plain", "input": %s}' % DEEP, "nested too deeply"),
        (
            "/v1/chat/completions",
            b'{"model": "plain", "messages": [], "x": [%s, %s]}' % (nested(253).encode(), LONG),
            "nested too deeply",
        ),
        ("/v1/chat/completions", b'{"model": "plain", "messages": [], "s": "\\ud800", "n": %s}' % LONG, "surrogate"),
        ("/v1/embeddings", b'{"model": "plain", "input": "\\udc00", "n": %s}' % LONG, "surrogate"),
        ("/v1/chat/completions", b'{"model": "plain", "messages": [], "t": NaN, "n": %s}' % LONG, "not valid JSON"),
        (
            "/v1/chat/completions",
            b'{"model": "plain", "messages": [], "t": Infinity, "n": %s}' % LONG,
            "not valid JSON",
        ),
        ("/v1/embeddings", b'{"model": "plain", "input": 1e400, "n": %s}' % LONG, "infinity"),
        (
            "/v1/chat/completions",
            b'{"model": "agent", "messages": [{"role": "assistant", "content": [{"type": "text", "text": 5}]}]}',
            "'messages.0.content.0.text': expected a string",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "agent", "messages": [{"role": "user", "content": "a"},'
            b' {"role": "assistant", "content": [{"type": "text", "text": null}]}]}',
            "'messages.1.content.0.text': expected a string",
        ),
    ],
)
def test_hostile_bodies_are_a_400_naming_the_problem_and_nothing_is_sent(path: str, body: bytes, problem: str) -> None:
    response, sent = through_the_gateway(path, body)
    assert response.status_code == 400 and problem in response.json()["error"]["message"]
    assert sent == []


def test_nesting_up_to_the_limit_and_long_integers_are_forwarded_exactly() -> None:
    # The object, the list and 252 more: 254 levels, the most the gateway re-encodes.
    body = b'{"model": "plain", "messages": [], "x": [%s, %s, -%s]}' % (nested(252).encode(), LONG, LONG)
    response, [sent] = through_the_gateway("/v1/chat/completions", body)
    assert response.status_code == 200
    assert json.loads(sent.content) == {**json.loads(body), "model": "upstream-plain"}


@pytest.mark.parametrize("name", [[1], {}, None, 7])
def test_a_tool_whose_name_is_not_a_string_is_forwarded_for_the_upstream_to_judge(name: Any) -> None:
    tool = {"type": "function", "function": {"name": name, "parameters": {"type": "object", "properties": {}}}}
    body = orjson.dumps({"model": "agent", "messages": [{"role": "user", "content": "Hi"}], "tools": [tool]})
    response, [sent] = through_the_gateway("/v1/chat/completions", body)
    assert response.status_code == 200
    [forwarded, message_tool] = orjson.loads(sent.content)["tools"]
    assert (
        forwarded["function"]["name"] == name and "inner_thoughts" in forwarded["function"]["parameters"]["properties"]
    )
    assert message_tool["function"]["name"] == "send_message"


# The translated front doors: a valid request with any value put anywhere in it is a 4xx naming the field, or an
# answer; never a 5xx. Mutating valid requests reaches every depth of the translators, where generated bodies
# mostly stop at the first field.
RESPONSES_SEEDS: list[dict[str, Any]] = [
    {
        "model": "agent",
        "instructions": "Be brief.",
        "input": [
            {"type": "message", "role": "developer", "content": "Rules."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Look:"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "low"},
                ],
            },
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "thought"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {"type": "function_call", "call_id": "c1", "name": "get", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "ok"}]},
        ],
        "tools": [
            {
                "type": "function",
                "name": "get",
                "description": "d",
                "strict": True,
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}},
            }
        ],
        "tool_choice": {"type": "function", "name": "get"},
        "parallel_tool_calls": False,
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        "reasoning": {"effort": "low"},
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 1,
        "metadata": {"k": "v"},
        "stop": ["x"],
        "store": False,
    },
    {"model": "plain", "input": "Hi", "stream": True, "tool_choice": "auto", "text": {"format": {"type": "text"}}},
]
MESSAGES_SEEDS: list[dict[str, Any]] = [
    {
        "model": "agent",
        "max_tokens": 64,
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hm", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "t1", "name": "get", "input": {"q": "x"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "t1",
                        "content": [{"type": "text", "text": "ok"}],
                        "is_error": False,
                    },
                    {"type": "text", "text": "And?"},
                ],
            },
        ],
        "tools": [{"name": "get", "description": "d", "input_schema": {"type": "object", "properties": {}}}],
        "tool_choice": {"type": "tool", "name": "get", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "metadata": {"user_id": "u"},
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["x"],
    },
    {"model": "plain", "max_tokens": 64, "stream": True, "messages": [{"role": "user", "content": "Hi"}]},
]
garbage = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(fields, inner, max_size=3)),
    max_leaves=8,
)


def places(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into a decoded body: the root, each key of each object, each item of each array."""
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found += places(item, (*at, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += places(item, (*at, index))
    return found


def mutated(data: st.DataObject, seeds: list[dict[str, Any]]) -> Any:
    """A seed with one to three of its values (or new keys of its objects) replaced by anything."""
    body: Any = json.loads(json.dumps(data.draw(st.sampled_from(seeds))))
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(places(body)))
        if not path:
            continue  # the root stays an object: a body that is not one has no field to name
        parent = body
        for step in path[:-1]:
            parent = parent[step]
        key = path[-1]
        if isinstance(parent, dict) and data.draw(st.booleans()):
            key = data.draw(fields | response_fields)  # a new, or another, key
        parent[key] = data.draw(garbage)
    return body


def assert_no_5xx_and_the_field_is_named(path: str, body: bytes, *, anthropic: bool) -> None:
    response, sent = through_the_gateway(path, body)
    assert response.status_code < 500, response.text
    if response.status_code < 400:
        event("answered")
        return
    event(f"refused {response.status_code}")
    assert sent == []
    error = response.json()["error"]
    if error["message"].startswith("The request body"):
        return  # not JSON (or nested too deeply): there is no field to name
    if anthropic:
        assert response.json()["type"] == "error", error
        if response.status_code == 404:  # a model no route serves (the mutation hit the name): Anthropic's shape
            assert error["type"] == "not_found_error", error
            return
        # Anthropic's errors have no param: the message begins with the field's path.
        assert error["type"] == "invalid_request_error", error
        assert re.match(r"[a-z_]+(\.\w+)*:", error["message"]), error
    else:
        assert error["param"] or response.status_code == 404, error


response_fields = st.sampled_from(["input", "content", "type", "role", "text", "format", "summary", "output", "id"])


@settings(max_examples=1500)
@given(st.data())
def test_a_responses_request_is_answered_or_refused_naming_the_field(data: st.DataObject) -> None:
    body = mutated(data, RESPONSES_SEEDS)
    assert_no_5xx_and_the_field_is_named("/v1/responses", render(body).encode(), anthropic=False)


@settings(max_examples=1500)
@given(st.data())
def test_a_messages_request_is_answered_or_refused_naming_the_field(data: st.DataObject) -> None:
    body = mutated(data, MESSAGES_SEEDS)
    assert_no_5xx_and_the_field_is_named("/v1/messages", render(body).encode(), anthropic=True)


# The upstream wires: events of the right types with any fields, and requests of any shape.

ANTHROPIC_TYPES = [
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "error",
]
RESPONSES_TYPES = [
    "response.created",
    "response.output_item.added",
    "response.output_item.done",
    "response.output_text.delta",
    "response.function_call_arguments.delta",
    "response.reasoning_summary_text.delta",
    "response.reasoning_text.delta",
    "response.completed",
    "response.incomplete",
    "response.failed",
    "error",
]


def wire_events(types: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    fields = st.dictionaries(
        st.sampled_from(
            ["index", "output_index", "delta", "content_block", "message", "item", "response", "error", "usage"]
        ),
        json_values,
        max_size=4,
    )
    return st.builds(lambda kind, rest: {**rest, "type": kind}, st.sampled_from(types), fields)


@settings(max_examples=300)
@given(st.sampled_from(["anthropic", "responses"]), st.data(), rewrite_options)
def test_a_wire_stream_of_any_fields_gives_valid_chunks_then_one_end(
    wire: str, data: st.DataObject, options: RewriteOptions
) -> None:
    """Another API's events, whatever their fields hold, never raise through the stream path either."""
    events = data.draw(st.lists(wire_events(ANTHROPIC_TYPES if wire == "anthropic" else RESPONSES_TYPES), max_size=8))
    body = b"".join(b"data: " + orjson.dumps(item) + b"\n\n" for item in events)
    translator = StreamTranslator(options, "up", wire=WIRES[wire].reader("up", 1))
    produced = translator.feed(body) + translator.end()
    assert isinstance(produced[-1], (Done, Error)) and sum(isinstance(e, (Done, Error)) for e in produced) == 1
    for line in ChatStreamEncoder().encode(produced).split(b"\n\n")[:-1]:
        if line != b"data: [DONE]":
            orjson.loads(line[6:])


@settings(max_examples=300)
@given(
    st.sampled_from(["anthropic", "responses"]),
    st.dictionaries(st.text(max_size=8), json_values, max_size=6),
    st.data(),
)
def test_a_wire_request_of_any_shape_is_built_or_refused_naming_the_field(
    wire: str, payload: dict[str, Any], data: st.DataObject
) -> None:
    payload = {
        **payload,
        "messages": data.draw(
            st.lists(
                st.dictionaries(st.sampled_from(["role", "content", "tool_calls", "tool_call_id"]), json_values),
                max_size=4,
            )
        ),
        "tools": data.draw(json_values),
        "reasoning_effort": data.draw(json_values),
    }
    try:
        request = WIRES[wire].request(payload, stream=True, max_tokens=10, summaries=True)
    except GatewayError as error:
        assert error.status == 400 and error.param
        return
    orjson.dumps(request)


@settings(max_examples=300)
@given(st.sampled_from(["anthropic", "responses"]), st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_a_whole_wire_answer_of_any_shape_is_a_completion_or_a_clear_failure(wire: str, body: dict[str, Any]) -> None:
    try:
        completion = WIRES[wire].completion(body, "up", 1)
    except (InvalidChunk, GatewayError):
        return
    replay_completion(completion, RewriteOptions())
