"""Client keys on the request path, on every front door: routes, rate limits, token budgets, concurrency slots.

A real gateway (uvicorn on a loopback port, the in-process state store) in
front of a scripted upstream, driven over HTTP and by the SDKs. What only a
store shared by several processes shows is in ``test_limits_shared.py``.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest

from gateway.config import parse_config
from gateway.core.options import RewriteOptions
from gateway.core.translator import StreamTranslator
from gateway.core.usage import estimate_prompt
from gateway.dialects import chat
from gateway.server.app import create_app
from tests.helpers.polling import eventually
from tests.helpers.servers import Received, Reply, ScriptedUpstream, completion_of, json_reply, serve, sse
from tests.helpers.streams import agent_stream, choice, chunk, split_evenly

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
MESSAGE = "Hello from the gateway."
PLAIN_KEY = "sk-plain-0123456789"


def agent_chunks(usage: bool) -> list[dict[str, Any]]:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "private", "message": MESSAGE}), 6))
    return [*chunks, chunk(usage=USAGE)] if usage else chunks


def answer(request: Received) -> Reply:
    """The upstream's answer: with its usage, a stream's only when the gateway asked for it."""
    if request.path.endswith("/embeddings"):
        return json_reply(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.5]}],
                "model": "m",
                "usage": {"prompt_tokens": 18, "total_tokens": 18},
            }
        )
    if request.path.endswith("/files"):
        return json_reply({"object": "list", "data": []})
    body = request.json
    if body.get("stream"):
        asked = (body.get("stream_options") or {}).get("include_usage") is True
        return Reply(sse(agent_chunks(usage=asked)))
    return json_reply(completion_of(agent_chunks(usage=False)) | {"usage": USAGE})


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    scripted = ScriptedUpstream(default=answer)
    with serve(scripted) as url:
        yield scripted, url


@pytest.fixture
def scripted(upstream: tuple[ScriptedUpstream, str]) -> Iterator[ScriptedUpstream]:
    upstream[0].script.clear()
    upstream[0].requests.clear()
    yield upstream[0]
    upstream[0].script.clear()


Start = Callable[..., str]


@pytest.fixture
def gateway(upstream: tuple[ScriptedUpstream, str]) -> Iterator[Start]:
    """Starts a gateway with the given ``keys`` (and ``server`` settings), with fresh limits; yields its URL."""
    with contextlib.ExitStack() as stack:

        def start(keys: list[dict[str, Any]], **server: Any) -> str:
            config = {
                "server": {"api_keys": [PLAIN_KEY], **server},
                "providers": {"up": {"base_url": f"{upstream[1]}/v1", "timeout": {"idle": 5}}},
                "models": [
                    {"name": "assistant", "provider": "up", "rewrite": {"inject_tools": False}, "max_retries": 0},
                    {"name": "plain", "provider": "up", "max_retries": 0},
                    {"name": "gpt-*", "provider": "up", "max_retries": 0},
                ],
                "keys": keys,
            }
            app = create_app(parse_config(json.dumps(config), "limits.yaml", env={}))
            return stack.enter_context(serve(app))

        yield start


# The front doors, each asked the same thing in its own dialect.


@dataclass(frozen=True)
class Door:
    name: str
    path: str
    streams: bool
    anthropic: bool = False

    def body(self, model: str, stream: bool) -> dict[str, Any]:
        if self.path == "/v1/chat/completions":
            return {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
        if self.path == "/v1/responses":
            return {"model": model, "input": "Hi", "stream": stream}
        if self.path == "/v1/messages":
            return {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
        return {"model": model, "input": "Hi"}

    def headers(self, key: str) -> dict[str, str]:
        return {"x-api-key": key} if self.anthropic else {"authorization": f"Bearer {key}"}

    def post(self, url: str, key: str, model: str = "assistant", stream: bool = False) -> httpx.Response:
        """The whole answer (a stream read to its end)."""
        return httpx.post(url + self.path, json=self.body(model, stream), headers=self.headers(key), timeout=10)

    def error(self, response: httpx.Response) -> tuple[str, str]:
        """The error's type and message, as this door's clients read them."""
        error = response.json()["error"]
        if self.anthropic:
            assert response.json()["type"] == "error"
        return error["type"], error["message"]

    def complete(self, response: httpx.Response) -> bool:
        """Whether the answer is a whole, successful one in this door's dialect."""
        if response.status_code != 200:
            return False
        text = response.text
        if self.path == "/v1/chat/completions":
            return (
                text.endswith("data: [DONE]\n\n")
                if "text/event-stream" in response.headers["content-type"]
                else MESSAGE in text
            )
        if self.path == "/v1/responses":
            return (
                "response.completed" in text
                if "text/event-stream" in response.headers["content-type"]
                else MESSAGE in text
            )
        if self.path == "/v1/messages":
            return (
                "message_stop" in text if "text/event-stream" in response.headers["content-type"] else MESSAGE in text
            )
        return bool(response.json()["object"] == "list")


DOORS = [
    Door("chat", "/v1/chat/completions", streams=True),
    Door("responses", "/v1/responses", streams=True),
    Door("messages", "/v1/messages", streams=True, anthropic=True),
    Door("forwarded", "/v1/embeddings", streams=False),
]
CASES = [
    pytest.param(door, stream, id=f"{door.name}-{'stream' if stream else 'whole'}")
    for door in DOORS
    for stream in ((False, True) if door.streams else (False,))
]
DOOR_IDS = [door.name for door in DOORS]


# Routes a key may use.


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
def test_a_model_the_key_may_not_use_is_403_naming_it(gateway: Start, scripted: ScriptedUpstream, door: Door) -> None:
    url = gateway([{"name": "narrow", "key": "sk-narrow", "models": ["assistant"]}])
    refused = door.post(url, "sk-narrow", model="gpt-4o")
    assert refused.status_code == 403
    kind, message = door.error(refused)
    assert kind == ("permission_error" if door.anthropic else "invalid_request_error") and "'gpt-4o'" in message
    if not door.anthropic:
        assert refused.json()["error"]["code"] == "permission_denied" and refused.json()["error"]["param"] == "model"
    assert scripted.requests == []
    assert door.complete(door.post(url, "sk-narrow", model="assistant"))
    assert door.complete(door.post(url, PLAIN_KEY, model="gpt-4o"))  # server.api_keys may use every route


def test_the_sdks_raise_permission_denied(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "narrow", "key": "sk-narrow", "models": ["assistant"]}])
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-narrow", max_retries=0)
    with pytest.raises(openai.PermissionDeniedError, match="'plain'"):
        client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "Hi"}])
    claude = anthropic.Anthropic(base_url=url, api_key="sk-narrow", max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError, match="'plain'"):
        claude.messages.create(model="plain", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])
    assert scripted.requests == []


def test_a_key_sees_only_its_models_and_counts_tokens_only_for_them(gateway: Start) -> None:
    url = gateway([{"name": "narrow", "key": "sk-narrow", "models": ["assistant", "gpt-*"]}])

    def listed(key: str) -> list[str]:
        response = httpx.get(url + "/v1/models", headers={"authorization": f"Bearer {key}"})
        return [model["id"] for model in response.json()["data"]]

    assert listed("sk-narrow") == ["assistant"]  # a glob route is never listed
    assert listed(PLAIN_KEY) == ["assistant", "plain"]
    count = {"model": "plain", "messages": [{"role": "user", "content": "Hi"}]}
    refused = httpx.post(url + "/v1/messages/count_tokens", json=count, headers={"x-api-key": "sk-narrow"})
    assert refused.status_code == 403 and refused.json()["error"]["type"] == "permission_error"
    counted = httpx.post(
        url + "/v1/messages/count_tokens", json={**count, "model": "assistant"}, headers={"x-api-key": "sk-narrow"}
    )
    assert counted.status_code == 200 and counted.json()["input_tokens"] > 0


def test_a_forwarded_request_that_names_no_model_needs_a_key_that_may_use_every_route(
    gateway: Start, scripted: ScriptedUpstream
) -> None:
    url = gateway([{"name": "narrow", "key": "sk-narrow", "models": ["assistant"]}, {"name": "wide", "key": "sk-wide"}])
    refused = httpx.get(url + "/v1/files", headers={"authorization": "Bearer sk-narrow"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "permission_denied"
    assert scripted.requests == []
    assert httpx.get(url + "/v1/files", headers={"authorization": "Bearer sk-wide"}).status_code == 200
    assert [request.path for request in scripted.requests] == ["/v1/files"]


# Requests per minute.


def ratelimit(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("x-ratelimit-")}


@pytest.mark.parametrize(("door", "stream"), CASES)
def test_requests_per_minute_are_refused_with_429_and_every_answer_says_how_many_are_left(
    gateway: Start, scripted: ScriptedUpstream, door: Door, stream: bool
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "rpm": 2}])
    first, second, third = (door.post(url, "sk-app", stream=stream) for _ in range(3))
    assert door.complete(first) and door.complete(second)
    assert ratelimit(first)["x-ratelimit-limit-requests"] == "2"
    assert [ratelimit(r)["x-ratelimit-remaining-requests"] for r in (first, second, third)] == ["1", "0", "0"]
    assert third.status_code == 429 and 1 <= int(third.headers["retry-after"]) <= 60
    assert int(third.headers["retry-after-ms"]) <= 60_000
    assert ratelimit(third)["x-ratelimit-reset-requests"].endswith("s")
    kind, message = door.error(third)
    assert (
        kind == ("rate_limit_error" if door.anthropic else "rate_limit_exceeded") and "2 requests per minute" in message
    )
    assert len(scripted.requests) == 2


def test_the_sdks_see_the_refusal_and_its_headers(gateway: Start) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "rpm": 1}])
    client = openai.OpenAI(base_url=url + "/v1", api_key="sk-app", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="assistant", messages=[{"role": "user", "content": "Hi"}], stream=True
    ) as streamed:
        assert streamed.headers["x-ratelimit-remaining-requests"] == "0"  # on the head of the stream
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices) == MESSAGE
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="assistant", messages=[{"role": "user", "content": "Hi"}])
    assert (
        refused.value.code == "rate_limit_exceeded"
        and refused.value.response.headers["x-ratelimit-limit-requests"] == "1"
    )
    claude = anthropic.Anthropic(base_url=url, api_key="sk-app", max_retries=0)
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model="assistant", max_tokens=64, messages=[{"role": "user", "content": "Hi"}])


def test_upstream_rate_limit_headers_are_renamed_beside_the_keys_own(
    gateway: Start, scripted: ScriptedUpstream
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "rpm": 5}])
    upstream_headers = {"x-ratelimit-remaining-requests": "4999", "x-ratelimit-limit-tokens": "800000"}
    scripted.reply(json_reply(completion_of(agent_chunks(usage=False)) | {"usage": USAGE}, headers=upstream_headers))
    answered = DOORS[0].post(url, "sk-app")
    assert answered.headers["x-ratelimit-remaining-requests"] == "4"
    assert answered.headers["x-upstream-ratelimit-remaining-requests"] == "4999"
    assert (
        answered.headers["x-upstream-ratelimit-limit-tokens"] == "800000"
        and "x-ratelimit-limit-tokens" not in answered.headers
    )
    scripted.reply(json_reply({"object": "list", "data": []}, headers=upstream_headers))
    forwarded = DOORS[3].post(url, "sk-app")
    assert forwarded.headers["x-ratelimit-remaining-requests"] == "3"
    assert forwarded.headers["x-upstream-ratelimit-remaining-requests"] == "4999"


@pytest.mark.parametrize("door", DOORS, ids=DOOR_IDS)
def test_an_upstream_error_carries_the_keys_headers_too(gateway: Start, scripted: ScriptedUpstream, door: Door) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "rpm": 5}])
    scripted.reply(json_reply({"error": {"message": "overloaded", "type": "server_error"}}, 500))
    failed = door.post(url, "sk-app")
    assert failed.status_code == 500 and failed.headers["x-ratelimit-remaining-requests"] == "4"


# Tokens, from the upstream usage.


@pytest.mark.parametrize(("door", "stream"), CASES)
def test_tokens_per_minute_are_charged_from_the_upstream_usage(
    gateway: Start, scripted: ScriptedUpstream, door: Door, stream: bool
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 30}])
    first, second, third = (door.post(url, "sk-app", stream=stream) for _ in range(3))
    assert door.complete(first) and door.complete(second)
    # Admitted on the tokens spent before it; each answer reported 18.
    assert [ratelimit(r)["x-ratelimit-remaining-tokens"] for r in (first, second, third)] == ["30", "12", "0"]
    assert ratelimit(first)["x-ratelimit-limit-tokens"] == "30"
    assert third.status_code == 429 and "30 tokens per minute" in door.error(third)[1]
    assert len(scripted.requests) == 2


def test_a_token_budget_spent_is_insufficient_quota_until_its_period_ends(
    gateway: Start, scripted: ScriptedUpstream
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "budget": {"tokens": 10, "period": "day"}}])
    assert DOORS[0].complete(DOORS[0].post(url, "sk-app", stream=True))
    for door in DOORS:
        refused = door.post(url, "sk-app")
        assert refused.status_code == 429 and refused.headers["x-should-retry"] == "false"
        assert (
            refused.headers["x-ratelimit-limit-tokens"] == "10"
            and refused.headers["x-ratelimit-remaining-tokens"] == "0"
        )
        seconds_to_midnight = 86400 - time.time() % 86400
        assert abs(int(refused.headers["retry-after"]) - seconds_to_midnight) < 60
        kind, message = door.error(refused)
        assert (
            kind == ("billing_error" if door.anthropic else "insufficient_quota") and "budget of 10 tokens" in message
        )
        if not door.anthropic:
            assert refused.json()["error"]["code"] == "insufficient_quota"
    assert len(scripted.requests) == 1
    with pytest.raises(openai.RateLimitError):  # and the SDK, told not to, does not retry for a day
        openai.OpenAI(base_url=url + "/v1", api_key="sk-app").chat.completions.create(
            model="assistant", messages=[{"role": "user", "content": "Hi"}]
        )
    assert len(scripted.requests) == 1


def remaining_tokens(url: str, key: str, scripted: ScriptedUpstream) -> int:
    """What the key has left of its minute's tokens, as the next answer says: one that costs none (the
    upstream refuses it, which is charged nothing and still carries the key's headers)."""
    scripted.reply(json_reply({"error": {"message": "no", "type": "invalid_request_error"}}, 400))
    refused = DOORS[3].post(url, key)
    assert refused.status_code == 400
    return int(refused.headers["x-ratelimit-remaining-tokens"])


def test_a_stream_cut_short_after_its_usage_is_charged_the_usage(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 1000}])
    scripted.reply(Reply(sse(agent_chunks(usage=True), done=False), then="break"))
    broken = DOORS[0].post(url, "sk-app", stream=True)
    assert broken.status_code == 200 and '"error"' in broken.text.splitlines()[-2]
    assert remaining_tokens(url, "sk-app", scripted) == 1000 - 18


def test_a_stream_cut_short_without_usage_is_charged_an_estimate(gateway: Start, scripted: ScriptedUpstream) -> None:
    """The prompt as count_tokens estimates it, plus a token per chunk relayed."""
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 100000}])
    pieces = [chunk(choice(content="word ", role="assistant"))] + [chunk(choice(content="word ")) for _ in range(4)]
    scripted.reply(Reply(sse(pieces, done=False), then="hang"))
    with httpx.stream(
        "POST",
        url + "/v1/chat/completions",
        json=DOORS[0].body("plain", True),
        headers={"authorization": "Bearer sk-app"},
        timeout=10,
    ) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("data: {")
            if received == len(pieces):
                break  # and the client hangs up
    estimate = estimate_prompt(scripted.requests[-1].json) + len(pieces)
    assert eventually(lambda: scripted.hangups != [])
    assert eventually(lambda: remaining_tokens(url, "sk-app", scripted) == 100000 - estimate)


def test_a_whole_answer_without_usage_is_charged_an_estimate(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 100000}])
    reply = json_reply(completion_of(agent_chunks(usage=False)) | {"usage": None})
    scripted.reply(reply)
    assert DOORS[0].complete(DOORS[0].post(url, "sk-app", model="plain"))
    estimate = estimate_prompt(scripted.requests[-1].json) + math.ceil(len(reply.pieces[0]) / 3)
    assert remaining_tokens(url, "sk-app", scripted) == 100000 - estimate


def test_an_answer_that_never_came_is_not_charged(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 1000}])
    scripted.reply(json_reply({"error": {"message": "bad request", "type": "invalid_request_error"}}, 400))
    assert DOORS[0].post(url, "sk-app").status_code == 400
    assert remaining_tokens(url, "sk-app", scripted) == 1000


# Concurrency slots.


def held_stream(gate: threading.Event) -> Reply:
    """A stream that sends its first chunk, then waits for the test."""
    return Reply(sse(agent_chunks(usage=True)), gate=gate)


@contextlib.contextmanager
def stream_open(url: str, key: str, door: Door = DOORS[0]) -> Iterator[httpx.Response]:
    """A stream whose head has arrived, held open while the block runs."""
    with httpx.stream(
        "POST", url + door.path, json=door.body("assistant", True), headers=door.headers(key), timeout=10
    ) as response:
        assert response.status_code == 200
        yield response


EXITS = ["finished", "client-left", "upstream-broke", "upstream-error", "client-left-before-the-answer"]


@pytest.mark.parametrize("exit", EXITS)
def test_a_concurrency_slot_is_held_while_the_request_runs_and_comes_back_on_every_exit(
    gateway: Start, scripted: ScriptedUpstream, exit: str
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "max_concurrency": 1}])
    chat = DOORS[0]
    gate, checked = threading.Event(), threading.Event()
    scripted.reply(
        {
            "finished": held_stream(gate),
            "client-left": held_stream(gate),
            "upstream-broke": Reply(sse(agent_chunks(usage=False))[:3], then="break", gate=gate),
            "upstream-error": Reply(
                [b'{"error": {"message": "down", "type": "server_error"}}'],
                status=503,
                content_type="application/json",
                gate=gate,
                gate_at=0,
            ),
            "client-left-before-the-answer": Reply(sse(agent_chunks(usage=False)), gate=gate, gate_at=0),
        }[exit]
    )
    statuses: list[int] = []

    def first() -> None:
        with httpx.stream(
            "POST", url + chat.path, json=chat.body("assistant", True), headers=chat.headers("sk-app"), timeout=10
        ) as response:
            statuses.append(response.status_code)
            if exit == "client-left":
                lines = response.iter_lines()  # kept: a line iterator dropped closes the response
                next(lines)
                checked.wait(10)
                return  # leaving mid-stream
            response.read()

    with contextlib.ExitStack() as stack:
        if exit == "client-left-before-the-answer":
            raw = stack.enter_context(socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))))
            body = json.dumps(chat.body("assistant", True)).encode()
            raw.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\nauthorization: Bearer sk-app\r\n"
                b"content-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
            )
        else:
            runner = threading.Thread(target=first)
            runner.start()
            stack.callback(runner.join)
        stack.callback(gate.set)
        stack.callback(checked.set)
        assert eventually(lambda: len(scripted.requests) == 1)
        refused = chat.post(url, "sk-app")
        assert refused.status_code == 429 and "1 request in flight at once" in chat.error(refused)[1]
        assert refused.headers["retry-after"] == "1"
    assert statuses == {"upstream-error": [503], "client-left-before-the-answer": []}.get(exit, [200])
    assert eventually(lambda: scripted.active == 0)
    assert eventually(lambda: chat.post(url, "sk-app").status_code == 200), "the slot came back"


def test_slots_are_counted_across_doors(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "max_concurrency": 2}])
    gate = threading.Event()
    scripted.reply(held_stream(gate), held_stream(gate))
    with stream_open(url, "sk-app", DOORS[1]), stream_open(url, "sk-app", DOORS[2]):
        for door in DOORS:
            assert door.post(url, "sk-app").status_code == 429
        gate.set()
    assert eventually(lambda: DOORS[3].post(url, "sk-app").status_code == 200)


# Metrics.


def test_metrics_count_requests_tokens_and_refusals_per_key_name(gateway: Start, scripted: ScriptedUpstream) -> None:
    url = gateway([{"name": "support-bot", "key": "sk-support", "rpm": 2}, {"name": "free", "key": "sk-free"}])
    for _ in range(3):
        DOORS[0].post(url, "sk-support", stream=True)
    DOORS[2].post(url, "sk-free")
    DOORS[0].post(url, "sk-free", model="nothing-like-it")
    metrics = httpx.get(url + "/metrics").text
    for line in (
        'gateway_key_requests_total{key="support-bot",status="200"} 2.0',
        'gateway_key_requests_total{key="support-bot",status="429"} 1.0',
        'gateway_key_requests_total{key="free",status="200"} 1.0',
        'gateway_key_requests_total{key="free",status="404"} 1.0',
        'gateway_key_tokens_total{key="support-bot",kind="prompt"} 22.0',
        'gateway_key_tokens_total{key="support-bot",kind="completion"} 14.0',
        'gateway_key_tokens_total{key="free",kind="prompt"} 11.0',
        'gateway_key_rejections_total{key="support-bot",limit="requests"} 1.0',
    ):
        assert line in metrics.splitlines(), line
    assert "sk-support" not in metrics and "sk-free" not in metrics


def test_a_stream_the_client_did_not_ask_usage_for_is_charged_and_counted_without_showing_it(
    gateway: Start, scripted: ScriptedUpstream
) -> None:
    url = gateway([{"name": "app", "key": "sk-app", "tpm": 1000}])
    streamed = DOORS[0].post(url, "sk-app", stream=True)
    chunks = [orjson.loads(line[6:]) for line in streamed.text.splitlines() if line.startswith("data: {")]
    assert all(c["choices"] for c in chunks) and scripted.requests[-1].json["stream_options"] == {"include_usage": True}
    assert remaining_tokens(url, "sk-app", scripted) == 1000 - 18


# The usage chunk, which the gateway asks every upstream stream for.


@pytest.mark.parametrize("rewrite", [True, False], ids=["rewrite", "plain"])
def test_the_chat_encoder_drops_only_the_usage_only_chunk_for_a_client_that_did_not_ask(rewrite: bool) -> None:
    upstream = [
        chunk(prompt_filter_results=[{"prompt_index": 0}]),  # Azure's: no choices, no usage
        *[{**c, "usage": None} for c in agent_chunks(usage=False)],
        chunk(choice(finish="stop"), usage={"prompt_tokens": 1, "completion_tokens": 1}),  # usage beside a choice
        chunk(usage=USAGE),  # the usage-only chunk
    ]
    body = b"".join(sse(upstream))

    def client_chunks(payload: dict[str, Any]) -> list[dict[str, Any]]:
        options = RewriteOptions() if rewrite else RewriteOptions(passthrough=True)
        translator = StreamTranslator(options, "up")
        encoder = chat.encoder(chat.parse_request(orjson.dumps(payload)), created=0)
        out = encoder.encode(translator.feed(body)) + encoder.encode(translator.end())
        return [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]

    request = {"model": "m", "messages": [], "stream": True}
    asked = client_chunks({**request, "stream_options": {"include_usage": True}})
    plain = client_chunks(request)
    assert asked[-1] == chunk(usage=USAGE)
    assert plain == asked[:-1]
    assert plain[0] == upstream[0] and plain[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 1}
