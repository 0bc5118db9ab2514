"""Property-based fuzzing: no input makes the request parser, the SSE decoder or the rewriter raise anything but their own errors."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.agent import prepare
from gateway.app import parse_chat_request
from gateway.config import RewriteConfig
from gateway.core.rewriter import InvalidChunk, RewriteOptions, StreamRewriter, rewrite_completion
from gateway.errors import GatewayError
from gateway.sse import SSEDecoder, SSEError

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
modes = st.builds(RewriteConfig, inner_thoughts=st.sampled_from(["kwarg", "content", "none"]), system_prompt=st.sampled_from([None, "", "Be kind."]))


@settings(max_examples=400)
@given(st.one_of(shaped, json_values), modes)
def test_request_parser_and_agent_mode_raise_only_gateway_errors(body: object, config: RewriteConfig) -> None:
    try:
        payload = parse_chat_request(orjson.dumps(body))
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
            for _, payload in decoder.feed(read):
                assert isinstance(payload, bytes)
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
    inner_thoughts=st.sampled_from(["kwarg", "content", "none"]),
    reasoning=st.sampled_from(["hide", "expose"]),
    message_tool=st.sampled_from(["send_message", "", "name"]),
)


@settings(max_examples=400)
@given(st.lists(chunk_shaped, max_size=6), rewrite_options)
def test_rewriter_raises_only_invalid_chunk_and_sends_only_encodable_chunks(chunks: list[object], options: RewriteOptions) -> None:
    rewriter = StreamRewriter(options)
    try:
        for item in chunks:
            for sent in rewriter.feed(item):  # type: ignore[arg-type]
                orjson.dumps(sent)
    except InvalidChunk:
        return
    for sent in rewriter.finish():
        orjson.dumps(sent)
    for item in chunks:
        orjson.dumps(rewrite_completion(item, options))  # type: ignore[arg-type]
