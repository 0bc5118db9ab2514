"""The demo provider: an offline agent-style upstream whose answers survive the rewrite."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import httpx
import openai
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from langchain_openai import ChatOpenAI
from pydantic import BaseModel
from pydantic import Field as PydanticField

from gateway.config import default_config
from gateway.core.rewriter import StreamRewriter
from gateway.dialects.chat import ChatStreamEncoder
from gateway.server.app import create_app
from gateway.upstream.demo import DemoTransport
from tests.helpers.servers import serve
from tests.helpers.streams import rewrite_completion

Chunks = list[dict[str, Any]]

BASE_URL = "http://demo.invalid/v1"
USER = 'Is it "sunny" in Köln?'
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather.",
        "parameters": {
            "type": "object",
            "properties": {
                "inner_thoughts": {"type": "string"},
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "tags": {"type": "array", "items": {"type": "string"}},
                "filters": {"type": "object"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "note": {"type": "string"},
            },
            "required": ["inner_thoughts", "city", "days", "metric", "tags", "filters", "unit"],
        },
    },
}
SEND_MESSAGE = {"type": "function", "function": {"name": "send_message", "parameters": {"type": "object"}}}


def chat(content: Any = USER, **body: Any) -> dict[str, Any]:
    return {"model": "demo-agent", "messages": [{"role": "user", "content": content}], **body}


@dataclass
class Reply:
    """A response as the client read it, piece by piece."""

    status: int
    headers: httpx.Headers
    pieces: list[bytes]

    @property
    def body(self) -> bytes:
        return b"".join(self.pieces)

    def json(self) -> Any:
        return orjson.loads(self.body)


def request(method: str, path: str, *, transport: DemoTransport | None = None, **kwargs: Any) -> Reply:
    """One request through a real client."""

    async def send() -> Reply:
        async with httpx.AsyncClient(transport=transport or DemoTransport(), base_url=BASE_URL) as client:
            response = await client.send(client.build_request(method, path, **kwargs), stream=True)
            pieces = [piece async for piece in response.aiter_raw()]
            return Reply(response.status_code, response.headers, pieces)

    return asyncio.run(send())


def post(body: dict[str, Any], **kwargs: Any) -> Reply:
    return request("POST", "/chat/completions", json=body, **kwargs)


def events(body: bytes) -> Chunks:
    """The decoded events of a well-formed SSE body, which must end with [DONE]."""
    assert body.endswith(b"\n\ndata: [DONE]\n\n")
    raw = body.split(b"\n\n")
    assert raw[-2:] == [b"data: [DONE]", b""]
    assert all(event.startswith(b"data: {") for event in raw[:-2])
    return [orjson.loads(event[len(b"data: ") :]) for event in raw[:-2]]


def fragments(chunks: Chunks) -> dict[int, list[str]]:
    """The argument fragments of each upstream tool call, by index, after its opening delta."""
    out: dict[int, list[str]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for call in choice["delta"].get("tool_calls") or ():
                pieces = out.setdefault(call["index"], [])
                if "id" not in call:
                    pieces.append(call["function"]["arguments"])
    return out


def rewrite(chunks: Chunks) -> Chunks:
    """The chunks a chat client gets: the rewriter's events through the chat encoder."""
    rewriter = StreamRewriter()
    events = [event for chunk in chunks for event in rewriter.feed(chunk)]
    return ChatStreamEncoder().chunks(events + rewriter.finish())


def visible(chunks: Chunks) -> str:
    return "".join(c["delta"].get("content") or "" for chunk in chunks for c in chunk["choices"])


def client_calls(chunks: Chunks) -> list[dict[str, Any]]:
    """Accumulate tool-call deltas the way the OpenAI SDK does."""
    calls: dict[int, dict[str, Any]] = {}
    for chunk in chunks:
        for choice in chunk["choices"]:
            for delta in choice["delta"].get("tool_calls") or ():
                slot = calls.setdefault(delta["index"], {"id": None, "name": "", "arguments": ""})
                slot["id"] = slot["id"] or delta.get("id")
                slot["name"] += delta["function"].get("name", "")
                slot["arguments"] += delta["function"].get("arguments", "")
    return [calls[index] for index in sorted(calls)]


def finish_reasons(chunks: Chunks) -> list[str]:
    return [c["finish_reason"] for chunk in chunks for c in chunk["choices"] if c["finish_reason"]]


def escape_starts(text: str) -> list[int]:
    """Where each escape of a JSON text begins."""
    return [match.start() for match in re.finditer(r"\\(?:u[0-9a-fA-F]{4}|.)", text)]


# Streaming


def test_stream_is_well_formed_openai_chunks() -> None:
    response = post(chat(stream=True))
    assert response.status == 200
    assert response.headers["content-type"] == "text/event-stream"
    assert response.headers["x-request-id"].startswith("req_demo_")
    chunks = events(response.body)
    for chunk in chunks:
        assert chunk["id"].startswith("chatcmpl-demo-")
        assert chunk["object"] == "chat.completion.chunk"
        assert isinstance(chunk["created"], int)
        assert chunk["model"] == "demo-agent"
        assert chunk["system_fingerprint"] == "demo"
        assert "usage" not in chunk
    assert len({chunk["id"] for chunk in chunks}) == 1
    first = chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] is None
    [opening] = first["delta"]["tool_calls"]
    assert opening["index"] == 0 and opening["id"].startswith("call_demo_") and opening["type"] == "function"
    assert opening["function"] == {"name": "send_message", "arguments": ""}
    for chunk in chunks[1:-1]:
        [choice] = chunk["choices"]
        [call] = choice["delta"]["tool_calls"]
        assert set(call) == {"index", "function"} and set(call["function"]) == {"arguments"}
        assert call["function"]["arguments"] and choice["finish_reason"] is None
    assert chunks[-1]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]


def test_stream_arguments_are_inner_thoughts_then_a_message_full_of_escapes() -> None:
    arguments = "".join(fragments(events(post(chat(stream=True)).body))[0])
    for escape in ('\\"', "\\\\", "\\n", "\\u00e9", "\\ud83d\\ude00"):
        assert escape in arguments
    parsed = json.loads(arguments)
    assert list(parsed) == ["inner_thoughts", "message"]
    assert parsed["inner_thoughts"].startswith("(demo) Thinking:")
    message = parsed["message"]
    assert "agent-gateway demo provider" in message.replace('"', "") and "no real model" in message
    assert USER in message
    for char in ('"', "\\", "\n", "é", "😀"):
        assert char in message


def test_stream_cuts_the_arguments_at_awkward_places() -> None:
    pieces = fragments(events(post(chat(stream=True)).body))[0]
    arguments = "".join(pieces)
    cuts = {sum(map(len, pieces[:i])) for i in range(1, len(pieces))}
    starts = escape_starts(arguments)
    assert min(map(len, pieces)) >= 1 and max(map(len, pieces)) <= 7
    assert len({len(piece) for piece in pieces}) > 3, "sizes should be irregular"
    assert any(start + 1 in cuts for start in starts if arguments[start + 1] in '"\\n'), "after a backslash"
    assert any(cut in range(start + 2, start + 6) for start in starts for cut in cuts if arguments[start + 1] == "u")
    pairs = [start for start in starts if re.match(r"\\ud[89ab]..\\ud[c-f]", arguments[start:])]
    assert pairs and any(start + 6 in cuts for start in pairs), "between surrogate halves"


def test_stream_body_arrives_in_irregular_pieces() -> None:
    pieces = post(chat(stream=True)).pieces
    assert len({len(piece) for piece in pieces}) > 3
    assert any(piece.count(b"\n\n") >= 2 for piece in pieces), "several events in one read"
    assert any(not piece.endswith(b"\n\n") for piece in pieces[:-1]), "an event split across reads"


def test_delay_is_slept_before_each_piece(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    paced = post(chat(stream=True), transport=DemoTransport(delay=0.02))
    assert slept == [0.02] * len(paced.pieces)
    slept.clear()
    instant = post(chat(stream=True))
    assert slept == [] and instant.pieces == paced.pieces


def test_stream_rewrites_to_exactly_the_message() -> None:
    chunks = events(post(chat(stream=True)).body)
    parsed = json.loads("".join(fragments(chunks)[0]))
    out = rewrite(chunks)
    assert visible(out) == parsed["message"]
    assert client_calls(out) == [] and finish_reasons(out) == ["stop"]
    text = orjson.dumps(out).decode()
    assert "(demo) Thinking" not in text and "inner_thoughts" not in text and parsed["inner_thoughts"] not in text


@settings(max_examples=40)
@given(said=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80), with_tool=st.booleans())
def test_any_user_text_survives_the_rewrite(said: str, with_tool: bool) -> None:
    chunks = events(post(chat(said, tools=[WEATHER] if with_tool else [], stream=True)).body)
    upstream = ["".join(pieces) for _, pieces in sorted(fragments(chunks).items())]
    out = rewrite(chunks)
    assert visible(out) == json.loads(upstream[0])["message"]
    expected = [{k: v for k, v in json.loads(arguments).items() if k != "inner_thoughts"} for arguments in upstream[1:]]
    assert [json.loads(call["arguments"]) for call in client_calls(out)] == expected


def test_usage_chunk_only_with_include_usage() -> None:
    chunks = events(post(chat(stream=True, stream_options={"include_usage": True})).body)
    *body, last = chunks
    assert all(chunk["usage"] is None for chunk in body)
    assert last["choices"] == []
    usage = last["usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage == post(chat()).json()["usage"]
    assert rewrite(chunks)[-1] == last
    assert all("usage" not in chunk for chunk in events(post(chat(stream=True)).body))


# Non-streaming


def test_completion_rewrites_to_the_message() -> None:
    response = post(chat())
    assert response.headers["content-type"] == "application/json"
    completion = response.json()
    assert completion["id"].startswith("chatcmpl-demo-") and completion["object"] == "chat.completion"
    assert completion["model"] == "demo-agent" and completion["system_fingerprint"] == "demo"
    [choice] = completion["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["role"] == "assistant" and choice["message"]["content"] is None
    [call] = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_demo_") and call["function"]["name"] == "send_message"
    message = json.loads(call["function"]["arguments"])["message"]
    streamed = json.loads("".join(fragments(events(post(chat(stream=True)).body))[0]))["message"]
    assert message == streamed
    rewritten = rewrite_completion(completion)["choices"][0]
    assert rewritten["message"]["content"] == message
    assert "tool_calls" not in rewritten["message"] and rewritten["finish_reason"] == "stop"


def test_list_content_text_parts_are_echoed() -> None:
    content = [
        {"type": "text", "text": "first part"},
        {"type": "image_url", "image_url": {"url": "data:,"}},
        {"type": "text", "text": "second part"},
    ]
    completion = post(chat(content)).json()
    arguments = completion["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert "You said: first part second part" in json.loads(arguments)["message"]


def test_echoes_the_request_model() -> None:
    assert post(chat(model="my-model")).json()["model"] == "my-model"
    assert all(chunk["model"] == "my-model" for chunk in events(post(chat(model="my-model", stream=True)).body))


# Client tools

# One value per required property, inner thoughts removed; an enum gives its first member.
EXPECTED_ARGUMENTS = {"city": USER, "days": 1, "metric": True, "tags": [USER], "filters": {}, "unit": "celsius"}


def test_offered_tool_is_called_after_an_announcement() -> None:
    chunks = events(post(chat(tools=[SEND_MESSAGE, WEATHER], stream=True)).body)
    openings = [call for chunk in chunks for call in chunk["choices"][0]["delta"].get("tool_calls", ()) if "id" in call]
    assert [(call["index"], call["function"]["name"]) for call in openings] == [(0, "send_message"), (1, "get_weather")]
    assert openings[0]["id"] != openings[1]["id"]
    assert [chunk for chunk in chunks if "role" in chunk["choices"][0]["delta"]] == chunks[:1]
    pieces = fragments(chunks)
    announce, tool = json.loads("".join(pieces[0])), json.loads("".join(pieces[1]))
    assert announce["message"] == "Let me check that with get_weather."
    assert list(tool) == ["inner_thoughts", "city", "days", "metric", "tags", "filters", "unit"]
    assert tool["inner_thoughts"] == f'(demo) Thinking: the user asked about "{USER}"; I should call get_weather first.'
    assert finish_reasons(chunks) == ["tool_calls"]

    out = rewrite(chunks)
    assert visible(out) == "Let me check that with get_weather."
    [call] = client_calls(out)
    assert call["name"] == "get_weather" and call["id"] == openings[1]["id"]
    assert json.loads(call["arguments"]) == EXPECTED_ARGUMENTS
    assert finish_reasons(out) == ["tool_calls"]
    assert "(demo) Thinking" not in orjson.dumps(out).decode()


def test_offered_tool_without_streaming() -> None:
    completion = post(chat(tools=[WEATHER])).json()
    calls = completion["choices"][0]["message"]["tool_calls"]
    assert [call["function"]["name"] for call in calls] == ["send_message", "get_weather"]
    [choice] = rewrite_completion(completion)["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check that with get_weather."
    [call] = choice["message"]["tool_calls"]
    assert json.loads(call["function"]["arguments"]) == EXPECTED_ARGUMENTS


def test_tool_without_schema_gets_only_inner_thoughts() -> None:
    tool = {"type": "function", "function": {"name": "ping"}}
    completion = post(chat(tools=[{"type": "retrieval"}, tool])).json()
    [_, call] = completion["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "ping" and list(json.loads(call["function"]["arguments"])) == ["inner_thoughts"]
    [choice] = rewrite_completion(completion)["choices"]
    assert choice["message"]["tool_calls"][0]["function"]["arguments"] == "{}"


def test_only_send_message_offered_gives_a_plain_answer() -> None:
    calls = post(chat(tools=[SEND_MESSAGE])).json()["choices"][0]["message"]["tool_calls"]
    assert [call["function"]["name"] for call in calls] == ["send_message"]


def test_tool_result_gets_a_plain_answer_mentioning_it() -> None:
    body = chat(tools=[WEATHER], stream=True)
    asked = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Köln"}'}}
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [asked]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 °C"},
    ]
    chunks = events(post(body).body)
    assert sorted(fragments(chunks)) == [0]
    parsed = json.loads("".join(fragments(chunks)[0]))
    assert "The tool returned: Sunny, 21 °C" in parsed["message"] and USER in parsed["message"]
    assert "tool returned" in parsed["inner_thoughts"]
    out = rewrite(chunks)
    assert visible(out) == parsed["message"] and client_calls(out) == [] and finish_reasons(out) == ["stop"]


# Determinism and the rest of the API


def test_same_request_same_response() -> None:
    for body in (chat(stream=True, stream_options={"include_usage": True}), chat(tools=[WEATHER])):
        first, second = post(body), post(body, transport=DemoTransport())
        assert first.pieces == second.pieces
        assert first.headers["x-request-id"] == second.headers["x-request-id"]
    one, other = post(chat("one")).json(), post(chat("other")).json()
    assert one["id"] != other["id"]
    assert one["choices"][0]["message"]["tool_calls"][0]["id"] != other["choices"][0]["message"]["tool_calls"][0]["id"]


def test_models_lists_the_demo_model() -> None:
    response = request("GET", "/models")
    assert response.status == 200 and response.headers["content-type"] == "application/json"
    listing = response.json()
    assert listing["object"] == "list"
    assert [model["id"] for model in listing["data"]] == ["demo-agent", "demo-thinker"]
    for model in listing["data"]:
        assert model["object"] == "model" and isinstance(model["created"], int)


def test_the_openai_sdk_reads_the_demo() -> None:
    messages = [{"role": "user", "content": USER}]

    async def run() -> tuple[list[str], str, str]:
        async with httpx.AsyncClient(transport=DemoTransport()) as http:
            client = openai.AsyncOpenAI(base_url=BASE_URL, api_key="demo", http_client=http, max_retries=0)
            models = [model.id for model in (await client.models.list()).data]
            stream = await client.chat.completions.create(model="demo-agent", messages=messages, stream=True)
            streamed = "".join(
                [
                    call.function.arguments or ""
                    async for chunk in stream
                    for choice in chunk.choices
                    for call in choice.delta.tool_calls or ()
                ]
            )
            whole = await client.chat.completions.create(model="demo-agent", messages=messages)
            return models, streamed, whole.choices[0].message.tool_calls[0].function.arguments

    models, streamed, whole = asyncio.run(run())
    assert models == ["demo-agent", "demo-thinker"]
    assert streamed == whole and USER in json.loads(whole)["message"]


@pytest.mark.parametrize(("method", "path"), [("POST", "/embeddings"), ("GET", "/chat/completions"), ("GET", "/")])
def test_unknown_routes_are_404(method: str, path: str) -> None:
    response = request(method, path)
    assert response.status == 404 and response.headers["x-request-id"].startswith("req_demo_")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error" and error["param"] is None and error["code"] == "not_found"
    assert path in error["message"]


@pytest.mark.parametrize(
    ("body", "param"), [(b"{not json", None), (b"[1, 2]", None), (b'{"messages": []}', "messages")]
)
def test_bad_bodies_are_400(body: bytes, param: str | None) -> None:
    response = request("POST", "/chat/completions", content=body, headers={"content-type": "application/json"})
    assert response.status == 400 and response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and error["message"]


# The thinker: a reasoning model that writes its reasoning between think tags in its content

THINKER_ROUTES = {
    name: default_config({}).options(default_config({}).route_named(name)) for name in ("thinker", "thinker-exposed")
}


def contents(chunks: Chunks) -> list[str]:
    return [
        c["delta"]["content"] for chunk in chunks for c in chunk["choices"] if c["delta"].get("content") is not None
    ]


def think(content: Any = USER, **body: Any) -> dict[str, Any]:
    return chat(content, model="demo-thinker", **body)


def through(route: str, chunks: Chunks) -> tuple[str, str, list[dict[str, Any]], list[str]]:
    """What a chat client of a demo route gets: the text, the exposed reasoning, the calls, the finish reasons."""
    rewriter = StreamRewriter(THINKER_ROUTES[route])
    out = ChatStreamEncoder().chunks([event for chunk in chunks for event in rewriter.feed(chunk)] + rewriter.finish())
    reasoning = "".join(c["delta"].get("reasoning_content") or "" for chunk in out for c in chunk["choices"])
    return visible(out), reasoning, client_calls(out), finish_reasons(out)


def test_the_thinker_streams_its_reasoning_in_tags_before_the_answer() -> None:
    chunks = events(post(think(stream=True)).body)
    assert all(chunk["model"] == "demo-thinker" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    content = "".join(contents(chunks))
    block, closing, answer = content.partition("</think>\n\n")
    assert block.startswith("<think>\n(demo) Thinking: ") and closing
    assert "demo thinker" in answer and f"You said: {USER}" in answer and "<think> tags" in answer
    assert finish_reasons(chunks) == ["stop"] and "tool_calls" not in str(chunks)


def test_the_thinkers_content_is_cut_inside_every_tag_and_across_the_end_of_the_reasoning() -> None:
    pieces = contents(events(post(think(stream=True)).body))[1:]
    content = "".join(pieces)
    ends = list(itertools.accumulate(map(len, pieces)))
    tags = list(re.finditer("</?think>", content))
    assert [tag.group() for tag in tags] == ["<think>", "</think>", "<think>"]  # the last one mid-answer, as text
    for tag in tags:
        assert any(tag.start() < end < tag.end() for end in ends), f"{tag.group()} at {tag.start()} is cut inside"
    # One piece ends the reasoning and begins the closing tag; the next ends the tag and begins the answer.
    closing = next(i for i, end in enumerate(ends) if tags[1].start() < end < tags[1].end())
    before, after = pieces[closing], pieces[closing + 1]
    assert before.endswith(".\n</th") and len(before) > len(".\n</th")
    assert after.startswith("ink>\n\nHi! ")
    assert len({len(piece) for piece in pieces}) > 3, "sizes should be irregular"


@pytest.mark.parametrize("route", ["thinker", "thinker-exposed"])
def test_the_thinker_routes_hide_or_expose_its_reasoning(route: str) -> None:
    chunks = events(post(think(stream=True)).body)
    content = "".join(contents(chunks))
    thought, _, answer = content.removeprefix("<think>").partition("</think>\n\n")
    text, reasoning, calls, finish = through(route, chunks)
    assert text == answer and calls == [] and finish == ["stop"]
    assert reasoning == (thought if route == "thinker-exposed" else "")
    completion = rewrite_completion(post(think()).json(), THINKER_ROUTES[route])
    message = completion["choices"][0]["message"]
    assert message["content"] == answer and message.get("reasoning_content", "") == reasoning


def test_the_thinker_thinks_then_calls_an_offered_tool_without_inner_thoughts() -> None:
    chunks = events(post(think(tools=[WEATHER], stream=True)).body)
    content = "".join(contents(chunks))
    assert content.startswith("<think>\n(demo) Thinking: ") and content.endswith("</think>\n\n")
    assert "I should call get_weather" in content
    pieces = fragments(chunks)
    assert json.loads("".join(pieces[0])) == {"inner_thoughts": USER, **EXPECTED_ARGUMENTS}  # the schema requires it
    for route in THINKER_ROUTES:
        text, reasoning, calls, finish = through(route, chunks)
        assert text == "" and finish == ["tool_calls"]
        [call] = calls
        assert call["name"] == "get_weather" and json.loads(call["arguments"])["city"] == USER
        assert ("get_weather" in reasoning) is (route == "thinker-exposed")


def test_the_thinker_answers_a_tool_result() -> None:
    body = think(tools=[WEATHER], stream=True)
    asked = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Köln"}'}}
    body["messages"] += [
        {"role": "assistant", "content": None, "tool_calls": [asked]},
        {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 °C"},
    ]
    text, _, calls, finish = through("thinker", events(post(body).body))
    assert "The tool returned: Sunny, 21 °C" in text and calls == [] and finish == ["stop"]


def test_the_thinker_is_deterministic_and_its_usage_counts_the_content() -> None:
    body = think(stream=True, stream_options={"include_usage": True})
    assert post(body).pieces == post(body, transport=DemoTransport()).pieces
    usage = events(post(body).body)[-1]["usage"]
    completion = post(think()).json()
    assert usage == completion["usage"] and usage["completion_tokens"] * 4 >= len(
        completion["choices"][0]["message"]["content"]
    )


# Structured output, offline: the demo answers a schema with an instance of it, through agent routes too.


class Address(BaseModel):
    street: str
    city: str


class Person(BaseModel):
    name: str
    age: int = PydanticField(ge=18, le=130)
    score: float
    active: bool
    role: Literal["admin", "user"]
    tags: list[str] = PydanticField(min_length=2)
    address: Address
    nickname: str | None


@pytest.fixture(scope="module")
def demo_url() -> Iterator[str]:
    with serve(create_app(default_config(env={}), {"demo": DemoTransport()})) as url:
        yield url


@pytest.mark.parametrize("model", ["assistant", "thinker", "thinker-exposed"])
def test_structured_output_through_every_client_and_route(demo_url: str, model: str) -> None:
    client = openai.OpenAI(base_url=demo_url + "/v1", api_key="demo")
    ask = [{"role": "user", "content": "Who is Ada?"}]
    person = client.chat.completions.parse(model=model, messages=ask, response_format=Person).choices[0].message
    assert isinstance(person.parsed, Person) and person.parsed.age >= 18 and len(person.parsed.tags) >= 2
    parsed = client.responses.parse(model=model, input="Who is Ada?", text_format=Person).output_parsed
    assert isinstance(parsed, Person)
    chat = ChatOpenAI(model=model, base_url=demo_url + "/v1", api_key="demo")
    for method in ("json_schema", "function_calling"):
        assert isinstance(chat.with_structured_output(Person, method=method).invoke("Who is Ada?"), Person)
    loose = client.chat.completions.create(model=model, messages=ask, response_format={"type": "json_object"})
    assert isinstance(json.loads(loose.choices[0].message.content or ""), dict)
