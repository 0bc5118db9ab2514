"""The hot path and Starlette's routes agree: the same request gets the same status, headers and body either way.

``create_app(..., hot_path=False)`` sends the front doors through Starlette, as
every other path goes; the hot path calls the same endpoints without it. Each
request below goes to both, over real sockets, and everything a client can see
must match but what is fresh per request (request ids, timestamps, timings).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import RecordingTransport, completion_of, serve
from tests.helpers.streams import agent_stream

KEY = "gw-hot-path-key-0123456789"
LIMIT = 2048
CONFIG = f"""
server:
  api_keys: [{KEY}]
  max_body_bytes: {LIMIT}
providers:
  up:
    base_url: http://upstream.test/v1
models:
  - name: agent
    provider: up
    rewrite: {{inject_tools: false}}
  - name: plain
    provider: up
"""
COMPLETION = completion_of(agent_stream(['{"inner_thoughts": "PRIVATE", "message": "Hello"}']))
# What is fresh in every answer: ids, timestamps and the gateway's own timing.
_FRESH_HEADERS = frozenset({"date", "x-request-id", "x-gateway-overhead-ms"})
_FRESH_VALUES = re.compile(rb'"(id|created|created_at|item_id|response_id)":("[^"]*"|\d+)')

CHAT = {"model": "agent", "messages": [{"role": "user", "content": "Hi"}]}
RESPONSES = {"model": "agent", "input": "Hi"}
MESSAGES = {"model": "agent", "max_tokens": 64, "messages": [{"role": "user", "content": "Hi"}]}
DOORS = {
    "/v1/chat/completions": CHAT,
    "/v1/responses": RESPONSES,
    "/v1/messages": MESSAGES,
    "/v1/messages/count_tokens": {key: value for key, value in MESSAGES.items() if key != "max_tokens"},
}


def requests() -> list[Any]:
    return list(_requests())


def _requests() -> Iterator[Any]:
    auth = {"authorization": f"Bearer {KEY}"}
    for path, body in DOORS.items():
        door = path.removeprefix("/v1/")
        for model in ("agent", "plain"):
            yield pytest.param("POST", path, auth, {**body, "model": model}, id=f"{door}-{model}")
            if not path.endswith("count_tokens"):
                streamed = {**body, "model": model, "stream": True}
                yield pytest.param("POST", path, auth, streamed, id=f"{door}-{model}-stream")
        yield pytest.param("POST", path, {}, body, id=f"{door}-no-key")
        yield pytest.param("POST", path, auth, b"{not json", id=f"{door}-bad-json")
        yield pytest.param("POST", path, auth, {**body, "model": "nowhere"}, id=f"{door}-unknown-model")
        yield pytest.param("POST", path, auth, {**body, "pad": "x" * LIMIT}, id=f"{door}-too-large")
        yield pytest.param("GET", path, auth, None, id=f"{door}-get")
        yield pytest.param("HEAD", path, auth, None, id=f"{door}-head")
    yield pytest.param("GET", "/v1/models", auth, None, id="models")
    yield pytest.param("GET", "/healthz", {}, None, id="healthz")
    yield pytest.param("GET", "/v1/chat/completions/", auth, None, id="door-with-a-slash")


@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[str, str]]:
    """The same config twice: with the hot path, and with every request through Starlette."""
    config = parse_config(CONFIG, "hot.yaml", env={})
    upstream = RecordingTransport(orjson.dumps(COMPLETION))
    with (
        serve(create_app(config, {"up": upstream})) as hot,
        serve(create_app(config, {"up": upstream}, hot_path=False)) as general,
    ):
        yield hot, general


def seen(response: httpx.Response) -> tuple[int, dict[str, str], bytes]:
    headers = {name: value for name, value in response.headers.items() if name not in _FRESH_HEADERS}
    return response.status_code, headers, _FRESH_VALUES.sub(rb'"\1":"-"', response.content)


@pytest.mark.parametrize(("method", "path", "headers", "body"), requests())
def test_the_hot_path_answers_as_starlette_does(
    gateways: tuple[str, str], method: str, path: str, headers: dict[str, str], body: Any
) -> None:
    content = body if isinstance(body, bytes) or body is None else orjson.dumps(body)
    sent = {**headers, "content-type": "application/json"} if content is not None else headers
    hot, general = (httpx.request(method, url + path, headers=sent, content=content) for url in gateways)
    assert seen(hot) == seen(general)
    assert hot.headers["x-request-id"].startswith("req_") and general.headers["x-request-id"].startswith("req_")
    if hot.status_code == 200 and isinstance(body, dict) and "stream" not in body and not path.endswith("tokens"):
        rewritten = body["model"] == "agent"
        assert (b"PRIVATE" in hot.content) is not rewritten, "the same route rules run on the hot path"
