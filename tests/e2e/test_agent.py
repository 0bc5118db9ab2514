"""Agent mode end to end: multi-turn conversations through the gateway, against a model that checks what it gets."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.agent_model import AgentModel
from tests.helpers.servers import ScriptedUpstream, serve

CONFIG = """
providers:
  up: {{base_url: "{upstream}/v1", transport: {transport}}}
models:
  - name: agent
    provider: up
    model: tool-model
    rewrite: {{inject_tools: true}}
"""


@pytest.fixture(scope="module")
def model_and_gateway(upstream_transport: str) -> Iterator[tuple[AgentModel, ScriptedUpstream, str]]:
    model = AgentModel()
    upstream = ScriptedUpstream(default=model)
    with serve(upstream) as upstream_url:
        config = parse_config(CONFIG.format(upstream=upstream_url, transport=upstream_transport), "t.yaml", env={})
        with serve(create_app(config)) as url:
            yield model, upstream, url


@pytest.mark.parametrize("stream", [False, True])
def test_multi_turn_conversation_with_the_openai_sdk(
    model_and_gateway: tuple[AgentModel, ScriptedUpstream, str], stream: bool
) -> None:
    model, upstream, url = model_and_gateway
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    history: list[dict[str, Any]] = [{"role": "user", "content": "Hello"}]

    def turn() -> str:
        if stream:
            return "".join(
                c.choices[0].delta.content or ""
                for c in sdk.chat.completions.create(model="agent", messages=history, stream=True)
                if c.choices
            )
        return sdk.chat.completions.create(model="agent", messages=history).choices[0].message.content or ""

    first = turn()
    assert first == "Answer to: Hello"
    history += [{"role": "assistant", "content": first}, {"role": "user", "content": "And again"}]
    assert turn() == "Answer to: And again"
    sent = upstream.requests[-1].json
    assert sent["model"] == "tool-model"
    assistant = [m for m in sent["messages"] if m["role"] == "assistant"]
    assert json.loads(assistant[0]["tool_calls"][0]["function"]["arguments"]) == {"message": "Answer to: Hello"}
    assert model.problems == []


def test_langchain_tool_round_trip_then_final_answer(
    model_and_gateway: tuple[AgentModel, ScriptedUpstream, str],
) -> None:
    model, upstream, url = model_and_gateway

    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    chat = ChatOpenAI(model="agent", base_url=url + "/v1", api_key="none", max_retries=0).bind_tools([get_weather])
    history: list[Any] = [HumanMessage("What's the weather in Oslo?")]
    first = chat.invoke(history)
    assert first.content == "Checking."
    assert first.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_weather", "type": "tool_call"}
    ]
    history += [first, ToolMessage(get_weather.invoke(first.tool_calls[0]["args"]), tool_call_id="call_weather")]
    final = chat.invoke(history)
    assert final.content == "Answer to: the tool said sunny in Oslo" and not final.tool_calls
    sent = upstream.requests[-1].json["messages"]
    roles = [m["role"] for m in sent]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    message_call, weather_call = sent[2]["tool_calls"]
    assert message_call["function"]["name"] == "send_message" and weather_call["id"] == "call_weather"
    assert sent[3]["tool_call_id"] == message_call["id"] and sent[4]["tool_call_id"] == "call_weather"
    assert model.problems == []
