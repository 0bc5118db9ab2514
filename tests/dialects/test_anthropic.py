"""The Anthropic Messages front door without sockets.

Requests: every translation rule and every error. Answers: upstream chat
streams (generated agent streams, plain content, client tool calls, exposed
reasoning, the recorded chat streams) through the stream translator and the
Anthropic encoder; every event the encoder emits is validated with the
anthropic SDK's own typed models, its order against Anthropic's grammar and
the recorded real Messages streams, and the bytes are read back by the SDK's
own stream accumulation (served through an ``httpx2.MockTransport``).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import orjson
import pytest
from anthropic.types import Message
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import (
    ChoiceStart,
    Done,
    Error,
    Event,
    Finish,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
)
from gateway.core.options import Reasoning, RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.rewriter import replay_completion
from gateway.core.translator import StreamTranslator
from gateway.core.usage import estimate_prompt
from gateway.dialects import Dialect
from gateway.dialects import anthropic as anthropic_dialect
from gateway.dialects.anthropic import (
    AnthropicStreamEncoder,
    MessagesRequest,
    build,
    error_status_and_body,
    parse_count_tokens_request,
    parse_request,
    to_chat,
)
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.anthropic import (
    ERROR_TYPES,
    STREAMING,
    Stream,
    body_of,
    parse_sse,
    read,
    request_of,
    structure,
    validated,
)
from tests.helpers.paths import AGENT_REQUESTS, FIXTURES
from tests.helpers.streams import (
    agent_stream,
    call,
    choice,
    chunk,
    options_of,
    recorded_body,
    recorded_files,
    split_evenly,
    translate,
)

DIALECT: Dialect = anthropic_dialect  # mypy checks the module against the front doors' contract
HIDDEN = "αβγδεζηθλμ"  # reasoning is drawn from these letters, visible text never is
INNER = "PRIVATE plan"
# What a whole message's usage (message_start's, a non-streaming body's) has besides the counts, as Anthropic's.
WHOLE: dict[str, Any] = {
    "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    "service_tier": "standard",
    "inference_geo": "not_available",
}

ANTHROPIC_RECORDINGS = sorted((FIXTURES / "anthropic").glob("*.sse"))
CHAT_RECORDINGS = recorded_files() + recorded_files("reasoning")
CLAUDE_CODE_REQUESTS = sorted(AGENT_REQUESTS.glob("claude-code-*.json"))


def chat_of(reasoning: Reasoning = Reasoning.HIDE, reasoning_effort: bool = False, **fields: Any) -> dict[str, Any]:
    return to_chat(request_of(**fields), reasoning=reasoning, reasoning_effort=reasoning_effort)


# Reading what the encoder sends, as a client would.


# Driving the encoder.


def sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + b"data: [DONE]\n\n" if done else body


def run(
    reads: list[bytes], options: RewriteOptions | None = None, request: MessagesRequest = STREAMING
) -> tuple[bytes, list[Event]]:
    """What an Anthropic client receives for these upstream reads, and the events behind it."""
    return translate(
        reads, options or RewriteOptions(), AnthropicStreamEncoder(request, created=0, shortcuts=Shortcuts.CHECK)
    )


def built(request: MessagesRequest, events: list[Event]) -> dict[str, Any]:
    """The non-streaming body ``build`` answers, decoded."""
    body = orjson.loads(build(request, events, created=0))
    assert isinstance(body, dict)
    return body


def encode_events(events: list[Event], request: MessagesRequest = STREAMING) -> bytes:
    return AnthropicStreamEncoder(request, created=0, shortcuts=Shortcuts.CHECK).encode(events)


def sdk_client(respond: Callable[[httpx2.Request], httpx2.Response]) -> anthropic.Anthropic:
    """The real SDK, its HTTP answered in process by ``respond``."""
    return anthropic.Anthropic(
        api_key="gateway-key",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(respond)),
    )


def serving(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> anthropic.Anthropic:
    return sdk_client(lambda _: httpx2.Response(status, headers={"content-type": content_type}, content=body))


def sdk_read(client_bytes: bytes) -> tuple[str, Message]:
    """The SDK's ``messages.stream``: its ``text_stream`` joined, and ``get_final_message()``."""
    client = serving(client_bytes)
    with client.messages.stream(
        model="claude-test", max_tokens=256, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        return text, stream.get_final_message()


@st.composite
def partitions(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(body) - 1, 1)), max_size=30)))
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def pieces(draw: st.DrawFn, text: str) -> list[str]:
    """``text`` cut at any set of points (every split of the upstream arguments is one of these)."""
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(text) - 1, 1)), max_size=12)))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def agent_document(message: str, inner: str = INNER, **more: Any) -> str:
    return json.dumps({"inner_thoughts": inner, "message": message, **more})


# 1. The request: each translation rule.


def test_a_minimal_request_becomes_a_chat_request_with_the_clients_model() -> None:
    assert chat_of() == {
        "model": "claude-test",
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": False,
        "max_completion_tokens": 256,
    }


def test_a_stream_asks_the_upstream_for_usage() -> None:
    chat = chat_of(stream=True)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}
    assert STREAMING.stream and STREAMING.model == "claude-test"


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("Be brief.", "Be brief."),
        (
            [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Be kind.", "cache_control": {"type": "ephemeral"}},
            ],
            "Be brief.\n\nBe kind.",
        ),
    ],
)
def test_system_leads_as_one_system_message(system: Any, expected: str) -> None:
    assert chat_of(system=system)["messages"][0] == {"role": "system", "content": expected}


def test_sampling_fields_map_and_top_k_is_dropped_with_a_debug_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway.requests"):
        chat = chat_of(
            stop_sequences=["\n\nHuman:", "END"],
            temperature=0.2,
            top_p=0.9,
            top_k=40,
            metadata={"user_id": "user-7"},
            service_tier="auto",
        )
    assert chat["stop"] == ["\n\nHuman:", "END"] and chat["temperature"] == 0.2 and chat["top_p"] == 0.9
    assert chat["user"] == "user-7"
    assert "top_k" not in chat and "service_tier" not in chat
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert "service_tier" in line and "top_k" in line and "Hi" not in line


def test_the_debug_line_names_fields_never_content(caplog: pytest.LogCaptureFixture) -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "SECRET question", "cache_control": {"type": "ephemeral"}}],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "SECRET thought", "signature": "s"},
                {"type": "text", "text": "A"},
            ],
        },
        {"role": "user", "content": "Q2"},
    ]
    with caplog.at_level(logging.DEBUG, logger="gateway.requests"):
        chat_of(messages=messages)
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert "cache_control" in line and "reasoning of earlier turns" in line and "SECRET" not in line


def test_user_blocks_text_and_images() -> None:
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
            ],
        }
    ]
    assert chat_of(messages=messages)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is this?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
            ],
        }
    ]


def test_a_users_text_blocks_are_one_message_with_blank_lines_between() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "<reminder>x</reminder>"}, {"type": "text", "text": "Hi"}],
        }
    ]
    assert chat_of(messages=messages)["messages"] == [{"role": "user", "content": "<reminder>x</reminder>\n\nHi"}]


TOOL_ROUND_TRIP = [
    {"role": "user", "content": "Weather in Paris and Oslo?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            {
                "type": "tool_use",
                "id": "call_2",
                "name": "get_weather",
                "input": {"city": "Oslo", "units": {"temp": "C"}},
            },
        ],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {
                "type": "tool_result",
                "tool_use_id": "call_2",
                "content": [{"type": "text", "text": "no data"}, {"type": "text", "text": "retry later"}],
                "is_error": True,
            },
            {"type": "text", "text": "Thanks!"},
        ],
    },
]


def test_tool_use_and_tool_result_become_tool_calls_and_tool_messages() -> None:
    assert chat_of(messages=TOOL_ROUND_TRIP)["messages"][1:] == [
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo","units":{"temp":"C"}}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_2", "content": "Error: no data\n\nretry later"},
        {"role": "user", "content": "Thanks!"},
    ]


def test_tool_results_go_first_even_after_text_and_a_result_alone_adds_no_user_message() -> None:
    messages = [
        *TOOL_ROUND_TRIP[:2],
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Here:"},
                {"type": "tool_result", "tool_use_id": "toolu_1"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "cloudy"},
            ],
        },
    ]
    assert chat_of(messages=messages)["messages"][2:] == [
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        {"role": "tool", "tool_call_id": "call_2", "content": "cloudy"},
        {"role": "user", "content": "Here:"},
    ]
    only_results = [
        *TOOL_ROUND_TRIP[:2],
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "ok"}]},
    ]
    assert chat_of(messages=only_results)["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "ok",
    }


def test_an_assistant_turn_of_only_tool_calls_has_null_content() -> None:
    messages = [
        {"role": "user", "content": "Go"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "run", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}]},
    ]
    assert chat_of(messages=messages)["messages"][1] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "run", "arguments": "{}"}}],
    }


def test_an_answers_text_blocks_are_joined_as_they_came() -> None:
    """The gateway splits one answer's text into blocks only around reasoning or calls, so joining restores it."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}, {"type": "text", "text": "\n\nthere"}]},
        {"role": "user", "content": "Bye"},
    ]
    assert chat_of(messages=messages)["messages"][1] == {"role": "assistant", "content": "Hello\n\nthere"}


THINKING_TURNS = [
    {"role": "user", "content": "2+2?"},
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "Add them.", "signature": ""},
            {"type": "redacted_thinking", "data": "EncryptedBlob"},
            {"type": "text", "text": "4"},
        ],
    },
    {"role": "assistant", "content": [{"type": "thinking", "thinking": "Only a thought.", "signature": "x"}]},
    {"role": "user", "content": "And 3+3?"},
]


def test_thinking_goes_upstream_with_its_seals_only_where_the_route_exposes_reasoning() -> None:
    hidden = chat_of(messages=THINKING_TURNS)["messages"]
    assert hidden == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ]
    assert "EncryptedBlob" not in orjson.dumps(hidden).decode()
    exposed = chat_of(Reasoning.EXPOSE, messages=THINKING_TURNS)["messages"]
    anthropic = "anthropic-claude-v1"
    assert exposed[1:3] == [
        {
            "role": "assistant",
            "content": "4",
            "reasoning_content": "Add them.",
            "reasoning_details": [
                {"type": "reasoning.text", "text": "Add them.", "format": anthropic},
                {"type": "reasoning.encrypted", "data": "EncryptedBlob", "format": anthropic},
            ],
        },
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "Only a thought.",
            "reasoning_details": [
                {"type": "reasoning.text", "text": "Only a thought.", "format": anthropic, "signature": "x"}
            ],
        },
    ]


def test_client_tools_become_function_tools() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    tools = [
        {
            "name": "get_weather",
            "description": "The weather.",
            "input_schema": schema,
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "custom", "name": "noop", "input_schema": {"type": "object"}, "strict": True},
    ]
    assert chat_of(tools=tools)["tools"] == [
        {"type": "function", "function": {"name": "get_weather", "description": "The weather.", "parameters": schema}},
        {"type": "function", "function": {"name": "noop", "parameters": {"type": "object"}, "strict": True}},
    ]


TOOLS = [{"name": "get_weather", "input_schema": {"type": "object"}}]


@pytest.mark.parametrize(
    ("tool_choice", "expected", "parallel"),
    [
        ({"type": "auto"}, "auto", None),
        ({"type": "any"}, "required", None),
        ({"type": "tool", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}, None),
        ({"type": "none"}, "none", None),
        ({"type": "auto", "disable_parallel_tool_use": True}, "auto", False),
        ({"type": "any", "disable_parallel_tool_use": True}, "required", False),
        (
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": False},
            {"type": "function", "function": {"name": "get_weather"}},
            None,
        ),
    ],
)
def test_tool_choice(tool_choice: dict[str, Any], expected: Any, parallel: bool | None) -> None:
    chat = chat_of(tools=TOOLS, tool_choice=tool_choice)
    assert chat["tool_choice"] == expected
    assert chat.get("parallel_tool_calls") == parallel


@pytest.mark.parametrize(
    ("thinking", "effort"),
    [
        ({"type": "enabled", "budget_tokens": 1024}, "low"),
        ({"type": "enabled", "budget_tokens": 8000}, "medium"),
        ({"type": "enabled", "budget_tokens": 32000}, "high"),
        ({"type": "adaptive"}, None),
        ({"type": "disabled"}, None),
    ],
)
def test_thinking_maps_to_reasoning_effort_only_where_the_provider_takes_it(
    thinking: dict[str, Any], effort: str | None
) -> None:
    assert chat_of(thinking=thinking, reasoning_effort=True).get("reasoning_effort") == effort
    assert "reasoning_effort" not in chat_of(thinking=thinking)


def test_a_system_message_among_the_turns_is_a_system_message_where_it_stands() -> None:
    """Claude Code's mid-conversation system messages (beta ``mid-conversation-system``): a string or text blocks."""
    messages = [
        {"role": "user", "content": "Hi"},
        {"role": "system", "content": "Available agent types: general."},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "get_weather", "input": {}}]},
        {"role": "system", "content": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "sunny"}]},
    ]
    chat = chat_of(system="Top.", messages=messages, tools=TOOLS)
    assert [(m["role"], m.get("content")) for m in chat["messages"]] == [
        ("system", "Top."),
        ("user", "Hi"),
        ("system", "Available agent types: general."),
        ("assistant", None),
        ("system", "Be brief."),
        ("tool", "sunny"),
    ]


@pytest.mark.parametrize(
    ("output_config", "thinking", "effort"),
    [
        ({"effort": "low"}, None, "low"),
        ({"effort": "medium"}, {"type": "adaptive"}, "medium"),
        ({"effort": "high"}, {"type": "enabled", "budget_tokens": 1024}, "high"),
        ({"effort": "max"}, None, "high"),
        ({}, {"type": "enabled", "budget_tokens": 1024}, "low"),
    ],
)
def test_output_config_effort_is_the_reasoning_effort_where_the_provider_takes_it(
    output_config: dict[str, Any], thinking: dict[str, Any] | None, effort: str
) -> None:
    fields: dict[str, Any] = {"output_config": output_config} | ({"thinking": thinking} if thinking else {})
    assert chat_of(reasoning_effort=True, **fields)["reasoning_effort"] == effort
    assert "reasoning_effort" not in chat_of(**fields)


def test_an_output_format_is_a_json_schema_response_format_and_other_members_are_dropped() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    config = {"format": {"type": "json_schema", "schema": schema}, "task_budget": {"total": 10}}
    request = request_of(output_config=config)
    assert to_chat(request, reasoning=Reasoning.HIDE, reasoning_effort=False)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema, "strict": True},
    }
    assert request.dropped == {"output_config.task_budget"}


@pytest.mark.parametrize("path", CLAUDE_CODE_REQUESTS, ids=[p.stem for p in CLAUDE_CODE_REQUESTS])
def test_claude_codes_recorded_requests_translate_and_name_what_they_drop(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Claude Code 2.1.197's own requests (``tests/fixtures/agents``): every turn in order, a system message
    among them where it stands, its tools, its effort; ``context_management`` and ``cache_control`` dropped
    and named in the debug line."""
    body = orjson.loads(path.read_bytes())["body"]
    with caplog.at_level(logging.DEBUG, logger="gateway.requests"):
        chat = to_chat(parse_request(orjson.dumps(body)), reasoning=Reasoning.HIDE, reasoning_effort=True)
    turns = [m for m in chat["messages"] if m["role"] != "tool"]
    assert turns[0]["role"] == "system" and turns[0]["content"].startswith("x-anthropic-billing-header")
    assert [m["role"] for m in turns[1:]] == [
        m["role"]
        for m in body["messages"]
        if m["role"] != "user"
        or isinstance(m["content"], str)
        or any(block["type"] != "tool_result" for block in m["content"])
    ]
    for message, sent in zip(
        [m for m in body["messages"] if m["role"] == "system"],
        [m for m in turns[1:] if m["role"] == "system"],
        strict=True,
    ):
        assert sent["content"] == message["content"]
    results = [
        b
        for m in body["messages"]
        if isinstance(m["content"], list)
        for b in m["content"]
        if b["type"] == "tool_result"
    ]
    assert [m["content"] for m in chat["messages"] if m["role"] == "tool"] == [b["content"] for b in results]
    assert [t["function"]["name"] for t in chat["tools"]] == [t["name"] for t in body["tools"]]
    effort = (body.get("output_config") or {}).get("effort") or "high"  # sonnet-4-5: a 31999-token budget
    assert chat["reasoning_effort"] == effort and chat["max_completion_tokens"] == body["max_tokens"]
    [line] = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert "context_management" in line and "cache_control" in line


def test_unknown_fields_of_a_block_are_dropped_but_known_ones_kept() -> None:
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi", "citations": None, "cache_control": {"type": "ephemeral"}}],
        }
    ]
    request = request_of(messages=messages, top_k=3, container="c")
    assert request.dropped == {"citations", "cache_control", "top_k", "container"}
    assert chat_of(messages=messages)["messages"] == [{"role": "user", "content": "Hi"}]


def test_the_sdks_own_request_bodies_parse() -> None:
    """What ``client.messages.create`` really sends (tools, a tool round trip, thinking) parses and translates."""
    seen: list[dict[str, Any]] = []

    def respond(request: httpx2.Request) -> httpx2.Response:
        seen.append(to_chat(parse_request(request.content), reasoning=Reasoning.EXPOSE, reasoning_effort=True))
        return httpx2.Response(
            200, headers={"content-type": "application/json"}, content=build(STREAMING, [], created=0)
        )

    params: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": TOOL_ROUND_TRIP,
        "tools": [{"name": "get_weather", "description": "w", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "stop_sequences": ["END"],
        "metadata": {"user_id": "u1"},
        "extra_body": {"top_k": 5},
    }
    sdk_client(respond).messages.create(**params)
    [chat] = seen
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "tool", "user"]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["reasoning_effort"] == "low" and chat["user"] == "u1" and chat["stop"] == ["END"]


# 1b. Every error of the request side: 400, Anthropic's shape, the field named.


BAD_REQUESTS: dict[str, tuple[bytes, str | None, str]] = {
    "not JSON": (b"{nope", None, "not valid JSON"),
    "not an object": (b"[1]", None, "JSON object"),
    "max_tokens missing": (body_of(max_tokens=None), "max_tokens", "Field required"),
    "max_tokens zero": (body_of(max_tokens=0), "max_tokens", "greater than or equal to 1"),
    "max_tokens a string": (body_of(max_tokens="10"), "max_tokens", "valid integer"),
    "model missing": (body_of(model=None), "model", "Field required"),
    "model empty": (body_of(model=""), "model", "at least 1 character"),
    "no messages": (body_of(messages=[]), "messages", "at least 1 item"),
    "a role chat has but Anthropic not": (
        body_of(messages=[{"role": "tool", "content": "x"}]),
        "messages.0.role",
        "'user', 'assistant' or 'system'",
    ),
    "a system message with an image": (
        body_of(messages=[{"role": "user", "content": "x"}, {"role": "system", "content": [{"type": "image"}]}]),
        "messages.1.content.0.type",
        "'image' block",
    ),
    "an effort Anthropic does not have": (
        body_of(output_config={"effort": "extreme"}),
        "output_config.effort",
        "'low', 'medium', 'high' or 'max'",
    ),
    "an output format other than a JSON schema": (
        body_of(output_config={"format": {"type": "xml"}}),
        "output_config.format.type",
        "'json_schema'",
    ),
    "content a number": (body_of(messages=[{"role": "user", "content": 3}]), "messages.0.content", "string or a list"),
    "content missing": (body_of(messages=[{"role": "user"}]), "messages.0.content", "Field required"),
    "a block not an object": (
        body_of(messages=[{"role": "user", "content": ["hi"]}]),
        "messages.0.content.0",
        "content block",
    ),
    "a block without type": (
        body_of(messages=[{"role": "user", "content": [{"text": "hi"}]}]),
        "messages.0.content.0.type",
        "Field required",
    ),
    "text without text": (
        body_of(messages=[{"role": "user", "content": [{"type": "text"}]}]),
        "messages.0.content.0.text",
        "Field required",
    ),
    "a document": (
        body_of(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "document", "source": {"type": "text", "data": "x", "media_type": "text/plain"}}
                    ],
                }
            ]
        ),
        "messages.0.content.0.type",
        "document blocks are not supported",
    ),
    "a search result": (
        body_of(
            messages=[
                {"role": "user", "content": [{"type": "search_result", "source": "s", "title": "t", "content": []}]}
            ]
        ),
        "messages.0.content.0.type",
        "'search_result' block is not supported",
    ),
    "tool_use from the user": (
        body_of(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]}]),
        "messages.0.content.0.type",
        "'tool_use' block is not supported",
    ),
    "an image from the assistant": (
        body_of(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "image", "source": {"type": "url", "url": "u"}}]},
            ]
        ),
        "messages.1.content.0.type",
        "'image' block is not supported",
    ),
    "an image from the Files API": (
        body_of(
            messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]
        ),
        "messages.0.content.0.source.type",
        "base64 and url",
    ),
    "base64 without media_type": (
        body_of(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "base64", "data": "x"}}]}]),
        "messages.0.content.0.source.media_type",
        "Field required",
    ),
    "tool_use input not an object": (
        body_of(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": "{}"}]},
            ]
        ),
        "messages.1.content.0.input",
        "valid dictionary",
    ),
    "a tool_result that answers nothing": (
        body_of(
            messages=[{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}]
        ),
        "messages.0.content.0.tool_use_id",
        "matches no tool_use block",
    ),
    "a tool_result with an image": (
        body_of(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "n", "input": {}}]},
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": [{"type": "image", "source": {"type": "url", "url": "u"}}],
                        }
                    ],
                },
            ]
        ),
        "messages.2.content.0.content.0.type",
        "images in tool results",
    ),
    "a web search tool": (
        body_of(tools=[{"type": "web_search_20250305", "name": "web_search"}]),
        "tools.0.type",
        "'web_search' (web_search_20250305)",
    ),
    "a bash tool": (
        body_of(tools=[TOOLS[0], {"type": "bash_20250124", "name": "bash"}]),
        "tools.1.type",
        "'bash' (bash_20250124)",
    ),
    "a text editor tool": (
        body_of(tools=[{"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}]),
        "tools.0.type",
        "server tool",
    ),
    "a computer tool": (
        body_of(tools=[{"type": "computer_20250124", "name": "computer", "display_width_px": 1}]),
        "tools.0.type",
        "server tool",
    ),
    "a tool without a schema": (body_of(tools=[{"name": "t"}]), "tools.0.input_schema", "Field required"),
    "MCP servers": (
        body_of(mcp_servers=[{"type": "url", "url": "https://mcp.example", "name": "m"}]),
        "mcp_servers",
        "not supported",
    ),
    "tool_choice of an unknown type": (
        body_of(tools=TOOLS, tool_choice={"type": "some"}),
        "tool_choice.type",
        "'auto', 'any', 'tool' or 'none'",
    ),
    "tool_choice tool without name": (
        body_of(tools=TOOLS, tool_choice={"type": "tool"}),
        "tool_choice.name",
        "Field required",
    ),
    "tool_choice of a tool not given": (
        body_of(tools=TOOLS, tool_choice={"type": "tool", "name": "other"}),
        "tool_choice.name",
        "not one of the tools",
    ),
    "thinking enabled without budget": (
        body_of(thinking={"type": "enabled"}),
        "thinking.budget_tokens",
        "Field required",
    ),
    "temperature a string": (body_of(temperature="0.5"), "temperature", "a number"),
    "temperature a bool": (body_of(temperature=True), "temperature", "a number"),
    "stream not a bool": (body_of(stream="yes"), "stream", "valid boolean"),
    "stop_sequences not strings": (body_of(stop_sequences=[1]), "stop_sequences.0", "valid string"),
    "system a number": (body_of(system=5), "system", "string or a list of text blocks"),
    "system with an image": (
        body_of(system=[{"type": "image", "source": {}}]),
        "system.0.type",
        "'image' block is not supported",
    ),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_every_bad_request_is_a_400_naming_the_field(case: str) -> None:
    body, param, words = BAD_REQUESTS[case]
    with pytest.raises(GatewayError) as caught:
        parse_request(body)
    error = caught.value
    assert error.kind is ErrorKind.INVALID_REQUEST and error.param == param
    assert words in error.message and (param is None or error.message.startswith(param))
    status, payload = error_status_and_body(error)
    assert status == 400
    assert orjson.loads(payload) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": error.message},
    }


def test_the_sdk_raises_bad_request_with_the_message() -> None:
    error = GatewayError(ErrorKind.INVALID_REQUEST, "max_tokens: Field required", param="max_tokens")
    status, payload = error_status_and_body(error)
    client = serving(payload, status, "application/json")
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"},
    }


# 2. Errors: every kind in Anthropic's shape, with the status the SDK maps to its exception.


ERRORS: list[tuple[GatewayError, int, str, type[anthropic.APIStatusError]]] = [
    (GatewayError(ErrorKind.INVALID_REQUEST, "bad"), 400, "invalid_request_error", anthropic.BadRequestError),
    (
        GatewayError(ErrorKind.UNAUTHORIZED, "Invalid or missing API key."),
        401,
        "authentication_error",
        anthropic.AuthenticationError,
    ),
    (GatewayError(ErrorKind.FORBIDDEN, "no"), 403, "permission_error", anthropic.PermissionDeniedError),
    (
        GatewayError(ErrorKind.NOT_FOUND, "The model 'x' does not exist."),
        404,
        "not_found_error",
        anthropic.NotFoundError,
    ),
    (GatewayError(ErrorKind.TOO_LARGE, "too big"), 413, "request_too_large", anthropic.ContentTooLargeError),
    (GatewayError(ErrorKind.RATE_LIMITED, "slow down"), 429, "rate_limit_error", anthropic.RateLimitError),
    (GatewayError(ErrorKind.QUOTA, "out of credit"), 429, "billing_error", anthropic.RateLimitError),
    (GatewayError(ErrorKind.INTERNAL, "oops"), 500, "api_error", anthropic.InternalServerError),
    (GatewayError(ErrorKind.UNREACHABLE, "down"), 502, "api_error", anthropic.InternalServerError),
    (GatewayError(ErrorKind.INCOMPLETE, "cut"), 502, "api_error", anthropic.InternalServerError),
    (GatewayError(ErrorKind.UPSTREAM_ERROR, "said no"), 502, "api_error", anthropic.InternalServerError),
    (GatewayError(ErrorKind.BUSY, "busy"), 503, "overloaded_error", anthropic.ServiceUnavailableError),
    (GatewayError(ErrorKind.UNAVAILABLE, "shutting down"), 503, "overloaded_error", anthropic.ServiceUnavailableError),
    (GatewayError(ErrorKind.TIMEOUT, "slow upstream"), 504, "timeout_error", anthropic.GatewayTimeoutError),
    # An upstream HTTP error keeps its status.
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "context too long", status=400),
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "key rejected", status=401),
        401,
        "authentication_error",
        anthropic.AuthenticationError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "no credit", status=402),
        402,
        "billing_error",
        anthropic.PaymentRequiredError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "teapot", status=418),
        418,
        "invalid_request_error",
        anthropic.APIStatusError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "slow down", status=429),
        429,
        "rate_limit_error",
        anthropic.RateLimitError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "bad gateway", status=502),
        502,
        "api_error",
        anthropic.InternalServerError,
    ),
    (
        GatewayError(ErrorKind.UPSTREAM_STATUS, "overloaded", status=529),
        529,
        "overloaded_error",
        anthropic.OverloadedError,
    ),
]


@pytest.mark.parametrize(
    ("error", "status", "kind", "exception"), ERRORS, ids=[f"{e.kind.name}-{s}" for e, s, _, _ in ERRORS]
)
def test_every_error_in_anthropics_shape_and_the_sdk_exception_it_raises(
    error: GatewayError, status: int, kind: str, exception: type[anthropic.APIStatusError]
) -> None:
    got_status, payload = error_status_and_body(error)
    assert got_status == status
    assert orjson.loads(payload) == {"type": "error", "error": {"type": kind, "message": error.message}}
    client = serving(payload, status, "application/json")
    with pytest.raises(exception) as caught:
        client.messages.create(model="m", max_tokens=1, messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == status and caught.value.body == orjson.loads(payload)
    assert type(caught.value) is exception or exception is anthropic.APIStatusError


def test_every_error_kind_has_an_anthropic_type() -> None:
    for kind in ErrorKind:
        _, payload = error_status_and_body(GatewayError(kind, "x"))
        assert orjson.loads(payload)["error"]["type"] in ERROR_TYPES


# 3. The answer, streamed: order, fields, and what the SDK makes of it.


def test_an_agent_answer_streams_as_one_text_block() -> None:
    usage = {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19}
    body = sse([*agent_stream(split_evenly(agent_document("Hello, world!"), 4)), chunk(usage=usage)])
    client, _ = run([body])
    stream = read(client)
    assert [b.type for b in stream.blocks] == ["text"]
    assert stream.joined("text") == "Hello, world!" and INNER not in client.decode()
    assert stream.start["model"] == "claude-test" and stream.start["id"].startswith("msg_")
    assert (
        stream.start["usage"]
        == {
            "input_tokens": 0,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 0,
            **WHOLE,
        }
        and stream.start["content"] == []
    )
    assert stream.delta == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {
            "input_tokens": 12,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 7,
        },
    }
    text, final = sdk_read(client)
    assert text == "Hello, world!" and final.stop_reason == "end_turn"
    assert final.usage.input_tokens == 12 and final.usage.output_tokens == 7
    assert final.id == stream.start["id"]


def test_text_leaves_in_the_same_write_the_core_releases_it() -> None:
    body = sse(agent_stream(split_evenly(agent_document("One two three four five"), 3)))
    translator = StreamTranslator(RewriteOptions(), "up")
    encoder = AnthropicStreamEncoder(STREAMING, created=0)
    seen = ""
    for event_bytes in [e + b"\n\n" for e in body.split(b"\n\n") if e]:
        produced = translator.feed(event_bytes)
        released = "".join(e.text for e in produced if isinstance(e, TextDelta))
        written = encoder.encode(produced)
        sent = "".join(
            d["delta"]["text"]
            for n, d in parse_sse(written)
            if n == "content_block_delta" and d["delta"]["type"] == "text_delta"
        )
        assert sent == released
        seen += sent
    assert seen == "One two three four five"


def test_plain_content_streams_as_text_on_a_plain_route() -> None:
    body = sse(
        [
            chunk(choice(role="assistant", content="")),
            chunk(choice(content="Hi ")),
            chunk(choice(content="there")),
            chunk(choice(finish="stop")),
        ]
    )
    stream = read(run([body], RewriteOptions.plain())[0])
    assert [b.type for b in stream.blocks] == ["text"] and stream.joined("text") == "Hi there"


def weather_call(document: str, *, size: int = 5, name: str = "get_weather") -> list[dict[str, Any]]:
    return agent_stream(split_evenly(document, size), name=name, call_id="call_w")


def test_a_client_tool_call_streams_its_arguments_without_inner_thoughts() -> None:
    document = json.dumps({"inner_thoughts": INNER, "city": "Paris", "days": [1, 2]})
    client, _ = run([sse(weather_call(document))])
    stream = read(client)
    assert [b.type for b in stream.blocks] == ["tool_use"]
    [tool] = stream.blocks
    assert tool.start == {"type": "tool_use", "id": "call_w", "name": "get_weather", "input": {}}
    assert len(tool.deltas) > 1, "the arguments stream as they arrive"
    assert orjson.loads(tool.text) == {"city": "Paris", "days": [1, 2]}
    assert stream.delta is not None and stream.delta["delta"]["stop_reason"] == "tool_use"
    assert INNER not in client.decode()
    _, final = sdk_read(client)
    assert len(final.content) == 1
    assert [(b.id, b.name, b.input) for b in final.content if b.type == "tool_use"] == [
        ("call_w", "get_weather", {"city": "Paris", "days": [1, 2]})
    ]
    assert final.stop_reason == "tool_use"


@pytest.mark.parametrize("where", ["first", "last"])
def test_inner_thoughts_of_a_client_call_are_a_thinking_block_beside_the_call_when_exposed(where: str) -> None:
    members = (
        {"inner_thoughts": INNER, "city": "Oslo"} if where == "first" else {"city": "Oslo", "inner_thoughts": INNER}
    )
    stream = read(run([sse(weather_call(json.dumps(members), size=3))], options_of(reasoning="expose"))[0])
    expected = ["thinking", "tool_use"] if where == "first" else ["tool_use", "thinking"]
    assert [b.type for b in stream.blocks] == expected
    assert stream.joined("thinking") == INNER and orjson.loads(stream.joined("tool_use")) == {"city": "Oslo"}


def test_exposed_reasoning_is_a_thinking_block_with_a_signature_field() -> None:
    body = sse(agent_stream(split_evenly(agent_document("Done."), 2)))
    client, _ = run([body], options_of(reasoning="expose"))
    stream = read(client)
    assert [b.type for b in stream.blocks] == ["thinking", "text"]
    thinking = stream.blocks[0]
    assert thinking.start == {"type": "thinking", "thinking": "", "signature": ""}
    assert thinking.text == INNER and set(thinking.deltas) == {"thinking_delta"}
    _, final = sdk_read(client)
    assert (
        final.content[0].type == "thinking" and final.content[0].thinking == INNER and final.content[0].signature == ""
    )


def test_provider_reasoning_fields_are_thinking_blocks_when_exposed_and_nothing_when_hidden() -> None:
    chunks = [
        chunk(choice(role="assistant", reasoning_content="Think")),
        chunk(choice(reasoning_content="ing.")),
        chunk(choice(content="Answer")),
        chunk(choice(finish="stop")),
    ]
    exposed = read(run([sse(chunks)], options_of(reasoning="expose"))[0])
    assert [(b.type, b.text) for b in exposed.blocks] == [("thinking", "Thinking."), ("text", "Answer")]
    hidden_bytes = run([sse(chunks)])[0]
    hidden = read(hidden_bytes)
    assert [(b.type, b.text) for b in hidden.blocks] == [("text", "Answer")] and b"Think" not in hidden_bytes


def test_a_message_and_a_client_call_in_one_answer_in_either_order() -> None:
    message = call(0, agent_document("Checking."), id="call_m", name="send_message")
    weather = call(1, '{"inner_thoughts": "x", "city": "Rome"}', id="call_w", name="get_weather")
    for calls, expected in (([message, weather], ["text", "tool_use"]), ([weather, message], ["tool_use", "text"])):
        calls = [{**c, "index": i} for i, c in enumerate(calls)]
        body = sse(
            [chunk(choice(role="assistant", tool_calls=[c])) for c in calls] + [chunk(choice(finish="tool_calls"))]
        )
        client, _ = run([body])
        stream = read(client)
        assert [b.type for b in stream.blocks] == expected
        assert stream.joined("text") == "Checking." and orjson.loads(stream.joined("tool_use")) == {"city": "Rome"}
        assert stream.delta is not None and stream.delta["delta"]["stop_reason"] == "tool_use"
        text, final = sdk_read(client)
        assert text == "Checking." and [b.type for b in final.content] == expected


def test_parallel_client_calls_are_blocks_one_after_the_other() -> None:
    body = sse(
        [
            chunk(choice(role="assistant", tool_calls=[call(0, "", id="c1", name="a")])),
            chunk(choice(tool_calls=[call(0, '{"inner_thoughts": "p", "x": 1}')])),
            chunk(choice(tool_calls=[call(1, "", id="c2", name="b")])),
            chunk(choice(tool_calls=[call(1, '{"y": ')])),
            chunk(choice(tool_calls=[call(1, "2}")])),
            chunk(choice(finish="tool_calls")),
        ]
    )
    client, _ = run([body])
    stream = read(client)
    assert [(b.start["id"], b.start["name"], orjson.loads(b.text)) for b in stream.blocks] == [
        ("c1", "a", {"x": 1}),
        ("c2", "b", {"y": 2}),
    ]
    _, final = sdk_read(client)
    assert [b.input for b in final.content] == [{"x": 1}, {"y": 2}]  # type: ignore[union-attr]


def test_interleaved_arguments_of_parallel_calls_still_reach_their_calls() -> None:
    """No chat upstream is known to interleave calls; should one, the late pieces go to their call's block index."""
    events: list[Event] = [
        ChoiceStart(0, {}, True),
        ToolCallStart(0, 0, "c1", "a"),
        ToolCallDelta(0, 0, '{"x": '),
        ToolCallStart(0, 1, "c2", "b"),
        ToolCallDelta(0, 1, '{"y": 2}'),
        ToolCallDelta(0, 0, "1}"),
        ToolCallEnd(0, 0),
        ToolCallEnd(0, 1),
        Finish(0, "tool_calls"),
        Done(),
    ]
    client = encode_events(events)
    validated(parse_sse(client))
    _, final = sdk_read(client)
    assert [b.input for b in final.content] == [{"x": 1}, {"y": 2}]  # type: ignore[union-attr]
    assert [b["input"] for b in built(STREAMING, events)["content"]] == [{"x": 1}, {"y": 2}]


def test_a_name_arriving_in_pieces_is_whole_in_the_block_start() -> None:
    body = sse(
        [
            chunk(choice(role="assistant", tool_calls=[call(0, None, id="c1", name="se")])),
            chunk(choice(tool_calls=[call(0, None, name="arch")])),
            chunk(choice(tool_calls=[call(0, None, name="_web")])),
            chunk(choice(tool_calls=[call(0, '{"q": "x"}')])),
            chunk(choice(finish="tool_calls")),
        ]
    )
    [tool] = read(run([body])[0]).blocks
    assert tool.start["name"] == "search_web" and orjson.loads(tool.text) == {"q": "x"}


def test_a_call_without_arguments_is_an_empty_input() -> None:
    body = sse(
        [
            chunk(choice(role="assistant", tool_calls=[call(0, "", id="c1", name="now")])),
            chunk(choice(finish="tool_calls")),
        ]
    )
    client, _ = run([body])
    [tool] = read(client).blocks
    assert tool.start["input"] == {} and tool.deltas == []
    assert sdk_read(client)[1].content[0].input == {}  # type: ignore[union-attr]


def test_keep_alives_become_pings() -> None:
    body = b": keep-alive\n\n" + sse(agent_stream(['{"message": "Hi"}'])) + b": keep-alive\n\n"
    client, _ = run([body])
    names = [name for name, _ in parse_sse(client)]
    assert names.count("ping") == 1 and names[0] == "message_start" and names[1] == "ping"
    read(client)


@pytest.mark.parametrize(
    ("finish", "fields", "expected"),
    [
        ("stop", {}, ("end_turn", None)),
        ("length", {}, ("max_tokens", None)),
        ("content_filter", {}, ("refusal", None)),
        ("tool_calls", {}, ("end_turn", None)),  # no client call was made: the rewrite says stop
        ("something_new", {}, ("end_turn", None)),
        ("stop", {"stop_reason": "END"}, ("stop_sequence", "END")),  # vLLM
        ("stop", {"matched_stop": "END"}, ("stop_sequence", "END")),  # SGLang
        ("stop", {"stop_reason": 151645}, ("end_turn", None)),  # a stop token id, not a sequence
        ("stop", {"stop_reason": "OTHER"}, ("end_turn", None)),
    ],
)
def test_stop_reason(finish: str, fields: dict[str, Any], expected: tuple[str, str | None]) -> None:
    request = request_of(stream=True, stop_sequences=["END"])
    body = sse([chunk(choice(role="assistant", content="x")), chunk({**choice(finish=finish), **fields})])
    stream = read(run([body], RewriteOptions.plain(), request)[0])
    assert (
        stream.delta is not None
        and (stream.delta["delta"]["stop_reason"], stream.delta["delta"]["stop_sequence"]) == expected
    )


def test_usage_reports_cached_and_reasoning_tokens_as_anthropic_does() -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 40,
        "total_tokens": 140,
        "prompt_tokens_details": {"cached_tokens": 60},
        "completion_tokens_details": {"reasoning_tokens": 25},
    }
    client, _ = run([sse([*agent_stream(['{"message": "Hi"}']), chunk(usage=usage)])])
    stream = read(client)
    assert stream.delta is not None and stream.delta["usage"] == {
        "input_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 60,
        "output_tokens": 40,
        "output_tokens_details": {"thinking_tokens": 25},
    }
    final = sdk_read(client)[1]
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens, final.usage.output_tokens) == (40, 60, 40)


def test_usage_has_every_field_anthropic_sends_at_the_start_and_the_end_of_a_stream() -> None:
    """Clients (Claude Code, the SDKs) read ``message_start.message.usage`` and ``message_delta.usage``; both carry
    every field the recorded Anthropic streams carry there, the cache writes as 5-minute ones."""
    details = {"cached_tokens": 60, "cache_write_tokens": 30}  # as providers that write prompt caches report them
    usage = {"prompt_tokens": 100, "completion_tokens": 4, "prompt_tokens_details": details}
    client, _ = run([sse([*agent_stream(['{"message": "Hi"}']), chunk(usage=usage)])])
    ours = keys_by_kind(parse_sse(client))
    for path in ANTHROPIC_RECORDINGS:
        recorded = keys_by_kind(parse_sse(path.read_bytes()))
        for kind in ("message_start.message.usage", "message_delta.usage", "message_delta.delta"):
            assert recorded[kind] <= ours[kind], (path.name, kind, recorded[kind] - ours[kind])
    stream = read(client)
    assert stream.delta is not None and stream.delta["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 30,
        "cache_read_input_tokens": 60,
        "output_tokens": 4,
    }
    assert stream.delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    final = sdk_read(client)[1]
    assert (final.usage.cache_creation_input_tokens, final.usage.cache_read_input_tokens) == (30, 60)


def test_a_second_choice_is_ignored() -> None:
    body = sse(
        [
            chunk(choice(0, content="A"), choice(1, content="B")),
            chunk(choice(0, finish="stop"), choice(1, finish="stop")),
        ]
    )
    assert read(run([body], RewriteOptions.plain())[0]).joined("text") == "A"


def test_message_start_comes_from_the_first_encode_and_nothing_after_the_end() -> None:
    encoder = AnthropicStreamEncoder(STREAMING, created=0)
    first = parse_sse(encoder.encode([]))
    assert [name for name, _ in first] == ["message_start"]
    rest = encoder.encode([ChoiceStart(0, {}, True), TextDelta(0, "Hi"), Finish(0, "stop"), Done()])
    assert [name for name, _ in parse_sse(rest)][-1] == "message_stop"
    assert (
        encoder.encode([TextDelta(0, "late")]) == b""
        and encoder.encode([Error(GatewayError(ErrorKind.TIMEOUT, "t"))]) == b""
    )


# 4. The recorded real Messages streams: the tests' parsing accepts them, and the encoder matches them.


@pytest.mark.parametrize("path", ANTHROPIC_RECORDINGS, ids=[p.name for p in ANTHROPIC_RECORDINGS])
def test_each_recording_passes_the_tests_own_reading(path: Path) -> None:
    events = parse_sse(path.read_bytes())
    stream = structure(validated(events))
    assert stream.stopped and stream.blocks
    text, final = sdk_read(path.read_bytes())
    assert text == stream.joined("text") and final.stop_reason == stream.delta["delta"]["stop_reason"]  # type: ignore[index]


def chat_stream_like(recording: list[tuple[str | None, Any]]) -> list[dict[str, Any]]:
    """The chat-completions stream a provider would send for the answer a recorded Messages stream holds."""
    chunks: list[dict[str, Any]] = []
    calls = 0
    block_types: dict[int, str] = {}
    prompt = 0
    for name, data in recording:
        if name == "message_start":
            prompt = data["message"]["usage"]["input_tokens"]
        elif name == "content_block_start":
            block = data["content_block"]
            block_types[data["index"]] = block["type"]
            if block["type"] == "tool_use":
                chunks.append(chunk(choice(tool_calls=[call(calls, "", id=block["id"], name=block["name"])])))
        elif name == "content_block_delta":
            delta = data["delta"]
            if delta["type"] == "text_delta":
                chunks.append(chunk(choice(content=delta["text"])))
            elif delta["type"] == "thinking_delta":
                chunks.append(chunk(choice(reasoning_content=delta["thinking"])))
            elif delta["type"] == "input_json_delta":
                chunks.append(chunk(choice(tool_calls=[call(calls, delta["partial_json"])])))
        elif name == "content_block_stop" and block_types[data["index"]] == "tool_use":
            calls += 1
        elif name == "message_delta":
            finish = {"end_turn": "stop", "tool_use": "tool_calls", "max_tokens": "length"}[
                data["delta"]["stop_reason"]
            ]
            chunks.append(chunk(choice(finish=finish)))
            output = data["usage"]["output_tokens"]
            chunks.append(
                chunk(usage={"prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output})
            )
    return chunks


def keys_by_kind(events: list[tuple[str | None, Any]]) -> dict[str, set[str]]:
    """The field names each kind of event carries, nested objects by path (``message_start.message.usage``)."""
    found: dict[str, set[str]] = {}

    def walk(kind: str, value: Any) -> None:
        if isinstance(value, dict) and kind.rsplit(".", 1)[-1] not in ("input",):
            found.setdefault(kind, set()).update(value)
            for key, item in value.items():
                walk(f"{kind}.{key}", item)

    for name, data in events:
        sub = (data.get("content_block") or data.get("delta") or {}).get("type")
        walk(f"{name}[{sub}]" if name in ("content_block_start", "content_block_delta") else str(name), data)
    return found


@pytest.mark.parametrize("path", ANTHROPIC_RECORDINGS, ids=[p.name for p in ANTHROPIC_RECORDINGS])
def test_the_same_answer_from_a_chat_upstream_gives_the_recordings_blocks_and_fields(path: Path) -> None:
    recording = parse_sse(path.read_bytes())
    recorded = structure(recording)
    client, _ = run([sse(chat_stream_like(recording))], RewriteOptions.plain())
    ours = read(client)
    # The same blocks, in the same order, saying the same thing; the same stop reason and token counts.
    assert [(b.type, b.text) for b in ours.blocks] == [(b.type, b.text) for b in recorded.blocks]
    for mine, theirs in zip(ours.blocks, recorded.blocks, strict=True):
        assert set(mine.deltas) <= set(theirs.deltas)
        assert set(mine.start) == set(theirs.start)
        if mine.type == "tool_use":
            assert (mine.start["id"], mine.start["name"], mine.start["input"]) == (
                theirs.start["id"],
                theirs.start["name"],
                {},
            )
    assert ours.delta is not None and recorded.delta is not None
    assert ours.delta["delta"] == recorded.delta["delta"]
    assert ours.delta["usage"]["output_tokens"] == recorded.delta["usage"]["output_tokens"]
    assert ours.delta["usage"]["input_tokens"] == recorded.start["usage"]["input_tokens"]
    # Every field the encoder sends is one Anthropic sends in that kind of event.
    every_recorded: dict[str, set[str]] = {}
    for other in ANTHROPIC_RECORDINGS:
        for kind, keys in keys_by_kind(parse_sse(other.read_bytes())).items():
            every_recorded.setdefault(kind, set()).update(keys)
    for kind, keys in keys_by_kind(parse_sse(client)).items():
        assert keys <= every_recorded[kind], (kind, keys - every_recorded[kind])


def test_the_recorded_thinking_stream_signs_its_block_and_the_gateway_cannot() -> None:
    """The one difference from the thinking recording: the gateway has no signature to send (it stays ``""``)."""
    path = next(p for p in ANTHROPIC_RECORDINGS if "thinking" in p.name)
    recorded = structure(parse_sse(path.read_bytes()))
    assert recorded.blocks[0].deltas[-1] == "signature_delta"
    ours = read(run([sse(chat_stream_like(parse_sse(path.read_bytes())))], RewriteOptions.plain())[0])
    assert "signature_delta" not in ours.blocks[0].deltas and ours.blocks[0].start["signature"] == ""


# 5. The recorded chat streams, on a plain route and on rewriting ones.


def chat_view(body: bytes, options: RewriteOptions) -> tuple[str, str, list[Any]]:
    """What the chat front door tells a chat client of the same stream: text, reasoning, each call's arguments."""
    translator = StreamTranslator(options, "up")
    chunks = ChatStreamEncoder().chunks(translator.feed(body) + translator.end())
    deltas = [c.get("delta") or {} for out in chunks for c in out.get("choices", []) if c.get("index", 0) == 0]
    calls: dict[int, str] = {}
    for delta in deltas:
        for position, tool_call in enumerate(delta.get("tool_calls") or ()):
            index = tool_call.get("index", position)
            calls[index] = calls.get(index, "") + (tool_call.get("function", {}).get("arguments") or "")
    return (
        "".join(d.get("content") or "" for d in deltas),
        "".join(d.get("reasoning_content") or d.get("reasoning") or "" for d in deltas),
        [orjson.loads(a) if a else {} for _, a in sorted(calls.items())],
    )


ROUTES = {"plain": RewriteOptions.plain(), "hide": RewriteOptions(), "expose": options_of(reasoning="expose")}


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("path", CHAT_RECORDINGS, ids=[p.name for p in CHAT_RECORDINGS])
def test_recorded_chat_streams_give_valid_messages_saying_what_the_chat_door_says(path: Path, route: str) -> None:
    body = recorded_body(path)
    options = ROUTES[route]
    client, events = run([body], options)
    assert isinstance(events[-1], Done)
    stream = read(client)
    text, reasoning, calls = chat_view(body, options)
    assert stream.joined("text") == text
    assert stream.joined("thinking") == reasoning
    assert [orjson.loads(b.text) if b.text else {} for b in stream.blocks if b.type == "tool_use"] == calls
    expected_stop = "tool_use" if calls else "end_turn"
    assert stream.delta is not None and stream.delta["delta"]["stop_reason"] == expected_stop
    sdk_text, final = sdk_read(client)
    assert sdk_text == text and [b.input for b in final.content if b.type == "tool_use"] == calls
    # Split anywhere, the client gets the same message (ids aside).
    cut = len(body) // 2
    again = read(run([body[:cut], body[cut:]], options)[0])
    assert [(b.type, b.text) for b in again.blocks] == [(b.type, b.text) for b in stream.blocks]


# 6. Properties, over generated messages and every split of the upstream arguments.


message_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters=HIDDEN), max_size=60)
reasoning_text = st.text(alphabet=HIDDEN + ' "\\\n', min_size=1, max_size=30)


@settings(max_examples=150)
@given(st.data())
def test_text_deltas_are_the_message_exactly_and_no_reasoning_leaks_under_hide(data: st.DataObject) -> None:
    message, inner = data.draw(message_text), data.draw(reasoning_text)
    route = data.draw(st.sampled_from(["hide", "expose"]))
    document = json.dumps({"inner_thoughts": inner, "message": message}, ensure_ascii=data.draw(st.booleans()))
    body = sse(agent_stream(data.draw(pieces(document))))
    client, events = run(data.draw(partitions(body)), options_of(reasoning=route))
    stream = read(client)
    assert stream.joined("text") == message and stream.stopped
    if route == "hide":
        assert not any(ch in client.decode() for ch in HIDDEN), "hidden reasoning reached the client"
        assert all(b.type == "text" for b in stream.blocks)
    else:
        assert stream.joined("thinking") == inner
    body_message = built(STREAMING, events)
    assert "".join(b["text"] for b in body_message["content"] if b["type"] == "text") == message


def test_every_single_split_of_an_agent_stream_gives_the_message() -> None:
    document = agent_document('Hi "you" \\ é 😀\nbye')
    for cut in range(1, len(document)):
        body = sse(agent_stream([document[:cut], document[cut:]]))
        assert read(run([body])[0]).joined("text") == 'Hi "you" \\ é 😀\nbye', f"split at {cut}"


visible_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters=HIDDEN), max_size=8)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | visible_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(visible_text, inner, max_size=3),
    max_leaves=8,
)
tool_arguments = st.dictionaries(visible_text.filter(lambda key: key != "inner_thoughts"), json_values, max_size=4)


@settings(max_examples=120)
@given(st.data())
def test_partial_json_of_a_client_call_is_its_arguments_without_inner_thoughts(data: st.DataObject) -> None:
    arguments, inner = data.draw(tool_arguments), data.draw(reasoning_text)
    members = list(arguments.items())
    members.insert(data.draw(st.integers(0, len(members))), ("inner_thoughts", inner))
    document = json.dumps(dict(members), ensure_ascii=data.draw(st.booleans()))
    route = data.draw(st.sampled_from(["hide", "expose"]))
    body = sse(agent_stream(data.draw(pieces(document)), name="get_weather", call_id="call_w"))
    client, events = run(data.draw(partitions(body)), options_of(reasoning=route))
    stream = read(client)
    [tool] = [b for b in stream.blocks if b.type == "tool_use"]
    assert orjson.loads(tool.text) == arguments
    if route == "hide":
        assert not any(ch in client.decode() for ch in HIDDEN)
    else:
        assert stream.joined("thinking") == inner
    _, final = sdk_read(client)
    assert [b.input for b in final.content if b.type == "tool_use"] == [arguments]
    assert [b["input"] for b in built(STREAMING, events)["content"] if b["type"] == "tool_use"] == [arguments]


def test_every_single_split_of_a_client_calls_arguments() -> None:
    document = json.dumps({"city": 'Zürich "old"', "inner_thoughts": "secret", "n": [1, {"a": None}]})
    for cut in range(1, len(document)):
        body = sse(agent_stream([document[:cut], document[cut:]], name="get_weather"))
        client, _ = run([body])
        [tool] = read(client).blocks
        assert orjson.loads(tool.text) == {"city": 'Zürich "old"', "n": [1, {"a": None}]}, f"split at {cut}"
        assert b"secret" not in client


@settings(max_examples=60)
@given(st.data())
def test_the_non_streaming_message_is_the_one_the_sdk_accumulates_from_the_stream(data: st.DataObject) -> None:
    message = data.draw(message_text)
    arguments = data.draw(tool_arguments)
    expose = data.draw(st.booleans())
    calls = [
        call(0, agent_document(message), id="call_m", name="send_message"),
        call(1, json.dumps({"inner_thoughts": "why", **arguments}), id="call_w", name="get_weather"),
    ]
    if data.draw(st.booleans()):
        calls.reverse()
    calls = [{**c, "index": i} for i, c in enumerate(calls)]
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": calls},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": usage,
    }
    options = options_of(reasoning="expose" if expose else "hide")
    message_body = built(request_of(), replay_completion(completion, options))
    streamed = sse(
        [chunk(choice(role="assistant", tool_calls=[c])) for c in calls]
        + [chunk(choice(finish="tool_calls")), chunk(usage=usage)]
    )
    _, final = sdk_read(run(data.draw(partitions(streamed)), options)[0])
    assert {**Message.model_validate(message_body).model_dump(), "id": None} == {**final.model_dump(), "id": None}
    assert message_body["stop_reason"] == "tool_use" and message_body["usage"] == {
        "input_tokens": 9,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 4,
        **WHOLE,
    }


# 7. Faults: each ends in exactly one error event and never in message_stop.


def good_events() -> list[bytes]:
    return [
        e + b"\n\n"
        for e in sse(agent_stream(split_evenly(agent_document("Hello there, friend."), 4))).split(b"\n\n")
        if e
    ]


FAULTS: dict[str, tuple[Callable[[list[bytes]], list[bytes]], ErrorKind, str]] = {
    "invalid event": (
        lambda good: [*good[:4], b"data: {not json\n\n", *good[4:]],
        ErrorKind.INVALID_RESPONSE,
        "api_error",
    ),
    "missing finish": (lambda good: [*good[:-2], b"data: [DONE]\n\n"], ErrorKind.INCOMPLETE, "api_error"),
    "cut short": (lambda good: good[:-2], ErrorKind.INCOMPLETE, "api_error"),
    "upstream error event": (
        lambda good: [*good[:4], b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n', *good[4:]],
        ErrorKind.UPSTREAM_ERROR,
        "api_error",
    ),
}


def assert_ends_in_one_error(client: bytes, kind: str) -> Stream:
    events = validated(parse_sse(client))
    stream = structure(events)
    assert [name for name, _ in events].count("error") == 1 and events[-1][0] == "error"
    assert not stream.stopped and "message_stop" not in [name for name, _ in events]
    assert stream.error is not None and stream.error["type"] == kind
    return stream


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=25)
@given(data=st.data())
def test_every_upstream_fault_ends_in_exactly_one_error_event(fault: str, data: st.DataObject) -> None:
    make, kind, error_type = FAULTS[fault]
    body = b"".join(make(good_events()))
    client, events = run(data.draw(partitions(body)))
    [error] = [e for e in events if isinstance(e, Error)]
    assert error.error.kind is kind
    stream = assert_ends_in_one_error(client, error_type)
    assert "Hello there, friend.".startswith(stream.joined("text"))
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk_read(client)
    assert caught.value.body == {"type": "error", "error": stream.error}


def test_an_upstream_error_event_keeps_its_message() -> None:
    body = b"".join(FAULTS["upstream error event"][0](good_events()))
    stream = assert_ends_in_one_error(run([body])[0], "api_error")
    assert stream.error is not None and "overloaded" in stream.error["message"]


@pytest.mark.parametrize(
    ("fault", "error_type"),
    [
        (GatewayError(ErrorKind.TIMEOUT, "The upstream provider 'up' timed out mid-stream."), "timeout_error"),
        (GatewayError(ErrorKind.DISCONNECTED, "The upstream connection broke."), "api_error"),
        (GatewayError(ErrorKind.UNAVAILABLE, "The gateway is shutting down."), "overloaded_error"),
    ],
)
def test_a_fault_the_shell_reports_ends_in_exactly_one_error_event(fault: GatewayError, error_type: str) -> None:
    body = sse(agent_stream(split_evenly(agent_document("Hello there, friend."), 4)))
    translator = StreamTranslator(RewriteOptions(), "up")
    encoder = AnthropicStreamEncoder(STREAMING, created=0)
    client = encoder.encode(translator.feed(body[: len(body) // 2]))
    client += encoder.encode(translator.fail(fault))
    client += encoder.encode(translator.end())  # nothing more once the stream has failed
    stream = assert_ends_in_one_error(client, error_type)
    assert stream.error == {"type": error_type, "message": fault.message}


def test_an_error_before_any_content_still_opens_the_message_and_only_fails() -> None:
    translator = StreamTranslator(RewriteOptions(), "up")
    client = AnthropicStreamEncoder(STREAMING, created=0).encode(translator.end())
    assert [name for name, _ in parse_sse(client)] == ["message_start", "error"]


def test_build_raises_the_error_of_a_failed_answer() -> None:
    error = GatewayError(ErrorKind.INCOMPLETE, "cut")
    with pytest.raises(GatewayError) as caught:
        build(STREAMING, [ChoiceStart(0, {}, True), TextDelta(0, "Hi"), Error(error)], created=0)
    assert caught.value is error


# 8. The non-streaming answer.


def completion_of(message: dict[str, Any], finish: str = "stop", usage: dict[str, Any] | None = None) -> dict[str, Any]:
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
    }
    if usage is not None:
        completion["usage"] = usage
    return completion


def test_a_non_streaming_agent_answer() -> None:
    message = {
        "content": None,
        "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "send_message", "arguments": agent_document("Hello!")}}
        ],
    }
    usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
    body = built(request_of(), replay_completion(completion_of(message, "tool_calls", usage), RewriteOptions()))
    assert body == {
        "id": body["id"],
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": [{"type": "text", "text": "Hello!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 5,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": 3,
            **WHOLE,
        },
    }
    assert body["id"].startswith("msg_") and len(body["id"]) > 20
    final = serving(orjson.dumps(body), 200, "application/json").messages.create(
        model="claude-test", max_tokens=5, messages=[{"role": "user", "content": "x"}]
    )
    assert final.content[0].text == "Hello!" and final.stop_reason == "end_turn"  # type: ignore[union-attr]


def test_a_non_streaming_answer_with_exposed_reasoning_and_a_client_call() -> None:
    message = {
        "content": None,
        "tool_calls": [
            {
                "id": "c1",
                "type": "function",
                "function": {"name": "send_message", "arguments": agent_document("Let me look.")},
            },
            {
                "id": "c2",
                "type": "function",
                "function": {"name": "lookup", "arguments": '{"inner_thoughts": "need data", "q": "x"}'},
            },
        ],
    }
    options = options_of(reasoning="expose")
    body = built(request_of(), replay_completion(completion_of(message, "tool_calls"), options))
    assert body["content"] == [
        {"type": "thinking", "thinking": INNER, "signature": ""},
        {"type": "text", "text": "Let me look."},
        {"type": "thinking", "thinking": "\n\nneed data", "signature": ""},  # the rewrite sets segments apart
        {"type": "tool_use", "id": "c2", "name": "lookup", "input": {"q": "x"}},
    ]
    assert body["stop_reason"] == "tool_use" and body["usage"] == {
        "input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": 0,
        **WHOLE,
    }
    Message.model_validate(body)


def test_a_non_streaming_cut_answer_is_max_tokens_and_bad_arguments_an_empty_input() -> None:
    message = {
        "content": None,
        "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": '{"a": "unfinis'}}],
    }
    body = built(request_of(), replay_completion(completion_of(message, "length"), RewriteOptions.plain()))
    assert body["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    assert body["stop_reason"] == "max_tokens"


# 9. count_tokens.


def test_count_tokens_takes_the_messages_body_without_max_tokens() -> None:
    request = parse_count_tokens_request(orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}))
    assert request.max_tokens is None and "max_completion_tokens" not in to_chat(
        request, reasoning=Reasoning.HIDE, reasoning_effort=False
    )
    with pytest.raises(GatewayError) as caught:
        parse_count_tokens_request(orjson.dumps({"model": "m", "messages": []}))
    assert caught.value.param == "messages"


def test_count_tokens_estimates_high_from_the_upstream_request() -> None:
    english = "The quick brown fox jumps over the lazy dog. " * 20  # 900 characters, about 200 tokens
    chat = to_chat(
        request_of(messages=[{"role": "user", "content": english}]), reasoning=Reasoning.HIDE, reasoning_effort=False
    )
    estimate = estimate_prompt(chat)
    assert estimate == 4 + 900 // 3 and estimate > len(english) / 4
    with_system = estimate_prompt({**chat, "messages": [{"role": "system", "content": "Be brief."}, *chat["messages"]]})
    assert with_system == estimate + 4 + 3
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    assert estimate_prompt({**chat, "tools": tools}) > estimate
    image = {
        "role": "user",
        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 10_000}}],
    }
    assert estimate_prompt({"messages": [image]}) == 4 + 1600
    cjk = "東京の天気" * 30  # 150 characters, 450 UTF-8 bytes
    assert estimate_prompt({"messages": [{"role": "user", "content": cjk}]}) == 4 + 150


def test_count_tokens_counts_tool_calls_and_results_of_the_history() -> None:
    chat = to_chat(request_of(messages=TOOL_ROUND_TRIP), reasoning=Reasoning.HIDE, reasoning_effort=False)
    bare = estimate_prompt({"messages": [chat["messages"][0]]})
    assert estimate_prompt(chat) > bare + 4 * 4


# Helpers used above are checked against what they check.


def test_the_structure_check_rejects_what_anthropic_never_sends() -> None:
    start = ("message_start", {"type": "message_start", "message": {}})
    block = (
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
    )
    text = (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}},
    )
    stop = ("content_block_stop", {"type": "content_block_stop", "index": 0})
    end = [
        ("message_delta", {"type": "message_delta", "delta": {}, "usage": {}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    structure([start, block, text, stop, *end])
    bad: list[list[tuple[str | None, Any]]] = [
        [block, text, stop, *end],  # no message_start
        [start, block, text, *end],  # a block never stopped
        [start, block, block, text, stop, *end],  # two open blocks
        [start, block, text, stop, end[0]],  # no message_stop
        [start, block, text, stop, *end, ("error", {"type": "error", "error": {}})],  # something after message_stop
        [
            start,
            block,
            ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta"}}),
            stop,
            *end,
        ],
    ]
    for events in bad:
        with pytest.raises(AssertionError):
            structure(events)


def test_the_sdk_models_reject_a_malformed_event() -> None:
    with pytest.raises(ValueError):
        validated(
            [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}})]
        )
    with pytest.raises(AssertionError):
        validated([("content_block_stop", {"type": "content_block_stop", "index": 0, "idx": 1})])


def iter_names(body: bytes) -> Iterator[str | None]:
    return (name for name, _ in parse_sse(body))


def test_events_carry_their_name_line() -> None:
    client, _ = run([sse(agent_stream(['{"message": "Hi"}']))])
    assert all(block.startswith(b"event: ") for block in client.split(b"\n\n") if block)
    assert list(iter_names(client)) == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
