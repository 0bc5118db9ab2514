"""The Responses front door end to end: real clients against a real gateway on a socket.

The gateway runs under uvicorn in front of a scripted upstream that plays an
agent-style model (it answers through ``send_message`` with inner thoughts and
provider reasoning, and calls the client's tool when asked about the weather).
Every answer the gateway sends on ``/v1/responses`` is recorded as it left, and
after each test every streamed event and every response body is parsed with
the openai SDK's own types (``tests.helpers.responses.sdk_checked`` and
``check_protocol``), so a shape the SDK would reject fails the test whatever
the client in the test happened to read.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import agents
import httpx
import openai
import orjson
import pytest
from openai.types.responses import FunctionToolParam, Response
from pydantic import BaseModel

from gateway.config import parse_config
from gateway.server.app import create_app
from gateway.server.service import Service
from tests.helpers.metrics import scrape, value
from tests.helpers.polling import eventually
from tests.helpers.responses import (
    HIDDEN,
    RESPONSES,
    TERMINAL,
    USAGE,
    check_protocol,
    completion_of,
    deltas,
    parse_sse,
    sdk_checked,
)
from tests.helpers.servers import Received, Reply, ScriptedUpstream, json_reply, serve, sse, stream_reply
from tests.helpers.streams import call, choice, chunk, split_evenly

KEY = "gw-test-key-responses"
PROVIDER_KEY = "sk-upstream-responses-0123456789"
CONFIG = """
server:
  api_keys: [{key}]
  max_body_bytes: 65536
  retry_backoff: 0.01
providers:
  up:
    base_url: "{up}/v1"
    api_key: {provider_key}
    timeout: {{connect: 1, read: 5, first_byte: 1, idle: 0.5}}
    max_failures: 1000
  openai:
    base_url: "{native}/v1"
    api_key: {provider_key}
    responses: native
models:
  - {{name: assistant, provider: up, model: tool-model, rewrite: {{inject_tools: true}}, max_retries: 0}}
  - {{name: thinker, provider: up, model: tool-model, rewrite: {{inject_tools: true, reasoning: expose}},
     max_retries: 0}}
  - {{name: main, provider: up, model: tool-model, rewrite: {{inject_tools: true}}, max_retries: 0,
     fallbacks: [assistant]}}
  - {{name: gpt-native, provider: openai, model: gpt-4o}}
  - {{name: "llama-*", provider: up, rewrite: {{inject_tools: true}}, max_retries: 0}}
"""
THOUGHTS = "Private thoughts: " + HIDDEN
PROVIDER_REASONING = "Provider reasoning: " + HIDDEN[::-1]
WEATHER: FunctionToolParam = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city.",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


# The upstream: an agent-style model.


def said(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content)
    return content or ""


def send_message(message: str, call_id: str = "call_m", index: int = 0) -> list[dict[str, Any]]:
    """A message-tool call, its arguments (inner thoughts first) streamed in small pieces."""
    document = json.dumps({"inner_thoughts": THOUGHTS, "message": message}, ensure_ascii=False)
    first = call(index, "", id=call_id, name="send_message")
    return [
        chunk(choice(role="assistant", content=None, tool_calls=[first])),
        *[chunk(choice(tool_calls=[call(index, piece)])) for piece in split_evenly(document, 5)],
    ]


def agent_answer(message: str, *, weather_call: bool = False, finish: str = "tool_calls") -> list[dict[str, Any]]:
    """A whole answer: provider reasoning, the message, maybe a get_weather call, the finish, the usage."""
    chunks = [chunk(choice(role="assistant", reasoning_content=PROVIDER_REASONING)), *send_message(message)]
    if weather_call:
        arguments = json.dumps({"inner_thoughts": THOUGHTS, "city": "Oslo"})
        chunks.append(chunk(choice(tool_calls=[call(1, "", id="call_w1", name="get_weather")])))
        chunks += [chunk(choice(tool_calls=[call(1, piece)])) for piece in split_evenly(arguments, 4)]
    return [*chunks, chunk(choice(finish=finish)), chunk(usage=USAGE)]


def agent_model(request: Received) -> Reply:
    """Plays the model: calls get_weather when asked about the weather and offered it, answers a tool result,
    else echoes the user, stopping after ``max_completion_tokens`` characters (a "token" each) when it is set.
    Streams only carry usage when the request asks for it, as OpenAI's do."""
    body = request.json
    last = body["messages"][-1]
    offered = {tool["function"]["name"] for tool in body.get("tools", ())}
    limit = body.get("max_completion_tokens")
    if limit is not None:
        # The model is cut off mid-call: the message so far, no closing quote, finish "length".
        document = json.dumps({"inner_thoughts": THOUGHTS, "message": f"You said: {said(last)}"})
        cut = document[: document.index('"message": "') + len('"message": "') + limit]
        first = call(0, "", id="call_m", name="send_message")
        chunks = [chunk(choice(role="assistant", content=None, tool_calls=[first]))]
        chunks += [chunk(choice(tool_calls=[call(0, piece)])) for piece in split_evenly(cut, 5)]
        chunks += [chunk(choice(finish="length")), chunk(usage=USAGE)]
    elif last["role"] == "user" and "weather" in said(last).lower() and "get_weather" in offered:
        chunks = agent_answer("Checking.", weather_call=True)
    elif last["role"] == "tool":
        chunks = agent_answer(f"It is {last['content']} in Oslo.")
    else:
        chunks = agent_answer(f"You said: {said(last)}")
    if not body.get("stream"):
        return json_reply(completion_of(chunks))
    if not (body.get("stream_options") or {}).get("include_usage"):
        chunks = chunks[:-1]
    return stream_reply(chunks)


def agent_events(message: str) -> list[bytes]:
    """The SSE events of a streamed answer, one piece each, for scripting faults."""
    return sse(agent_answer(message))


# The gateway, recorded as its clients receive it.


@dataclass
class Recorded:
    """One ``/v1/responses`` answer as it left the gateway."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False

    @property
    def streamed(self) -> bool:
        return self.headers.get("content-type", "").startswith("text/event-stream")


class Tap:
    """The gateway's ASGI app, recording every answer on ``/v1/responses``."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.answers: list[Recorded] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != "/v1/responses":
            await self.app(scope, receive, send)
            return
        answer = Recorded()
        self.answers.append(answer)

        async def recorded(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                answer.status = message["status"]
                answer.headers = {k.decode(): v.decode() for k, v in message.get("headers", ())}
            elif message["type"] == "http.response.body":
                answer.body += message.get("body", b"")
                answer.complete = not message.get("more_body", False)
            await send(message)

        await self.app(scope, receive, recorded)


@dataclass
class Gateway:
    url: str
    upstream: ScriptedUpstream
    native: ScriptedUpstream
    tap: Tap
    service: Service

    def client(self, **options: Any) -> openai.OpenAI:
        """The SDK as an application uses it, but validating every body against its types and never retrying."""
        return openai.OpenAI(
            **{"timeout": 10.0, **options},
            base_url=self.url + "/v1",
            api_key=KEY,
            max_retries=0,
            _strict_response_validation=True,
        )

    def sent(self) -> list[dict[str, Any]]:
        """The chat requests the upstream received."""
        return [request.json for request in self.upstream.requests]


@pytest.fixture(scope="module")
def running() -> Iterator[Gateway]:
    upstream, native = ScriptedUpstream(default=agent_model), ScriptedUpstream()
    with serve(upstream) as up_url, serve(native) as native_url:
        text = CONFIG.format(key=KEY, provider_key=PROVIDER_KEY, up=up_url, native=native_url)
        app = create_app(parse_config(text, "responses.yaml", env={}))
        tap = Tap(app)
        with serve(tap) as url:
            yield Gateway(url, upstream, native, tap, app.service)


@pytest.fixture
def gateway(running: Gateway) -> Iterator[Gateway]:
    """A clean record before each test; afterwards every answer must be one the SDK's types accept,
    no upstream request may be left open, and the gateway still answers."""
    for upstream in (running.upstream, running.native):
        upstream.script.clear()
        upstream.requests.clear()
        upstream.hangups.clear()
    running.tap.answers.clear()
    yield running
    assert eventually(lambda: running.upstream.active == 0 and running.native.active == 0), "an upstream left open"
    for answer in running.tap.answers:
        check_answer(answer)


def check_answer(answer: Recorded) -> None:
    """An answer as the SDK's types read it: every event of a stream, the response object, or an OpenAI error."""
    if answer.headers.get("x-gateway-route") == "gpt-native":
        return  # forwarded as the provider sent it: the provider's bytes, which the test compares byte for byte
    if answer.status == 499:
        return  # the client had gone before the answer started: nothing was sent
    assert answer.headers["x-request-id"], "every answer names its request id"
    if answer.streamed:
        events = [sdk_checked(event) for event in parse_sse(answer.body)]
        if answer.complete:
            check_protocol(events)
        return
    assert answer.complete
    body = orjson.loads(answer.body)
    if answer.status == 200:
        Response.model_validate(body)
        assert body["status"] in ("completed", "incomplete")
    else:
        assert set(body) == {"error"} and body["error"]["message"], body


def stream_events(client: openai.OpenAI, **request: Any) -> list[Any]:
    """Every event of a streamed answer, as the SDK yields them; the model is ``assistant`` and the input "Hi"
    unless the request says otherwise."""
    with client.responses.create(**{"model": "assistant", "input": "Hi", **request}, stream=True) as stream:
        return list(stream)


def text_of(events: list[Any]) -> str:
    return "".join(event.delta for event in events if event.type == "response.output_text.delta")


# Real clients: openai-python.


def test_create_returns_the_message_as_output_text(gateway: Gateway) -> None:
    raw = gateway.client().responses.with_raw_response.create(
        model="assistant", input="Hi there", instructions="Be kind."
    )
    response = raw.parse()
    assert response.output_text == "You said: Hi there"
    assert [item.type for item in response.output] == ["message"]
    assert (response.status, response.model, response.object) == ("completed", "assistant", "response")
    assert response.id.startswith("resp_") and response.created_at > 0
    assert response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens, response.usage.total_tokens) == (11, 7, 18)
    assert response.usage.input_tokens_details.cached_tokens == 3
    assert response.usage.output_tokens_details.reasoning_tokens == 2
    assert raw.headers["x-gateway-route"] == "assistant" and raw.headers["x-request-id"].startswith("req_")
    assert not any(c in raw.http_response.text for c in HIDDEN)
    [sent] = gateway.upstream.requests
    assert sent.path == "/v1/chat/completions" and sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
    assert sent.headers["x-request-id"] == raw.headers["x-request-id"]
    assert KEY not in str(sent.headers) + sent.body.decode()
    body = sent.json
    assert body["model"] == "tool-model" and body["stream"] is False and "stream_options" not in body
    # Agent mode: the instructions lead the system message, which gains the gateway's prompt; send_message is injected.
    assert body["messages"][0]["role"] == "system" and body["messages"][0]["content"].startswith("Be kind.")
    assert "send_message" in body["messages"][0]["content"]
    assert body["messages"][1:] == [{"role": "user", "content": "Hi there"}]
    assert [tool["function"]["name"] for tool in body["tools"]] == ["send_message"] and body[
        "tool_choice"
    ] == "required"


def test_streamed_events_carry_the_message_and_end_completed_with_usage(gateway: Gateway) -> None:
    provider_headers = {"x-request-id": "req_up_1", "x-ratelimit-remaining-requests": "99"}
    gateway.upstream.reply(stream_reply(agent_answer("You said: Hello, 😀 world"), headers=provider_headers))
    events = stream_events(gateway.client(), input="Hello, 😀 world")
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert [event.type for event in events if "delta" not in event.type] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert text_of(events) == "You said: Hello, 😀 world" == events[-1].response.output_text
    assert len([e for e in events if e.type == "response.output_text.delta"]) > 1, "the text streams in pieces"
    usage = events[-1].response.usage
    assert usage is not None and (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (11, 7, 18)
    [answer] = gateway.tap.answers
    assert answer.headers["x-gateway-route"] == "assistant" and answer.headers["cache-control"] == "no-cache"
    assert answer.headers["x-upstream-request-id"] == "req_up_1" and answer.headers["x-request-id"] != "req_up_1"
    assert answer.headers["x-upstream-ratelimit-remaining-requests"] == "99", "the upstream's own, renamed"
    assert not any(c in answer.body.decode() for c in HIDDEN)
    [body] = gateway.sent()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"][-1]["function"]["name"] == "send_message"


def test_stream_helpers_build_snapshots_and_the_final_response(gateway: Gateway) -> None:
    with gateway.client().responses.stream(model="assistant", input="Tell me a story") as stream:
        snapshots = [event.snapshot for event in stream if event.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert snapshots[-1] == "You said: Tell me a story" == final.output_text
    assert len(snapshots) > 1 and all(later.startswith(earlier) for earlier, later in itertools.pairwise(snapshots))
    assert final.status == "completed" and final.usage is not None and final.usage.total_tokens == 18


def test_a_glob_route_serves_the_name_it_matches(gateway: Gateway) -> None:
    raw = gateway.client().responses.with_raw_response.create(model="llama-3.1-8b", input="Hi")
    assert raw.headers["x-gateway-route"] == "llama-*"
    response = raw.parse()
    assert response.model == "llama-3.1-8b" and response.output_text == "You said: Hi"
    assert [body["model"] for body in gateway.sent()] == ["llama-3.1-8b"]


def test_structured_output_through_an_agent_route(gateway: Gateway) -> None:
    class City(BaseModel):
        name: str
        population: int

    # Structured output goes without the message tool, as on chat completions: the model writes the JSON as content.
    answer = [chunk(choice(role="assistant", content='{"name": "Oslo", "population": 709000}', finish="stop"))]
    gateway.upstream.reply(json_reply(completion_of([*answer, chunk(usage=USAGE)])))
    parsed = gateway.client().responses.parse(model="assistant", input="Oslo?", text_format=City)
    assert parsed.output_parsed == City(name="Oslo", population=709000)
    [body] = gateway.sent()
    assert body["response_format"]["type"] == "json_schema" and body["response_format"]["json_schema"]["name"] == "City"
    assert "tools" not in body


def test_an_answer_cut_at_max_output_tokens_is_incomplete(gateway: Gateway) -> None:
    response = gateway.client().responses.create(model="assistant", input="Hello there", max_output_tokens=7)
    assert response.status == "incomplete" and response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    [message] = response.output
    assert message.type == "message" and message.status == "incomplete" and response.output_text == "You sai"
    events = stream_events(gateway.client(), input="Hello there", max_output_tokens=7)
    assert [event.type for event in events if event.type in TERMINAL] == ["response.incomplete"] == [events[-1].type]
    assert text_of(events) == "You sai" == events[-1].response.output_text
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"
    assert [body["max_completion_tokens"] for body in gateway.sent()] == [7, 7]


@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_a_tool_round_trip(gateway: Gateway, streaming: bool) -> None:
    """function_call out (without inner_thoughts), function_call_output in, the final text."""
    client = gateway.client()
    question: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
    first: Response
    if streaming:
        with client.responses.stream(model="assistant", input=question, tools=[WEATHER]) as stream:
            first = stream.get_final_response()
    else:
        first = client.responses.create(model="assistant", input=question, tools=[WEATHER])
    assert first.output_text == "Checking."
    [weather] = [item for item in first.output if item.type == "function_call"]
    assert (weather.call_id, weather.name, json.loads(weather.arguments)) == (
        "call_w1",
        "get_weather",
        {"city": "Oslo"},
    )
    assert [item.type for item in first.output] == ["message", "function_call"]
    follow_up = [
        *question,
        *first.output,
        {"type": "function_call_output", "call_id": weather.call_id, "output": "sunny"},
    ]
    second = client.responses.create(model="assistant", input=follow_up, tools=[WEATHER])
    assert second.output_text == "It is sunny in Oslo." and second.status == "completed"
    asked, answered = gateway.sent()
    function = asked["tools"][0]["function"]
    assert function["name"] == "get_weather" and function["strict"] is True
    assert list(function["parameters"]["properties"]) == ["inner_thoughts", "city"]
    # The history: the text became a send_message call answered at once, then the client's call and its output.
    history = answered["messages"][1:]
    assert history[0] == {"role": "user", "content": "What is the weather in Oslo?"}
    message_call, weather_call = history[1]["tool_calls"]
    assert message_call["function"]["name"] == "send_message"
    assert json.loads(message_call["function"]["arguments"]) == {"message": "Checking."}
    assert weather_call == {
        "id": "call_w1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": weather.arguments},
    }
    assert history[2]["role"] == "tool" and history[2]["tool_call_id"] == message_call["id"]
    assert history[3] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}


def test_reasoning_stays_hidden_on_a_route_that_hides_it(gateway: Gateway) -> None:
    """Reasoning items the client sends back are not sent upstream; the model's reasoning never reaches the client."""
    history: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": HIDDEN}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    response = gateway.client().responses.create(model="assistant", input=history)
    assert response.output_text == "You said: Again"
    assert [item.type for item in response.output] == ["message"]
    [sent] = gateway.upstream.requests
    assert not any(c in sent.body.decode() for c in HIDDEN)
    events = stream_events(gateway.client(), input=history)
    assert text_of(events) == "You said: Again" and not any(e.type.startswith("response.reasoning") for e in events)
    for answer in gateway.tap.answers:
        assert not any(c in answer.body.decode() for c in HIDDEN)


def test_reasoning_comes_back_as_reasoning_items_on_a_route_that_exposes_it(gateway: Gateway) -> None:
    history: list[Any] = [
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [], "content": [{"type": "reasoning_text", "text": "Earlier."}]},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Again"},
    ]
    events = stream_events(gateway.client(), input=history, model="thinker")
    final = events[-1].response
    assert [item.type for item in final.output] == ["reasoning", "message"]
    reasoning = final.output[0]
    # The provider's reasoning and the inner thoughts, joined as on chat completions, as a summary.
    exposed = PROVIDER_REASONING + "\n\n" + THOUGHTS
    assert "".join(part.text for part in reasoning.summary) == exposed
    assert deltas([e.model_dump() for e in events], "response.reasoning_summary_text.delta") == exposed
    assert final.output_text == "You said: Again"
    [sent] = gateway.sent()
    assistant = next(m for m in sent["messages"] if m["role"] == "assistant")
    assert assistant["reasoning_content"] == "Earlier."


# Real clients: an agent of the OpenAI Agents SDK.


@pytest.mark.parametrize("streaming", [False, True], ids=["run", "run_streamed"])
def test_an_agents_sdk_agent_calls_its_tool_and_answers(gateway: Gateway, streaming: bool) -> None:
    calls: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        calls.append(city)
        return "sunny"

    async def run_agent() -> tuple[Any, str, list[str]]:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key=KEY, max_retries=0, timeout=10)
        model = agents.OpenAIResponsesModel(model="assistant", openai_client=client)
        agent = agents.Agent(name="Weather", instructions="Answer briefly.", tools=[get_weather], model=model)
        config = agents.RunConfig(tracing_disabled=True)
        if not streaming:
            result = await agents.Runner.run(agent, "What is the weather in Oslo?", run_config=config)
            return result.final_output, "", []
        streamed = agents.Runner.run_streamed(agent, "What is the weather in Oslo?", run_config=config)
        text, kinds = "", list[str]()
        async for event in streamed.stream_events():
            if event.type == "raw_response_event":
                kinds.append(event.data.type)
                if event.data.type == "response.output_text.delta":
                    text += event.data.delta
        return streamed.final_output, text, kinds

    final_output, text, kinds = asyncio.run(run_agent())
    assert final_output == "It is sunny in Oslo." and calls == ["Oslo"]
    if streaming:
        assert text == "Checking.It is sunny in Oslo."
        assert kinds.count("response.completed") == 2 and "response.function_call_arguments.delta" in kinds
    asked, answered = gateway.sent()
    assert asked["messages"][0]["content"].startswith("Answer briefly.")
    assert [tool["function"]["name"] for tool in asked["tools"]] == ["get_weather", "send_message"]
    assert answered["messages"][-1] == {"role": "tool", "tool_call_id": "call_w1", "content": "sunny"}
    assert all(body["stream"] is streaming for body in (asked, answered))


# Metrics: a Responses request counts as a chat one does.


def test_metrics_count_responses_requests(gateway: Gateway) -> None:
    before = scrape(gateway.url)
    client = gateway.client()
    client.responses.create(model="assistant", input="Hi")
    stream_events(client)
    client.responses.create(model="assistant", input="What is the weather in Oslo?", tools=[WEATHER])
    gateway.upstream.reply(Reply(agent_events("This stream breaks.")[:-5], then="break"))
    assert stream_events(client)[-1].type == "response.failed"

    def delta(name: str, **labels: str) -> float:
        return value(scrape(gateway.url), name, **labels) - value(before, name, **labels)

    # A request is counted as its answer ends, a moment after the client has the last byte.
    assert eventually(lambda: delta("gateway_requests_total", route="assistant", status="200", stream="true") == 2)
    assert delta("gateway_requests_total", route="assistant", status="200", stream="false") == 2
    assert delta("gateway_tokens_total", route="assistant", kind="prompt") == 3 * cast(int, USAGE["prompt_tokens"])
    assert delta("gateway_tokens_total", route="assistant", kind="completion") == 3 * cast(
        int, USAGE["completion_tokens"]
    )
    assert delta("gateway_rewrite_message_calls_total", route="assistant") == 4
    assert delta("gateway_rewrite_client_calls_total", route="assistant") == 1
    assert delta("gateway_rewrite_reasoning_chars_total", route="assistant", action="hidden") > 0
    assert delta("gateway_upstream_errors_total", provider="up", kind="mid_stream") == 1


# Natively forwarded Responses streams reach the client byte for byte.


def recorded_stream(path: Path) -> bytes:
    """A recorded Responses stream as the provider sent it (``.jsonl``: one event a line, framed as PROVENANCE says)."""
    if path.suffix == ".sse":
        return path.read_bytes()
    events = [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]
    return b"".join(
        b"event: " + event["type"].encode() + b"\ndata: " + line + b"\n\n"
        for event, line in zip(events, [line for line in path.read_bytes().splitlines() if line.strip()], strict=True)
    )


RECORDED = sorted(RESPONSES.iterdir())


@pytest.mark.parametrize("path", RECORDED, ids=[path.name for path in RECORDED])
def test_a_natively_served_stream_reaches_the_client_intact(gateway: Gateway, path: Path) -> None:
    recorded = recorded_stream(path)
    pieces = [recorded[i : i + 211] for i in range(0, len(recorded), 211)]  # cut anywhere, inside events too
    gateway.native.reply(Reply(pieces, headers={"x-request-id": "req_provider_1"}))
    request = {"model": "gpt-native", "input": "Hi", "stream": True, "previous_response_id": "resp_1", "store": True}
    with httpx.stream(
        "POST",
        gateway.url + "/v1/responses",
        json=request,
        headers={"authorization": f"Bearer {KEY}", "x-request-id": "client-chosen-1"},
        timeout=10,
    ) as response:
        received = b"".join(response.iter_raw())
    assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
    assert received == recorded
    assert response.headers["x-request-id"] == "client-chosen-1"
    assert response.headers["x-upstream-request-id"] == "req_provider_1"
    assert response.headers["x-gateway-route"] == "gpt-native"
    [sent] = gateway.native.requests
    assert sent.path == "/v1/responses" and sent.json == {**request, "model": "gpt-4o"}
    assert (
        sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}" and sent.headers["x-request-id"] == "client-chosen-1"
    )
    assert gateway.upstream.requests == []


# Faults: after the stream started, exactly one response.failed; before, an OpenAI-shaped HTTP error.

# Each cuts the answer after most of the message (the last events are a few pieces, the finish, usage and [DONE]).
MID_STREAM: dict[str, tuple[Callable[[list[bytes]], Reply], str]] = {
    "connection broken": (lambda good: Reply(good[:-5], then="break"), "connection"),
    "idle timeout": (lambda good: Reply(good[:-5], then="hang"), "timed out mid-stream"),
    "invalid event": (lambda good: Reply([*good[:-5], b"data: {not json\n\n", *good[-5:]]), "invalid event"),
    "error event": (
        lambda good: Reply([*good[:-5], b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n']),
        "overloaded",
    ),
    "no finish": (lambda good: Reply([*good[:-5], b"data: [DONE]\n\n"]), "before the answer was finished"),
}


@pytest.mark.parametrize("fault", MID_STREAM)
def test_a_fault_mid_stream_ends_it_with_one_response_failed(gateway: Gateway, fault: str) -> None:
    script, said_in_message = MID_STREAM[fault]
    good = agent_events("The first words arrive, then the fault.")
    gateway.upstream.reply(script(good))
    with gateway.client().responses.stream(model="assistant", input="Hi") as stream:
        events: list[Any] = list(stream)
        with pytest.raises(RuntimeError):
            stream.get_final_response()
    assert [event.type for event in events if event.type in TERMINAL] == ["response.failed"] == [events[-1].type]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None and failed.error.code == "server_error"
    assert said_in_message in failed.error.message
    # What arrived before the fault reached the client, and the failed response repeats it, marked incomplete.
    assert text_of(events) and "The first words arrive, then the fault.".startswith(text_of(events))
    assert failed.output_text == text_of(events) and failed.output[0].status == "incomplete"
    if fault == "idle timeout":
        assert eventually(lambda: bool(gateway.upstream.hangups)), "the stalled upstream request was closed"


# What the upstream does, and the status and codes the client gets (without and with streaming).
BEFORE_START: dict[str, tuple[Reply, int, tuple[str | None, str | None]]] = {
    "500": (
        json_reply({"error": {"message": "boom", "type": "server_error", "param": None, "code": None}}, 500),
        500,
        (None, None),
    ),
    "429": (
        json_reply({"error": {"message": "slow", "type": "requests", "param": None, "code": "rate"}}, 429),
        429,
        ("rate", "rate"),
    ),
    "no headers in time": (Reply(agent_events("late"), first_delay=3), 504, ("upstream_timeout", "upstream_timeout")),
    "reset inside the first event": (
        Reply([b'data: {"id": "chatcmpl-1", "choi'], then="break"),
        502,
        ("upstream_unreachable", "upstream_disconnected"),
    ),
    "not a completion": (
        Reply([b"data: <html>\n\n"]),
        502,
        ("upstream_invalid_response", "upstream_invalid_event"),
    ),
}


@pytest.mark.parametrize("fault", BEFORE_START)
@pytest.mark.parametrize("streaming", [False, True], ids=["create", "stream"])
def test_a_fault_before_the_answer_started_is_an_openai_error(gateway: Gateway, fault: str, streaming: bool) -> None:
    reply, status, codes = BEFORE_START[fault]
    gateway.upstream.reply(reply)
    with pytest.raises(openai.APIStatusError) as caught:
        if streaming:
            stream_events(gateway.client())
        else:
            gateway.client().responses.create(model="assistant", input="Hi")
    assert (caught.value.status_code, caught.value.code) == (status, codes[streaming])
    if status in (500, 429):  # the upstream's own error, kept
        assert caught.value.body == orjson.loads(reply.pieces[0])["error"]
    [answer] = gateway.tap.answers
    assert answer.status == status and not answer.streamed


def test_a_fallback_serves_and_the_route_header_names_it(gateway: Gateway) -> None:
    gateway.upstream.reply(json_reply({"error": {"message": "down", "type": "server_error"}}, 503))
    with gateway.client().responses.with_streaming_response.create(model="main", input="Hi", stream=True) as raw:
        assert raw.headers["x-gateway-route"] == "assistant"
        events = [sdk_checked(event) for event in parse_sse(raw.read())]
    assert deltas(events) == "You said: Hi" and events[-1]["type"] == "response.completed"
    assert len(gateway.upstream.requests) == 2


# A client that goes away cancels the upstream request.


def test_text_leaves_before_the_upstream_ends_and_a_client_leaving_closes_the_upstream(gateway: Gateway) -> None:
    """The upstream sends the message and then nothing more: the client still reads the text, then hangs up."""
    good = agent_events("Here before the end.")
    gateway.upstream.reply(Reply(good[:-2], then="hang"))  # no finish, no usage: the stream would idle out
    client = gateway.client(timeout=30)
    with client.responses.create(model="assistant", input="Hi", stream=True) as stream:
        text = ""
        for event in stream:
            if event.type == "response.output_text.delta":
                text += event.delta
            if text == "Here before the end.":
                break
    assert eventually(lambda: bool(gateway.upstream.hangups)), "the upstream request was closed"
    assert len(gateway.upstream.hangups) == 1


def test_a_client_leaving_while_the_upstream_has_not_answered_closes_the_upstream(gateway: Gateway) -> None:
    gateway.upstream.reply(Reply(agent_events("late"), first_delay=4))  # the gateway's first_byte timeout is 1 s
    client = gateway.client(timeout=0.3)
    with pytest.raises(openai.APITimeoutError):
        client.responses.create(model="assistant", input="Hi", stream=True)
    assert eventually(lambda: bool(gateway.upstream.hangups)), "the upstream request was closed"
    assert gateway.upstream.hangups[0] < 1, "before the gateway's own first-byte timeout"


# Auth and refusals, in OpenAI's shape, before anything is sent upstream.


def test_a_missing_or_wrong_key_is_401(gateway: Gateway) -> None:
    for key in ("wrong-key", ""):
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key=key or "unused", max_retries=0)
        headers = {"authorization": ""} if not key else {}
        with pytest.raises(openai.AuthenticationError) as caught:
            client.responses.create(model="assistant", input="Hi", extra_headers=headers)
        assert caught.value.code == "invalid_api_key" and caught.value.status_code == 401
    assert gateway.upstream.requests == []


def test_an_unknown_model_is_404(gateway: Gateway) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        gateway.client().responses.create(model="no-such-model", input="Hi", stream=True)
    assert caught.value.code == "model_not_found" and "no-such-model" in caught.value.message
    assert caught.value.response.headers["x-request-id"]
    assert gateway.upstream.requests == []


def test_a_body_over_the_limit_is_413(gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.client().responses.create(model="assistant", input="x" * 70_000)
    assert caught.value.status_code == 413 and caught.value.code == "request_too_large"
    assert gateway.upstream.requests == []


@pytest.mark.parametrize(
    ("request_fields", "param", "code"),
    [
        ({"conversation": "conv_1"}, "conversation", "unsupported_parameter"),
        ({"background": True}, "background", "unsupported_value"),
        ({"tools": [{"type": "apply_patch"}]}, "tools[0].type", "unsupported_value"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0].type",
            "unsupported_value",
        ),
        ({"input": 5}, "input", "invalid_type"),
        ({"temperature": "hot"}, "temperature", "invalid_type"),
    ],
)
def test_a_request_the_gateway_cannot_translate_is_400_naming_the_field(
    gateway: Gateway, request_fields: dict[str, Any], param: str, code: str
) -> None:
    request = {"model": "assistant", "input": "Hi", **request_fields}
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().responses.create(**request)
    assert (caught.value.param, caught.value.code) == (param, code)
    assert caught.value.response.headers["x-request-id"]
    assert gateway.upstream.requests == []


def test_requests_in_flight_at_once_each_get_their_own_answer(gateway: Gateway) -> None:
    """Streams interleave on the gateway; none sees another's text, events or response id."""
    results: dict[int, list[Any]] = {}

    def ask(number: int) -> None:
        results[number] = stream_events(gateway.client(), input=f"question {number}")

    threads = [threading.Thread(target=ask, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert {number: text_of(events) for number, events in results.items()} == {
        number: f"You said: question {number}" for number in range(6)
    }
    assert len({events[-1].response.id for events in results.values()}) == 6
