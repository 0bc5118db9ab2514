"""Limits held across gateway processes: two real ``gateway serve`` processes sharing one real redis-server.

Every test names its keys and deployments afresh, so that tests sharing the
run's Redis never see each other's counts. A Redis that a test stops and
starts again is its own (``own_redis``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.polling import eventually
from tests.helpers.redis_server import RedisServer
from tests.helpers.servers import Received, Reply, Running, ScriptedUpstream, gateway_process, json_reply, serve, sse
from tests.helpers.streams import agent_stream, chunk, split_evenly

USAGE = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
KEY = "sk-shared-0123456789"
PLAIN_KEY = "sk-plain-0123456789"


def agent_chunks(usage: bool) -> list[dict[str, Any]]:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "private", "message": "Hello."}), 6))
    return [*chunks, chunk(usage=USAGE)] if usage else chunks


def answer(request: Received) -> Reply:
    body = request.json
    if body.get("stream"):
        return Reply(sse(agent_chunks(usage=(body.get("stream_options") or {}).get("include_usage") is True)))
    return json_reply(
        {
            "id": "c",
            "object": "chat.completion",
            "created": 1,
            "model": "m",
            "usage": USAGE,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, "finish_reason": "stop"}],
        }
    )


def failing(request: Received) -> Reply:
    return json_reply({"error": {"message": "overloaded", "type": "server_error"}}, 503)


@pytest.fixture(scope="module")
def upstreams() -> Iterator[tuple[ScriptedUpstream, str, ScriptedUpstream, str]]:
    """A healthy upstream, and one that always answers 503."""
    healthy, broken = ScriptedUpstream(default=answer), ScriptedUpstream(default=failing)
    with serve(healthy) as healthy_url, serve(broken) as broken_url:
        yield healthy, healthy_url, broken, broken_url


Gateways = Callable[..., tuple[Running, ...]]


@pytest.fixture
def gateways(
    tmp_path: Path, redis_url: str, upstreams: tuple[ScriptedUpstream, str, ScriptedUpstream, str]
) -> Iterator[Gateways]:
    """Starts gateway processes on one config: ``key`` (the limits of ``KEY``) and ``server`` settings."""
    healthy, healthy_url, broken, broken_url = upstreams
    healthy.requests.clear()
    broken.requests.clear()
    unique = uuid.uuid4().hex[:10]
    with contextlib.ExitStack() as stack:

        def start(count: int, key: dict[str, Any], state: str = redis_url, **server: Any) -> tuple[Running, ...]:
            east, west = f"east-{unique}", f"west-{unique}"
            config = {
                "server": {
                    "api_keys": [PLAIN_KEY],
                    "state": state,
                    "state_timeout": 5,
                    "retry_backoff": 0.01,
                    **server,
                },
                "providers": {
                    east: {"base_url": f"{broken_url}/v1", "max_failures": 1, "cooldown": 120},
                    west: {"base_url": f"{healthy_url}/v1"},
                },
                "models": [
                    {"name": "assistant", "provider": west, "rewrite": {"inject_tools": False}, "max_retries": 0},
                    {"name": "spread", "provider": [east, west], "rewrite": {"inject_tools": False}, "max_retries": 1},
                ],
                "keys": [{"name": f"app-{unique}", "key": KEY, **key}],
            }
            path = tmp_path / f"gateway-{uuid.uuid4().hex[:6]}.yaml"
            path.write_text(json.dumps(config))
            return tuple(stack.enter_context(gateway_process("--config", str(path))) for _ in range(count))

        yield start


def post(gateway: Running, model: str = "assistant", stream: bool = False, key: str = KEY) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "Hi"}], "stream": stream}
    return httpx.post(
        gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"}, timeout=30
    )


def test_a_rate_limit_holds_exactly_across_two_gateways(gateways: Gateways) -> None:
    first, second = gateways(2, {"rpm": 10})
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(post, [first, second] * 10))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 10 + [429] * 10
    served_by = {
        gateway.url: [a.status_code for a, g in zip(answers, [first, second] * 10, strict=True) if g is gateway]
        for gateway in (first, second)
    }
    assert all(len(codes) == 10 for codes in served_by.values())  # each gateway took half of the requests
    assert all(a.headers["x-ratelimit-limit-requests"] == "10" for a in answers)


def test_a_token_budget_spent_through_one_gateway_is_refused_through_the_other(gateways: Gateways) -> None:
    first, second = gateways(2, {"budget": {"tokens": 10, "period": "month"}})
    streamed = post(first, stream=True)
    assert streamed.status_code == 200 and streamed.text.endswith("data: [DONE]\n\n")
    assert '"usage"' not in streamed.text  # charged from the usage the client did not ask to see
    refused = post(second)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "insufficient_quota"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "0"


def test_a_deployment_cooled_down_by_one_gateway_is_skipped_by_the_other(
    gateways: Gateways, upstreams: tuple[ScriptedUpstream, str, ScriptedUpstream, str]
) -> None:
    healthy, _, broken, _ = upstreams
    first, second = gateways(2, {})
    for _ in range(4):  # the first gateway tries the broken deployment, which cools down at its first failure
        assert post(first, model="spread").status_code == 200
        if broken.requests:
            break
    assert len(broken.requests) == 1
    served = len(healthy.requests)
    for _ in range(6):
        assert post(second, model="spread").status_code == 200
    assert len(broken.requests) == 1, "the second gateway never tried the deployment the first cooled down"
    assert len(healthy.requests) == served + 6


def test_the_slot_of_a_gateway_killed_mid_stream_comes_back_when_its_lease_ends(
    gateways: Gateways, upstreams: tuple[ScriptedUpstream, str, ScriptedUpstream, str]
) -> None:
    healthy = upstreams[0]
    first, second = gateways(2, {"max_concurrency": 1}, slot_lease=2)
    gate = threading.Event()
    healthy.reply(Reply(sse(agent_chunks(usage=True)), gate=gate))
    try:
        body = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}], "stream": True}
        with httpx.stream(
            "POST",
            first.url + "/v1/chat/completions",
            json=body,
            headers={"authorization": f"Bearer {KEY}"},
            timeout=30,
        ) as stream:
            lines = stream.iter_lines()
            assert next(lines).startswith("data: {")
            refused = post(second)
            assert refused.status_code == 429 and "in flight" in refused.json()["error"]["message"]
            time.sleep(3)  # past the lease: the first gateway renews its slot while the stream runs
            assert post(second).status_code == 429
            first.process.kill()  # SIGKILL: nothing is given back
            first.process.wait()
        assert eventually(lambda: post(second).status_code == 200, seconds=20, every=0.1), (
            "the dead gateway's slot came back"
        )
    finally:
        gate.set()


def metric(gateway: Running, name: str, **labels: str) -> float:
    wanted = name + "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"
    for line in httpx.get(gateway.url + "/metrics").text.splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return 0.0


def test_redis_stopped_mid_run_open_limits_per_gateway_closed_refuses_and_limits_resume(
    gateways: Gateways, own_redis: RedisServer
) -> None:
    lenient, strict = gateways(1, {"rpm": 2}, state=own_redis.url) + gateways(
        1, {"rpm": 2}, state=own_redis.url, state_failure="closed"
    )
    for gateway in (lenient, strict):  # they share the key's window
        assert post(gateway).status_code == 200
    assert [post(gateway).status_code for gateway in (lenient, strict)] == [429, 429]

    own_redis.stop()
    # Open: the lenient gateway holds the key to what it counted itself (its one request of this minute).
    served = [post(lenient) for _ in range(4)]
    assert [answer.status_code for answer in served] == [200, 429, 429, 429]
    assert all(answer.headers["x-ratelimit-limit-requests"] == "2" for answer in served)
    assert metric(lenient, "gateway_state_failures_total", operation="admit") == 4
    warnings = [line for line in lenient.stderr().splitlines() if "shared state unavailable" in line]
    assert len(warnings) == 1 and "state_failure: open" in warnings[0]  # one warning per interval

    refused = post(strict)
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert error["code"] == "state_unavailable" and "server.state_failure: closed" in error["message"]
    assert str(own_redis.port) not in error["message"]  # where Redis is stays in the gateway's log
    assert post(strict, key=PLAIN_KEY).status_code == 200  # a key without limits needs no shared state

    own_redis.start()  # empty again: no persistence
    for gateway in (lenient, strict):
        assert post(gateway).status_code == 200
    assert [post(gateway).status_code for gateway in (lenient, strict)] == [429, 429]
    assert metric(lenient, "gateway_state_failures_total", operation="admit") == 4


def redis_clients(server: RedisServer) -> int:
    """How many clients the server has now (the asking one included)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(b"INFO clients\r\n")
        reply = b""
        while b"connected_clients:" not in reply or not reply.endswith(b"\r\n"):
            reply += connection.recv(65536)
    return int(re.search(rb"connected_clients:(\d+)", reply)[1])  # type: ignore[index]


async def burst(gateway: Running, count: int) -> list[int]:
    """``count`` requests at once, each on a connection of its own, as an attacker opening them would."""

    async def one() -> int:
        async with httpx.AsyncClient(timeout=60) as client:
            body = {"model": "assistant", "messages": [{"role": "user", "content": "Hi"}]}
            answer = await client.post(
                gateway.url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEY}"}
            )
            return answer.status_code

    return list(await asyncio.gather(*(one() for _ in range(count))))


@pytest.mark.parametrize("failure", ["open", "closed"])
def test_a_burst_on_fresh_connections_is_held_to_the_limit_and_opens_no_redis_connections(
    gateways: Gateways, own_redis: RedisServer, failure: str
) -> None:
    """With the default state_timeout, bursts of 150 find the pool open: exactly the rpm is served, the rest
    get 429 (never 503, never served unlimited), and Redis sees no more clients than the pool holds."""
    (gateway,) = gateways(1, {"rpm": 5}, state=own_redis.url, state_failure=failure, state_timeout=0.05)
    assert redis_clients(own_redis) == 16 + 1  # the pool was opened at start, before any request
    statuses = asyncio.run(burst(gateway, 150))
    assert sorted(statuses) == [200] * 5 + [429] * 145
    assert sorted(asyncio.run(burst(gateway, 100))) == [429] * 100
    assert redis_clients(own_redis) == 16 + 1
    assert metric(gateway, "gateway_state_failures_total", operation="admit") == 0


def test_max_concurrency_holds_on_redis_and_a_client_that_waits_for_each_end_is_never_refused(
    gateways: Gateways, own_redis: RedisServer
) -> None:
    """A key's slot is given back just before its answer's last bytes go out: in Redis the key never holds more
    than max_concurrency slots, and four clients that each start their next stream on reading the end of the
    last one are never refused (a client counting from request to last byte read may see a fifth overlap the
    last write's few microseconds; that is the whole of it)."""
    (gateway,) = gateways(1, {"max_concurrency": 4}, state=own_redis.url)
    samples: list[int] = []
    stop = threading.Event()

    def sample() -> None:
        with socket.create_connection(("127.0.0.1", own_redis.port), timeout=5) as connection:
            while not stop.is_set():
                connection.sendall(
                    b"EVAL \"local n = 0 for _, k in ipairs(redis.call('KEYS', '*:slots')) do"
                    b" n = n + redis.call('ZCARD', k) end return n\" 0\r\n"
                )
                samples.append(int(connection.recv(64)[1:].split(b"\r\n")[0]))

    def client() -> list[int]:
        return [post(gateway, stream=True).status_code for _ in range(40)]

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            statuses = [status for run in pool.map(lambda _: client(), range(4)) for status in run]
    finally:
        stop.set()
        sampler.join()
    assert statuses == [200] * 160
    assert len(samples) > 50 and max(samples) <= 4
