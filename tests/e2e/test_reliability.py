"""Fault injection: a misbehaving upstream, and what the client gets (a full answer, or an explicit error)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from gateway.server.health import DeploymentHealth
from gateway.server.service import Service
from gateway.state import MemoryStore
from tests.helpers.polling import eventually
from tests.helpers.servers import Reply, ScriptedUpstream, json_reply, serve, sse
from tests.helpers.streams import agent_stream, split_evenly

MESSAGE = "All good here."
CONFIG = """
server:
  retry_backoff: 0.01
  retry_after_max: 1.5
  max_event_bytes: 20000
  max_arguments_chars: 5000
providers:
  a:
    base_url: "{a}/v1"
    transport: {transport}
    timeout: {{connect: 1, read: 3, first_byte: 0.6, idle: 0.5}}
    max_failures: 2
    cooldown: 60
  b:
    base_url: "{b}/v1"
    transport: {transport}
    timeout: {{connect: 1, read: 3, first_byte: 0.6, idle: 0.5}}
  capped:
    base_url: "{b}/v1"
    transport: {transport}
    max_concurrency: 1
    queue_timeout: 0.3
models:
  - {{name: main, provider: a, rewrite: {{inject_tools: false}}, fallbacks: [backup]}}
  - {{name: backup, provider: b, rewrite: {{inject_tools: false}}}}
  - {{name: solo, provider: a, rewrite: {{inject_tools: false}}, max_retries: 0}}
  - {{name: retrying, provider: a, rewrite: {{inject_tools: false}}, max_retries: 3}}
  - {{name: short, provider: a, rewrite: {{inject_tools: false}}, max_retries: 0, timeout: {{total: 1}}}}
  - {{name: spread, provider: [a, b], rewrite: {{inject_tools: false}}, max_retries: 1}}
  - {{name: capped, provider: capped, rewrite: {{inject_tools: false}}, max_retries: 0}}
"""


def agent_events(message: str = MESSAGE, size: int = 4) -> list[bytes]:
    return sse(agent_stream(split_evenly(json.dumps({"inner_thoughts": "secret", "message": message}), size)))


def healthy_reply(request: Any) -> Reply:
    return Reply(agent_events())


@pytest.fixture(scope="module")
def servers(upstream_transport: str) -> Iterator[tuple[ScriptedUpstream, ScriptedUpstream, str, Service]]:
    a, b = ScriptedUpstream(default=healthy_reply), ScriptedUpstream(default=healthy_reply)
    with serve(a) as a_url, serve(b) as b_url:
        text = CONFIG.format(a=a_url, b=b_url, transport=upstream_transport)
        app = create_app(parse_config(text, "faults.yaml", env={}))
        with serve(app) as url:
            yield a, b, url, app.service


@pytest.fixture
def env(
    servers: tuple[ScriptedUpstream, ScriptedUpstream, str, Service],
) -> Iterator[tuple[ScriptedUpstream, ScriptedUpstream, str]]:
    """Fresh scripts and deployments before each test; afterwards, the gateway must be healthy."""
    a, b, url, gateway = servers
    gateway.router.health = DeploymentHealth(MemoryStore(), gateway.config.providers)  # no deployment cooling down
    for upstream in (a, b):
        upstream.script.clear()
        upstream.requests.clear()
        upstream.hangups.clear()
    yield a, b, url
    assert httpx.get(url + "/healthz").status_code == 200
    assert eventually(lambda: a.active == 0 and b.active == 0), "an upstream request was left open"
    a.script.clear()
    b.script.clear()
    assert stream_text(url, "solo") == MESSAGE, "a normal request still works"


def events_of(url: str, model: str, **body: Any) -> tuple[httpx.Response, list[Any]]:
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True, **body},
        timeout=10,
    )
    if not response.headers.get("content-type", "").startswith("text/event-stream"):
        return response, []
    events = [json.loads(line[6:]) for line in response.text.split("\n") if line.startswith("data: {")]
    return response, events


def stream_text(url: str, model: str) -> str:
    response, events = events_of(url, model)
    assert response.text.endswith("data: [DONE]\n\n"), response.text[-300:]
    return "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))


def final_error(url: str, model: str) -> dict[str, Any]:
    response, events = events_of(url, model)
    assert response.status_code == 200 and "[DONE]" not in response.text
    assert "error" in events[-1], "a truncated stream must end with an error event"
    return events[-1]["error"]


# Faults before the first event are retried; the client gets the whole answer.


def test_reset_before_the_first_event_is_retried(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply([], then="break"))
    assert stream_text(url, "main") == MESSAGE
    assert len(a.requests) == 2


def test_stall_before_headers_is_retried_then_504(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events(), first_delay=2))
    assert stream_text(url, "retrying") == MESSAGE
    a.reply(Reply([b"{}"], content_type="application/json", first_delay=2))
    response = httpx.post(url + "/v1/chat/completions", json={"model": "solo", "messages": []}, timeout=10)
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_retryable_statuses_are_retried(env: tuple[ScriptedUpstream, ScriptedUpstream, str], status: int) -> None:
    a, _, url = env
    a.reply(json_reply({"error": {"message": "try later", "type": "server_error"}}, status))
    assert stream_text(url, "retrying") == MESSAGE and len(a.requests) == 2


def test_retry_after_is_honoured(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(json_reply({"error": {"message": "slow down", "type": "requests"}}, 429, headers={"retry-after": "1"}))
    started = time.monotonic()
    assert stream_text(url, "retrying") == MESSAGE
    assert time.monotonic() - started >= 1.0, "the retry waited for Retry-After"


def test_exhausted_retries_keep_the_last_upstream_error(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    error = {"error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}}
    a.reply(*[json_reply(error, 503)] * 4)
    response = httpx.post(url + "/v1/chat/completions", json={"model": "retrying", "messages": []}, timeout=10)
    assert response.status_code == 503 and response.json() == error and len(a.requests) == 4


def test_non_retryable_status_is_not_retried(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(json_reply({"error": {"message": "bad", "type": "invalid_request_error"}}, 400))
    response = httpx.post(url + "/v1/chat/completions", json={"model": "retrying", "messages": []}, timeout=10)
    assert response.status_code == 400 and len(a.requests) == 1


def test_fallback_route_serves_when_retries_are_exhausted(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, b, url = env
    a.reply(*[json_reply({"error": {"message": "down", "type": "server_error"}}, 503)] * 3)
    response, events = events_of(url, "main")
    assert response.headers["x-gateway-route"] == "backup"
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices")) == MESSAGE
    assert (len(a.requests), len(b.requests)) == (3, 1)


def test_failing_deployment_cools_down(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, b, url = env
    a.reply(*[Reply([], then="break")] * 4)
    for _ in range(4):
        assert stream_text(url, "spread") == MESSAGE
    served_by_a_after = len(a.requests)
    for _ in range(3):
        assert stream_text(url, "spread") == MESSAGE
    assert len(a.requests) == served_by_a_after, "a deployment that kept failing is skipped during its cool-down"
    assert len(b.requests) >= 5


def test_deployments_share_by_least_in_flight(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, b, url = env
    slow = Reply(agent_events(size=20), delay=0.05)
    a.reply(slow)
    b.reply(Reply(agent_events(size=20), delay=0.05))
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(stream_text(url, "spread"))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [MESSAGE, MESSAGE] and (len(a.requests), len(b.requests)) == (1, 1)


# Faults after the first event cannot be retried: the client gets an explicit error.


def test_reset_mid_stream_is_an_error_event(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events()[:5], then="break"))
    assert final_error(url, "solo")["code"] == "upstream_disconnected"


def test_stall_between_events_is_an_idle_timeout(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events()[:4], then="hang"))
    assert final_error(url, "solo")["code"] == "upstream_timeout"
    assert eventually(lambda: a.hangups) and a.hangups[0] < 1.5


def test_drip_one_byte_at_a_time(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    body = b"".join(agent_events())
    a.reply(Reply([body[i : i + 1] for i in range(len(body))]))
    assert stream_text(url, "solo") == MESSAGE
    unfinished = b'data: {"choices": [{"index": 0, "delta": {"content": "never finished"}}]}'
    a.reply(
        Reply([*agent_events()[:2], *(unfinished[i : i + 1] for i in range(len(unfinished)))], delay=0.01, then="hang")
    )
    assert final_error(url, "solo")["code"] == "upstream_timeout", (
        "bytes that never complete an event do not keep a stream alive"
    )


def test_garbage_lines_are_ignored(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    events = agent_events()
    a.reply(
        Reply(
            [
                events[0],
                b"event: ping\nid: 3\nretry: 10\n\n",
                b"garbage without colon\n\n",
                b": OPENROUTER PROCESSING\n\n",
                *events[1:],
            ]
        )
    )
    assert stream_text(url, "solo") == MESSAGE


def test_data_that_is_not_json(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply([*agent_events()[:3], b"data: {not json\n\n", *agent_events()[3:]]))
    assert final_error(url, "solo")["code"] == "upstream_invalid_event"
    a.reply(Reply([b"data: <html>\n\n"]))
    response = httpx.post(
        url + "/v1/chat/completions", json={"model": "solo", "messages": [], "stream": True}, timeout=10
    )
    assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_invalid_event"


def test_huge_event_ends_the_stream(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    huge = b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": "x" * 30000}}]}).encode() + b"\n\n"
    a.reply(Reply([*agent_events()[:2], huge, *agent_events()[2:]]))
    assert final_error(url, "solo")["code"] == "upstream_invalid_event"


def test_huge_tool_arguments_end_the_stream(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events(message="y" * 6000, size=1000)))
    assert final_error(url, "solo")["code"] == "upstream_too_large"


def test_a_stream_that_never_ends_hits_the_total_timeout(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events(message="z" * 400, size=2), delay=0.1))
    assert final_error(url, "short")["code"] == "upstream_timeout"


def test_mid_stream_errors_raise_in_the_sdk(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    a.reply(Reply(agent_events()[:5], then="break"))
    sdk = openai.OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(sdk.chat.completions.create(model="solo", messages=[{"role": "user", "content": "hi"}], stream=True))


# Cancellation and limits.


def test_client_leaving_while_waiting_for_the_first_byte_closes_the_upstream(
    env: tuple[ScriptedUpstream, ScriptedUpstream, str],
) -> None:
    _, b, url = env
    b.reply(Reply(agent_events(), first_delay=5))

    async def leave_early() -> None:
        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(url + "/v1/chat/completions", json={"model": "backup", "messages": []}, timeout=0.3)

    asyncio.run(leave_early())
    assert eventually(lambda: b.hangups), "the upstream request was closed"
    assert b.hangups[0] < 0.3 + 1.0, "within a second of the client leaving"


def test_concurrency_cap_queues_then_refuses(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    _, b, url = env
    # The first stream holds the provider's only slot for as long as this test keeps it open, however
    # slow the machine: the upstream sends its first events, then hangs until the gateway lets go.
    b.reply(Reply(agent_events()[:2], then="hang"))
    body = {"model": "capped", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    with httpx.stream("POST", url + "/v1/chat/completions", json=body, timeout=10) as holder:
        assert holder.status_code == 200
        events = holder.iter_raw()  # kept: a discarded iterator would close the response
        assert next(events)
        response = httpx.post(url + "/v1/chat/completions", json={"model": "capped", "messages": []}, timeout=10)
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] and response.json()["error"]["code"] == "provider_busy"
    assert len(b.requests) == 1, "the refused request never reached the upstream"
    assert eventually(lambda: b.hangups), "the held stream's upstream request was closed when its client left"


# Hostile input: a clear 4xx or a correct forward, never a 500.


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xfe not utf-8",
        b'{"model": "solo", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"model": 5, "messages": []}',
        b'{"model": "solo", "messages": [1, 2]}',
        b'{"model": "solo", "messages": [], "tools": "all"}',
        b'{"model": "solo", "messages": [], "stream": 1}',
        b"",
        b"null",
    ],
)
def test_hostile_bodies_get_a_4xx(env: tuple[ScriptedUpstream, ScriptedUpstream, str], body: bytes) -> None:
    a, _, url = env
    response = httpx.post(url + "/v1/chat/completions", content=body, timeout=10)
    assert 400 <= response.status_code < 500 and response.json()["error"]["message"]
    assert a.requests == []


def test_large_and_odd_but_valid_requests_are_forwarded(env: tuple[ScriptedUpstream, ScriptedUpstream, str]) -> None:
    a, _, url = env
    messages = [{"role": "user", "content": f"message {i}", "x_unknown": {"deep": [i]}} for i in range(3000)]
    messages.append({"role": "user", "content": "y" * 2_000_000})
    response = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "solo", "messages": messages, "stream": True, "weird": [None, {"a": 1}]},
        timeout=30,
    )
    assert response.status_code == 200 and response.text.endswith("[DONE]\n\n")
    assert a.requests[-1].json["messages"] == messages and a.requests[-1].json["weird"] == [None, {"a": 1}]
