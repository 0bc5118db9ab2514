"""The upstream wires (Anthropic Messages, OpenAI Responses) read into the rewrite, through all three front doors.

Golden tests drive the real recordings in ``tests/fixtures/recorded/anthropic`` and ``responses``; property tests
cut a ``send_message`` call's arguments anywhere (mid-key, mid-escape, between the halves of a surrogate pair)
and the SSE bytes anyhow, and every door's client must read exactly the message and none of the inner thoughts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import ChoiceStart, ChunkStart, Error, Event, Finish, ReasoningDelta
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.rewriter import replay_completion
from gateway.core.translator import StreamPhase, StreamTranslator
from gateway.core.wires import WIRES
from gateway.core.wires.anthropic import anthropic_completion, anthropic_request
from gateway.core.wires.responses import responses_completion, responses_request
from gateway.dialects.anthropic import AnthropicStreamEncoder
from gateway.dialects.anthropic import build as anthropic_build
from gateway.dialects.chat import ChatStreamEncoder, fold_completion
from gateway.dialects.responses import ResponsesStreamEncoder
from tests.helpers import anthropic as anthropic_door
from tests.helpers import responses as responses_door
from tests.helpers.chat import read_chat
from tests.helpers.paths import FIXTURES
from tests.helpers.streams import options_of, partitions, split_evenly, splits, sse_payloads, translate

ANTHROPIC = FIXTURES / "anthropic"
RESPONSES = FIXTURES / "responses"
AGENT = options_of()  # send_message(inner_thoughts, message), reasoning hidden


def body_of(path: Path) -> bytes:
    """A recording as the provider sent it; a ``.jsonl`` one framed as its PROVENANCE says (no ``[DONE]``)."""
    raw = path.read_bytes()
    if path.suffix == ".sse":
        return raw
    events = [orjson.loads(line) for line in raw.splitlines() if line.strip()]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


@dataclass
class Doors:
    """What each front door's client read of one upstream stream."""

    chat: Any
    responses: dict[str, Any]
    responses_events: list[dict[str, Any]]
    anthropic: anthropic_door.Stream
    events: list[Event]
    bytes: dict[str, bytes]


def through_doors(reads: list[bytes], options: RewriteOptions, wire: str) -> Doors:
    chat, events = translate(reads, options, ChatStreamEncoder(shortcuts=Shortcuts.CHECK), wire=wire)
    encoder = ResponsesStreamEncoder(
        responses_door.request_of(stream=True), created=1700000000, shortcuts=Shortcuts.CHECK
    )
    responses, _ = translate(reads, options, encoder, wire=wire)
    messages, _ = translate(
        reads,
        options,
        AnthropicStreamEncoder(anthropic_door.STREAMING, created=0, shortcuts=Shortcuts.CHECK),
        wire=wire,
    )
    parsed = [responses_door.sdk_checked(e) for e in responses_door.parse_sse(responses)]
    return Doors(
        read_chat(chat),
        responses_door.check_protocol(parsed),
        parsed,
        anthropic_door.read(messages),
        events,
        {"chat": chat, "responses": responses, "anthropic": messages},
    )


def anthropic_text(path: Path, delta: str = "text_delta", key: str = "text") -> str:
    events = sse_payloads(body_of(path))
    return "".join(
        e["delta"][key] for e in events if e.get("type") == "content_block_delta" and e["delta"]["type"] == delta
    )


def responses_deltas(path: Path, *kinds: str) -> str:
    return "".join(e["delta"] for e in sse_payloads(body_of(path)) if e.get("type") in kinds)


# Golden: the recordings, through every door.


def test_an_anthropic_tool_use_recording_reaches_every_door_as_the_tool_call() -> None:
    doors = through_doors([body_of(ANTHROPIC / "anthropic-messages-tool-use.sse")], RewriteOptions.plain(), "anthropic")
    text = "I'll check the current weather in Paris for you."
    assert doors.chat.content == text
    assert doors.chat.calls == [("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})]
    assert doors.chat.finish == ["tool_calls"]
    assert responses_door.calls_of(doors.responses) == [
        ("toolu_01NRLabsLyVHZPKxbKvkfSMn", "get_weather", {"location": "Paris"})
    ]
    assert doors.responses["usage"]["input_tokens"] == 377 and doors.responses["usage"]["output_tokens"] == 65
    assert doors.anthropic.joined("text") == text
    assert json.loads(doors.anthropic.joined("tool_use")) == {"location": "Paris"}
    assert doors.anthropic.delta is not None and doors.anthropic.delta["delta"]["stop_reason"] == "tool_use"


def test_an_anthropic_tool_use_recording_as_the_message_tool_becomes_text_in_every_door() -> None:
    options = options_of(message_tool="get_weather", message_arg="location", inner_thoughts="none")
    doors = through_doors([body_of(ANTHROPIC / "anthropic-messages-tool-use.sse")], options, "anthropic")
    text = "I'll check the current weather in Paris for you.\n\nParis"
    assert doors.chat.content == text and doors.chat.calls == [] and doors.chat.finish == ["stop"]
    assert responses_door.deltas(doors.responses_events) == text
    assert responses_door.calls_of(doors.responses) == []
    assert doors.anthropic.joined("text") == text
    assert doors.anthropic.delta is not None and doors.anthropic.delta["delta"]["stop_reason"] == "end_turn"


@pytest.mark.parametrize("reasoning", ["hide", "expose"])
def test_anthropic_thinking_is_hidden_or_exposed_per_the_route(reasoning: str) -> None:
    path = ANTHROPIC / "anthropic-messages-thinking.sse"
    doors = through_doors([body_of(path)], options_of(reasoning=reasoning), "anthropic")
    text, thinking = anthropic_text(path), anthropic_text(path, "thinking_delta", "thinking")
    assert thinking and text
    assert doors.chat.content == text
    assert doors.anthropic.joined("text") == text
    assert responses_door.deltas(doors.responses_events) == text
    if reasoning == "hide":
        assert thinking[:40].encode() not in b"".join(doors.bytes.values())
        assert not any(isinstance(e, ReasoningDelta) for e in doors.events)
    else:
        assert doors.chat.reasoning == thinking
        assert doors.anthropic.joined("thinking") == thinking
        assert responses_door.reasoning_of(doors.responses) == thinking


def test_a_padded_anthropic_recording_reads_whole() -> None:
    doors = through_doors(
        [body_of(ANTHROPIC / "anthropic-messages-text-padded.sse")], RewriteOptions.plain(), "anthropic"
    )
    assert doors.chat.content == doors.anthropic.joined("text") == "2"
    assert doors.chat.finish == ["stop"]


def test_a_responses_function_call_recording_reaches_every_door() -> None:
    path = RESPONSES / "openai-responses-gpt4o-function-call.sse"
    doors = through_doors([body_of(path)], RewriteOptions.plain(), "responses")
    call = ("call_kL0PCQV7M2WMoVX8V8OtYSAL", "get_capital", {"country": "France"})
    assert doors.chat.calls == [call] and doors.chat.finish == ["tool_calls"]
    assert responses_door.calls_of(doors.responses) == [call]
    assert json.loads(doors.anthropic.joined("tool_use")) == {"country": "France"}
    assert doors.responses["usage"]["input_tokens"] == 255


def test_a_responses_function_call_recording_as_the_message_tool_becomes_text() -> None:
    path = RESPONSES / "openai-responses-gpt4o-function-call.sse"
    options = options_of(message_tool="get_capital", message_arg="country", inner_thoughts="none")
    doors = through_doors([body_of(path)], options, "responses")
    assert doors.chat.content == doors.anthropic.joined("text") == "France"
    assert responses_door.deltas(doors.responses_events) == "France"
    assert doors.chat.calls == [] and doors.chat.finish == ["stop"]


def test_a_responses_text_recording_reads_as_its_deltas() -> None:
    path = RESPONSES / "openai-responses-gpt4o-text.sse"
    doors = through_doors([body_of(path)], RewriteOptions.plain(), "responses")
    text = responses_deltas(path, "response.output_text.delta")
    assert text and doors.chat.content == text == doors.anthropic.joined("text")


@pytest.mark.parametrize("reasoning", ["hide", "expose"])
@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("openai-responses-gpt51-codex-reasoning-summary-function-call.jsonl", "response.reasoning_summary_text.delta"),
        ("openrouter-responses-gpt-oss-reasoning-text.sse", "response.reasoning_text.delta"),
    ],
)
def test_responses_reasoning_is_hidden_or_exposed_per_the_route(name: str, kind: str, reasoning: str) -> None:
    path = RESPONSES / name
    doors = through_doors([body_of(path)], options_of(reasoning=reasoning, inject_tools=False), "responses")
    thinking = responses_deltas(path, kind)
    assert thinking
    if reasoning == "hide":
        assert doors.chat.reasoning == "" and doors.anthropic.joined("thinking") == ""
        assert thinking[:30].encode() not in b"".join(doors.bytes.values())
    else:
        assert doors.chat.reasoning == thinking
        assert doors.anthropic.joined("thinking") == thinking


def test_responses_usage_keeps_cached_and_reasoning_tokens() -> None:
    translator = StreamTranslator(RewriteOptions.plain(), "up", wire=WIRES["responses"].reader("up", 1))
    translator.feed(body_of(RESPONSES / "openrouter-responses-gpt-oss-reasoning-text.sse"))
    translator.end()
    assert translator.usage is not None and translator.usage.reasoning == 22


# Properties: send_message's arguments cut anywhere, the bytes split anyhow.

THOUGHT = "PRIVATE-PLAN: never show this"
MESSAGE = 'Hi "you" \\ back\\slash, tab\t, line\nbreak, é, 😀 and 𝄞 done'
# ASCII with \uXXXX escapes: the astral characters are surrogate pairs, so cuts can fall between their halves.
ARGUMENTS = json.dumps({"inner_thoughts": THOUGHT, "message": MESSAGE}, ensure_ascii=True)


def anthropic_stream(pieces: list[str]) -> bytes:
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 9}}},
        {"type": "ping"},
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "toolu_1", "name": "send_message", "input": {}},
        },
        *(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}}
            for piece in pieces
        ),
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def responses_stream(pieces: list[str]) -> bytes:
    item = {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "send_message", "arguments": ""}
    response = {"id": "resp_1", "model": "gpt", "status": "in_progress", "output": []}
    done = {"id": "resp_1", "model": "gpt", "status": "completed", "usage": {"input_tokens": 9, "output_tokens": 5}}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": response},
        {"type": "response.output_item.added", "output_index": 0, "item": item},
        *(
            {"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_1", "delta": piece}
            for piece in pieces
        ),
        {"type": "response.output_item.done", "output_index": 0, "item": {**item, "arguments": ARGUMENTS}},
        {"type": "response.completed", "response": done},
    ]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


STREAMS = {"anthropic": anthropic_stream, "responses": responses_stream}


def assert_message_only(doors: Doors) -> None:
    assert doors.chat.content == MESSAGE and doors.chat.calls == [] and doors.chat.finish == ["stop"]
    assert responses_door.deltas(doors.responses_events) == MESSAGE
    assert responses_door.calls_of(doors.responses) == []
    assert doors.anthropic.joined("text") == MESSAGE and doors.anthropic.joined("tool_use") == ""
    for body in doors.bytes.values():
        assert b"PRIVATE-PLAN" not in body and b"inner_thoughts" not in body
    assert not any(isinstance(e, ReasoningDelta) for e in doors.events)


@pytest.mark.parametrize("wire", sorted(STREAMS))
def test_send_message_cut_at_every_point_is_the_message_in_every_door(wire: str) -> None:
    for cut in range(len(ARGUMENTS) + 1):
        assert_message_only(through_doors([STREAMS[wire]([ARGUMENTS[:cut], ARGUMENTS[cut:]])], AGENT, wire))


@pytest.mark.parametrize("wire", sorted(STREAMS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_send_message_under_any_partition_is_the_message_in_every_door(wire: str, data: st.DataObject) -> None:
    body = STREAMS[wire](data.draw(splits(ARGUMENTS)))
    assert_message_only(through_doors(data.draw(partitions(body)), AGENT, wire))


@pytest.mark.parametrize("wire", sorted(STREAMS))
def test_exposed_inner_thoughts_are_reasoning_not_text(wire: str) -> None:
    doors = through_doors([STREAMS[wire]([ARGUMENTS])], options_of(reasoning="expose"), wire)
    assert doors.chat.content == MESSAGE and doors.chat.reasoning == THOUGHT
    assert doors.anthropic.joined("thinking") == THOUGHT


def test_a_client_tool_call_behind_a_wire_loses_the_injected_argument() -> None:
    arguments = json.dumps({"inner_thoughts": THOUGHT, "city": "Paris"})
    body = anthropic_stream([arguments]).replace(b'"send_message"', b'"get_weather"')
    doors = through_doors([body], AGENT, "anthropic")
    assert doors.chat.calls == [("toolu_1", "get_weather", {"city": "Paris"})] and doors.chat.finish == ["tool_calls"]
    assert json.loads(doors.anthropic.joined("tool_use")) == {"city": "Paris"}
    assert b"PRIVATE-PLAN" not in b"".join(doors.bytes.values())


# Ends and failures.


@dataclass
class Run:
    translator: StreamTranslator
    events: list[Event]

    @property
    def error(self) -> GatewayError:
        assert isinstance(self.events[-1], Error), self.events[-1]
        return self.events[-1].error

    @property
    def finishes(self) -> list[Any]:
        return [event.reason for event in self.events if isinstance(event, Finish)]


def run_events(wire: str, events: list[dict[str, Any]]) -> Run:
    translator = StreamTranslator(RewriteOptions.plain(), "up", wire=WIRES[wire].reader("up", 1))
    body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
    return Run(translator, translator.feed(body) + translator.end())


START = {"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 1}}}
TEXT_BLOCK = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
TEXT = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
OVERLOADED = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}


def test_an_overload_before_any_content_is_retried() -> None:
    run = run_events("anthropic", [START, {"type": "ping"}, OVERLOADED])
    error = run.error
    assert run.translator.phase is StreamPhase.FAILED and run.translator.chunks == 0
    assert error.retryable and error.status == 529 and "Overloaded" in error.message
    assert error.upstream == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "param": None, "code": "overloaded_error"}
    }


def test_an_overload_after_content_ends_the_stream_in_an_error_not_retried() -> None:
    error = run_events("anthropic", [START, TEXT_BLOCK, TEXT, OVERLOADED]).error
    assert not error.retryable and error.kind is ErrorKind.UPSTREAM_ERROR


def test_a_stream_cut_before_message_stop_is_never_whole() -> None:
    finish = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}}
    assert run_events("anthropic", [START, TEXT_BLOCK, TEXT]).error.kind is ErrorKind.INCOMPLETE
    ended = run_events("anthropic", [START, TEXT_BLOCK, TEXT, finish, {"type": "message_stop"}])
    assert ended.translator.phase is StreamPhase.ENDED


@pytest.mark.parametrize(
    ("reason", "finish"), [("max_tokens", "length"), ("end_turn", "stop"), ("refusal", "content_filter")]
)
def test_anthropic_stop_reasons_map_to_finish_reasons(reason: str, finish: str) -> None:
    delta = {"type": "message_delta", "delta": {"stop_reason": reason}, "usage": {"output_tokens": 1}}
    run = run_events("anthropic", [START, TEXT_BLOCK, TEXT, delta, {"type": "message_stop"}])
    assert run.translator.phase is StreamPhase.ENDED and run.finishes == [finish]


def test_anthropic_usage_counts_cache_reads_and_writes_in_the_prompt() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "model": "c",
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 20},
        },
    }
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}}
    translator = run_events("anthropic", [start, TEXT_BLOCK, TEXT, delta, {"type": "message_stop"}]).translator
    assert translator.usage is not None
    assert (translator.usage.prompt, translator.usage.completion) == (130, 7)
    assert (translator.usage.cached, translator.usage.cache_write) == (100, 20)


RESPONSE = {"id": "r", "model": "g", "status": "in_progress"}
OUTPUT = {"type": "response.output_text.delta", "output_index": 0, "delta": "Hello"}


def test_a_responses_error_event_before_output_is_retried_after_output_is_not() -> None:
    error = {"type": "error", "code": "server_error", "message": "boom"}
    first = run_events("responses", [{"type": "response.created", "response": RESPONSE}, error]).error
    assert first.retryable and "boom" in first.message
    late = run_events("responses", [{"type": "response.created", "response": RESPONSE}, OUTPUT, error]).error
    assert not late.retryable


def test_a_failed_response_is_an_error_and_an_incomplete_one_a_length_finish() -> None:
    failed = {
        "type": "response.failed",
        "response": {**RESPONSE, "status": "failed", "error": {"code": "x", "message": "no"}},
    }
    assert "no" in run_events("responses", [OUTPUT, failed]).error.message
    incomplete = {
        "type": "response.incomplete",
        "response": {**RESPONSE, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}},
    }
    run = run_events("responses", [OUTPUT, incomplete])
    assert run.translator.phase is StreamPhase.ENDED and run.finishes == ["length"]


# Whole answers.


def test_a_whole_anthropic_message_is_replayed_through_the_rewrite() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "claude",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "s"},
            {
                "type": "tool_use",
                "id": "t1",
                "name": "send_message",
                "input": {"inner_thoughts": THOUGHT, "message": MESSAGE},
            },
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 5, "output_tokens": 6, "cache_read_input_tokens": 2},
    }
    completion = anthropic_completion(message, "up", 1)
    folded = fold_completion(completion, replay_completion(completion, AGENT))
    assert folded["choices"][0]["message"]["content"] == MESSAGE
    assert folded["choices"][0]["finish_reason"] == "stop"
    assert THOUGHT not in json.dumps(folded) and "hmm" not in json.dumps(folded)
    assert completion["usage"]["prompt_tokens"] == 7


def test_a_whole_responses_answer_is_replayed_through_the_rewrite() -> None:
    response = {
        "id": "resp_1",
        "model": "gpt",
        "status": "completed",
        "output": [
            {"type": "reasoning", "summary": [{"type": "summary_text", "text": "thinking"}]},
            {"type": "function_call", "call_id": "c1", "name": "send_message", "arguments": ARGUMENTS},
        ],
        "usage": {"input_tokens": 5, "output_tokens": 6, "output_tokens_details": {"reasoning_tokens": 4}},
    }
    completion = responses_completion(response, "up", 1)
    folded = fold_completion(completion, replay_completion(completion, AGENT))
    assert folded["choices"][0]["message"]["content"] == MESSAGE
    assert THOUGHT not in json.dumps(folded)
    assert completion["usage"]["completion_tokens_details"]["reasoning_tokens"] == 4
    incomplete = responses_completion(
        {**response, "status": "incomplete", "incomplete_details": {"reason": "max_output_tokens"}}, "up", 1
    )
    assert incomplete["choices"][0]["finish_reason"] == "length"


# Requests.

CHAT = {
    "model": "m",
    "stream": True,
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "In Paris."},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "Sunny"},
        {"role": "user", "content": "Thanks"},
    ],
    "tools": [
        {"type": "function", "function": {"name": "get_weather", "description": "d", "parameters": {"type": "object"}}}
    ],
    "tool_choice": "required",
    "temperature": 0.5,
    "stop": "END",
}


def test_the_anthropic_request_follows_the_messages_api_rules() -> None:
    request = anthropic_request(CHAT, stream=True, max_tokens=4096, summaries=False)
    assert request["system"] == "Be brief."
    assert request["max_tokens"] == 4096 and request["stream"] is True
    assert request["tools"] == [{"name": "get_weather", "description": "d", "input_schema": {"type": "object"}}]
    assert request["tool_choice"] == {"type": "any"} and request["stop_sequences"] == ["END"]
    roles = [turn["role"] for turn in request["messages"]]
    assert roles == ["user", "assistant", "user"]  # the two user turns merged, the tool result into the last one
    assert request["messages"][0]["content"][2] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"},
    }
    assert request["messages"][1]["content"] == [
        {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}}
    ]
    assert request["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "c1", "content": "Sunny"},
        {"type": "text", "text": "Thanks"},
    ]
    assert (
        anthropic_request({**CHAT, "max_completion_tokens": 77}, stream=False, max_tokens=4096, summaries=False)[
            "max_tokens"
        ]
        == 77
    )


def test_the_responses_request_never_stores_and_takes_the_system_text_as_instructions() -> None:
    request = responses_request({**CHAT, "max_completion_tokens": 50}, stream=True, max_tokens=0, summaries=True)
    assert request["store"] is False and request["instructions"] == "Be brief." and request["stream"] is True
    assert request["max_output_tokens"] == 50 and request["reasoning"] == {"summary": "auto"}
    assert request["tools"] == [
        {"type": "function", "name": "get_weather", "description": "d", "parameters": {"type": "object"}}
    ]
    assert request["tool_choice"] == "required"
    kinds = [item["type"] for item in request["input"]]
    assert kinds == ["message", "message", "function_call", "function_call_output", "message"]
    assert request["input"][2] == {
        "type": "function_call",
        "call_id": "c1",
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert request["input"][3] == {"type": "function_call_output", "call_id": "c1", "output": "Sunny"}
    assert "stop" not in request and "messages" not in request


@pytest.mark.parametrize("wire", ["anthropic", "responses"])
def test_the_legacy_functions_api_is_a_400_naming_the_field(wire: str) -> None:
    with pytest.raises(GatewayError) as raised:
        WIRES[wire].request({"messages": [], "functions": []}, stream=False, max_tokens=1, summaries=False)
    assert raised.value.param == "functions" and raised.value.status == 400


def meaning(events: list[Event]) -> list[object]:
    """What events tell a client: a fragment's chunk and choice are its call's first fragment's, whose delta
    the events after them replace."""
    said: list[object] = []
    for event in events:
        if isinstance(event, ChunkStart):
            said.append({k: v for k, v in event.fields.items() if k != "choices"})
        elif isinstance(event, ChoiceStart) and event.fields is not None:
            said.append((event.choice, {k: v for k, v in event.fields.items() if k != "delta"}, event.first))
        else:
            said.append(event)
    return said


@pytest.mark.parametrize("wire", sorted(STREAMS))
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_the_fragment_shortcut_gives_what_the_general_path_gives(wire: str, data: st.DataObject) -> None:
    """Argument fragments go to ``feed_fragment``; with the shortcuts off every chunk is fed whole: same events."""
    body = STREAMS[wire](data.draw(splits(ARGUMENTS)))
    reads = data.draw(partitions(body))
    options = data.draw(st.sampled_from([AGENT, options_of(reasoning="expose"), RewriteOptions.plain()]))
    runs = []
    for shortcuts in (Shortcuts.ON, Shortcuts.OFF):
        translator = StreamTranslator(options, "up", shortcuts=shortcuts, wire=WIRES[wire].reader("up", 1))
        runs.append([event for read in reads for event in translator.feed(read)] + translator.end())
    fast, general = runs
    assert meaning(fast) == meaning(general)
    # A chat client's chunks are the fragments' frames around their new deltas: the encoder checks them against
    # the general encoding (and raises where a client could tell), under the client's model name too.
    for model in (None, "client-model"):
        ChatStreamEncoder(model=model, shortcuts=Shortcuts.CHECK).encode(fast)


# Anthropic's thinking signatures and redacted thinking: kept for an Anthropic client, block by block.

SIGNED_BLOCKS = [('First, the sum: 2+2 is 4 "quoted" é 😀.', "c2lnLW9uZQ=="), ("Then check it.", "c2lnLXR3bw==")]


def signed_stream(pieces: int) -> bytes:
    """Two signed thinking blocks with a redacted one between them, then the answer, each text in ``pieces``."""
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "msg_1", "model": "claude", "usage": {"input_tokens": 9}}}
    ]
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    for position, (thinking, signature) in enumerate(SIGNED_BLOCKS):
        deltas = [{"type": "thinking_delta", "thinking": piece} for piece in split_evenly(thinking, pieces)]
        blocks.append(({"type": "thinking", "thinking": "", "signature": ""}, [*deltas, signature_delta(signature)]))
        if position == 0:
            blocks.append(({"type": "redacted_thinking", "data": "EncryptedBlob=="}, []))
    text = [{"type": "text_delta", "text": piece} for piece in split_evenly("4.", pieces)]
    blocks.append(({"type": "text", "text": ""}, text))
    for index, (block, deltas) in enumerate(blocks):
        events.append({"type": "content_block_start", "index": index, "content_block": block})
        events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
        events.append({"type": "content_block_stop", "index": index})
    events += [
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]
    return b"".join(b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events)


def signature_delta(signature: str) -> dict[str, Any]:
    return {"type": "signature_delta", "signature": signature}


EXPECTED_BLOCKS = [
    ("thinking", SIGNED_BLOCKS[0][0], SIGNED_BLOCKS[0][1]),
    ("redacted_thinking", "", None),
    ("thinking", SIGNED_BLOCKS[1][0], SIGNED_BLOCKS[1][1]),
    ("text", "4.", None),
]


@settings(max_examples=60, deadline=None)
@given(pieces=st.integers(min_value=1, max_value=12), data=st.data())
def test_signed_thinking_reaches_an_anthropic_client_block_by_block_under_any_split(
    pieces: int, data: st.DataObject
) -> None:
    """Each thinking block keeps its exact text and its own signature, a redacted block its data, however
    the provider's bytes are cut: what Anthropic checks when the client sends the blocks back."""
    reads = data.draw(partitions(signed_stream(pieces)))
    encoder = AnthropicStreamEncoder(anthropic_door.STREAMING, created=0, shortcuts=Shortcuts.CHECK)
    body, _ = translate(reads, options_of(reasoning="expose"), encoder, wire="anthropic")
    stream = anthropic_door.read(body)
    assert [(b.type, b.text, b.signature) for b in stream.blocks] == EXPECTED_BLOCKS
    assert stream.blocks[1].start == {"type": "redacted_thinking", "data": "EncryptedBlob=="}


def test_seals_never_leave_a_route_that_hides_reasoning_nor_reach_a_chat_or_responses_client() -> None:
    hidden = through_doors([signed_stream(5)], AGENT, "anthropic")
    exposed = through_doors([signed_stream(5)], options_of(reasoning="expose"), "anthropic")
    for body in [*hidden.bytes.values(), exposed.bytes["chat"], exposed.bytes["responses"]]:
        assert b"c2lnLW9uZQ" not in body and b"EncryptedBlob" not in body
    assert [(b.type, b.text) for b in hidden.anthropic.blocks] == [("text", "4.")]
    assert exposed.chat.reasoning == SIGNED_BLOCKS[0][0] + SIGNED_BLOCKS[1][0]
    # A Responses client reads each block as a reasoning item; the encrypted one has no summary, as OpenAI's.
    summaries = [item["summary"] for item in exposed.responses["output"] if item["type"] == "reasoning"]
    summary = [[{"type": "summary_text", "text": text}] for text, _ in SIGNED_BLOCKS]
    assert summaries == [summary[0], [], summary[1]]


SIGNED_CONTENT = [
    {"type": "thinking", "thinking": SIGNED_BLOCKS[0][0], "signature": SIGNED_BLOCKS[0][1]},
    {"type": "redacted_thinking", "data": "EncryptedBlob=="},
    {"type": "thinking", "thinking": SIGNED_BLOCKS[1][0], "signature": SIGNED_BLOCKS[1][1]},
    {"type": "text", "text": "4."},
]


def test_a_whole_anthropic_message_keeps_its_signed_blocks_for_an_anthropic_client() -> None:
    message = {
        "id": "msg_1",
        "type": "message",
        "model": "claude",
        "content": SIGNED_CONTENT,
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 5, "output_tokens": 6},
    }
    completion = anthropic_completion(message, "up", 1)
    events = replay_completion(completion, options_of(reasoning="expose"))
    built = orjson.loads(anthropic_build(anthropic_door.request_of(), events, created=0))
    assert built["content"] == SIGNED_CONTENT
    hidden = orjson.loads(anthropic_build(anthropic_door.request_of(), replay_completion(completion, AGENT), created=0))
    assert hidden["content"] == [{"type": "text", "text": "4."}]


def test_sealed_reasoning_goes_back_to_an_anthropic_provider_first_in_its_turn() -> None:
    """What the Messages door makes of a client's signed blocks (``reasoning_details``) is thinking blocks again,
    before the turn's text and calls; unsigned reasoning Anthropic would refuse, so it is not sent."""
    turn = {
        "role": "assistant",
        "content": "4.",
        "reasoning_content": "ignored: the details say it block by block",
        "reasoning_details": [
            {"type": "reasoning.text", "text": SIGNED_BLOCKS[0][0], "signature": SIGNED_BLOCKS[0][1]},
            {"type": "reasoning.encrypted", "data": "EncryptedBlob=="},
            {"type": "reasoning.text", "text": "unsigned: not sent"},
        ],
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    chat = {"model": "m", "messages": [{"role": "user", "content": "2+2?"}, turn]}
    request = anthropic_request(chat, stream=False, max_tokens=4096)
    assert request["messages"][1]["content"] == [
        {"type": "thinking", "thinking": SIGNED_BLOCKS[0][0], "signature": SIGNED_BLOCKS[0][1]},
        {"type": "redacted_thinking", "data": "EncryptedBlob=="},
        {"type": "text", "text": "4."},
        {"type": "tool_use", "id": "c1", "name": "f", "input": {}},
    ]
