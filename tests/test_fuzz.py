"""Property-based fuzzing: no input makes the request parser, the SSE decoder or the stream path raise anything but their own errors."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.agent import prepare
from gateway.core.errors import GatewayError
from gateway.core.events import Done, Error
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.rewriter import InvalidChunk, replay_completion
from gateway.core.sse import SSEDecoder, SSEError
from gateway.core.translator import StreamTranslator
from gateway.dialects.chat import ChatStreamEncoder, fold_completion
from gateway.dialects.chat import parse_request as parse_chat_request

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=10)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=20,
)
# Bodies shaped like chat requests, with any value in any field, so validation and injection see hostile types.
fields = st.sampled_from(["model", "messages", "stream", "tools", "tool_choice", "functions", "role", "content", "tool_calls", "function", "type", "parameters", "properties", "required", "name"])
shaped = st.recursive(
    json_values,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(fields, inner, max_size=6)),
    max_leaves=30,
)
modes = st.builds(RewriteOptions, inner_thoughts=st.sampled_from(list(Thoughts)), system_prompt=st.sampled_from([None, "", "Be kind."]))


@settings(max_examples=400)
@given(st.one_of(shaped, json_values), modes)
def test_request_parser_and_agent_mode_raise_only_gateway_errors(body: object, config: RewriteOptions) -> None:
    try:
        payload = parse_chat_request(orjson.dumps(body)).payload
    except GatewayError as error:
        assert 400 <= error.status < 500
        return
    upstream, _ = prepare(payload, config)
    orjson.dumps(upstream)


@given(st.binary(max_size=200))
def test_request_parser_on_arbitrary_bytes(body: bytes) -> None:
    try:
        parse_chat_request(body)
    except GatewayError as error:
        assert error.status == 400


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_sse_decoder_on_arbitrary_bytes(reads: list[bytes]) -> None:
    decoder = SSEDecoder(max_event_bytes=64)
    try:
        for read in reads:
            for event in decoder.feed(read):
                assert isinstance(event[0], bytes)
        decoder.close()
    except SSEError:
        pass


# Streams shaped like chat completion chunks, with any value in any field, as a broken upstream might send.
chunk_fields = st.sampled_from([
    "choices", "index", "delta", "message", "tool_calls", "function_call", "function", "name", "arguments", "id",
    "type", "content", "reasoning_content", "reasoning", "role", "finish_reason", "usage",
])
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
    translator = StreamTranslator(options, "up")
    events = translator.feed(body) + translator.end()
    assert isinstance(events[-1], (Done, Error)) and sum(isinstance(e, (Done, Error)) for e in events) == 1
    client = ChatStreamEncoder().encode(events)
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
