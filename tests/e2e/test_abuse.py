"""What an attacker holding a valid, limited key tries, on every front door: each probe must be answered in the
door's own shape, charged what reached the upstream, and leave the gateway as it was.

A real gateway (uvicorn on a loopback port) in front of a scripted upstream that records what it received.
"""

from __future__ import annotations

import contextlib
import json
import socket
import statistics
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from packaging.specifiers import SpecifierSet

from gateway.config import parse_config
from gateway.server import protocol
from gateway.server.app import create_app
from tests.helpers.paths import ROOT
from tests.helpers.servers import (
    Received,
    Reply,
    ScriptedUpstream,
    completion_of,
    gateway_process,
    json_reply,
    serve,
    sse,
)
from tests.helpers.streams import agent_stream, chunk, split_evenly

KEY = "sk-attacker-0123456789"
BUDGET = 1_000_000
USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
HUGE = 100000000000000000000  # beyond 64 bits: orjson cannot encode it, the standard library can, exactly
HUGE_TEXT = str(HUGE).encode()


def completion_chunks(usage: bool) -> list[dict[str, Any]]:
    """A legacy completions stream, with the usage chunk when asked for it."""
    base = {"id": "cmpl-1", "object": "text_completion", "created": 1, "model": "m"}
    chunks = [{**base, "choices": [{"index": 0, "text": text, "finish_reason": None}]} for text in ("Hel", "lo.")]
    return [*chunks, {**base, "choices": [], "usage": USAGE}] if usage else chunks


def answer(request: Received) -> Reply:
    body = request.json
    if request.path.endswith("/completions") and not request.path.endswith("/chat/completions"):
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        return Reply(sse(completion_chunks(asked)))
    if request.path.endswith("/responses"):
        created = {"type": "response.created", "response": {"id": "resp_1", "status": "in_progress"}}
        delta = {"type": "response.output_text.delta", "delta": "Hello."}
        pieces = [b"event: %s\ndata: %s\n\n" % (e["type"].encode(), json.dumps(e).encode()) for e in (created, delta)]
        return Reply(pieces * 50, delay=0.05)
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "private", "message": "Hello."}), 4))
    if body.get("stream"):
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        return Reply(sse([*chunks, chunk(usage=USAGE)] if asked else chunks))
    return json_reply(completion_of(chunks))


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    scripted = ScriptedUpstream(default=answer)
    with serve(scripted) as url:
        yield scripted, url


Start = Callable[..., str]


@pytest.fixture
def gateway(upstream: tuple[ScriptedUpstream, str]) -> Iterator[Start]:
    """A gateway whose one key has a token budget, with the given ``server`` settings; yields its URL."""
    scripted, upstream_url = upstream
    with contextlib.ExitStack() as stack:

        def start(budget: int = BUDGET, **limits: Any) -> str:
            """The key has a budget of ``budget`` tokens a month, and ``limits`` besides."""
            scripted.requests.clear()
            config = {
                "providers": {
                    "up": {"base_url": f"{upstream_url}/v1"},
                    "native": {"base_url": f"{upstream_url}/v1", "responses": "native"},
                },
                "models": [
                    {"name": "assistant", "provider": "up", "rewrite": {}, "max_retries": 0},
                    {"name": "plain", "provider": "up", "max_retries": 0},
                    {"name": "native", "provider": "native", "max_retries": 0},
                ],
                "keys": [{"name": "attacker", "key": KEY, "budget": {"tokens": budget, "period": "month"}, **limits}],
            }
            app = create_app(parse_config(json.dumps(config), "abuse.yaml", env={}))
            return stack.enter_context(serve(app, server_header=False))

        yield start


def remaining_tokens(url: str) -> int:
    """What is left of the key's budget, as the rate-limit headers of a cheap request say."""
    answer = httpx.post(
        url + "/v1/chat/completions",
        json={"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]},
        headers={"authorization": f"Bearer {KEY}"},
    )
    return int(answer.headers["x-ratelimit-remaining-tokens"])


# Integers beyond 64 bits, forwarded exactly and charged.

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer", "maximum": HUGE}}}
BIG_BODIES = {
    "chat": (
        "/v1/chat/completions",
        {
            "model": "assistant",
            "messages": [{"role": "user", "content": "Hi"}],
            "tools": [{"type": "function", "function": {"name": "count", "parameters": SCHEMA}}],
            "max_completion_tokens": HUGE,
        },
    ),
    "responses": (
        "/v1/responses",
        {
            "model": "assistant",
            "input": "Hi",
            "max_output_tokens": HUGE,
            "temperature": HUGE,
            "metadata": {"n": HUGE},
            "tools": [{"type": "function", "name": "count", "parameters": SCHEMA}],
        },
    ),
    "messages": (
        "/v1/messages",
        {
            "model": "assistant",
            "max_tokens": HUGE,
            "temperature": HUGE,
            "tools": [{"name": "count", "input_schema": SCHEMA}],
            "messages": [
                {"role": "user", "content": "Count."},
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t1", "name": "count", "input": {"n": HUGE}}],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "done"}]},
            ],
        },
    ),
}


ENDS = {"chat": "data: [DONE]", "responses": "event: response.completed", "messages": "event: message_stop"}


def dumped(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("door", list(BIG_BODIES))
def test_integers_beyond_64_bits_reach_the_upstream_exactly_and_are_charged(
    gateway: Start, upstream: tuple[ScriptedUpstream, str], door: str, stream: bool
) -> None:
    url = gateway()
    path, body = BIG_BODIES[door]
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    answer = httpx.post(url + path, content=dumped({**body, "stream": stream}), headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    assert "private" not in answer.text
    assert ENDS[door] in answer.text if stream else "Hello." in answer.text
    if door == "responses":  # the response object repeats the request's settings, exactly
        assert HUGE_TEXT in answer.content
    [sent] = upstream[0].requests
    assert HUGE_TEXT in sent.body and b"1e+20" not in sent.body and b"1e20" not in sent.body
    assert remaining_tokens(url) < BUDGET


def test_count_tokens_takes_integers_beyond_64_bits(gateway: Start) -> None:
    url = gateway()
    body = {key: value for key, value in BIG_BODIES["messages"][1].items() if key != "max_tokens"}
    answer = httpx.post(url + "/v1/messages/count_tokens", content=dumped(body), headers={"x-api-key": KEY})
    assert answer.status_code == 200, answer.text
    assert answer.json()["input_tokens"] > 0


# Forwarded and native streams are charged, whatever the client asks for.


def test_a_forwarded_completions_stream_is_asked_for_its_usage_and_the_client_does_not_see_it(
    gateway: Start, upstream: tuple[ScriptedUpstream, str]
) -> None:
    url = gateway(budget=400)
    body = {"model": "plain", "stream": True, "prompt": "x" * 3000}
    statuses = []
    for _ in range(5):
        answer = httpx.post(url + "/v1/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
        statuses.append(answer.status_code)
        if answer.status_code == 200:
            assert '"usage"' not in answer.text and '"Hel"' in answer.text and answer.text.endswith("data: [DONE]\n\n")
    sent = [r.json for r in upstream[0].requests if r.path == "/v1/completions"]
    assert all(s["stream_options"] == {"include_usage": True} for s in sent)
    assert statuses == [200] * 5
    assert remaining_tokens(url) == 400 - 5 * 18  # each charged the usage the client did not see
    asked = {**body, "stream_options": {"include_usage": True}}
    shown = httpx.post(url + "/v1/completions", json=asked, headers={"authorization": f"Bearer {KEY}"})
    assert '"usage"' in shown.text  # the client asked: it gets the chunk


def test_a_forwarded_stream_without_usage_is_charged_an_estimate(
    gateway: Start, upstream: tuple[ScriptedUpstream, str]
) -> None:
    url = gateway(budget=400)
    upstream[0].reply(Reply(sse(completion_chunks(usage=False))))  # a provider that ignores include_usage
    body = {"model": "plain", "stream": True, "prompt": "x" * 3000}
    assert httpx.post(url + "/v1/completions", json=body, headers={"authorization": f"Bearer {KEY}"}).is_success
    refused = httpx.post(url + "/v1/completions", json=body, headers={"authorization": f"Bearer {KEY}"})
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"


def test_a_native_responses_stream_the_client_leaves_is_charged_an_estimate(gateway: Start) -> None:
    url = gateway(budget=400)
    for _ in range(3):
        with httpx.stream(
            "POST",
            url + "/v1/responses",
            json={"model": "native", "input": "x" * 3000, "stream": True},
            headers={"authorization": f"Bearer {KEY}"},
        ) as answer:
            if answer.status_code != 200:
                break
            next(answer.iter_bytes())  # the first bytes, then the client goes away
    assert remaining_tokens(url) == 0


# count_tokens is a request like any other, and no request's size holds the event loop.


def test_count_tokens_is_admitted_under_the_key_s_limits(gateway: Start) -> None:
    url = gateway(rpm=2)
    body = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}
    answers = [httpx.post(url + "/v1/messages/count_tokens", json=body, headers={"x-api-key": KEY}) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[1].headers["x-ratelimit-remaining-requests"] == "0"
    assert answers[2].json()["error"]["type"] == "rate_limit_error"


def test_another_key_is_answered_promptly_while_two_clients_send_huge_count_tokens(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    """Two loops send 90,000-message count_tokens requests (2.7 MB each) with a key of rpm 5: another key's chat
    requests, meanwhile, are answered in well under 250 ms (median)."""
    config = {
        "providers": {"up": {"base_url": f"{upstream[1]}/v1"}},
        "models": [{"name": "assistant", "provider": "up", "rewrite": {}, "max_retries": 0}],
        "keys": [{"name": "attacker", "key": KEY, "rpm": 5}, {"name": "victim", "key": "sk-victim-0123456789"}],
    }
    path = tmp_path / "victim.yaml"
    path.write_text(json.dumps(config))
    huge = json.dumps({"model": "assistant", "messages": [{"role": "user", "content": "x"}] * 90_000}).encode()
    victim = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}
    with gateway_process("--config", str(path)) as running:
        stop = threading.Event()
        attacks: list[int] = []

        def attack() -> None:
            with httpx.Client(timeout=60) as client:
                while not stop.is_set() or len(attacks) < 6:  # past the rpm, however slow the machine
                    answer = client.post(
                        running.url + "/v1/messages/count_tokens", content=huge, headers={"x-api-key": KEY}
                    )
                    attacks.append(answer.status_code)

        attackers = [threading.Thread(target=attack) for _ in range(2)]
        for thread in attackers:
            thread.start()
        try:
            time.sleep(1)
            latencies = []
            with httpx.Client(timeout=60) as client:
                for _ in range(30):
                    started = time.perf_counter()
                    answer = client.post(
                        running.url + "/v1/chat/completions",
                        json=victim,
                        headers={"authorization": "Bearer sk-victim-0123456789"},
                    )
                    latencies.append(time.perf_counter() - started)
                    assert answer.status_code == 200
                    time.sleep(0.05)
        finally:
            stop.set()
            for thread in attackers:
                thread.join()
    assert len(attacks) >= 6 and attacks.count(200) == 5 and set(attacks) == {200, 429}
    assert statistics.median(latencies) < 0.25, sorted(latencies)


# What a client chooses never spoils a log line, an event stream, or the next request on its connection.


def test_client_chosen_values_are_capped_and_escaped_in_log_lines(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    config = {
        "server": {"log_format": "text"},
        "providers": {"up": {"base_url": f"{upstream[1]}/v1"}},
        "models": [{"name": "gpt-*", "provider": "up", "max_retries": 0}],
    }
    path = tmp_path / "logs.yaml"
    path.write_text(json.dumps(config))
    forged = "gpt-x\nlevel=error route=admin FORGED"
    with gateway_process("--config", str(path)) as running:
        for model in (forged, "gpt-" + "x" * 5_000_000):
            body = {"model": model, "messages": [{"role": "user", "content": "Hi"}]}
            assert httpx.post(running.url + "/v1/chat/completions", json=body, timeout=30).status_code == 200
        httpx.get(running.url + "/v1/a%0Alevel=error%20FORGED")
        time.sleep(0.3)
        lines = running.stderr().splitlines()
    assert max(map(len, lines)) < 2000
    assert not any(line.startswith("level=error") or " FORGED" in line.split('"')[0] for line in lines)
    assert any('upstream_model="gpt-x\\nlevel=error route=admin FORGED"' in line for line in lines)
    assert any('path="/v1/a\\nlevel=error FORGED"' in line for line in lines), lines[-3:]
    assert any(f"({5_000_004 - 256} more characters)" in line for line in lines)


LINE_LIKE = "a\u2028event: injected\u2029data: {}\u0085b"


@pytest.mark.parametrize("door", list(BIG_BODIES))
def test_line_separators_in_an_answer_are_escaped_in_every_event_stream(
    gateway: Start, upstream: tuple[ScriptedUpstream, str], door: str
) -> None:
    url = gateway()
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": LINE_LIKE}), 3))
    upstream[0].reply(Reply(sse(chunks)))
    path, _ = BIG_BODIES[door]
    body = {"model": "assistant", "stream": True, "max_tokens": 64}
    body |= {"messages": [{"role": "user", "content": "Hi"}]} if door != "responses" else {"input": "Hi"}
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", url + path, json=body, headers=headers) as answer:
        raw = answer.read()
    assert not any(separator in raw for separator in ("\u2028".encode(), "\u2029".encode(), "\u0085".encode()))
    assert not any(line.startswith(("event: injected", "data: {}")) for line in raw.decode().splitlines())
    text = ""
    for line in raw.decode().split("\n"):
        if line.startswith("data: {"):
            event = json.loads(line[6:])
            text += (
                event.get("delta", {}).get("text", "")
                if door == "messages"
                else event.get("delta", "")
                if door == "responses" and event["type"] == "response.output_text.delta"
                else "".join(c["delta"].get("content") or "" for c in event.get("choices", []))
            )
    assert text == LINE_LIKE


def test_after_an_internal_error_the_connection_closes_cleanly(monkeypatch: pytest.MonkeyPatch) -> None:
    """A 500 says connection: close and the server closes its side after it, so a client that sent its next
    request on the same connection sees an orderly end, never a reset."""
    config = parse_config(
        json.dumps(
            {"providers": {"up": {"base_url": "http://up.test/v1"}}, "models": [{"name": "*", "provider": "up"}]}
        ),
        "boom.yaml",
        env={},
    )
    app = create_app(config)

    def broken(model: str) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.service.router, "route", broken)
    body = b'{"model": "m", "messages": []}'
    request = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    request += b"content-length: %d\r\n\r\n%s" % (len(body), body)
    with serve(app) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as connection:
            connection.sendall(request * 2)  # the second right behind the first, as a pipelining client sends
            received = b""
            while chunk := connection.recv(65536):  # a reset would raise here
                received += chunk
    head, _, rest = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and b"connection: close" in head.lower()
    assert json.loads(rest)["error"]["type"] == "server_error"


def test_forwarded_answers_carry_the_gateway_s_date_and_no_upstream_server_header(
    gateway: Start, upstream: tuple[ScriptedUpstream, str]
) -> None:
    url = gateway()
    upstream_headers = {"date": "Mon, 01 Jan 2001 00:00:00 GMT", "server": "upstream-httpd/1.2"}
    upstream[0].reply(json_reply({"object": "text_completion", "choices": []}, headers=upstream_headers))
    answer = httpx.post(
        url + "/v1/completions", json={"model": "plain", "prompt": "x"}, headers={"authorization": f"Bearer {KEY}"}
    )
    assert answer.status_code == 200
    names = [name.lower() for name, _ in answer.headers.raw]
    assert names.count(b"date") == 1 and b"server" not in names and "2001" not in answer.headers["date"]


# The private uvicorn API under the HTTP protocol.


def test_the_installed_uvicorn_has_what_the_guarded_protocol_relies_on() -> None:
    protocol.check_uvicorn()  # also run when the module is imported: a server never starts without it


def test_a_uvicorn_that_renamed_a_hook_fails_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(protocol.HttpToolsProtocol, "on_headers_complete")
    monkeypatch.setattr(protocol, "STATUS_LINE", {})
    with pytest.raises(protocol.UvicornChanged, match=r"HttpToolsProtocol\.on_headers_complete.*STATUS_LINE"):
        protocol.check_uvicorn()


def test_pyproject_bounds_uvicorn_to_the_releases_tested() -> None:
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    [uvicorn] = [line for line in dependencies if line.startswith("uvicorn")]
    locked = next(
        line for line in (ROOT / "requirements.lock").read_text().splitlines() if line.startswith("uvicorn==")
    )
    assert "<" in uvicorn and SpecifierSet(uvicorn.split("]", 1)[1]).contains(locked.split("==")[1])
    assert all("<" in line for line in dependencies), "every run-time dependency has an upper bound"
