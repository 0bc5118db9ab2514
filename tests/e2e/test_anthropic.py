"""The Anthropic Messages front door end to end: real clients against a real gateway on a socket.

The gateway runs under uvicorn (``tests.helpers.servers.serve``) in front of a
``ScriptedUpstream`` that plays a tool-calling model made agent-style by the
gateway (``tests.helpers.agent_model.AgentModel``: it checks the injected tools, the
system prompt and the rewritten history of every request it gets). The
clients are the anthropic SDK and LangChain's ``ChatAnthropic``; the bytes the
SDK reads are kept, and every streamed event is validated with the SDK's typed
models and Anthropic's event order (``tests.helpers.anthropic.read``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shlex
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import httpx2
import orjson
import pytest
from anthropic.types import Message, MessageParam, TextBlock, ToolParam, ToolUseBlock
from anthropic.types.beta import BetaMessageParam
from langchain_anthropic import ChatAnthropic
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool

from gateway.config import parse_config
from gateway.core.usage import estimate_prompt
from gateway.server.app import create_app
from gateway.server.service import Service
from tests.helpers.agent_model import AgentModel
from tests.helpers.anthropic import ERROR_TYPES, Stream, parse_sse, read
from tests.helpers.polling import eventually
from tests.helpers.readme import PROVIDER_KEY as README_PROVIDER_KEY
from tests.helpers.readme import REPLY as README_REPLY
from tests.helpers.readme import THOUGHTS as README_THOUGHTS
from tests.helpers.readme import code_blocks, scripted_gateway, section
from tests.helpers.servers import (
    Received,
    Reply,
    ScriptedUpstream,
    clean_env,
    free_port,
    gateway_process,
    json_reply,
    serve,
    sse,
)
from tests.helpers.streams import agent_stream, chunk, split_evenly

GATEWAY_KEY = "gw-anthropic-key-0123456789abcdef"
PROVIDER_KEY = "sk-provider-0123456789abcdef"
MAX_BODY = 100_000
USAGE = {"prompt_tokens": 41, "completion_tokens": 17, "total_tokens": 58}
CONFIG = """
server:
  api_keys: ["{key}"]
  max_body_bytes: {max_body}
  retry_backoff: 0.01
providers:
  up:
    base_url: "{upstream}/v1"
    api_key: "{provider_key}"
    timeout: {{connect: 1, read: 5, first_byte: 1, idle: 0.5}}
  patient:
    base_url: "{upstream}/v1"
    timeout: {{connect: 1, read: 60, first_byte: 60, idle: 60}}
  down:
    base_url: "http://127.0.0.1:{closed_port}/v1"
    timeout: {{connect: 1, read: 1}}
models:
  - {{name: agent, provider: up, model: tool-model, rewrite: {{inject_tools: true}}}}
  - {{name: thinker, provider: up, model: tool-model, rewrite: {{inject_tools: true, reasoning: expose}}}}
  - {{name: solo, provider: up, model: tool-model, rewrite: {{inject_tools: true}}, max_retries: 0}}
  - {{name: plain, provider: up, model: tool-model, max_retries: 0}}
  - {{name: patient, provider: patient, model: tool-model, rewrite: {{inject_tools: true}}, max_retries: 0}}
  - {{name: unreachable, provider: down, rewrite: {{inject_tools: true}}, max_retries: 0}}
"""
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
WEATHER_TOOL: ToolParam = {
    "name": "get_weather",
    "description": "The weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


class Model(AgentModel):
    """The agent-style model of the chat path's end-to-end tests, reporting usage at the end of its streams."""

    def __call__(self, request: Received) -> Reply:
        reply = super().__call__(request)
        if request.json.get("stream"):
            if request.json.get("stream_options") != {"include_usage": True}:
                self.problems.append("a stream that does not ask for usage")
            reply.pieces[-1:-1] = sse([chunk(usage=USAGE)], done=False)
        return reply


@dataclass
class Gateway:
    url: str
    upstream: ScriptedUpstream
    model: Model


@pytest.fixture(scope="module")
def running() -> Iterator[Gateway]:
    model = Model()
    upstream = ScriptedUpstream(default=model)
    with serve(upstream) as upstream_url:
        text = CONFIG.format(
            key=GATEWAY_KEY,
            max_body=MAX_BODY,
            upstream=upstream_url,
            provider_key=PROVIDER_KEY,
            closed_port=free_port(),
        )
        with serve(create_app(parse_config(text, "anthropic.yaml", env={}))) as url:
            yield Gateway(url, upstream, model)


@pytest.fixture
def gateway(running: Gateway) -> Iterator[Gateway]:
    """A fresh record of the upstream per test; afterwards no upstream request is open and the model saw no problem."""
    upstream = running.upstream
    upstream.script.clear()
    upstream.requests.clear()
    upstream.hangups.clear()
    running.model.problems.clear()
    yield running
    assert eventually(lambda: upstream.active == 0), "an upstream request was left open"
    assert running.model.problems == []


class Recording(httpx2.BaseTransport):
    """The SDK's HTTP transport, keeping every response body exactly as the SDK read it."""

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()
        self.bodies: list[bytearray] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self._inner.handle_request(request)
        body = bytearray()
        self.bodies.append(body)
        inner = response.stream
        assert isinstance(inner, httpx2.SyncByteStream)
        stream: httpx2.SyncByteStream = inner

        class Kept(httpx2.SyncByteStream):
            def __iter__(self) -> Iterator[bytes]:
                for part in stream:
                    body.extend(part)
                    yield part

            def close(self) -> None:
                stream.close()

        return httpx2.Response(
            response.status_code, headers=response.headers, stream=Kept(), extensions=response.extensions
        )

    def close(self) -> None:
        self._inner.close()


def sdk(gateway: Gateway, recording: Recording | None = None, **options: Any) -> anthropic.Anthropic:
    """The anthropic SDK pointed at the gateway, validating every body against its types."""
    options.setdefault("api_key", GATEWAY_KEY)
    return anthropic.Anthropic(
        base_url=gateway.url,
        max_retries=0,
        http_client=httpx2.Client(transport=recording or Recording()),
        _strict_response_validation=True,
        **options,
    )


def streamed(recording: Recording) -> list[Stream]:
    """Every stream the SDK read, its events validated with the SDK's models and in Anthropic's order."""
    return [read(bytes(body)) for body in recording.bodies]


def assert_sent_as_the_gateway(request: Received) -> None:
    """What reached the provider: the chat path, the provider's key, and none of the client's headers or key."""
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    headers = request.headers
    assert headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert headers["user-agent"].startswith("agent-gateway/")
    forwarded = [name for name in headers if name.startswith(("anthropic", "x-api-key", "x-stainless"))]
    assert forwarded == []
    assert GATEWAY_KEY not in request.body.decode() + json.dumps(headers)
    assert request.json["model"] == "tool-model"


def blocks(message: Message) -> list[dict[str, Any]]:
    """A message's content as plain data, whichever of the SDK's block classes (parsed or not) holds it."""
    return [block.model_dump(exclude_none=True) for block in message.content]


# The anthropic SDK.


def test_create_answers_with_the_message_and_the_provider_gets_an_agent_request(gateway: Gateway) -> None:
    client = sdk(gateway)
    message = client.messages.create(
        model="agent",
        max_tokens=300,
        system="Be brief.",
        messages=HELLO,
        extra_headers={"anthropic-beta": "token-efficient-tools-2025-02-19"},
    )
    assert blocks(message) == [{"type": "text", "text": "Answer to: Hello"}]
    assert (message.model, message.role, message.stop_reason, message.stop_sequence) == (
        "agent",
        "assistant",
        "end_turn",
        None,
    )
    assert message.id.startswith("msg_")
    assert (message.usage.input_tokens, message.usage.output_tokens) == (3, 5)
    [request] = gateway.upstream.requests
    assert_sent_as_the_gateway(request)
    sent = request.json
    assert sent["stream"] is False and sent["max_completion_tokens"] == 300
    assert [tool["function"]["name"] for tool in sent["tools"]] == ["send_message"]
    assert sent["messages"][0]["role"] == "system" and "Be brief." in sent["messages"][0]["content"]
    assert sent["messages"][-1] == {"role": "user", "content": "Hello"}


def test_stream_text_and_final_message_with_every_event_valid(gateway: Gateway) -> None:
    recording = Recording()
    client = sdk(gateway, recording)
    with client.messages.stream(model="agent", max_tokens=300, messages=HELLO) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "Answer to: Hello" and len(pieces) > 1, "the text arrives as it is written"
    assert blocks(final) == [{"type": "text", "text": "Answer to: Hello"}]
    assert final.stop_reason == "end_turn"
    assert (final.usage.input_tokens, final.usage.output_tokens) == (USAGE["prompt_tokens"], USAGE["completion_tokens"])
    [events] = streamed(recording)
    assert events.stopped and events.error is None
    assert [block.type for block in events.blocks] == ["text"]
    [request] = gateway.upstream.requests
    assert_sent_as_the_gateway(request)
    assert request.json["stream"] is True


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_tool_round_trip(gateway: Gateway, streaming: bool) -> None:
    """tool_use out (without inner thoughts), tool_result in, then the final text."""
    recording = Recording()
    client = sdk(gateway, recording)
    history: list[Any] = [{"role": "user", "content": "What's the weather in Oslo?"}]

    def ask() -> Message:
        if not streaming:
            return client.messages.create(model="agent", max_tokens=300, messages=history, tools=[WEATHER_TOOL])
        with client.messages.stream(model="agent", max_tokens=300, messages=history, tools=[WEATHER_TOOL]) as stream:
            return stream.get_final_message()

    first = ask()
    assert first.stop_reason == "tool_use"
    text, call = first.content
    assert isinstance(text, TextBlock) and text.text == "Checking."
    assert isinstance(call, ToolUseBlock)
    assert (call.id, call.name, call.input) == ("call_weather", "get_weather", {"city": "Oslo"})
    history += [
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny in Oslo"}]},
    ]
    final = ask()
    assert final.stop_reason == "end_turn"
    assert blocks(final) == [{"type": "text", "text": "Answer to: the tool said sunny in Oslo"}]
    if streaming:
        first_events, final_events = streamed(recording)
        assert [block.type for block in first_events.blocks] == ["text", "tool_use"]
        assert json.loads(first_events.blocks[1].text) == {"city": "Oslo"}
        assert len(first_events.blocks[1].deltas) > 1, "the arguments stream as they arrive"
        assert final_events.stopped
    first_sent, second_sent = (request.json for request in gateway.upstream.requests)
    weather = next(t["function"] for t in first_sent["tools"] if t["function"]["name"] == "get_weather")
    assert list(weather["parameters"]["properties"]) == ["inner_thoughts", "city"]
    messages = second_sent["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "tool"]
    message_call, weather_call = messages[2]["tool_calls"]
    assert json.loads(message_call["function"]["arguments"]) == {"message": "Checking."}
    assert weather_call == {
        "id": "call_weather",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
    }
    assert messages[4] == {"role": "tool", "tool_call_id": "call_weather", "content": "sunny in Oslo"}


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_a_route_that_exposes_reasoning_answers_with_a_thinking_block_first(gateway: Gateway, streaming: bool) -> None:
    """The model's inner thoughts as a thinking block (with the signature field, empty), and back upstream next turn."""
    recording = Recording()
    client = sdk(gateway, recording)
    answer: Message
    if streaming:
        with client.messages.stream(model="thinker", max_tokens=300, messages=HELLO) as stream:
            answer = stream.get_final_message()
        [events] = streamed(recording)
        assert [block.type for block in events.blocks] == ["thinking", "text"]
    else:
        answer = client.messages.create(model="thinker", max_tokens=300, messages=HELLO)
    assert blocks(answer) == [
        {"type": "thinking", "thinking": "Reply kindly.", "signature": ""},
        {"type": "text", "text": "Answer to: Hello"},
    ]
    history: list[MessageParam] = [
        *HELLO,
        {"role": "assistant", "content": answer.content},
        {"role": "user", "content": "And again"},
    ]
    assert blocks(client.messages.create(model="thinker", max_tokens=300, messages=history))[1]["text"] == (
        "Answer to: And again"
    )
    earlier = gateway.upstream.requests[-1].json["messages"][2]
    assert earlier["role"] == "assistant" and earlier["reasoning_content"] == "Reply kindly."


def test_the_beta_namespace_as_coding_agents_call_it(gateway: Gateway) -> None:
    """``client.beta.messages`` posts to ``/v1/messages?beta=true`` with ``anthropic-beta`` headers."""
    recording = Recording()
    client = sdk(gateway, recording)
    betas = ["interleaved-thinking-2025-05-14", "fine-grained-tool-streaming-2025-05-14"]
    hello: list[BetaMessageParam] = [{"role": "user", "content": "Hello"}]
    with client.beta.messages.stream(model="agent", max_tokens=300, messages=hello, betas=betas) as stream:
        assert "".join(stream.text_stream) == "Answer to: Hello"
    assert read(bytes(recording.bodies[0])).stopped
    counted = client.beta.messages.count_tokens(model="agent", messages=hello, betas=betas)
    assert counted.input_tokens > 0
    [request] = gateway.upstream.requests
    assert_sent_as_the_gateway(request)


def test_the_gateway_key_as_a_bearer_token(gateway: Gateway) -> None:
    """``auth_token`` (``ANTHROPIC_AUTH_TOKEN``) sends ``Authorization: Bearer``, as some coding agents do."""
    client = sdk(gateway, api_key=None, auth_token=GATEWAY_KEY)
    assert blocks(client.messages.create(model="agent", max_tokens=300, messages=HELLO)) == [
        {"type": "text", "text": "Answer to: Hello"}
    ]
    [request] = gateway.upstream.requests
    assert_sent_as_the_gateway(request)


def test_count_tokens_estimates_the_request_the_route_would_send_and_sends_nothing(gateway: Gateway) -> None:
    client = sdk(gateway)
    question: list[Any] = [{"role": "user", "content": "What's the weather in Oslo? " * 20}]
    counted = client.messages.count_tokens(model="agent", system="Be brief.", messages=question, tools=[WEATHER_TOOL])
    plain = client.messages.count_tokens(model="plain", system="Be brief.", messages=question, tools=[WEATHER_TOOL])
    assert gateway.upstream.requests == [], "count_tokens asks no provider"
    client.messages.create(model="agent", max_tokens=300, system="Be brief.", messages=question, tools=[WEATHER_TOOL])
    [sent] = gateway.upstream.requests
    assert counted.input_tokens == estimate_prompt(sent.json), "the estimate is of what the route sends"
    assert counted.input_tokens > plain.input_tokens, "the injected tool and system prompt are counted"
    assert plain.input_tokens >= len(orjson.dumps(question)) // 4, "an estimate that errs high"


# LangChain's ChatAnthropic.


def chat_anthropic(gateway: Gateway) -> ChatAnthropic:
    return ChatAnthropic(  # type: ignore[call-arg]
        model="agent", anthropic_api_url=gateway.url, anthropic_api_key=GATEWAY_KEY, max_tokens=300, max_retries=0
    )


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def test_langchain_invoke(gateway: Gateway) -> None:
    answer = chat_anthropic(gateway).invoke("Hello")
    assert answer.content == "Answer to: Hello"
    assert answer.usage_metadata is not None
    assert (answer.usage_metadata["input_tokens"], answer.usage_metadata["output_tokens"]) == (3, 5)
    [request] = gateway.upstream.requests
    assert_sent_as_the_gateway(request)


def test_langchain_stream(gateway: Gateway) -> None:
    chunks = list(chat_anthropic(gateway).stream("Hello"))
    texts = [c.text for c in chunks if c.text]
    assert "".join(texts) == "Answer to: Hello" and len(texts) > 1
    whole = sum(chunks[1:], chunks[0])
    assert isinstance(whole, AIMessageChunk) and whole.usage_metadata is not None
    assert whole.usage_metadata["output_tokens"] == USAGE["completion_tokens"]
    [request] = gateway.upstream.requests
    assert request.json["stream"] is True


@pytest.mark.parametrize("streaming", [False, True], ids=["invoke", "stream"])
def test_langchain_bind_tools_round_trip(gateway: Gateway, streaming: bool) -> None:
    chat = chat_anthropic(gateway).bind_tools([get_weather])

    def ask(history: list[Any]) -> AIMessage:
        if not streaming:
            answer = chat.invoke(history)
            assert isinstance(answer, AIMessage)
            return answer
        chunks = list(chat.stream(history))
        whole = sum(chunks[1:], chunks[0])
        assert isinstance(whole, AIMessageChunk)
        return whole

    history: list[Any] = [HumanMessage("What's the weather in Oslo?")]
    first = ask(history)
    assert [(c["name"], c["args"], c["id"]) for c in first.tool_calls] == [
        ("get_weather", {"city": "Oslo"}, "call_weather")
    ]
    assert "Checking." in first.text
    history += [first, ToolMessage(get_weather.invoke(first.tool_calls[0]["args"]), tool_call_id="call_weather")]
    final = ask(history)
    assert final.text == "Answer to: the tool said sunny in Oslo" and not final.tool_calls
    sent = gateway.upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert sent[4] == {"role": "tool", "tool_call_id": "call_weather", "content": "sunny in Oslo"}


# Auth and errors: Anthropic's shape and types, the status the SDK maps to its exception.


def post(gateway: Gateway, path: str, body: Any, headers: dict[str, str] | None = None) -> httpx.Response:
    """A raw request; with no ``headers``, the gateway key as ``x-api-key``, as the SDKs send it."""
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    sent = {"content-type": "application/json", **({"x-api-key": GATEWAY_KEY} if headers is None else headers)}
    return httpx.post(gateway.url + path, content=content, headers=sent, timeout=10)


def assert_anthropic_error(response: httpx.Response, status: int, error_type: str) -> str:
    """The response is Anthropic's error, exactly: its shape, type and status; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"type", "error"} and body["type"] == "error"
    assert set(body["error"]) == {"type", "message"} and body["error"]["type"] == error_type
    assert error_type in ERROR_TYPES
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert PROVIDER_KEY not in response.text and GATEWAY_KEY not in response.text
    return message


MESSAGES_BODY: dict[str, Any] = {"model": "agent", "max_tokens": 300, "messages": HELLO}
COUNT_BODY: dict[str, Any] = {"model": "agent", "messages": HELLO}
KEYS = {
    "none": {},
    "wrong x-api-key": {"x-api-key": "not-the-key"},
    "wrong bearer": {"authorization": f"Bearer {GATEWAY_KEY}x"},
    "empty x-api-key": {"x-api-key": ""},
    "the key in another header": {"api-key": GATEWAY_KEY},
    "the key without Bearer": {"authorization": GATEWAY_KEY},
    "a wrong bearer beside a wrong x-api-key": {"authorization": "Bearer nope", "x-api-key": "not-the-key"},
}


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize("headers", KEYS.values(), ids=KEYS.keys())
def test_a_wrong_or_missing_key_is_401_in_anthropics_shape(
    gateway: Gateway, path: str, headers: dict[str, str]
) -> None:
    message = assert_anthropic_error(post(gateway, path, MESSAGES_BODY, headers), 401, "authentication_error")
    assert "x-api-key" in message
    oversized = {**MESSAGES_BODY, "system": "x" * MAX_BODY}
    assert post(gateway, path, oversized, headers).status_code == 401, "the key is checked before the body is read"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": GATEWAY_KEY},
        {"authorization": f"Bearer {GATEWAY_KEY}"},
        # A coding agent with both a token and a key set sends both: either may be the gateway's key.
        {"authorization": "Bearer another-token", "x-api-key": GATEWAY_KEY},
        {"authorization": f"Bearer {GATEWAY_KEY}", "x-api-key": "another-key"},
    ],
    ids=[
        "x-api-key",
        "bearer",
        "a wrong bearer beside the right x-api-key",
        "the right bearer beside a wrong x-api-key",
    ],
)
def test_the_gateway_key_in_either_header_is_let_in(gateway: Gateway, path: str, headers: dict[str, str]) -> None:
    response = post(gateway, path, MESSAGES_BODY if path == "/v1/messages" else COUNT_BODY, headers)
    assert response.status_code == 200, response.text


def test_the_sdk_raises_authentication_error(gateway: Gateway) -> None:
    with pytest.raises(anthropic.AuthenticationError) as caught:
        sdk(gateway, api_key="not-the-key").messages.create(model="agent", max_tokens=300, messages=HELLO)
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "authentication_error"


def upstream_error(status: int, message: str, **options: Any) -> Reply:
    return json_reply(
        {"error": {"message": message, "type": "server_error", "param": None, "code": None}}, status, **options
    )


@dataclass
class Refusal:
    """A request the gateway refuses, or an upstream failure before the answer started, and what the client gets."""

    body: Any
    status: int
    error_type: str
    exception: type[anthropic.APIStatusError]
    says: str
    reply: Reply | None = None
    headers: dict[str, str] | None = None
    stream_says: str | None = None  # when a stream request is told otherwise


REFUSALS = {
    "max_tokens missing": Refusal(
        {"model": "agent", "messages": HELLO}, 400, "invalid_request_error", anthropic.BadRequestError, "max_tokens"
    ),
    "not JSON": Refusal(b'{"model": "agent",', 400, "invalid_request_error", anthropic.BadRequestError, "JSON"),
    "a server tool": Refusal(
        {**MESSAGES_BODY, "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
        "web_search",
    ),
    "unknown model": Refusal(
        {**MESSAGES_BODY, "model": "claude-nope"}, 404, "not_found_error", anthropic.NotFoundError, "claude-nope"
    ),
    "body too large": Refusal(
        {**MESSAGES_BODY, "system": "x" * MAX_BODY},
        413,
        "request_too_large",
        anthropic.ContentTooLargeError,
        str(MAX_BODY),
    ),
    "upstream 400": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
        "context too long",
        upstream_error(400, "context too long"),
    ),
    "upstream 429": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        429,
        "rate_limit_error",
        anthropic.RateLimitError,
        "slow down",
        upstream_error(429, "slow down", headers={"retry-after": "7"}),
        {"retry-after": "7"},
    ),
    "upstream 500": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        500,
        "api_error",
        anthropic.InternalServerError,
        "it broke",
        upstream_error(500, "it broke"),
    ),
    "upstream 503": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        503,
        "overloaded_error",
        anthropic.ServiceUnavailableError,
        "busy",
        upstream_error(503, "busy"),
    ),
    "upstream 529": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        529,
        "overloaded_error",
        anthropic.OverloadedError,
        "overloaded",
        upstream_error(529, "overloaded"),
    ),
    "upstream text body": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        502,
        "api_error",
        anthropic.InternalServerError,
        "bad gateway page",
        Reply([b"bad gateway page"], status=502, content_type="text/plain"),
    ),
    "upstream timeout": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        504,
        "timeout_error",
        anthropic.GatewayTimeoutError,
        "timed out",
        json_reply({}, first_delay=3),
    ),
    "upstream unreachable": Refusal(
        {**MESSAGES_BODY, "model": "unreachable"},
        502,
        "api_error",
        anthropic.InternalServerError,
        "could not be reached",
    ),
    "upstream answer not JSON": Refusal(
        {**MESSAGES_BODY, "model": "solo"},
        502,
        "api_error",
        anthropic.InternalServerError,
        "not a JSON object",
        Reply([b"<html>"], content_type="application/json"),
        stream_says="before sending anything",
    ),
}


@pytest.mark.parametrize("case", REFUSALS.values(), ids=REFUSALS.keys())
@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_every_error_before_the_answer_in_anthropics_shape(gateway: Gateway, case: Refusal, streaming: bool) -> None:
    body = case.body if isinstance(case.body, bytes) or not streaming else {**case.body, "stream": True}
    if case.reply is not None:
        gateway.upstream.reply(case.reply, case.reply)
    response = post(gateway, "/v1/messages", body)
    says = case.stream_says if streaming and case.stream_says else case.says
    assert says in assert_anthropic_error(response, case.status, case.error_type)
    for name, value in (case.headers or {}).items():
        assert response.headers[name] == value
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk(gateway).post(
            "/v1/messages",
            content=body if isinstance(body, bytes) else orjson.dumps(body),
            options={"headers": {"content-type": "application/json"}},
            cast_to=Message,
            stream=streaming,
            stream_cls=anthropic.Stream[Any],
        )
    assert type(caught.value) is case.exception
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == case.error_type


def test_a_stream_whose_first_event_is_not_a_chunk_is_a_502_not_a_stream(gateway: Gateway) -> None:
    gateway.upstream.reply(Reply([b"data: <html>\n\n"]))
    response = post(gateway, "/v1/messages", {**MESSAGES_BODY, "model": "solo", "stream": True})
    assert_anthropic_error(response, 502, "api_error")


COUNT_REFUSALS = {
    "messages missing": (COUNT_BODY | {"messages": None}, 400, "invalid_request_error", anthropic.BadRequestError),
    "unknown model": (COUNT_BODY | {"model": "claude-nope"}, 404, "not_found_error", anthropic.NotFoundError),
    "body too large": (
        COUNT_BODY | {"system": "x" * MAX_BODY},
        413,
        "request_too_large",
        anthropic.ContentTooLargeError,
    ),
    "a document block": (
        COUNT_BODY | {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
        400,
        "invalid_request_error",
        anthropic.BadRequestError,
    ),
}


@pytest.mark.parametrize(
    ("body", "status", "error_type", "exception"), COUNT_REFUSALS.values(), ids=COUNT_REFUSALS.keys()
)
def test_count_tokens_errors_in_anthropics_shape(
    gateway: Gateway, body: dict[str, Any], status: int, error_type: str, exception: type[anthropic.APIStatusError]
) -> None:
    assert_anthropic_error(post(gateway, "/v1/messages/count_tokens", body), status, error_type)
    with pytest.raises(exception):
        sdk(gateway).post("/v1/messages/count_tokens", body=body, cast_to=Message)


# Faults after the stream started: one error event, never message_stop; a client that leaves cancels the upstream.

MESSAGE = "Everything is fine here, and the answer goes on for a while."
THOUGHTS = "PRIVATE: never shown"


def agent_events() -> list[bytes]:
    """An agent-style answer as the upstream's SSE events, one per piece of the arguments, ``[DONE]`` last."""
    return sse(agent_stream(split_evenly(json.dumps({"inner_thoughts": THOUGHTS, "message": MESSAGE}), 4)))


def cut(events: list[bytes]) -> list[bytes]:
    """The events up to two thirds of the way: some of the message has been released by then."""
    return events[: len(events) * 2 // 3]


FAULTS = {
    "connection breaks": (Reply(cut(agent_events()), then="break"), "api_error", "broke"),
    "upstream stalls": (Reply(cut(agent_events()), then="hang"), "timeout_error", "timed out"),
    "invalid event": (
        Reply([*cut(agent_events()), b"data: {not json\n\n", *agent_events()[-2:]]),
        "api_error",
        "invalid",
    ),
    "error event": (
        Reply(
            [
                *cut(agent_events()),
                b'data: {"error": {"message": "the model is overloaded", "type": "server_error"}}\n\n',
            ]
        ),
        "api_error",
        "the model is overloaded",
    ),
    "ends before the answer is finished": (Reply([*cut(agent_events()), b"data: [DONE]\n\n"]), "api_error", "before"),
    "the body ends mid-answer": (Reply(cut(agent_events())), "api_error", "before"),
}


def stream_body(gateway: Gateway) -> tuple[httpx.Response, bytes]:
    response = post(gateway, "/v1/messages", {**MESSAGES_BODY, "model": "solo", "stream": True})
    return response, response.content


@pytest.mark.parametrize(("reply", "error_type", "says"), FAULTS.values(), ids=FAULTS.keys())
def test_a_fault_mid_stream_ends_it_with_exactly_one_error_event(
    gateway: Gateway, reply: Reply, error_type: str, says: str
) -> None:
    gateway.upstream.reply(reply)
    response, body = stream_body(gateway)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    stream = read(body)
    names = [name for name, _ in parse_sse(body)]
    assert names.count("error") == 1 and names[-1] == "error" and "message_stop" not in names
    assert "message_delta" not in names, "no stop reason for an answer that did not end"
    assert stream.error is not None and stream.error["type"] == error_type and says in stream.error["message"]
    text = stream.joined("text")
    assert text and MESSAGE.startswith(text) and text != MESSAGE, "what was released before the fault came first"
    assert THOUGHTS.encode() not in body


def test_the_sdk_raises_on_a_failed_stream_after_the_text_so_far(gateway: Gateway) -> None:
    gateway.upstream.reply(Reply(cut(agent_events()), then="break"))
    pieces: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        sdk(gateway).messages.stream(model="solo", max_tokens=300, messages=HELLO) as stream,
    ):
        pieces.extend(stream.text_stream)
    assert pieces and MESSAGE.startswith("".join(pieces))
    assert isinstance(caught.value.body, dict) and caught.value.body["error"]["type"] == "api_error"


def test_a_client_leaving_mid_stream_cancels_the_upstream(gateway: Gateway) -> None:
    """The upstream goes quiet after some text (the route would wait 60 s); the client leaves after the first text."""
    gateway.upstream.reply(Reply(cut(agent_events()), then="hang"))
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={**MESSAGES_BODY, "model": "patient", "stream": True},
        headers={"x-api-key": GATEWAY_KEY},
        timeout=10,
    ) as response:
        received = b""
        for part in response.iter_bytes():
            received += part
            if b"text_delta" in received:
                break
    assert eventually(lambda: gateway.upstream.hangups), "the upstream request was closed when the client left"


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_a_client_leaving_before_the_first_byte_cancels_the_upstream(gateway: Gateway, streaming: bool) -> None:
    """The upstream would answer in 30 s; the client gives up after 0.3 s."""
    gateway.upstream.reply(Reply(agent_events(), first_delay=30))

    async def leave_early() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(
                    gateway.url + "/v1/messages",
                    json={**MESSAGES_BODY, "model": "patient", "stream": streaming},
                    headers={"x-api-key": GATEWAY_KEY},
                    timeout=httpx.Timeout(10, read=0.3),
                )

    asyncio.run(leave_early())
    assert eventually(lambda: gateway.upstream.hangups), "the upstream request was closed when the client left"


def test_shutdown_refuses_new_messages_and_cuts_a_long_stream_with_one_error_event() -> None:
    """Draining: a new request gets 503 with retry-after; a stream still running when the grace ends is cut."""
    upstream = ScriptedUpstream()
    upstream.reply(Reply(cut(agent_events()), then="hang"))
    with serve(upstream) as upstream_url:
        provider = f"providers: {{up: {{base_url: '{upstream_url}/v1'}}}}\n"
        text = provider + "models: [{name: agent, provider: up, rewrite: {}}]"
        app = create_app(parse_config(text, "t.yaml", env={}))
        service: Service = app.service

        async def scenario() -> tuple[httpx.Response, httpx.Response]:
            await service.start()
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://gw", timeout=10) as client:
                    running = asyncio.ensure_future(client.post("/v1/messages", json={**MESSAGES_BODY, "stream": True}))
                    # The gateway's own state, which offers nothing to wait on: polled.
                    while not service.completions.streams:  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    service.drain()
                    refused = await client.post("/v1/messages", json=MESSAGES_BODY)
                    service.completions.abort_streams("The gateway is shutting down; the answer was cut.")
                    return refused, await running
            finally:
                await service.stop()

        refused, cut_short = asyncio.run(scenario())
    assert "shutting down" in assert_anthropic_error(refused, 503, "overloaded_error")
    assert refused.headers["retry-after"] == "1"
    stream = read(cut_short.content)
    assert stream.error is not None and stream.error["type"] == "overloaded_error" and not stream.stopped
    assert [name for name, _ in parse_sse(cut_short.content)].count("error") == 1
    # What had arrived is the message's beginning (how much had arrived depends on the machine's pace:
    # the stream counts from its first chunk, which may still be the call's inner thoughts).
    assert MESSAGE.startswith(stream.joined("text"))


# The README's examples, as written (only the port changes), against a real `gateway serve` in each mode.

ANTHROPIC_SECTION = section("Anthropic Messages API")
[SDK_EXAMPLE] = code_blocks(ANTHROPIC_SECTION, "python")
[SHELL_EXAMPLE] = code_blocks(ANTHROPIC_SECTION)
README_BASE = "http://127.0.0.1:8080"
DEMO_GREETING = 'Hi! This is the "agent-gateway" demo provider'


@pytest.fixture(scope="module", params=["demo", "key-only"])
def readme_gateway(request: pytest.FixtureRequest) -> Iterator[tuple[str, ScriptedUpstream | None]]:
    """The built-in demo, and key-only mode (``OPENAI_API_KEY``) in front of a scripted upstream."""
    if request.param == "demo":
        with gateway_process() as process:
            yield process.url, None
        return
    with scripted_gateway() as (process, upstream):
        yield process.url, upstream


def assert_readme_answers(printed: str, upstream: ScriptedUpstream | None, since: int, said: list[str]) -> None:
    """One answer per thing said: the demo's echo, or the scripted model's reply; never its thoughts."""
    assert README_THOUGHTS not in printed and "inner_thoughts" not in printed
    if upstream is None:
        assert printed.count(DEMO_GREETING) == len(said)
        assert all(f"You said: {text}\n" in printed for text in said)
        return
    assert printed == "\n".join([README_REPLY] * len(said)) + "\n"
    sent = upstream.requests[since:]
    assert len(sent) == len(said)
    for request, text in zip(sent, said, strict=True):
        assert request.path == "/v1/chat/completions" and request.json["model"] == "gpt-4o-mini"
        assert request.json["messages"][-1] == {"role": "user", "content": text}
        assert request.headers["authorization"] == f"Bearer {README_PROVIDER_KEY}"
        assert "your-gateway-key" not in request.body.decode() + json.dumps(request.headers)
        assert not [name for name in request.headers if name.startswith(("anthropic", "x-api-key"))]


def test_readme_sdk_example(readme_gateway: tuple[str, ScriptedUpstream | None]) -> None:
    url, upstream = readme_gateway
    since = len(upstream.requests) if upstream else 0
    assert SDK_EXAMPLE.count(README_BASE) == 1
    out = io.StringIO()
    code = compile(SDK_EXAMPLE.replace(README_BASE, url), "README.md", "exec")
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "readme_example"})  # the README's own code
    assert_readme_answers(out.getvalue() + "\n", upstream, since, ["Hi!", "Tell me a story."])


def test_readme_environment_example(readme_gateway: tuple[str, ScriptedUpstream | None]) -> None:
    """The exports and the command, run as a shell would: the SDK reads ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY."""
    url, upstream = readme_gateway
    since = len(upstream.requests) if upstream else 0
    lines = SHELL_EXAMPLE.strip().splitlines()
    exports = dict(line.removeprefix("export ").split("=", 1) for line in lines if line.startswith("export "))
    assert exports == {"ANTHROPIC_BASE_URL": README_BASE, "ANTHROPIC_API_KEY": "your-gateway-key"}
    [command] = [shlex.split(line) for line in lines if not line.startswith("export ")]
    assert command[0] == "python3"
    env = clean_env(**{**exports, "ANTHROPIC_BASE_URL": url})
    env.pop("ANTHROPIC_AUTH_TOKEN", None)
    done = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert_readme_answers(done.stdout, upstream, since, ["Hi!"])
