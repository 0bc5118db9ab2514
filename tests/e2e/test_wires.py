"""Every front door over the Anthropic and Responses wires, end to end: real SDKs, a real gateway, real sockets.

The gateway runs under uvicorn in front of a ``ScriptedUpstream`` that plays an Anthropic Messages API
(``/v1/messages``) and an OpenAI Responses API (``/v1/responses``), checking every request the gateway sends
it as that API would (its credentials, its required fields, its tool and message shapes) and answering as
that API does, streamed or whole. The clients are the openai SDK (chat completions and Responses) and the
anthropic SDK. On an agent route the upstream answers through ``send_message`` with its arguments split
into small pieces; every client must read the message, and none of the inner thoughts.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import agents
import anthropic
import httpx
import httpx2
import openai
import pytest
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool as lc_tool
from langchain_openai import ChatOpenAI

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.readme import code_blocks, section
from tests.helpers.servers import Received, Reply, ScriptedUpstream, json_reply, serve
from tests.helpers.streams import split_evenly, typed_events

GATEWAY_KEY = "gw-wires-key-0123456789abcdef"
PROVIDER_KEY = "sk-provider-wires-0123456789abcdef"
THOUGHTS = "PRIVATE-THOUGHTS of the model"
MESSAGE = 'Hello from the wire: "quoted", é and 😀.'
CONFIG = """
server:
  api_keys: ["GATEWAY_KEY"]
  retry_backoff: 0.01
providers:
  claude:
    api: anthropic
    base_url: "UPSTREAM/v1"
    api_key: "PROVIDER_KEY"
    max_tokens: 1234
    timeout: {connect: 1, read: 5, first_byte: 5, idle: 5}
  codex:
    api: responses
    base_url: "UPSTREAM/v1"
    api_key: "PROVIDER_KEY"
    timeout: {connect: 1, read: 5, first_byte: 5, idle: 5}
  reasoner:
    api: responses
    base_url: "UPSTREAM/v1"
    api_key: "PROVIDER_KEY"
    reasoning_effort: true
models:
  - {name: agent-anthropic, provider: claude, model: claude-up, rewrite: {inject_tools: true}}
  - {name: agent-responses, provider: codex, model: codex-up, rewrite: {inject_tools: true}}
  - {name: plain-anthropic, provider: claude, model: claude-up, max_retries: 0}
  - {name: plain-responses, provider: codex, model: codex-up, max_retries: 0}
  - {name: retried-anthropic, provider: claude, model: claude-up}
  - {name: retried-responses, provider: codex, model: codex-up}
  - {name: thinker-responses, provider: codex, model: codex-up, rewrite: {inject_tools: true, reasoning: expose}}
  - {name: thinker-reasoning, provider: reasoner, model: codex-up, rewrite: {inject_tools: true, reasoning: expose}}
  - {name: thinker-anthropic, provider: claude, model: claude-thinker, rewrite: {inject_tools: true, reasoning: expose}}
"""
# The upstream model that thinks first, in a block Anthropic signs and must get back before a tool's result.
THINKER = "claude-thinker"
SIGNED = {"type": "thinking", "thinking": 'Weather needs the tool: Paris, "now".', "signature": "RXZpZGVuY2UtMQ=="}
WIRES = ("anthropic", "responses")
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        content = message.get("content")
        if message.get("role") != "user":
            continue
        if isinstance(content, str):
            return content
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") in ("text", "input_text")]
        if texts:
            return "".join(texts)
    return ""


@dataclass
class Upstream:
    """Both APIs, as a provider serves them; ``problems`` are the requests a real one would have refused."""

    problems: list[str] = field(default_factory=list)

    def __call__(self, request: Received) -> Reply:
        if request.headers.get("authorization") == f"Bearer {GATEWAY_KEY}" or GATEWAY_KEY in str(request.headers):
            self.problems.append("the client's key reached the provider")
        if request.path == "/v1/messages":
            return self.anthropic(request)
        if request.path == "/v1/responses":
            return self.responses(request)
        self.problems.append(f"unexpected path {request.path}")
        return json_reply({"error": {"message": "not found"}}, 404)

    def answer(self, tools: list[str], user: str, answered: bool = False) -> tuple[str, dict[str, Any]]:
        """The tool the model calls and its arguments, or ("", {}) for a plain text answer; once a tool's result
        came (``answered``), the answer."""
        if "get_weather" in tools and "weather" in user.lower() and not answered:
            arguments: dict[str, Any] = {"city": "Paris"}
            if "send_message" in tools:
                arguments = {"inner_thoughts": THOUGHTS, **arguments}
            return "get_weather", arguments
        if "send_message" in tools:
            return "send_message", {"inner_thoughts": THOUGHTS, "message": MESSAGE}
        return "", {}

    def anthropic(self, request: Received) -> Reply:
        body = request.json
        if request.headers.get("x-api-key") != PROVIDER_KEY or "authorization" in request.headers:
            self.problems.append("not Anthropic's credentials")
        if request.headers.get("anthropic-version") != "2023-06-01":
            self.problems.append("no anthropic-version")
        if not isinstance(body.get("max_tokens"), int):
            self.problems.append("no max_tokens")
        if any(m["role"] == "system" for m in body["messages"]):
            self.problems.append("a system message among the messages")
        roles = [m["role"] for m in body["messages"]]
        if any(a == b for a, b in itertools.pairwise(roles)) or roles[:1] != ["user"]:
            self.problems.append(f"roles do not alternate: {roles}")
        for tool in body.get("tools", []):
            if set(tool) - {"name", "description", "input_schema"}:
                self.problems.append(f"a tool Anthropic refuses: {tool}")
        tools = [tool["name"] for tool in body.get("tools", [])]
        last = body["messages"][-1]["content"]
        answered = isinstance(last, list) and any(block.get("type") == "tool_result" for block in last)
        name, arguments = self.answer(tools, last_user_text(body["messages"]), answered)
        usage = {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 9}
        stop = "tool_use" if name else "end_turn"
        thinks = body["model"] == THINKER
        if thinks and any(m["role"] == "assistant" and m["content"][:1] != [SIGNED] for m in body["messages"]):
            self.problems.append("an assistant turn without its signed thinking block first")
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": MESSAGE}]
            if name:
                content = [{"type": "tool_use", "id": "toolu_1", "name": name, "input": arguments}]
            if thinks:
                content.insert(0, SIGNED)
            message = {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": body["model"],
                "content": content,
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": usage,
            }
            return json_reply(message)
        start = {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"], "content": []}
        events: list[dict[str, Any]] = [
            {"type": "message_start", "message": {**start, "usage": {**usage, "output_tokens": 1}}},
            {"type": "ping"},
        ]
        if name:
            block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in split_evenly(json.dumps(arguments), 5)]
        else:
            block = {"type": "text", "text": ""}
            deltas = [{"type": "text_delta", "text": p} for p in split_evenly(MESSAGE, 5)]
        blocks = [(block, deltas)]
        if thinks:
            thinking = [{"type": "thinking_delta", "thinking": p} for p in split_evenly(SIGNED["thinking"], 6)]
            signature = {"type": "signature_delta", "signature": SIGNED["signature"]}
            blocks.insert(0, ({"type": "thinking", "thinking": "", "signature": ""}, [*thinking, signature]))
        for index, (block, deltas) in enumerate(blocks):
            events.append({"type": "content_block_start", "index": index, "content_block": block})
            events += [{"type": "content_block_delta", "index": index, "delta": delta} for delta in deltas]
            events.append({"type": "content_block_stop", "index": index})
        events += [
            {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 9}},
            {"type": "message_stop"},
        ]
        return Reply(typed_events(events))

    def responses(self, request: Received) -> Reply:
        body = request.json
        if request.headers.get("authorization") != f"Bearer {PROVIDER_KEY}":
            self.problems.append("not the provider's bearer key")
        if body.get("store") is not False:
            self.problems.append("store is not false")
        if "messages" in body or "stream_options" in body:
            self.problems.append("chat-completions fields in a Responses request")
        tools = [tool["name"] for tool in body.get("tools", [])]
        asked = body["input"]  # a string is one user message (a client's own request, passed through)
        answered = isinstance(asked, list) and asked[-1].get("type") == "function_call_output"
        name, arguments = self.answer(tools, asked if isinstance(asked, str) else last_user_text(asked), answered)
        usage = {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 5},
            "output_tokens": 9,
            "output_tokens_details": {"reasoning_tokens": 3},
            "total_tokens": 29,
        }
        if name:
            item: dict[str, Any] = {
                "type": "function_call",
                "id": "fc_1",
                "call_id": "call_1",
                "name": name,
                "arguments": json.dumps(arguments),
                "status": "completed",
            }
        else:
            part = {"type": "output_text", "text": MESSAGE, "annotations": []}
            item = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [part]}
        response = {
            "id": "resp_1",
            "object": "response",
            "model": body["model"],
            "created_at": 1,
            "status": "completed",
        }
        done = {**response, "output": [item], "usage": usage}
        if not body.get("stream"):
            return json_reply(done)
        events: list[dict[str, Any]] = [
            {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}},
            {
                "type": "response.output_item.added",
                "output_index": 0,
                "item": {**item, "arguments": ""} if name else {**item, "content": []},
            },
        ]
        if name:
            events += [
                {"type": "response.function_call_arguments.delta", "output_index": 0, "item_id": "fc_1", "delta": p}
                for p in split_evenly(item["arguments"], 5)
            ]
        else:
            events += [
                {
                    "type": "response.output_text.delta",
                    "output_index": 0,
                    "content_index": 0,
                    "item_id": "msg_1",
                    "delta": p,
                }
                for p in split_evenly(MESSAGE, 5)
            ]
        events += [
            {"type": "response.output_item.done", "output_index": 0, "item": item},
            {"type": "response.completed", "response": done},
        ]
        return Reply(typed_events(events))


@dataclass
class Gateway:
    url: str
    upstream: ScriptedUpstream
    model: Upstream


@pytest.fixture(scope="module")
def running() -> Iterator[Gateway]:
    model = Upstream()
    upstream = ScriptedUpstream(default=model)
    with serve(upstream) as upstream_url:
        text = CONFIG.replace("GATEWAY_KEY", GATEWAY_KEY).replace("PROVIDER_KEY", PROVIDER_KEY)
        config = parse_config(text.replace("UPSTREAM", upstream_url), "wires.yaml", env={})
        with serve(create_app(config)) as url:
            yield Gateway(url, upstream, model)


@pytest.fixture
def gateway(running: Gateway) -> Iterator[Gateway]:
    running.upstream.script.clear()
    running.upstream.requests.clear()
    running.model.problems.clear()
    yield running
    assert running.model.problems == []


def openai_client(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def anthropic_client(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url, api_key=GATEWAY_KEY, max_retries=0, _strict_response_validation=True
    )


@dataclass
class Said:
    """What a client read: the text, its tool calls (name and arguments), why it stopped, and its usage."""

    text: str
    calls: list[tuple[str, Any]]
    stop: str | None
    usage: tuple[int, int]


def chat_door(gateway: Gateway, model: str, prompt: str, stream: bool, tools: bool = False) -> Said:
    client = openai_client(gateway)
    extra: dict[str, Any] = {"tools": [{"type": "function", "function": WEATHER}]} if tools else {}
    messages: Any = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": prompt}]
    if not stream:
        completion = client.chat.completions.create(model=model, messages=messages, **extra)
        choice = completion.choices[0]
        calls = [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls or ()]  # type: ignore[union-attr]
        assert completion.usage is not None
        return Said(
            choice.message.content or "",
            calls,
            choice.finish_reason,
            (completion.usage.prompt_tokens, completion.usage.completion_tokens),
        )
    text, arguments, names, stop, usage = "", {}, {}, None, (0, 0)
    for chunk in client.chat.completions.create(
        model=model, messages=messages, stream=True, stream_options={"include_usage": True}, **extra
    ):
        if chunk.usage is not None:
            usage = (chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
        for choice in chunk.choices:
            text += choice.delta.content or ""
            for call in choice.delta.tool_calls or ():
                names[call.index] = names.get(call.index, "") + ((call.function and call.function.name) or "")
                arguments[call.index] = arguments.get(call.index, "") + (
                    (call.function and call.function.arguments) or ""
                )
            stop = choice.finish_reason or stop
    return Said(text, [(names[i], json.loads(arguments[i])) for i in sorted(names)], stop, usage)


class Failed(Exception):
    """A Responses stream that ended in ``response.failed`` (the SDK hands the event over rather than raising)."""


def responses_door(gateway: Gateway, model: str, prompt: str, stream: bool, tools: bool = False) -> Said:
    client = openai_client(gateway)
    extra: dict[str, Any] = {"tools": [{"type": "function", **WEATHER}]} if tools else {}
    if stream:
        deltas = ""
        final = None
        for event in client.responses.create(model=model, instructions="Be brief.", input=prompt, stream=True, **extra):
            if event.type == "response.output_text.delta":
                deltas += event.delta
            if event.type == "response.completed":
                final = event.response
            if event.type == "response.failed":
                assert event.response.error is not None
                raise Failed(event.response.error.message)
            if event.type == "error":
                raise Failed(event.message)
        assert final is not None and final.output_text == deltas
        response = final
    else:
        response = client.responses.create(model=model, instructions="Be brief.", input=prompt, **extra)
    calls = [(item.name, json.loads(item.arguments)) for item in response.output if item.type == "function_call"]
    assert response.usage is not None
    stop = "tool_calls" if calls else response.status
    return Said(response.output_text, calls, stop, (response.usage.input_tokens, response.usage.output_tokens))


def messages_door(gateway: Gateway, model: str, prompt: str, stream: bool, tools: bool = False) -> Said:
    client = anthropic_client(gateway)
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [
            {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
        ]
    arguments: dict[str, Any] = {
        "model": model,
        "max_tokens": 300,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": prompt}],
        **extra,
    }
    if stream:
        with client.messages.stream(**arguments) as events:
            message = events.get_final_message()
    else:
        message = client.messages.create(**arguments)
    text = "".join(block.text for block in message.content if block.type == "text")
    calls = [(block.name, block.input) for block in message.content if block.type == "tool_use"]
    return Said(text, calls, message.stop_reason, (message.usage.input_tokens, message.usage.output_tokens))


DOORS: dict[str, Callable[..., Said]] = {"chat": chat_door, "responses": responses_door, "anthropic": messages_door}
STOPS = {
    "chat": ("stop", "tool_calls"),
    "responses": ("completed", "tool_calls"),
    "anthropic": ("end_turn", "tool_use"),
}


def cells() -> list[Any]:
    return [
        pytest.param(door, wire, stream, id=f"{door}-door-{wire}-wire-{'stream' if stream else 'whole'}")
        for door in DOORS
        for wire in WIRES
        for stream in (True, False)
    ]


@pytest.mark.parametrize(("door", "wire", "stream"), cells())
def test_an_agent_answer_is_the_message_in_every_cell(gateway: Gateway, door: str, wire: str, stream: bool) -> None:
    said = DOORS[door](gateway, f"agent-{wire}", "Hello", stream)
    assert said.text == MESSAGE and said.calls == [] and said.stop == STOPS[door][0]
    # The prompt counts the cache reads (Anthropic's input_tokens leave them out, either way); 5 of them here.
    prompt = 25 if wire == "anthropic" else 20
    assert said.usage == (prompt - 5 if door == "anthropic" else prompt, 9)
    sent = gateway.upstream.requests[-1]
    assert sent.path == ("/v1/messages" if wire == "anthropic" else "/v1/responses")
    body = sent.json
    assert "send_message" in [tool["name"] for tool in body["tools"]]
    if wire == "anthropic":
        assert body["tool_choice"] == {"type": "any"} and body["system"].startswith("Be brief.")
        assert body["max_tokens"] == (1234 if door == "chat" else 300) or door == "responses"
    else:
        assert body["tool_choice"] == "required" and body["instructions"].startswith("Be brief.")


@pytest.mark.parametrize(("door", "wire", "stream"), cells())
def test_a_client_tool_call_passes_through_without_inner_thoughts(
    gateway: Gateway, door: str, wire: str, stream: bool
) -> None:
    said = DOORS[door](gateway, f"agent-{wire}", "What is the weather?", stream, tools=True)
    assert said.calls == [("get_weather", {"city": "Paris"})] and said.stop == STOPS[door][1]
    assert THOUGHTS not in said.text


@pytest.mark.parametrize(("door", "wire", "stream"), cells())
def test_a_plain_route_relays_the_answer(gateway: Gateway, door: str, wire: str, stream: bool) -> None:
    said = DOORS[door](gateway, f"plain-{wire}", "Hello", stream)
    assert said.text == MESSAGE and said.stop == STOPS[door][0]
    assert "tools" not in gateway.upstream.requests[-1].json


@pytest.mark.parametrize("stream", [True, False])
def test_signed_thinking_goes_back_to_an_anthropic_provider_on_the_next_turn(gateway: Gateway, stream: bool) -> None:
    """An agent route that exposes reasoning, to Claude: the anthropic SDK gets the thinking block with its
    signature beside the tool call, sends the turn back with the tool's result, and the provider gets the
    signed block first in that turn, as Anthropic requires when thinking precedes a tool call."""
    client = anthropic_client(gateway)
    weather = {"name": WEATHER["name"], "description": WEATHER["description"], "input_schema": WEATHER["parameters"]}
    question = {"role": "user", "content": "What is the weather in Paris?"}

    def ask(messages: list[Any]) -> anthropic.types.Message:
        arguments: dict[str, Any] = {"model": "thinker-anthropic", "max_tokens": 300, "messages": messages}
        if stream:
            with client.messages.stream(**arguments, tools=[weather]) as events:
                return events.get_final_message()
        return client.messages.create(**arguments, tools=[weather])

    first = ask([question])
    # The provider's signed block, then the call's inner thoughts (exposed, the gateway's: unsigned), the call.
    assert [(b.type, getattr(b, "signature", None)) for b in first.content] == [
        ("thinking", SIGNED["signature"]),
        ("thinking", ""),
        ("tool_use", None),
    ]
    thinking, thoughts, use = first.content
    assert thinking.type == "thinking" and thinking.thinking == SIGNED["thinking"]
    assert thoughts.type == "thinking" and thoughts.thinking == "\n\n" + THOUGHTS  # set off from the block before
    assert use.type == "tool_use" and use.input == {"city": "Paris"}
    result = {"type": "tool_result", "tool_use_id": use.id, "content": "Sunny"}
    second = ask([question, {"role": "assistant", "content": first.content}, {"role": "user", "content": [result]}])
    assert [block.text for block in second.content if block.type == "text"] == [MESSAGE]
    turn = gateway.upstream.requests[-1].json["messages"][1]
    call = {"type": "tool_use", "id": use.id, "name": "get_weather", "input": {"city": "Paris"}}
    assert turn == {"role": "assistant", "content": [SIGNED, call]}  # the unsigned thoughts Anthropic would refuse


def overloaded() -> Reply:
    return json_reply({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, 529)


@pytest.mark.parametrize("stream", [True, False])
def test_an_overloaded_anthropic_provider_is_retried(gateway: Gateway, stream: bool) -> None:
    gateway.upstream.reply(overloaded())
    said = chat_door(gateway, "agent-anthropic", "Hello", stream)
    assert said.text == MESSAGE and len(gateway.upstream.requests) == 2


def test_an_overload_on_a_route_without_retries_is_the_doors_own_error(gateway: Gateway) -> None:
    gateway.upstream.reply(overloaded(), overloaded())
    with pytest.raises(anthropic.APIStatusError) as raised:
        messages_door(gateway, "plain-anthropic", "Hello", False)
    assert raised.value.status_code == 529 and raised.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]
    with pytest.raises(openai.APIStatusError) as failed:
        chat_door(gateway, "plain-anthropic", "Hello", True)
    assert failed.value.status_code == 529 and "Overloaded" in failed.value.message


@pytest.mark.parametrize("door", sorted(DOORS))
def test_an_anthropic_bad_request_keeps_its_status_and_words(gateway: Gateway, door: str) -> None:
    error = {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: too large"}}
    gateway.upstream.reply(json_reply(error, 400))
    with pytest.raises((openai.BadRequestError, anthropic.BadRequestError)) as raised:
        DOORS[door](gateway, "plain-anthropic", "Hello", False)
    assert "max_tokens: too large" in str(raised.value)


def openai_error(status: int, message: str, kind: str) -> Reply:
    return json_reply({"error": {"message": message, "type": kind, "param": None, "code": None}}, status)


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize(
    ("status", "kind", "raised"),
    [
        (400, "invalid_request_error", (openai.BadRequestError, anthropic.BadRequestError)),
        (429, "rate_limit_error", (openai.RateLimitError, anthropic.RateLimitError)),
    ],
)
def test_a_responses_error_status_keeps_its_status_and_words_in_every_door(
    gateway: Gateway, door: str, status: int, kind: str, raised: tuple[type[Exception], ...]
) -> None:
    gateway.upstream.reply(openai_error(status, f"The provider says {status}", kind))
    with pytest.raises(raised) as failed:
        DOORS[door](gateway, "plain-responses", "Hello", True)
    assert f"The provider says {status}" in str(failed.value) and len(gateway.upstream.requests) == 1


@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_failing_responses_provider_is_retried_in_every_door(gateway: Gateway, door: str) -> None:
    gateway.upstream.reply(
        openai_error(500, "The server had an error", "server_error"), openai_error(429, "Slow down", "rate_limit_error")
    )
    assert DOORS[door](gateway, "retried-responses", "Hello", True).text == MESSAGE
    assert len(gateway.upstream.requests) == 3


@pytest.mark.parametrize("door", sorted(DOORS))
def test_an_error_event_mid_stream_is_an_error_never_a_short_answer(gateway: Gateway, door: str) -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "m",
            "type": "message",
            "role": "assistant",
            "model": "c",
            "content": [],
            "usage": {"input_tokens": 1, "output_tokens": 1},
        },
    }
    events = [
        start,
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Half an"}},
        {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
    ]
    gateway.upstream.reply(Reply(typed_events(events)))
    with pytest.raises((openai.APIError, anthropic.APIError, Failed)) as raised:
        DOORS[door](gateway, "plain-anthropic", "Hello", True)
    assert "Overloaded" in str(raised.value)


@pytest.mark.parametrize("door", sorted(DOORS))
def test_a_failed_response_mid_stream_is_an_error(gateway: Gateway, door: str) -> None:
    response = {"id": "r", "object": "response", "model": "g", "created_at": 1, "status": "in_progress", "output": []}
    events = [
        {"type": "response.created", "response": response},
        {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "item_id": "m", "delta": "Half"},
        {
            "type": "response.failed",
            "response": {
                **response,
                "status": "failed",
                "error": {"code": "server_error", "message": "The model broke"},
            },
        },
    ]
    gateway.upstream.reply(Reply(typed_events(events)))
    with pytest.raises((openai.APIError, anthropic.APIError, Failed)) as raised:
        DOORS[door](gateway, "plain-responses", "Hello", True)
    assert "The model broke" in str(raised.value)


# Pass-through: a plain route whose providers speak the door's own API needs nothing translated.

ANTHROPIC_EVENTS = [
    {
        "type": "message_start",
        "message": {
            "id": "msg_provider",
            "type": "message",
            "role": "assistant",
            "model": "claude-up",
            "content": [],
            "usage": {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 1},
        },
    },
    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Let me see."}},
    {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2lnbmVk"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": MESSAGE}},
    {"type": "content_block_stop", "index": 1},
    {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 9}},
    {"type": "message_stop"},
]


def access_line(caplog: pytest.LogCaptureFixture, path: str) -> dict[str, Any]:
    """The fields of the access-log line of the last request to ``path``."""
    lines = [r.fields for r in caplog.records if r.name == "gateway.access" and r.fields.get("path") == path]  # type: ignore[attr-defined]
    assert lines, f"no access-log line for {path}"
    return lines[-1]  # type: ignore[no-any-return]


@pytest.mark.parametrize("stream", [True, False])
def test_a_messages_client_on_a_plain_anthropic_route_gets_the_providers_bytes(
    gateway: Gateway, stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Thinking, signatures, beta features: whatever the provider says, the client reads, and only the model
    name changes on the way up; the key is still charged what the answer used, cache reads included."""
    pieces = typed_events(ANTHROPIC_EVENTS)
    usage = {"input_tokens": 20, "cache_read_input_tokens": 5, "output_tokens": 9}
    whole = {**ANTHROPIC_EVENTS[0]["message"], "content": [{"type": "text", "text": MESSAGE}], "usage": usage}  # type: ignore[dict-item]
    gateway.upstream.reply(Reply(pieces) if stream else json_reply(whole))
    request = {
        "model": "plain-anthropic",
        "max_tokens": 2048,
        "stream": stream,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}]}
        ],
    }
    headers = {
        "x-api-key": GATEWAY_KEY,
        "anthropic-version": "2099-01-01",
        "anthropic-beta": "context-management-2025-06-27",
    }
    with caplog.at_level(logging.INFO, logger="gateway.access"):
        response = httpx.post(gateway.url + "/v1/messages", json=request, headers=headers, timeout=10)
        assert response.status_code == 200 and response.headers["x-gateway-route"] == "plain-anthropic"
        if stream:
            assert response.content == b"".join(pieces)
        else:
            assert response.json() == whole
        [sent] = gateway.upstream.requests
        assert sent.path == "/v1/messages" and sent.json == {**request, "model": "claude-up"}
        assert sent.headers["anthropic-beta"] == "context-management-2025-06-27"
        assert sent.headers["anthropic-version"] == "2023-06-01" and sent.headers["x-api-key"] == PROVIDER_KEY
        logged = access_line(caplog, "/v1/messages")
    assert (logged["upstream_model"], logged["prompt_tokens"], logged["completion_tokens"]) == ("claude-up", 25, 9)


def test_a_messages_client_on_a_plain_anthropic_route_is_retried_on_an_overload(gateway: Gateway) -> None:
    gateway.upstream.reply(overloaded())
    message = anthropic_client(gateway).messages.create(
        model="retried-anthropic", max_tokens=100, messages=[{"role": "user", "content": "Hello"}]
    )
    assert [block.text for block in message.content if block.type == "text"] == [MESSAGE]
    assert len(gateway.upstream.requests) == 2


def test_a_stateless_responses_request_on_a_plain_responses_route_gets_the_providers_bytes(gateway: Gateway) -> None:
    """Codex's shape (``store: false``, reasoning sent back encrypted by the provider itself) is passed through;
    a request that needs the gateway's stored state is translated and stored, the provider still told not to."""
    request = {
        "model": "plain-responses",
        "input": "Hello",
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
    }
    headers = {"authorization": f"Bearer {GATEWAY_KEY}"}
    with httpx.stream("POST", gateway.url + "/v1/responses", json=request, headers=headers, timeout=10) as answer:
        body = b"".join(answer.iter_raw())
    [sent] = gateway.upstream.requests
    assert answer.status_code == 200 and sent.json == {**request, "model": "codex-up"}
    assert b'"id":"resp_1"' in body and body.count(b"event: response.completed") == 1  # the provider's own
    stored = openai_client(gateway).responses.create(model="plain-responses", input="Hello")
    assert stored.output_text == MESSAGE and stored.id != "resp_1"
    assert gateway.upstream.requests[-1].json["store"] is False
    assert openai_client(gateway).responses.retrieve(stored.id).output_text == MESSAGE


@pytest.mark.parametrize("door", sorted(DOORS))
@pytest.mark.parametrize("wire", WIRES)
def test_a_connection_cut_mid_stream_is_an_error_never_a_short_answer(gateway: Gateway, door: str, wire: str) -> None:
    """The provider's connection breaks after some text: every door's client sees a failure, translated or
    passed through, never an answer that looks complete."""
    if wire == "anthropic":
        events = [*ANTHROPIC_EVENTS[:1], *({**event, "index": 0} for event in ANTHROPIC_EVENTS[5:7])]
    else:
        response = {"id": "r", "object": "response", "model": "g", "created_at": 1, "status": "in_progress"}
        delta = {"type": "response.output_text.delta", "output_index": 0, "content_index": 0, "item_id": "m"}
        events = [{"type": "response.created", "response": {**response, "output": []}}, {**delta, "delta": "Half"}]
    gateway.upstream.reply(Reply(typed_events(events), then="break"))
    # Passed through, the cut reaches the client as one: the anthropic SDK raises its HTTP library's error.
    with pytest.raises((openai.APIError, anthropic.APIError, Failed, httpx2.RemoteProtocolError)):
        DOORS[door](gateway, f"plain-{wire}", "Hello", True)


def test_the_readme_config_of_upstream_wires_is_valid_and_says_what_it_shows() -> None:
    [block] = code_blocks(section("Upstream wires"), "yaml")
    config = parse_config(block, "README.md", env={"ANTHROPIC_API_KEY": "sk-ant", "OPENAI_API_KEY": "sk-oai"})
    claude, codex = config.providers["claude"], config.providers["codex"]
    assert (claude.api, claude.max_tokens, codex.api) == ("anthropic", 4096, "responses")
    assert config.route("claude-agent") is not None and config.route("codex") is not None


@lc_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


@pytest.mark.parametrize("wire", WIRES)
def test_langchain_chat_anthropic_runs_a_tool_loop_on_every_wire(gateway: Gateway, wire: str) -> None:
    """LangChain's ChatAnthropic: a tool call, its result sent back, then the agent's answer; streamed too."""
    chat = ChatAnthropic(  # type: ignore[call-arg]
        model=f"agent-{wire}",
        anthropic_api_url=gateway.url,
        anthropic_api_key=GATEWAY_KEY,
        max_tokens=300,
        max_retries=0,
    )
    asked = chat.bind_tools([get_weather]).invoke([HumanMessage("What is the weather?")])
    assert isinstance(asked, AIMessage) and [c["name"] for c in asked.tool_calls] == ["get_weather"]
    assert asked.tool_calls[0]["args"] == {"city": "Paris"}
    result = ToolMessage(get_weather.invoke(asked.tool_calls[0]["args"]), tool_call_id=asked.tool_calls[0]["id"])
    answer = chat.invoke([HumanMessage("What is the weather?"), asked, result, HumanMessage("Thanks, and hello")])
    assert answer.content == MESSAGE or answer.content == [{"type": "text", "text": MESSAGE}]
    assert "".join(map(text_of, chat.stream("Hello"))) == MESSAGE


def text_of(chunk: AIMessageChunk) -> str:
    """A LangChain chunk's text: a string, or its text blocks (ChatAnthropic streams blocks)."""
    if isinstance(chunk.content, str):
        return chunk.content
    return "".join(b.get("text", "") for b in chunk.content if isinstance(b, dict) and b.get("type") == "text")


@pytest.mark.parametrize("wire", WIRES)
def test_langchain_chat_openai_on_every_wire(gateway: Gateway, wire: str) -> None:
    chat = ChatOpenAI(model=f"agent-{wire}", base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0)
    assert chat.invoke("Hello").content == MESSAGE
    assert "".join(str(chunk.content) for chunk in chat.stream("Hello")) == MESSAGE


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_streamed"])
@pytest.mark.parametrize("wire", WIRES)
def test_an_agents_sdk_agent_runs_its_tool_loop_on_every_wire(gateway: Gateway, wire: str, streaming: bool) -> None:
    """The Agents SDK on the Responses door: the model calls the agent's tool, the SDK runs it and sends its
    result back (stored by the gateway, the provider told not to store), the model answers."""
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    async def run_agent() -> str:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=10)
        model = agents.OpenAIResponsesModel(model=f"agent-{wire}", openai_client=client)
        agent = agents.Agent(name="Weather", instructions="Be brief.", tools=[get_weather], model=model)
        config = agents.RunConfig(tracing_disabled=True)
        if not streaming:
            return str((await agents.Runner.run(agent, "What is the weather?", run_config=config)).final_output)
        streamed = agents.Runner.run_streamed(agent, "What is the weather?", run_config=config)
        async for _ in streamed.stream_events():
            pass
        return str(streamed.final_output)

    assert asyncio.run(run_agent()) == MESSAGE and calls == ["Paris"]
    asked, answered = gateway.upstream.requests
    assert asked.path == answered.path == ("/v1/messages" if wire == "anthropic" else "/v1/responses")
    if wire == "anthropic":
        [result] = [b for m in answered.json["messages"] for b in m["content"] if b.get("type") == "tool_result"]
        assert result["content"] in ("sunny", [{"type": "text", "text": "sunny"}])
    else:
        assert answered.json["input"][-1] == {"type": "function_call_output", "call_id": "call_1", "output": "sunny"}
    assert THOUGHTS not in json.dumps(answered.json)  # what the client never saw does not go back either


@pytest.mark.parametrize(("route", "summary"), [("thinker-responses", None), ("thinker-reasoning", "auto")])
def test_reasoning_summaries_are_asked_only_of_a_provider_that_reasons(
    gateway: Gateway, route: str, summary: str | None
) -> None:
    assert chat_door(gateway, route, "Hello", True).text == MESSAGE
    assert (gateway.upstream.requests[-1].json.get("reasoning") or {}).get("summary") == summary
