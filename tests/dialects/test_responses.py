"""The Responses front door without sockets: request translation, and upstream chat streams through the core into
Responses events, every one of them parsed by the openai SDK's own types. Real clients against a real gateway
are in ``tests/e2e/test_responses.py``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.responses import Response

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import Event, ReasoningDelta, TextDelta, ToolCallDelta, ToolCallStart
from gateway.core.options import Reasoning, RewriteOptions
from gateway.core.rewriter import replay_completion
from gateway.core.translator import StreamTranslator
from gateway.dialects.responses import (
    ResponsesStreamEncoder,
    error_status_and_body,
    parse_request,
    response_object,
    to_chat,
)
from tests.helpers.paths import AGENT_REQUESTS
from tests.helpers.responses import (
    HIDDEN,
    RESPONSES,
    TERMINAL,
    USAGE,
    calls_of,
    check_protocol,
    completion_of,
    deltas,
    parse_sse,
    reasoning_of,
    request_of,
    run,
    sdk_checked,
    strip_ids,
)
from tests.helpers.streams import (
    agent_stream,
    call,
    choice,
    chunk,
    options_of,
    partitions,
    recorded_body,
    recorded_files,
    rewrite_completion,
    split_evenly,
    sse,
)


def chat_of(route: Reasoning = Reasoning.HIDE, **body: Any) -> dict[str, Any]:
    """The chat request for a Responses body, on a route that hides (or exposes) reasoning."""
    return to_chat(request_of(**body), reasoning=route, reasoning_effort=True)


def core_answer(events: list[Event]) -> tuple[str, str, list[tuple[str, str, Any]]]:
    """What the core released for choice 0, whatever the dialect: text, reasoning, client calls."""
    text = "".join(e.text for e in events if isinstance(e, TextDelta) and e.choice == 0)
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta) and e.choice == 0)
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallStart) and e.choice == 0:
            calls[e.call] = [e.id, e.name, ""]
        elif isinstance(e, ToolCallDelta) and e.choice == 0:
            calls[e.call][1] += e.name
            calls[e.call][2] += e.arguments
    return text, reasoning, [(i, n, json.loads(a) if a else None) for i, n, a in (calls[k] for k in sorted(calls))]


# The request: every translation rule.


def test_a_string_input_is_one_user_message_after_the_instructions() -> None:
    chat = chat_of(instructions="Be brief.", input="Hi there")
    assert chat == {
        "model": "assistant",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}],
        "stream": False,
    }


def test_a_stream_asks_upstream_for_usage() -> None:
    chat = chat_of(stream=True, stream_options={"include_obfuscation": False})
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_message_items_with_every_role_and_content_part() -> None:
    chat = chat_of(
        input=[
            {"role": "developer", "content": "Rules."},
            {"type": "message", "role": "system", "content": [{"type": "input_text", "text": "More rules."}]},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is "},
                    {"type": "input_text", "text": "this?"},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "And these?"},
                    {"type": "input_image", "image_url": "https://example.com/a.png", "detail": "low"},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "id": "msg_1",
                "status": "completed",
                "content": [
                    {"type": "output_text", "text": "A cat. ", "annotations": [], "logprobs": []},
                    {"type": "refusal", "refusal": "I won't say more."},
                ],
            },
        ]
    )
    assert chat["messages"] == [
        {"role": "system", "content": "Rules."},
        {"role": "system", "content": "More rules."},
        {"role": "user", "content": "What is this?"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "And these?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
            ],
        },
        {"role": "assistant", "content": "A cat. I won't say more."},
    ]


def test_a_tool_round_trip_becomes_tool_calls_and_tool_messages() -> None:
    """Items as the SDKs send a previous answer back: a message and parallel calls make one assistant turn."""
    chat = chat_of(
        input=[
            {"role": "user", "content": "Weather in Oslo and Rome?"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
            {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_a",
                "name": "weather",
                "arguments": '{"c":"Oslo"}',
            },
            {
                "type": "function_call",
                "call_id": "call_b",
                "name": "weather",
                "arguments": '{"c":"Rome"}',
                "status": "completed",
            },
            {"type": "function_call_output", "call_id": "call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "call_b", "output": [{"type": "input_text", "text": "rain"}]},
            {"type": "function_call", "call_id": "call_c", "name": "weather", "arguments": "{}"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "\n\nDone."}]},
            {"type": "function_call_output", "call_id": "call_c", "output": "?"},
        ]
    )
    assert chat["messages"] == [
        {"role": "user", "content": "Weather in Oslo and Rome?"},
        {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "weather", "arguments": '{"c":"Oslo"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "weather", "arguments": '{"c":"Rome"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "sunny"},
        {"role": "tool", "tool_call_id": "call_b", "content": "rain"},
        {
            "role": "assistant",
            "content": "\n\nDone.",
            "tool_calls": [{"id": "call_c", "type": "function", "function": {"name": "weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "call_c", "content": "?"},
    ]


def test_consecutive_assistant_messages_without_calls_stay_apart() -> None:
    chat = chat_of(input=[{"role": "assistant", "content": "One."}, {"role": "assistant", "content": "Two."}])
    assert chat["messages"] == [{"role": "assistant", "content": "One."}, {"role": "assistant", "content": "Two."}]


REASONING_INPUT = [
    {"role": "user", "content": "2+2?"},
    {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Easy: 4."}]},
    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "4"}]},
    {"role": "user", "content": "And 3+3?"},
    {
        "type": "reasoning",
        "id": "rs_2",
        "summary": [{"type": "summary_text", "text": "Add."}],
        "encrypted_content": "x",
    },
    {"type": "function_call", "call_id": "call_1", "name": "add", "arguments": "{}"},
    {"type": "function_call_output", "call_id": "call_1", "output": "6"},
    {"type": "reasoning", "id": "rs_3", "summary": [], "encrypted_content": "only this"},
    {"type": "reasoning", "id": "rs_4", "summary": [{"type": "summary_text", "text": "Nothing follows me."}]},
]


def test_reasoning_items_go_upstream_only_where_the_route_exposes_reasoning() -> None:
    hidden = chat_of(input=REASONING_INPUT)
    assert not any("reasoning_content" in m for m in hidden["messages"])
    exposed = chat_of(Reasoning.EXPOSE, input=REASONING_INPUT)
    assert exposed["messages"] == [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4", "reasoning_content": "Easy: 4."},
        {"role": "user", "content": "And 3+3?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "add", "arguments": "{}"}}],
            "reasoning_content": "Add.",
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "6"},
    ]
    assert [{k: v for k, v in m.items() if k != "reasoning_content"} for m in exposed["messages"]] == hidden["messages"]


TOOL = {
    "type": "function",
    "name": "weather",
    "parameters": {"type": "object", "properties": {"c": {"type": "string"}}},
}


def test_function_tools_and_the_tool_choice_map_across() -> None:
    strict = {**TOOL, "name": "strict_one", "description": "Strict.", "strict": True}
    chat = chat_of(tools=[TOOL, strict], tool_choice={"type": "function", "name": "weather"}, parallel_tool_calls=False)
    assert chat["tools"] == [
        {"type": "function", "function": {"name": "weather", "parameters": TOOL["parameters"]}},
        {
            "type": "function",
            "function": {
                "name": "strict_one",
                "description": "Strict.",
                "parameters": TOOL["parameters"],
                "strict": True,
            },
        },
    ]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert chat["parallel_tool_calls"] is False
    for value in ("auto", "none", "required"):
        assert chat_of(tools=[TOOL], tool_choice=value)["tool_choice"] == value


def test_without_tools_the_tool_choice_is_not_sent() -> None:
    """Chat providers refuse tool_choice and parallel_tool_calls without tools; an agent route adds its own."""
    chat = chat_of(tool_choice="auto", parallel_tool_calls=True, tools=[])
    assert "tool_choice" not in chat and "parallel_tool_calls" not in chat and "tools" not in chat


def test_sampling_limits_and_formats_map_across() -> None:
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}
    chat = chat_of(
        max_output_tokens=64,
        temperature=0.2,
        top_p=0.9,
        user="u-1",
        metadata={"team": "a"},
        stop=["END"],
        text={"format": {"type": "json_schema", "name": "X", "schema": schema, "strict": True}, "verbosity": "low"},
        reasoning={"effort": "low", "summary": "auto"},
    )
    assert {k: v for k, v in chat.items() if k not in ("model", "messages", "stream")} == {
        "max_completion_tokens": 64,
        "temperature": 0.2,
        "top_p": 0.9,
        "user": "u-1",
        "metadata": {"team": "a"},
        "stop": ["END"],
        "response_format": {"type": "json_schema", "json_schema": {"name": "X", "schema": schema, "strict": True}},
        "reasoning_effort": "low",
    }
    assert chat_of(text={"format": {"type": "json_object"}})["response_format"] == {"type": "json_object"}
    assert "response_format" not in chat_of(text={"format": {"type": "text"}})
    without_effort = to_chat(request_of(reasoning={"effort": "low"}), reasoning=Reasoning.HIDE, reasoning_effort=False)
    assert "reasoning_effort" not in without_effort, "only a provider that takes reasoning_effort gets it"


def test_fields_without_a_chat_counterpart_are_dropped_and_named_in_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="gateway.requests"):
        chat = chat_of(
            input="a secret question",
            store=True,
            background=False,
            include=["reasoning.encrypted_content"],
            truncation="auto",
            service_tier="flex",
            text={"verbosity": "high"},
            reasoning={"summary": "detailed"},
            some_future_field={"x": 1},
        )
    assert set(chat) == {"model", "messages", "stream"}
    logged = " ".join(r.getMessage() for r in caplog.records)
    for name in ("include", "truncation", "service_tier", "some_future_field", "text.verbosity", "reasoning.summary"):
        assert name in logged
    assert "secret" not in logged


def test_the_model_and_stream_flag_are_read() -> None:
    request = request_of(model="gpt-*-alias", stream=True)
    assert (request.model, request.stream) == ("gpt-*-alias", True)
    assert request_of().stream is False


INVALID: dict[str, tuple[Any, str | None, str]] = {
    "not json": (b"{", None, "not valid JSON"),
    "not an object": ([1], None, "JSON object"),
    "no model": ({"model": None}, "model", "model"),
    "model not a string": ({"model": 1, "input": "x"}, "model", "string"),
    "empty model": ({"model": "", "input": "x"}, "model", "empty"),
    "no input": ({"input": None}, "input", "input"),
    "input a number": ({"input": 3}, "input", "string"),
    "empty input": ({"input": []}, "input", "at least one"),
    "stream not a boolean": ({"stream": "yes"}, "stream", "boolean"),
    "temperature a string": ({"temperature": "hot"}, "temperature", "number"),
    "max_output_tokens a float": ({"max_output_tokens": 1.5}, "max_output_tokens", "integer"),
    "metadata not an object": ({"metadata": []}, "metadata", "object"),
    "stop a number": ({"stop": 1}, "stop", "string"),
    "instructions not a string": ({"instructions": ["x"]}, "instructions", "string"),
    "item not an object": ({"input": ["hi"]}, "input[0]", "object"),
    "item without a type": ({"input": [{"content": "x"}]}, "input[0].type", "type"),
    "unknown role": ({"input": [{"role": "tool", "content": "x"}]}, "input[0].role", "role"),
    "message without content": ({"input": [{"role": "user"}]}, "input[0].content", "content"),
    "content a number": ({"input": [{"role": "user", "content": 1}]}, "input[0].content", "string"),
    "part without text": (
        {"input": [{"role": "user", "content": [{"type": "input_text"}]}]},
        "input[0].content[0].text",
        "text",
    ),
    "file part": (
        {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
        "input[0].content[0].type",
        "input_file",
    ),
    "audio part": (
        {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a"}, {"type": "input_audio"}]}]},
        "input[0].content[1].type",
        "input_audio",
    ),
    "image in an assistant message": (
        {"input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
        "input[0].content[0].type",
        "user messages only",
    ),
    "image in a system message": (
        {"input": [{"role": "system", "content": [{"type": "input_image", "image_url": "https://x"}]}]},
        "input[0].content[0].type",
        "user messages only",
    ),
    "image by file id": (
        {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]},
        "input[0].content[0].file_id",
        "file_id",
    ),
    "image without a url": (
        {"input": [{"role": "user", "content": [{"type": "input_image", "detail": "low"}]}]},
        "input[0].content[0].image_url",
        "image_url",
    ),
    "call without call_id": (
        {"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]},
        "input[0].call_id",
        "call_id",
    ),
    "call without name": (
        {"input": [{"type": "function_call", "call_id": "c", "arguments": "{}"}]},
        "input[0].name",
        "name",
    ),
    "call without arguments": (
        {"input": [{"type": "function_call", "call_id": "c", "name": "f"}]},
        "input[0].arguments",
        "arguments",
    ),
    "output for no call": (
        {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
        "input[0].call_id",
        "call_x",
    ),
    "output without output": (
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c"},
            ]
        },
        "input[1].output",
        "output",
    ),
    "image as a call output": (
        {
            "input": [
                {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [{"type": "input_image", "image_url": "https://x"}],
                },
            ]
        },
        "input[1].output[0].type",
        "input_image",
    ),
    "item reference": ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]", "keeps no state"),
    "bare item reference": ({"input": [{"id": "msg_1"}]}, "input[0]", "keeps no state"),
    "built-in call item": ({"input": [{"type": "web_search_call", "id": "ws_1"}]}, "input[0].type", "web_search_call"),
    "reasoning part of the wrong type": (
        {"input": [{"type": "reasoning", "summary": [{"type": "reasoning_text", "text": "x"}]}]},
        "input[0].summary[0].type",
        "summary_text",
    ),
    "tools not an array": ({"tools": {}}, "tools", "array"),
    "tool without a type": ({"tools": [{"name": "f"}]}, "tools[0].type", "type"),
    "tool without a name": ({"tools": [{"type": "function"}]}, "tools[0].name", "name"),
    "tool with parameters not an object": ({"tools": [{**TOOL, "parameters": "x"}]}, "tools[0].parameters", "object"),
    "tool with strict not a boolean": ({"tools": [{**TOOL, "strict": "yes"}]}, "tools[0].strict", "boolean"),
    "unknown tool choice": ({"tools": [TOOL], "tool_choice": "any"}, "tool_choice", "auto"),
    "built-in tool choice": (
        {"tools": [TOOL], "tool_choice": {"type": "web_search_preview"}},
        "tool_choice.type",
        "web_search_preview",
    ),
    "function choice without a name": (
        {"tools": [TOOL], "tool_choice": {"type": "function"}},
        "tool_choice.name",
        "name",
    ),
    "unknown text format": ({"text": {"format": {"type": "xml"}}}, "text.format.type", "json_schema"),
    "schema without a name": ({"text": {"format": {"type": "json_schema", "schema": {}}}}, "text.format.name", "name"),
    "schema without a schema": (
        {"text": {"format": {"type": "json_schema", "name": "x"}}},
        "text.format.schema",
        "schema",
    ),
    "effort not a string": ({"reasoning": {"effort": 3}}, "reasoning.effort", "string"),
}


@pytest.mark.parametrize("case", INVALID)
def test_an_invalid_request_gets_a_400_naming_the_field(case: str) -> None:
    body, param, words = INVALID[case]
    raw = (
        body
        if isinstance(body, bytes)
        else orjson.dumps(body if not isinstance(body, dict) else {"model": "m", "input": "x", **body})
    )
    with pytest.raises(GatewayError) as caught:
        parse_request(raw)
    error = caught.value
    assert error.kind is ErrorKind.INVALID_REQUEST and error.param == param
    assert words.lower() in error.message.lower()
    status, answer = error_status_and_body(error)
    assert status == 400
    assert orjson.loads(answer) == {
        "error": {"message": error.message, "type": "invalid_request_error", "param": param, "code": error.code}
    }


@pytest.mark.parametrize(
    ("field", "value", "needs"),
    [
        ("previous_response_id", "resp_123", "stored response"),
        ("conversation", "conv_123", "stored conversation"),
        ("conversation", {"id": "conv_123"}, "stored conversation"),
        ("prompt", {"id": "pmpt_1"}, "stored prompt"),
    ],
)
def test_state_the_gateway_does_not_keep_is_refused(field: str, value: Any, needs: str) -> None:
    with pytest.raises(GatewayError) as caught:
        request_of(**{field: value})
    error = caught.value
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", field)
    assert needs in error.message and "keeps no state" in error.message and "whole conversation" in error.message


def test_background_is_refused_and_store_is_accepted() -> None:
    with pytest.raises(GatewayError) as caught:
        request_of(background=True)
    assert (caught.value.status, caught.value.param) == (400, "background")
    assert request_of(store=True, background=False, previous_response_id=None).model == "assistant"


HOSTED: list[dict[str, Any]] = [
    {"type": "web_search", "external_web_access": False},
    {"type": "web_search_preview"},
    {"type": "file_search", "vector_store_ids": ["vs_1"]},
    {"type": "code_interpreter", "container": {"type": "auto"}},
    {"type": "computer_use_preview", "display_width": 1, "display_height": 1, "environment": "linux"},
    {"type": "mcp", "server_label": "x", "server_url": "https://x"},
    {"type": "image_generation"},
    {"type": "tool_search", "execution": "client", "parameters": {"type": "object"}},
]


@pytest.mark.parametrize("tool", HOSTED, ids=[t["type"] for t in HOSTED])
def test_a_hosted_tool_is_left_out_and_named(tool: dict[str, Any]) -> None:
    request = request_of(tools=[TOOL, tool, dict(tool)])
    assert request.dropped_tools == (tool["type"],)
    chat = to_chat(request, reasoning=Reasoning.HIDE, reasoning_effort=False)
    assert [t["function"]["name"] for t in chat["tools"]] == ["weather"]


@pytest.mark.parametrize(
    ("tool", "where"),
    [
        ({"type": "apply_patch"}, "tools[1].type"),
        ({"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}, "tools[1].tools[0].type"),
    ],
)
def test_a_tool_neither_mapped_nor_hosted_gets_a_400_that_names_it(tool: dict[str, Any], where: str) -> None:
    with pytest.raises(GatewayError) as caught:
        request_of(tools=[TOOL, tool])
    error = caught.value
    assert (error.status, error.param, error.code) == (400, where, "unsupported_value")
    assert "namespace and local_shell" in error.message


# Tools that are not plain functions: mapped to functions, their calls given back in the client's shape.

NAMESPACE = {
    "type": "namespace",
    "name": "crm",
    "description": "The customer records.",
    "tools": [
        {"type": "function", "name": "find", "description": "Find one.", "parameters": {"type": "object"}},
        {"type": "custom", "name": "query", "description": "Ask in SQL."},
    ],
}
PATCH = {
    "type": "custom",
    "name": "apply_patch",
    "description": "Edit files.",
    "format": {"type": "grammar", "syntax": "lark", "definition": "start: /.+/"},
}


def test_a_namespace_is_flattened_into_its_functions() -> None:
    request = request_of(tools=[TOOL, NAMESPACE], tool_choice={"type": "function", "name": "find", "namespace": "crm"})
    chat = to_chat(request, reasoning=Reasoning.HIDE, reasoning_effort=False)
    functions = {t["function"]["name"]: t["function"] for t in chat["tools"]}
    assert list(functions) == ["weather", "crm__find", "crm__query"]
    assert functions["crm__find"] == {
        "name": "crm__find",
        "description": "Find one.\n\n(crm: The customer records.)",
        "parameters": {"type": "object"},
    }
    assert functions["crm__query"]["parameters"]["required"] == ["input"]
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "crm__find"}}
    assert request.echo["tools"][1] == NAMESPACE


def test_a_custom_tool_is_a_function_of_its_raw_input_with_its_grammar_in_the_description() -> None:
    chat = chat_of(tools=[PATCH], tool_choice={"type": "custom", "name": "apply_patch"})
    [tool] = chat["tools"]
    assert tool["function"]["parameters"] == {
        "type": "object",
        "properties": {"input": {"type": "string", "description": "The tool's input, as its description says."}},
        "required": ["input"],
        "additionalProperties": False,
    }
    description = tool["function"]["description"]
    assert description.startswith("Edit files.") and "lark grammar" in description and "start: /.+/" in description
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "apply_patch"}}


def test_calls_of_every_kind_in_the_history_go_back_as_tool_calls_and_their_outputs_as_tool_messages() -> None:
    chat = chat_of(
        tools=[NAMESPACE, PATCH, {"type": "local_shell"}],
        input=[
            {"role": "user", "content": "Go."},
            {"type": "function_call", "call_id": "c1", "name": "find", "namespace": "crm", "arguments": "{}"},
            {"type": "custom_tool_call", "call_id": "c2", "name": "apply_patch", "input": "*** Begin Patch"},
            {
                "type": "local_shell_call",
                "id": "lsh_1",
                "call_id": "c3",
                "status": "completed",
                "action": {"type": "exec", "command": ["ls", "-l"], "working_directory": "/w", "env": {}},
            },
            {"type": "function_call_output", "call_id": "c1", "output": "found"},
            {"type": "custom_tool_call_output", "call_id": "c2", "output": [{"type": "input_text", "text": "Done."}]},
            {"type": "local_shell_call_output", "id": "c3", "output": "a.txt"},
        ],
    )
    assert chat["messages"][1]["tool_calls"] == [
        {"id": "c1", "type": "function", "function": {"name": "crm__find", "arguments": "{}"}},
        {
            "id": "c2",
            "type": "function",
            "function": {"name": "apply_patch", "arguments": '{"input":"*** Begin Patch"}'},
        },
        {
            "id": "c3",
            "type": "function",
            "function": {"name": "local_shell", "arguments": '{"command":["ls","-l"],"workdir":"/w"}'},
        },
    ]
    assert [(m["tool_call_id"], m["content"]) for m in chat["messages"][2:]] == [
        ("c1", "found"),
        ("c2", "Done."),
        ("c3", "a.txt"),
    ]


def test_additional_tools_items_add_their_tools() -> None:
    """Codex's code mode sends its tools as an ``additional_tools`` input item, with no top-level ``tools``."""
    item = {"type": "additional_tools", "role": "developer", "tools": [NAMESPACE]}
    chat = chat_of(input=[item, {"role": "user", "content": "Hi"}])
    assert [t["function"]["name"] for t in chat["tools"]] == ["crm__find", "crm__query"]
    assert [m["role"] for m in chat["messages"]] == ["user"]


def calling(name: str, arguments: dict[str, Any], pieces: int = 4) -> list[dict[str, Any]]:
    """A plain upstream's stream that calls ``name`` with these arguments, in pieces."""
    text = json.dumps(arguments)
    chunks = [chunk(choice(role="assistant", content=None, tool_calls=[call(0, "", id="call_1", name=name)]))]
    chunks += [chunk(choice(tool_calls=[call(0, p)])) for p in split_evenly(text, pieces)]
    return [*chunks, chunk(choice(finish="tool_calls")), chunk(usage=USAGE)]


CLIENT_SHAPES = {
    "a namespaced function": (
        "crm__find",
        {"id": 7},
        {"type": "function_call", "name": "find", "namespace": "crm", "arguments": '{"id": 7}'},
    ),
    "a custom tool": (
        "apply_patch",
        {"input": "*** Begin Patch\n"},
        {"type": "custom_tool_call", "name": "apply_patch", "input": "*** Begin Patch\n"},
    ),
    "a namespaced custom tool": (
        "crm__query",
        {"input": "select 1"},
        {"type": "custom_tool_call", "name": "query", "namespace": "crm", "input": "select 1"},
    ),
    "the local shell": (
        "local_shell",
        {"command": ["cat", "a.txt"], "workdir": "/w", "timeout_ms": 500},
        {
            "type": "local_shell_call",
            "action": {
                "type": "exec",
                "command": ["cat", "a.txt"],
                "timeout_ms": 500,
                "working_directory": "/w",
                "env": {},
                "user": None,
            },
        },
    ),
}


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("case", CLIENT_SHAPES)
def test_calls_come_back_under_the_clients_names_and_in_its_shape(case: str, stream: bool) -> None:
    name, arguments, expected = CLIENT_SHAPES[case]
    request = request_of(stream=stream, tools=[NAMESPACE, PATCH, {"type": "local_shell"}])
    chunks = calling(name, arguments)
    if stream:
        events, _, _ = run([sse(chunks)], request, RewriteOptions.plain())
        final = check_protocol(events)
        kinds = {e["type"] for e in events}
        assert ("response.custom_tool_call_input.done" in kinds) == (expected["type"] == "custom_tool_call")
        assert ("response.function_call_arguments.done" in kinds) == (expected["type"] == "function_call")
    else:
        final = response_object(request, replay_completion(completion_of(chunks), RewriteOptions.plain()), created=1)
        Response.model_validate(final)
    [item] = final["output"]
    assert {k: v for k, v in item.items() if k not in ("id", "status", "call_id")} == expected
    assert item["call_id"] == "call_1" and item["status"] == "completed"
    prefix = {"function_call": "fc_", "custom_tool_call": "ctc_", "local_shell_call": "lsh_"}[expected["type"]]
    assert item["id"].startswith(prefix)


def test_a_custom_call_whose_model_wrote_the_input_itself_keeps_it_as_it_is() -> None:
    request = request_of(stream=True, tools=[PATCH])
    chunks = [
        chunk(choice(role="assistant", content=None, tool_calls=[call(0, "*** Begin", id="c", name="apply_patch")]))
    ]
    events, _, _ = run([sse([*chunks, chunk(choice(finish="tool_calls"))])], request, RewriteOptions.plain())
    assert check_protocol(events)["output"][0]["input"] == "*** Begin"


CODEX_REQUESTS = sorted(AGENT_REQUESTS.glob("codex-*.json"))


@pytest.mark.parametrize("path", CODEX_REQUESTS, ids=[p.stem for p in CODEX_REQUESTS])
def test_codex_recorded_requests_translate_with_every_tool_mapped_or_named(path: Path) -> None:
    """Codex 0.171's own requests (``tests/fixtures/agents``): every function and custom tool of its namespaces and
    its top level reaches the upstream, the hosted ones are named, every call in its history is answered."""
    body = orjson.loads(path.read_bytes())["body"]
    request = parse_request(orjson.dumps(body))
    chat = to_chat(request, reasoning=Reasoning.HIDE, reasoning_effort=False)
    listed = list(body.get("tools", ()))
    listed += [t for item in body["input"] if item.get("type") == "additional_tools" for t in item["tools"]]
    expected: list[str] = []
    for tool in listed:
        if tool["type"] == "namespace":
            expected += [f"{tool['name']}__{inner['name']}" for inner in tool["tools"]]
        elif tool["type"] in ("function", "custom"):
            expected.append(tool["name"])
    assert [t["function"]["name"] for t in chat["tools"]] == expected
    assert request.dropped_tools == tuple(
        dict.fromkeys(t["type"] for t in listed if t["type"] in ("web_search", "tool_search"))
    )
    calls = [c["id"] for m in chat["messages"] for c in m.get("tool_calls", ())]
    assert calls == [m["tool_call_id"] for m in chat["messages"] if m["role"] == "tool"]
    assert calls == [i["call_id"] for i in body["input"] if i.get("type", "").endswith("_call")]
    assert chat["messages"][0]["role"] == "system" and "Codex" in chat["messages"][0]["content"]


def test_upstream_errors_keep_their_status_and_body() -> None:
    upstream = {
        "error": {"message": "slow down", "type": "rate_limit_exceeded", "param": None, "code": "rate_limit_exceeded"}
    }
    status, body = error_status_and_body(GatewayError(ErrorKind.UPSTREAM_STATUS, "x", status=429, upstream=upstream))
    assert (status, orjson.loads(body)) == (429, upstream)
    status, body = error_status_and_body(GatewayError(ErrorKind.NOT_FOUND, "No route for 'x'.", code="model_not_found"))
    assert status == 404 and orjson.loads(body)["error"]["code"] == "model_not_found"


# The answer, streamed: upstream chat streams through the core into Responses events.

INNER = "Private: " + HIDDEN


def agent_chunks(
    message: str, inner: str = INNER, pieces: Callable[[str], list[str]] | None = None
) -> list[dict[str, Any]]:
    document = json.dumps({"inner_thoughts": inner, "message": message}, ensure_ascii=False)
    chunks = agent_stream((pieces or (lambda d: split_evenly(d, 4)))(document))
    return [*chunks, chunk(usage=USAGE)]


def test_an_agent_answer_streams_as_one_message_item() -> None:
    events, _, body = run([sse(agent_chunks("Hello, world! 😀"))])
    final = check_protocol(events)
    assert [e["type"] for e in events if "delta" not in e] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert deltas(events) == "Hello, world! 😀"
    assert Response.model_validate(final).output_text == "Hello, world! 😀"
    assert final["status"] == "completed" and final["model"] == "assistant" and final["created_at"] == 1700000000
    assert final["usage"] == {
        "input_tokens": 11,
        "input_tokens_details": {"cached_tokens": 3, "cache_write_tokens": 0},
        "output_tokens": 7,
        "output_tokens_details": {"reasoning_tokens": 2},
        "total_tokens": 18,
    }
    assert not any(c in body.decode() for c in HIDDEN)
    assert all(e["logprobs"] == [] for e in events if e["type"] == "response.output_text.delta")


def test_text_leaves_as_soon_as_the_core_releases_it() -> None:
    """The first visible characters go out with the upstream chunk that carried them, not at the end."""
    chunks = agent_chunks("Streaming, not buffering.")
    translator = StreamTranslator(RewriteOptions(), "up")
    encoder = ResponsesStreamEncoder(request_of(stream=True), created=1)
    sent = ""
    for position, c in enumerate(chunks[:-2]):  # everything before the finish and usage chunks
        events = translator.feed(sse([c], done=False))
        released = "".join(e.text for e in events if isinstance(e, TextDelta))
        out = parse_sse(encoder.encode(events))
        if position == 0:
            assert [e["type"] for e in out] == ["response.created", "response.in_progress"]
        assert deltas(out) == released
        sent += released
    assert sent == "Streaming, not buffering."


def test_plain_content_on_a_plain_route() -> None:
    chunks = [chunk(choice(role="assistant", content="")), *[chunk(choice(content=p)) for p in ("Hel", "lo", "!")]]
    chunks += [chunk(choice(finish="stop")), chunk(usage=USAGE)]
    events, _, _ = run([sse(chunks)], options=RewriteOptions.plain())
    final = check_protocol(events)
    assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == ["Hel", "lo", "!"]
    assert Response.model_validate(final).output_text == "Hello!"


def test_client_tool_calls_come_back_as_function_call_items_without_inner_thoughts() -> None:
    """A message, then two parallel client calls: three items, each done before the next starts."""
    send = json.dumps({"inner_thoughts": INNER, "message": "Let me check."})
    oslo = json.dumps({"inner_thoughts": INNER, "city": "Oslo"})
    rome = json.dumps({"inner_thoughts": INNER, "city": "Rome"})
    chunks = [chunk(choice(role="assistant", content=None, tool_calls=[call(0, "", id="call_m", name="send_message")]))]
    chunks += [chunk(choice(tool_calls=[call(0, p)])) for p in split_evenly(send, 5)]
    chunks += [chunk(choice(tool_calls=[call(1, "", id="call_o", name="weather")]))]
    chunks += [chunk(choice(tool_calls=[call(1, p)])) for p in split_evenly(oslo, 3)]
    chunks += [chunk(choice(tool_calls=[call(2, "", id="call_r", name="weather")]))]
    chunks += [chunk(choice(tool_calls=[call(2, p)])) for p in split_evenly(rome, 7)]
    chunks += [chunk(choice(finish="tool_calls")), chunk(usage=USAGE)]
    events, _, body = run([sse(chunks)])
    final = check_protocol(events)
    items = [(e["type"], e.get("output_index")) for e in events if "output_item" in e["type"]]
    assert items == [
        ("response.output_item.added", 0),
        ("response.output_item.done", 0),
        ("response.output_item.added", 1),
        ("response.output_item.done", 1),
        ("response.output_item.added", 2),
        ("response.output_item.done", 2),
    ]
    assert calls_of(final) == [("call_o", "weather", {"city": "Oslo"}), ("call_r", "weather", {"city": "Rome"})]
    assert all(i["status"] == "completed" and i["id"].startswith("fc_") for i in final["output"][1:])
    assert Response.model_validate(final).output_text == "Let me check."
    assert not any(c in body.decode() for c in HIDDEN)


def test_exposed_reasoning_comes_as_reasoning_items_before_what_it_led_to() -> None:
    """Inner thoughts of a client call, exposed: the reasoning item comes out before the call it belongs to."""
    args = json.dumps({"inner_thoughts": "Need the weather.", "city": "Oslo"})
    chunks = [chunk(choice(role="assistant", content=None, tool_calls=[call(0, "", id="call_o", name="weather")]))]
    chunks += [chunk(choice(tool_calls=[call(0, p)])) for p in split_evenly(args, 2)]
    chunks += [chunk(choice(finish="tool_calls"))]
    events, _, _ = run([sse(chunks)], options=options_of(reasoning="expose"))
    final = check_protocol(events)
    assert [i["type"] for i in final["output"]] == ["reasoning", "function_call"]
    assert reasoning_of(final) == "Need the weather." == deltas(events, "response.reasoning_summary_text.delta")
    assert calls_of(final) == [("call_o", "weather", {"city": "Oslo"})]
    assert final["usage"] is None  # the upstream reported none


def test_provider_reasoning_on_a_plain_route_then_text() -> None:
    chunks = [chunk(choice(role="assistant", reasoning_content="Think")), chunk(choice(reasoning_content="ing."))]
    chunks += [chunk(choice(content="Answer.")), chunk(choice(finish="stop"))]
    events, _, _ = run([sse(chunks)], options=RewriteOptions.plain())
    final = check_protocol(events)
    assert [i["type"] for i in final["output"]] == ["reasoning", "message"]
    assert reasoning_of(final) == "Thinking." and Response.model_validate(final).output_text == "Answer."


def test_a_call_whose_arguments_are_not_whole_stays_open_while_another_item_starts() -> None:
    """Two calls whose argument deltas interleave upstream: both items stay open, told apart by output_index."""
    chunks = [chunk(choice(role="assistant", tool_calls=[call(0, '{"a":', id="call_a", name="f")]))]
    chunks += [chunk(choice(tool_calls=[call(1, '{"b":', id="call_b", name="g")]))]
    chunks += [chunk(choice(tool_calls=[call(0, "1}")])), chunk(choice(tool_calls=[call(1, "2}")]))]
    chunks += [chunk(choice(finish="tool_calls"))]
    events, _, _ = run([sse(chunks)], options=RewriteOptions.plain())
    final = check_protocol(events)
    assert calls_of(final) == [("call_a", "f", {"a": 1}), ("call_b", "g", {"b": 2})]


@pytest.mark.parametrize(("finish", "reason"), [("length", "max_output_tokens"), ("content_filter", "content_filter")])
def test_a_cut_answer_ends_incomplete_with_the_reason(finish: str, reason: str) -> None:
    chunks = [*agent_chunks("This answer is cut")[:-2], chunk(choice(finish=finish)), chunk(usage=USAGE)]
    events, _, _ = run([sse(chunks)])
    final = check_protocol(events)
    assert events[-1]["type"] == "response.incomplete"
    assert final["status"] == "incomplete" and final["incomplete_details"] == {"reason": reason}
    assert final["output"][0]["status"] == "incomplete"
    assert final["usage"]["output_tokens"] == 7
    assert deltas(events) == Response.model_validate(final).output_text


def test_keep_alive_comments_pass_through() -> None:
    body = b": keep-alive\n\n" + sse(agent_chunks("Hi"))
    _, _, out = run([body])
    assert b"\n\n: keep-alive\n\n" in out


# Recorded chat streams from real providers, on a plain route and on a rewrite route.

RECORDED = recorded_files() + recorded_files("reasoning")


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
@pytest.mark.parametrize("route", ["plain", "rewrite", "expose"])
def test_recorded_chat_streams_become_valid_responses_streams(path: Path, route: str) -> None:
    options = {"plain": RewriteOptions.plain(), "rewrite": RewriteOptions(), "expose": options_of(reasoning="expose")}[
        route
    ]
    body = recorded_body(path)
    events, core, _ = run([body], options=options)
    final = check_protocol(events)
    assert events[-1]["type"] == "response.completed"
    text, reasoning, calls = core_answer(core)
    assert Response.model_validate(final).output_text == deltas(events) == text
    assert reasoning_of(final) == reasoning
    assert calls_of(final) == calls
    # Reads cut anywhere give the same answer.
    split, _, _ = run([body[i : i + 97] for i in range(0, len(body), 97)], options=options)
    assert [strip_ids(e) for e in split] == [strip_ids(e) for e in events]


# Faults after the stream started: each ends in exactly one response.failed, never in response.completed.


def good_events(message: str) -> list[bytes]:
    return [e + b"\n\n" for e in sse(agent_chunks(message)).split(b"\n\n") if e]


FAULTS: dict[str, Callable[[list[bytes]], list[bytes]]] = {
    "invalid event": lambda good: [*good[:6], b"data: {not json\n\n", *good[6:]],
    "event over the size limit": lambda good: [*good[:6], b"data: " + b"x" * 5000 + b"\n\n", *good[6:]],
    "no finish before [DONE]": lambda good: [*good[:-3], b"data: [DONE]\n\n"],
    "cut short": lambda good: good[:-3],
    "upstream error event": lambda good: (
        [*good[:6], b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n', *good[6:]]
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=25)
@given(data=st.data())
def test_every_fault_ends_in_exactly_one_response_failed(fault: str, data: st.DataObject) -> None:
    body = b"".join(FAULTS[fault](good_events("Hello there, friend.")))
    events, core, _ = run(data.draw(partitions(body)), options=RewriteOptions(max_event_bytes=4096))
    final = check_protocol(events)
    assert [e["type"] for e in events if e["type"] in TERMINAL] == ["response.failed"]
    assert final["status"] == "failed" and final["error"]["code"] == "server_error"
    assert final["error"]["message"] == core[-1].error.message  # type: ignore[union-attr]
    # What the core released before the fault reached the client first.
    assert deltas(events) == core_answer(core)[0] == Response.model_validate(final).output_text
    if fault == "upstream error event":
        assert "overloaded" in final["error"]["message"]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (GatewayError(ErrorKind.TIMEOUT, "The upstream provider 'up' sent nothing for 30 s."), "server_error"),
        (GatewayError(ErrorKind.DISCONNECTED, "The upstream connection broke."), "server_error"),
        (GatewayError(ErrorKind.RATE_LIMITED, "Too many requests."), "rate_limit_exceeded"),
    ],
)
def test_a_fault_the_shell_reports_ends_in_one_response_failed(error: GatewayError, code: str) -> None:
    translator = StreamTranslator(RewriteOptions(), "up")
    encoder = ResponsesStreamEncoder(request_of(stream=True), created=1)
    out = encoder.encode(translator.feed(sse(agent_chunks("All of this arrives, but no finish.")[:-2], done=False)))
    out += encoder.encode(translator.fail(error))
    out += encoder.encode(translator.fail(error)) + encoder.encode(translator.end())  # nothing after the end
    events = [sdk_checked(e) for e in parse_sse(out)]
    final = check_protocol(events)
    assert events[-1]["type"] == "response.failed"
    assert final["error"] == {"code": code, "message": error.message}
    assert final["output"][0]["status"] == "incomplete"
    assert deltas(events) == "All of this arrives, but no finish." == Response.model_validate(final).output_text


# Non-streaming: the response object from the same events.


NON_STREAMING = {
    "agent message": agent_chunks("Hi! 😀 How can I help?"),
    "client call": [
        chunk(
            choice(
                role="assistant",
                tool_calls=[
                    call(0, json.dumps({"inner_thoughts": INNER, "city": "Oslo"}), id="call_o", name="weather")
                ],
            )
        ),
        chunk(choice(finish="tool_calls")),
        chunk(usage=USAGE),
    ],
    "cut by length": [*agent_chunks("This is cu")[:-2], chunk(choice(finish="length")), chunk(usage=USAGE)],
}


@pytest.mark.parametrize("case", NON_STREAMING)
@pytest.mark.parametrize("route", ["hide", "expose"])
def test_the_response_object_is_what_the_stream_ends_with(case: str, route: str) -> None:
    chunks = NON_STREAMING[case]
    options = options_of(reasoning=route)
    request = request_of()
    built = response_object(request, replay_completion(completion_of(chunks), options), created=1700000000)
    parsed = Response.model_validate(built)
    streamed, _, _ = run([sse(chunks)], request, options)
    assert strip_ids(built) == strip_ids(streamed[-1]["response"])
    chat = rewrite_completion(completion_of(chunks), options)["choices"][0]
    assert parsed.output_text == (chat["message"]["content"] or "")
    assert [(i.call_id, i.name, json.loads(i.arguments)) for i in parsed.output if i.type == "function_call"] == [
        (c["id"], c["function"]["name"], json.loads(c["function"]["arguments"]))
        for c in chat["message"].get("tool_calls") or ()
    ]
    assert reasoning_of(built) == chat["message"].get("reasoning_content", "")
    assert (built["status"] == "incomplete") == (case == "cut by length")
    assert built["id"].startswith("resp_") and built["object"] == "response" and built["usage"]["total_tokens"] == 18


def test_building_from_a_failed_answer_raises_its_error() -> None:
    translator = StreamTranslator(RewriteOptions(), "up")
    events = translator.feed(sse(agent_chunks("x")[:-2], done=False)) + translator.end()
    with pytest.raises(GatewayError) as caught:
        response_object(request_of(), events, created=1)
    assert caught.value.kind is ErrorKind.INCOMPLETE


# Properties: for generated messages and every split of the upstream arguments.

message_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters=HIDDEN), max_size=60)
reasoning_text = st.text(alphabet=HIDDEN + ' "\\\n', min_size=1, max_size=30)


def check_agent_answer(events: list[dict[str, Any]], body: bytes, message: str, inner: str, route: Reasoning) -> None:
    final = check_protocol(events)
    assert final["status"] == "completed"
    assert deltas(events) == message
    assert Response.model_validate(final).output_text == message
    if route is Reasoning.HIDE:
        assert not any(c in body.decode() for c in HIDDEN)
    else:
        assert deltas(events, "response.reasoning_summary_text.delta") == inner == reasoning_of(final)


@settings(max_examples=200)
@given(message=message_text, inner=reasoning_text, ascii_only=st.booleans(), data=st.data())
def test_any_split_of_the_arguments_and_of_the_reads_gives_the_message_exactly(
    message: str, inner: str, ascii_only: bool, data: st.DataObject
) -> None:
    document = json.dumps({"inner_thoughts": inner, "message": message}, ensure_ascii=ascii_only)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(document) - 1), max_size=len(document))))
    pieces = [document[a:b] for a, b in zip([0, *cuts], [*cuts, len(document)], strict=True)]
    body = sse([*agent_stream(pieces), chunk(usage=USAGE)])
    route = data.draw(st.sampled_from(Reasoning))
    events, _, out = run(data.draw(partitions(body)), options=RewriteOptions(reasoning=route))
    check_agent_answer(events, out, message, inner, route)


@pytest.mark.parametrize("route", list(Reasoning))
def test_every_split_of_the_arguments(route: Reasoning) -> None:
    message, inner = 'Hi "you" \\ é 😀\nbye', 'αβ "\u03b3" \\δ'
    document = json.dumps({"inner_thoughts": inner, "message": message})
    for cut in range(1, len(document)):
        body = sse([*agent_stream([document[:cut], document[cut:]]), chunk(usage=USAGE)])
        events, _, out = run([body], options=RewriteOptions(reasoning=route))
        check_agent_answer(events, out, message, inner, route)
    body = sse(agent_stream(list(document)))
    events, _, out = run([body], options=RewriteOptions(reasoning=route))
    check_agent_answer(events, out, message, inner, route)


# The event order and fields of real Responses streams (tests/fixtures/recorded/responses/).


def recorded_events(name: str) -> list[dict[str, Any]]:
    path = RESPONSES / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    out = []
    for block in path.read_bytes().replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")]
        if data and data[0] != b"[DONE]":
            out.append(json.loads(b"\n".join(data)))
    return out


def same_shape(
    ours: dict[str, Any], theirs: dict[str, Any], where: str, *, ignore: frozenset[str] = frozenset()
) -> None:
    """Every field the real event has (but for obfuscation padding and what ``ignore`` names), ours has too."""
    missing = set(theirs) - set(ours) - {"obfuscation"} - ignore
    assert not missing, f"{where}: fields real clients get that we do not send: {sorted(missing)}"
    for key in ("item", "part", "response", "usage", "input_tokens_details", "output_tokens_details"):
        if isinstance(theirs.get(key), dict) and isinstance(ours.get(key), dict):
            same_shape(ours[key], theirs[key], f"{where}.{key}", ignore=ignore)


def collapsed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs of deltas of one item as one delta: where the rewrite holds a few bytes back, its splits differ."""
    out: list[dict[str, Any]] = []
    for event in events:
        if out and "delta" in event and out[-1]["type"] == event["type"] and out[-1]["item_id"] == event["item_id"]:
            out[-1] = {**out[-1], "delta": out[-1]["delta"] + event["delta"]}
        else:
            out.append(event)
    return out


def compare(ours: list[dict[str, Any]], theirs: list[dict[str, Any]], ignore: frozenset[str] = frozenset()) -> None:
    assert [e["type"] for e in ours] == [e["type"] for e in theirs]
    for position, (mine, real) in enumerate(zip(ours, theirs, strict=True)):
        same_shape(mine, real, f"event {position} ({real['type']})", ignore=ignore)
        for key in ("delta", "output_index", "content_index", "text", "arguments"):
            if key in real:
                assert mine[key] == real[key], f"event {position}: {key}"


def test_a_text_answer_has_the_events_and_fields_of_openai_s() -> None:
    theirs = recorded_events("openai-responses-gpt4o-text.sse")
    pieces = [e["delta"] for e in theirs if e["type"] == "response.output_text.delta"]
    chunks = [chunk(choice(role="assistant", content="")), *[chunk(choice(content=p)) for p in pieces]]
    events, _, _ = run(
        [sse([*chunks, chunk(choice(finish="stop")), chunk(usage=USAGE)])], options=RewriteOptions.plain()
    )
    compare(events, theirs)


def test_a_function_call_has_the_events_and_fields_of_openai_s() -> None:
    theirs = recorded_events("openai-responses-gpt4o-function-call.sse")
    [added] = [e["item"] for e in theirs if e["type"] == "response.output_item.added"]
    pieces = [e["delta"] for e in theirs if e["type"] == "response.function_call_arguments.delta"]
    chunks = [chunk(choice(role="assistant", tool_calls=[call(0, "", id=added["call_id"], name=added["name"])]))]
    chunks += [chunk(choice(tool_calls=[call(0, p)])) for p in pieces]
    body = sse([*chunks, chunk(choice(finish="tool_calls")), chunk(usage=USAGE)])
    events, _, _ = run([body], options=RewriteOptions.plain())
    compare(events, theirs)
    # A rewrite route holds back the bytes of a key until it knows the key is not the inner thoughts.
    rewritten, _, _ = run([body])
    compare(collapsed(rewritten), collapsed(theirs))
    assert calls_of(rewritten[-1]["response"]) == [(added["call_id"], "get_capital", {"country": "France"})]


def test_a_recent_openai_stream_has_no_field_we_lack() -> None:
    """gpt-5.1-codex (late 2025): sequence numbers everywhere; its function call item and final object."""
    theirs = recorded_events("openai-responses-gpt51-codex-reasoning-summary-function-call.jsonl")
    call_events = [e for e in theirs if e.get("output_index") == 1]
    [added] = [e["item"] for e in call_events if e["type"] == "response.output_item.added"]
    pieces = [e["delta"] for e in call_events if e["type"] == "response.function_call_arguments.delta"]
    chunks = [chunk(choice(role="assistant", tool_calls=[call(0, "", id=added["call_id"], name=added["name"])]))]
    chunks += [chunk(choice(tool_calls=[call(0, p)])) for p in pieces]
    events, _, _ = run(
        [sse([*chunks, chunk(choice(finish="tool_calls")), chunk(usage=USAGE)])], options=RewriteOptions.plain()
    )
    lifecycle = [e for e in theirs if "response" in e]
    ours = [e for e in events if "response" in e]
    # Their reasoning is an encrypted summary, which a chat provider cannot give.
    compare(ours, lifecycle, ignore=frozenset(("encrypted_content",)))
    compare([{**e, "output_index": 1} for e in events if "output_index" in e], call_events)


def test_exposed_reasoning_has_the_events_and_fields_of_a_reasoning_summary() -> None:
    """Reasoning comes out as OpenAI's reasoning models stream it: a summary item, which Codex and the SDKs read."""
    summary = recorded_events("openai-responses-gpt51-codex-reasoning-summary-function-call.jsonl")
    theirs_reasoning = [e for e in summary if e.get("output_index") == 0]
    text_stream = recorded_events("openrouter-responses-gpt-oss-reasoning-text.sse")
    theirs_text = [e for e in text_stream if e.get("output_index") == 1]
    reasoning = [e["delta"] for e in theirs_reasoning if e["type"] == "response.reasoning_summary_text.delta"]
    text = [e["delta"] for e in theirs_text if e["type"] == "response.output_text.delta"]
    chunks = [chunk(choice(role="assistant", reasoning=p)) for p in reasoning]
    chunks += [chunk(choice(content=p)) for p in text]
    events, _, _ = run(
        [sse([*chunks, chunk(choice(finish="stop")), chunk(usage=USAGE)])], options=RewriteOptions.plain()
    )
    # A chat provider's reasoning carries no encrypted content to hand back.
    ours_reasoning = [e for e in events if e.get("output_index") == 0]
    compare(ours_reasoning, theirs_reasoning, ignore=frozenset(("encrypted_content",)))
    compare([e for e in events if e.get("output_index") == 1], theirs_text)
    final = check_protocol(events)
    assert reasoning_of(final) == "".join(reasoning)
    # OpenRouter adds its own: the SDKs' output_text property, and its costs in usage.
    extras = frozenset(("output_text", "cost", "cost_details", "is_byok"))
    compare([e for e in events if "response" in e], [e for e in text_stream if "response" in e], ignore=extras)
