"""End to end: a scripted upstream and the gateway on 127.0.0.1, driven by real clients."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from langchain_core.messages import HumanMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import (
    Reply,
    ScriptedUpstream,
    completion_of,
    free_port,
    json_reply,
    serve,
    sse,
    stream_reply,
)
from tests.helpers.streams import (
    agent_stream,
    chunk,
    recorded_body,
    recorded_chunks,
    recorded_files,
    split_evenly,
)

GATEWAY_KEY = "gw-test-key-0123456789"
PROVIDER_KEY = "sk-provider-secret-9876543210"
INNER = "PRIVATE-REASONING the user must never see"
MESSAGE = 'Hello "there" \\ friend,\nthis is é and 😀.'

CONFIG = """
server:
  api_keys: ["{gateway_key}"]
  max_body_bytes: 20000
providers:
  up:
    base_url: {upstream}/v1
    api_key: {provider_key}
    headers: {{x-extra: "yes"}}
    timeout: {{connect: 2, read: 1}}
    transport: {transport}
  down:
    base_url: http://127.0.0.1:{closed_port}/v1
    transport: {transport}
models:
  - name: agent
    provider: up
    model: upstream-model
    rewrite: {{inject_tools: false}}
    max_retries: 0
  - name: exposed
    provider: up
    rewrite: {{inject_tools: false, reasoning: expose}}
    max_retries: 0
  - name: plain
    provider: up
    model: upstream-plain
    max_retries: 0
  - name: gpt-*
    provider: up
  - name: unreachable
    provider: down
    max_retries: 0
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    scripted = ScriptedUpstream()
    with serve(scripted) as url:
        yield scripted, url


@pytest.fixture(scope="module")
def gateway_url(upstream: tuple[ScriptedUpstream, str], upstream_transport: str) -> Iterator[str]:
    text = CONFIG.format(
        gateway_key=GATEWAY_KEY,
        upstream=upstream[1],
        provider_key=PROVIDER_KEY,
        closed_port=free_port(),
        transport=upstream_transport,
    )
    with serve(create_app(parse_config(text, "test.yaml", env={}))) as url:
        yield url


@pytest.fixture
def scripted(upstream: tuple[ScriptedUpstream, str]) -> ScriptedUpstream:
    upstream[0].script.clear()
    upstream[0].requests.clear()
    upstream[0].hangups.clear()
    return upstream[0]


def agent_reply(message: str = MESSAGE, inner: str = INNER, size: int = 3, **options: Any) -> Reply:
    document = json.dumps({"inner_thoughts": inner, "message": message})
    return stream_reply(agent_stream(split_evenly(document, size)), **options)


def client(gateway_url: str, **options: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_url + "/v1", api_key=GATEWAY_KEY, max_retries=0, **options)


USER = [{"role": "user", "content": "Hi"}]


# Streaming and not, through the OpenAI SDK.


def test_sdk_streaming_sees_only_the_message(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(agent_reply())
    stream = client(gateway_url).chat.completions.create(model="agent", messages=USER, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == MESSAGE
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(not c.choices or not c.choices[0].delta.tool_calls for c in chunks)
    sent = scripted.requests[-1]
    assert sent.json["model"] == "upstream-model" and sent.json["messages"] == USER and sent.json["stream"] is True
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}" and sent.headers["x-extra"] == "yes"
    assert GATEWAY_KEY not in json.dumps(sent.headers)


def test_raw_stream_has_no_reasoning_and_ends_with_done(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(agent_reply(size=1))
    response = httpx.post(
        gateway_url + "/v1/chat/completions",
        json={"model": "agent", "messages": USER, "stream": True},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"},
    )
    assert response.headers["content-type"].startswith("text/event-stream")
    assert "PRIVATE" not in response.text and "inner_thoughts" not in response.text
    assert response.text.endswith("data: [DONE]\n\n")


def test_async_sdk_non_streaming(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(json_reply(completion_of(agent_stream([json.dumps({"inner_thoughts": INNER, "message": MESSAGE})]))))

    async def ask() -> Any:
        async with openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key=GATEWAY_KEY, max_retries=0) as sdk:
            return await sdk.chat.completions.create(model="agent", messages=USER)

    answer = asyncio.run(ask())
    assert answer.choices[0].message.content == MESSAGE
    assert answer.choices[0].message.tool_calls is None and answer.choices[0].finish_reason == "stop"
    assert answer.usage.total_tokens == 8


def test_async_sdk_streaming_with_usage(gateway_url: str, scripted: ScriptedUpstream) -> None:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": INNER, "message": MESSAGE}), 5))
    chunks.append(chunk(usage={"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}))
    scripted.reply(stream_reply(chunks))

    async def ask() -> list[Any]:
        async with openai.AsyncOpenAI(base_url=gateway_url + "/v1", api_key=GATEWAY_KEY, max_retries=0) as sdk:
            stream = await sdk.chat.completions.create(
                model="agent", messages=USER, stream=True, stream_options={"include_usage": True}
            )
            return [c async for c in stream]

    received = asyncio.run(ask())
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == MESSAGE
    assert received[-1].usage.total_tokens == 10 and received[-1].choices == []
    assert scripted.requests[-1].json["stream_options"] == {"include_usage": True}


def test_reasoning_exposed_on_a_route_that_asks(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(agent_reply())
    response = httpx.post(
        gateway_url + "/v1/chat/completions",
        json={"model": "exposed", "messages": USER, "stream": True},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"},
    )
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    reasoning = "".join(e["choices"][0]["delta"].get("reasoning_content") or "" for e in events if e["choices"])
    assert reasoning == INNER
    assert scripted.requests[-1].json["model"] == "exposed", "without `model`, the requested name goes upstream"


def test_client_tool_call_passes_without_inner_thoughts(gateway_url: str, scripted: ScriptedUpstream) -> None:
    arguments = json.dumps({"inner_thoughts": INNER, "city": "Paris"})
    chunks = agent_stream(split_evenly(arguments, 4), name="get_weather", call_id="call_w")
    scripted.reply(stream_reply(chunks))
    stream = client(gateway_url).chat.completions.create(model="agent", messages=USER, stream=True)
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for c in stream:
        for tc in c.choices[0].delta.tool_calls or ():
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += tc.id or ""
            slot["name"] += tc.function.name or ""
            slot["arguments"] += tc.function.arguments or ""
        finish = c.choices[0].finish_reason or finish
    assert calls == {0: {"id": "call_w", "name": "get_weather", "arguments": '{"city":"Paris"}'}}
    assert finish == "tool_calls"


# LangChain's ChatOpenAI.


def langchain(gateway_url: str) -> ChatOpenAI:
    return ChatOpenAI(model="agent", base_url=gateway_url + "/v1", api_key=GATEWAY_KEY, max_retries=0)


def test_langchain_invoke_and_stream(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(json_reply(completion_of(agent_stream([json.dumps({"inner_thoughts": INNER, "message": MESSAGE})]))))
    assert langchain(gateway_url).invoke([HumanMessage("Hi")]).content == MESSAGE
    scripted.reply(agent_reply())
    assert "".join(part.content for part in langchain(gateway_url).stream("Hi")) == MESSAGE


def test_langchain_bind_tools_gets_the_call_without_inner_thoughts(
    gateway_url: str, scripted: ScriptedUpstream
) -> None:
    @tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        return "sunny"

    arguments = json.dumps({"inner_thoughts": INNER, "city": "Oslo"})
    scripted.reply(stream_reply(agent_stream(split_evenly(arguments, 2), name="get_weather", call_id="call_lc")))
    model = langchain(gateway_url).bind_tools([get_weather])
    merged = None
    for part in model.stream("Weather in Oslo?"):
        merged = part if merged is None else merged + part
    assert merged is not None and merged.tool_calls == [
        {"name": "get_weather", "args": {"city": "Oslo"}, "id": "call_lc", "type": "tool_call"}
    ]
    sent_tools = scripted.requests[-1].json["tools"]
    assert [t["function"]["name"] for t in sent_tools] == ["get_weather"]


# Recorded provider streams, replayed byte for byte.

RECORDED = recorded_files()


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_streams_through_the_gateway(gateway_url: str, scripted: ScriptedUpstream, path: Path) -> None:
    body = recorded_body(path)
    pieces = [body[i : i + 97] for i in range(0, len(body), 97)]  # reads that cut events and characters
    scripted.reply(Reply(pieces))
    stream = client(gateway_url).chat.completions.create(
        model="agent", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    received = list(stream)
    upstream_chunks = recorded_chunks(path)
    content = "".join(
        (ch.get("delta") or {}).get("content") or "" for c in upstream_chunks for ch in c.get("choices") or ()
    )
    assert "".join(c.choices[0].delta.content or "" for c in received if c.choices) == content
    sent_args = "".join(
        tc.function.arguments or "" for c in received if c.choices for tc in c.choices[0].delta.tool_calls or ()
    )
    recorded_args = [
        json.loads(tc["function"]["arguments"])
        for c in upstream_chunks
        for ch in c.get("choices") or ()
        for tc in (ch.get("delta") or {}).get("tool_calls") or ()
        if tc.get("function", {}).get("arguments", "").startswith("{") and tc["function"]["arguments"].endswith("}")
    ]
    for args in recorded_args:
        assert json.dumps(args, separators=(",", ":")) in sent_args
    assert [c.usage.total_tokens for c in received if c.usage] == [
        c["usage"]["total_tokens"] for c in upstream_chunks if c.get("usage")
    ]


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_a_client_that_did_not_ask_for_usage_gets_every_chunk_but_the_usage_chunk(
    gateway_url: str, scripted: ScriptedUpstream, path: Path
) -> None:
    """The gateway asks every upstream stream for its usage; only the chunk that carries nothing else is dropped."""
    raw = recorded_body(path)

    def events_for(options: dict[str, Any]) -> list[str]:
        scripted.reply(Reply([raw]))
        response = post(gateway_url, {"model": "agent", "messages": USER, "stream": True, "stream_options": options})
        assert scripted.requests[-1].json["stream_options"] == {**options, "include_usage": True}
        return [event for event in response.text.split("\n\n") if event]

    def usage_only(event: str) -> bool:
        chunk = json.loads(event[6:]) if event.startswith("data: {") else {}
        return not chunk.get("choices") and chunk.get("usage") is not None

    asked = events_for({"include_usage": True})
    plain = events_for({"include_obfuscation": False})
    assert [event for event in asked if not usage_only(event)] == plain
    assert sum(map(usage_only, asked)) == sum(
        1 for c in recorded_chunks(path) if not c.get("choices") and c.get("usage")
    )


# Errors.


def post(gateway_url: str, body: Any, key: str | None = GATEWAY_KEY, raw: bytes | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    if raw is not None:
        return httpx.post(gateway_url + "/v1/chat/completions", content=raw, headers=headers)
    return httpx.post(gateway_url + "/v1/chat/completions", json=body, headers=headers)


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"model": "agent"}', 400, "messages"),
        (b'{"model": "agent", "messages": "hi"}', 400, "messages"),
        (b'{"model": "agent", "messages": [], "stream": "yes"}', 400, "stream"),
        (b'{"messages": []}', 400, "model"),
        (b'{"model": "nope", "messages": []}', 404, "model"),
    ],
)
def test_bad_requests_get_openai_errors(
    gateway_url: str, scripted: ScriptedUpstream, raw: bytes, status: int, param: str | None
) -> None:
    response = post(gateway_url, None, raw=raw)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert scripted.requests == [], "nothing reaches the upstream"


def test_unknown_model_raises_not_found_in_the_sdk(gateway_url: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client(gateway_url).chat.completions.create(model="nope", messages=USER)
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("key", [None, "wrong-key"])
def test_missing_or_wrong_key_is_401(gateway_url: str, key: str | None) -> None:
    response = post(gateway_url, {"model": "agent", "messages": USER}, key=key)
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=gateway_url + "/v1", api_key="wrong", max_retries=0).models.list()


def test_body_over_the_limit_is_413(gateway_url: str, scripted: ScriptedUpstream) -> None:
    response = post(gateway_url, {"model": "agent", "messages": [{"role": "user", "content": "x" * 30000}]})
    assert response.status_code == 413 and response.json()["error"]["code"] == "request_too_large"
    assert scripted.requests == []


def test_upstream_error_keeps_status_body_and_renamed_rate_limit_headers(
    gateway_url: str, scripted: ScriptedUpstream
) -> None:
    error = {
        "error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
    }
    scripted.reply(
        json_reply(
            error, 429, headers={"retry-after": "7", "x-ratelimit-remaining-requests": "0", "connection": "close"}
        )
    )
    response = post(gateway_url, {"model": "agent", "messages": USER})
    assert response.status_code == 429 and response.json() == error
    # The upstream's rate-limit headers are renamed: x-ratelimit-* are the gateway's own (its client keys' limits).
    assert response.headers["retry-after"] == "7" and response.headers["x-upstream-ratelimit-remaining-requests"] == "0"
    assert not [name for name in response.headers if name.startswith("x-ratelimit-")]
    scripted.reply(json_reply(error, 429))
    with pytest.raises(openai.RateLimitError):
        client(gateway_url).chat.completions.create(model="agent", messages=USER)


def test_upstream_error_that_is_not_openai_shaped_is_wrapped(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(Reply([b"<html>Bad Gateway</html>"], status=503, content_type="text/html"))
    response = post(gateway_url, {"model": "agent", "messages": USER, "stream": True})
    assert response.status_code == 503
    assert "Bad Gateway" in response.json()["error"]["message"] and response.json()["error"]["code"] == "upstream_error"


def test_unreachable_upstream_is_502(gateway_url: str) -> None:
    response = post(gateway_url, {"model": "unreachable", "messages": USER})
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"


def test_upstream_timeout_is_504(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(Reply([b"{}"], content_type="application/json", first_delay=3))
    response = post(gateway_url, {"model": "agent", "messages": USER})
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


# Mid-stream failures are never a clean-looking success.


def test_upstream_breaking_mid_stream_raises_in_the_sdk(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply(size=4)
    reply.pieces = reply.pieces[:6]
    reply.then = "break"
    scripted.reply(reply)
    stream = client(gateway_url).chat.completions.create(model="agent", messages=USER, stream=True)
    with pytest.raises(openai.APIError) as caught:
        list(stream)
    assert "broke mid-stream" in caught.value.message


def test_upstream_ending_before_finish_is_an_error(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply()
    reply.pieces = [*reply.pieces[:-2], b"data: [DONE]\n\n"]  # no finish_reason
    scripted.reply(reply)
    with pytest.raises(openai.APIError) as caught:
        list(client(gateway_url).chat.completions.create(model="agent", messages=USER, stream=True))
    assert "before the answer was finished" in caught.value.message


def test_upstream_timing_out_mid_stream_is_an_error_event(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply()
    reply.pieces = reply.pieces[:3]
    reply.then = "hang"
    scripted.reply(reply)
    response = post(gateway_url, {"model": "agent", "messages": USER, "stream": True})
    last = response.text.strip().split("\n\n")[-1]
    assert json.loads(last[6:])["error"]["code"] == "upstream_timeout"


def test_finished_stream_without_done_still_ends_with_done(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply()
    reply.pieces = reply.pieces[:-1]
    scripted.reply(reply)
    response = post(gateway_url, {"model": "agent", "messages": USER, "stream": True})
    assert response.text.endswith("data: [DONE]\n\n")


def test_upstream_error_event_mid_stream_is_forwarded(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply()
    reply.pieces = reply.pieces[:3] + sse([{"error": {"message": "overloaded", "type": "server_error"}}], done=False)
    scripted.reply(reply)
    with pytest.raises(openai.APIError) as caught:
        list(client(gateway_url).chat.completions.create(model="agent", messages=USER, stream=True))
    assert caught.value.message == "overloaded"


def test_sse_comments_crlf_and_split_reads(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply()
    body = b": keep-alive\r\n\r\n" + b"".join(reply.pieces).replace(b"\n", b"\r\n")
    scripted.reply(Reply([body[i : i + 5] for i in range(0, len(body), 5)]))
    response = post(gateway_url, {"model": "agent", "messages": USER, "stream": True})
    assert response.text.startswith(": keep-alive\n\n")
    contents = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in contents) == MESSAGE


def test_client_disconnect_closes_the_upstream_request(gateway_url: str, scripted: ScriptedUpstream) -> None:
    reply = agent_reply(size=1, delay=0.05)
    scripted.reply(reply)
    with httpx.stream(
        "POST",
        gateway_url + "/v1/chat/completions",
        json={"model": "agent", "messages": USER, "stream": True},
        headers={"authorization": f"Bearer {GATEWAY_KEY}"},
    ) as response:
        next(response.iter_bytes())
    deadline = time.monotonic() + 3
    while not scripted.hangups and time.monotonic() < deadline:
        time.sleep(0.02)
    assert scripted.hangups and scripted.hangups[0] < 1.0


# Pass-through routes and other endpoints.


def test_plain_route_forwards_the_answer_untouched(gateway_url: str, scripted: ScriptedUpstream) -> None:
    chunks = agent_stream([json.dumps({"inner_thoughts": "kept", "message": "raw"})])
    scripted.reply(stream_reply(chunks))
    response = post(gateway_url, {"model": "plain", "messages": USER, "stream": True})
    # Every byte as it came, but the model's name: the one the client asked for, on every front door.
    sent = "".join(piece.decode() for piece in sse([{**chunk, "model": "plain"} for chunk in chunks]))
    assert response.text == sent
    assert scripted.requests[-1].json["model"] == "upstream-plain"


def test_glob_route_sends_the_requested_name(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(json_reply({"id": "x", "object": "chat.completion", "choices": []}))
    post(gateway_url, {"model": "gpt-4o-mini", "messages": USER})
    assert scripted.requests[-1].json["model"] == "gpt-4o-mini"


def test_other_v1_paths_are_forwarded_verbatim(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(json_reply({"object": "list", "data": [{"embedding": [0.5]}]}, headers={"x-custom": "1"}))
    response = httpx.post(
        gateway_url + "/v1/embeddings?user=u1",
        json={"model": "agent", "input": "hello", "unknown_field": [1]},
        headers={"authorization": f"Bearer {GATEWAY_KEY}", "openai-beta": "x"},
    )
    assert response.status_code == 200 and response.json()["data"][0]["embedding"] == [0.5]
    assert response.headers["x-custom"] == "1"
    sent = scripted.requests[-1]
    assert sent.path == "/v1/embeddings" and sent.json == {
        "model": "upstream-model",
        "input": "hello",
        "unknown_field": [1],
    }
    assert sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}" and sent.headers["openai-beta"] == "x"


def test_models_health_and_readiness(gateway_url: str) -> None:
    """/v1/models lists the names a client can send as they are; the glob gpt-* is not one of them."""
    models = client(gateway_url).models.list()
    assert [m.id for m in models.data] == ["agent", "exposed", "plain", "unreachable"]
    assert httpx.get(gateway_url + "/healthz").status_code == 200
    assert httpx.get(gateway_url + "/readyz").status_code == 200


def test_pass_through_body_cut_mid_way_does_not_look_complete(gateway_url: str, scripted: ScriptedUpstream) -> None:
    scripted.reply(Reply([b"first half of a file"], content_type="application/octet-stream", then="break"))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(gateway_url + "/v1/files/f/content", headers={"authorization": f"Bearer {GATEWAY_KEY}"})


def test_upstream_connections_are_reused_across_streams(gateway_url: str, scripted: ScriptedUpstream) -> None:
    for _ in range(3):
        scripted.reply(agent_reply())
        assert post(gateway_url, {"model": "agent", "messages": USER, "stream": True}).text.endswith("[DONE]\n\n")
    assert len({request.client_port for request in scripted.requests}) == 1, (
        "the stream left its connection in the pool"
    )


# What clients probe, and the doors asked with the wrong method.


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_the_root_answers_a_probe(gateway_url: str, method: str) -> None:
    assert httpx.request(method, gateway_url + "/").status_code == 200


@pytest.mark.parametrize(
    ("path", "anthropic"),
    [
        ("/v1/chat/completions", False),
        ("/v1/responses", False),
        ("/v1/messages", True),
        ("/v1/messages/count_tokens", True),
    ],
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_a_door_asked_with_another_method_is_405_in_its_own_shape(
    gateway_url: str, scripted: ScriptedUpstream, path: str, anthropic: bool, method: str
) -> None:
    answer = httpx.request(method, gateway_url + path)
    assert answer.status_code == 405 and answer.headers["allow"] == "POST"
    body = answer.json()
    if anthropic:
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    else:
        assert body["error"]["code"] == "method_not_allowed"
    assert path in body["error"]["message"] and scripted.requests == []


# The model an answer names is the one the client asked for, on every door.


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("route", ["agent", "plain"])
def test_every_door_names_the_model_the_client_asked_for(
    gateway_url: str, scripted: ScriptedUpstream, route: str, stream: bool
) -> None:
    """The upstream says its own model's name; every chunk, response and message says the route's."""
    message = json.dumps({"inner_thoughts": "t", "message": "A reply in many small fragments."})
    chunks = [{**c, "model": "upstream-snapshot-2026"} for c in agent_stream(split_evenly(message, 12))]
    headers = {"authorization": f"Bearer {GATEWAY_KEY}", "x-api-key": GATEWAY_KEY}
    said = []
    for path, body in (
        ("/v1/chat/completions", {"messages": USER}),
        ("/v1/responses", {"input": "Hi"}),
        ("/v1/messages", {"messages": USER, "max_tokens": 64}),
    ):
        scripted.reply(
            stream_reply(chunks) if stream else json_reply({**completion_of(chunks), "model": "upstream-snapshot-2026"})
        )
        answer = httpx.post(gateway_url + path, json={"model": route, "stream": stream, **body}, headers=headers)
        assert answer.status_code == 200, answer.text
        said += re.findall(r'"model":\s*"([^"]*)"', answer.text)
    assert said and set(said) == {route}
