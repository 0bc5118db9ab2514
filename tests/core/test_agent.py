"""Agent mode on the request side: what goes upstream for a plain chat request."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from gateway.core.agent import TOOL_RESULT, default_system_prompt, prepare
from tests.helpers.streams import options_of

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather in a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
STRICT = {
    "type": "function",
    "function": {
        "name": "lookup",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
            "additionalProperties": False,
        },
    },
}
OWN_THOUGHTS = {
    "type": "function",
    "function": {
        "name": "diary",
        "parameters": {"type": "object", "properties": {"inner_thoughts": {"type": "string"}}},
    },
}
NO_PARAMETERS = {"type": "function", "function": {"name": "ping"}}
FILE_SEARCH = {"type": "file_search"}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "Hi"}], **fields}


def tools_by_name(payload: dict[str, Any]) -> dict[str, Any]:
    return {t["function"]["name"]: t for t in payload["tools"] if t.get("type") == "function"}


# 1. The message tool.


def test_message_tool_is_appended_with_both_arguments_required() -> None:
    upstream, options = prepare(request(), options_of())
    tool = upstream["tools"][-1]["function"]
    assert tool["name"] == "send_message"
    assert list(tool["parameters"]["properties"]) == ["inner_thoughts", "message"]
    assert tool["parameters"]["required"] == ["inner_thoughts", "message"]
    assert "never sees" in tool["parameters"]["properties"]["inner_thoughts"]["description"]
    assert "user sees" in tool["parameters"]["properties"]["message"]["description"]
    assert options.message_tool == "send_message"


def test_message_tool_names_and_descriptions_follow_the_route() -> None:
    config = options_of(
        message_tool="reply",
        message_arg="text",
        inner_thoughts_arg="thinking",
        message_tool_description="Talk.",
        message_arg_description="Said.",
        inner_thoughts_description="Thought.",
    )
    tool = prepare(request(), config)[0]["tools"][-1]["function"]
    assert (tool["name"], tool["description"]) == ("reply", "Talk.")
    assert tool["parameters"]["properties"] == {
        "thinking": {"type": "string", "description": "Thought."},
        "text": {"type": "string", "description": "Said."},
    }


@pytest.mark.parametrize("mode", ["content", "none"])
def test_without_kwarg_mode_the_message_tool_has_only_the_message(mode: str) -> None:
    upstream, _ = prepare(request(tools=[WEATHER]), options_of(inner_thoughts=mode))
    assert list(upstream["tools"][-1]["function"]["parameters"]["properties"]) == ["message"]
    assert upstream["tools"][0] == WEATHER, "client tools are untouched outside kwarg mode"


# 2. Inner thoughts on client tools.


def test_client_tools_get_inner_thoughts_first_even_when_strict() -> None:
    payload = request(tools=[WEATHER, STRICT, NO_PARAMETERS, FILE_SEARCH])
    original = copy.deepcopy(payload)
    upstream, _ = prepare(payload, options_of())
    assert payload == original, "the client's payload is not mutated"
    tools = tools_by_name(upstream)
    for name in ("get_weather", "lookup", "ping"):
        parameters = tools[name]["function"]["parameters"]
        assert next(iter(parameters["properties"])) == "inner_thoughts"
        assert parameters["required"][0] == "inner_thoughts"
    assert tools["lookup"]["function"]["strict"] is True
    assert tools["lookup"]["function"]["parameters"]["additionalProperties"] is False
    assert tools["lookup"]["function"]["parameters"]["required"] == ["inner_thoughts", "q"]
    assert FILE_SEARCH in upstream["tools"], "non-function tools pass through"


def test_a_tool_that_declares_inner_thoughts_is_left_alone_and_kept_in_answers() -> None:
    upstream, options = prepare(request(tools=[OWN_THOUGHTS, WEATHER]), options_of())
    assert tools_by_name(upstream)["diary"] == OWN_THOUGHTS
    assert options.keep_arguments_of == frozenset({"diary"})


# 3. tool_choice.


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (None, "required"),
        ("auto", "required"),
        ("none", {"type": "function", "function": {"name": "send_message"}}),
        ("required", "required"),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            {"type": "function", "function": {"name": "get_weather"}},
        ),
    ],
)
def test_tool_choice(given: Any, sent: Any) -> None:
    fields = {"tools": [WEATHER]}
    if given is not None:
        fields["tool_choice"] = given
    assert prepare(request(**fields), options_of())[0]["tool_choice"] == sent


# 4. History.


def conversation() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {
            "role": "assistant",
            "content": "Let me check.",
            "tool_calls": [
                {
                    "id": "call_c",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_c", "content": "sunny"},
        {"role": "assistant", "content": "It is sunny."},
        {"role": "user", "content": "Thanks"},
    ]


def test_assistant_text_becomes_a_message_tool_call_and_its_answer() -> None:
    upstream, _ = prepare(request(messages=conversation()), options_of(system_prompt=""))
    messages = upstream["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool", "assistant", "tool", "user"]
    with_client_call = messages[2]
    assert with_client_call["content"] is None
    first, second = with_client_call["tool_calls"]
    assert first["function"]["name"] == "send_message" and json.loads(first["function"]["arguments"]) == {
        "message": "Let me check."
    }
    assert second["id"] == "call_c", "the client's call follows the message-tool call"
    assert messages[3] == {"role": "tool", "tool_call_id": first["id"], "content": TOOL_RESULT}, (
        "its answer comes before the client's results"
    )
    assert messages[4] == {"role": "tool", "tool_call_id": "call_c", "content": "sunny"}
    plain = messages[5]["tool_calls"]
    assert len(plain) == 1 and json.loads(plain[0]["function"]["arguments"]) == {"message": "It is sunny."}
    assert messages[6]["tool_call_id"] == plain[0]["id"]


def test_generated_ids_are_deterministic_across_turns() -> None:
    first, _ = prepare(request(messages=conversation()), options_of())
    longer = [*conversation(), {"role": "assistant", "content": "You're welcome."}, {"role": "user", "content": "Bye"}]
    second, _ = prepare(request(messages=longer), options_of())
    assert second["messages"][: len(first["messages"])] == first["messages"], (
        "same upstream prefix, so prompt caching works"
    )
    ids = [
        c["id"]
        for m in second["messages"]
        for c in m.get("tool_calls") or ()
        if c["function"]["name"] == "send_message"
    ]
    assert len(set(ids)) == len(ids) == 3


def test_assistant_content_parts_and_empty_assistant_messages() -> None:
    messages = [
        {"role": "user", "content": "a"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Part one. "}, {"type": "text", "text": "Part two."}],
        },
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "x", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    upstream, _ = prepare(request(messages=messages), options_of(system_prompt=""))
    call = upstream["messages"][1]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"]) == {"message": "Part one. Part two."}
    assert upstream["messages"][3] == messages[2], "an assistant turn without text is unchanged"


# 5. System prompt.


def test_default_system_prompt_is_appended_to_the_first_system_message() -> None:
    upstream, options = prepare(request(messages=conversation()), options_of())
    assert upstream["messages"][0]["content"] == "Be brief.\n\n" + default_system_prompt(options)
    assert "inner_thoughts" in default_system_prompt(options) and "send_message" in default_system_prompt(options)


def test_system_prompt_is_sent_as_a_system_message_when_there_is_none() -> None:
    upstream, _ = prepare(request(), options_of(system_prompt="Answer through send_message."))
    assert upstream["messages"][0] == {"role": "system", "content": "Answer through send_message."}


def test_empty_system_prompt_disables_it() -> None:
    upstream, _ = prepare(request(), options_of(system_prompt=""))
    assert upstream["messages"] == [{"role": "user", "content": "Hi"}]


# 6. Nothing else changes.


def test_other_fields_are_untouched_and_injection_can_be_off() -> None:
    payload = request(
        temperature=0.3, stream=True, stream_options={"include_usage": True}, x_vendor={"k": 1}, tools=[WEATHER]
    )
    upstream, _ = prepare(payload, options_of())
    for key in ("model", "temperature", "stream", "stream_options", "x_vendor"):
        assert upstream[key] == payload[key]
    untouched, options = prepare(payload, options_of(inject_tools=False))
    assert untouched is payload and options.message_tool == "send_message"
