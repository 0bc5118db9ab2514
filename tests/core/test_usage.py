"""What a forwarded or passed-through answer is charged: the usage found in its bytes, however they are cut."""

from __future__ import annotations

import itertools
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.usage import TokenUsage, UsageTail, usage_of
from tests.helpers.streams import typed_events


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(typed_events(events))


def fed(body: bytes, cuts: list[int], size: int = 64 * 1024) -> UsageTail:
    tail = UsageTail(size)
    points = sorted({0, len(body), *(cut % (len(body) + 1) for cut in cuts)})
    for start, end in itertools.pairwise(points):
        tail.feed(body[start:end])
    return tail


TEXT = "a long answer " * 400
MESSAGES_STREAM = sse(
    [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "content": [],
                "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": TEXT}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 900}},
        {"type": "message_stop"},
    ]
)


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_a_messages_stream_is_charged_its_start_input_and_its_last_output(cuts: list[int]) -> None:
    """``message_start`` says the input, the last ``message_delta`` the output; the text between may be long."""
    tail = fed(MESSAGES_STREAM, cuts, size=1024)
    assert usage_of(tail.usage()) == TokenUsage(25, 900, cached=5)


def test_a_last_usage_with_its_own_input_count_is_taken_as_it_is() -> None:
    """Anthropic's newer ``message_delta`` repeats the input counts: they are not added twice."""
    body = MESSAGES_STREAM.replace(b'{"output_tokens":900}', b'{"input_tokens":30,"output_tokens":900}')
    assert usage_of(fed(body, []).usage()) == TokenUsage(30, 900)


@given(st.lists(st.integers(min_value=0), max_size=12))
def test_a_responses_stream_is_charged_its_completed_usage(cuts: list[int]) -> None:
    response = {"id": "resp_1", "object": "response", "status": "in_progress", "usage": None}
    usage = {"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2}, "output_tokens": 7}
    body = sse(
        [
            {"type": "response.created", "response": response},
            {"type": "response.output_text.delta", "delta": TEXT},
            {"type": "response.completed", "response": {**response, "status": "completed", "usage": usage}},
        ]
    )
    assert usage_of(fed(body, cuts, size=1024).usage()) == TokenUsage(12, 7, cached=2)


def test_a_chat_stream_is_charged_its_usage_chunk_and_a_body_without_usage_nothing() -> None:
    chunk = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    body = b"data: " + orjson.dumps({"choices": [{"delta": {"content": '"usage": {"x": 1}'}}]}) + b"\n\n"
    assert usage_of(fed(body + b"data: " + orjson.dumps(chunk) + b"\n\n", []).usage()) == TokenUsage(3, 4)
    assert fed(body, []).usage() is None
