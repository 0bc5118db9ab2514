"""Unit tests of the ASGI app (gateway.server.app), with the upstream provider mocked by respx.

The end-to-end tests (tests/e2e/) drive real servers and SDKs; these run
the ASGI app in-process and pin down exactly what crosses the gateway: the
request sent upstream, the headers relayed back, how upstream failures map to
OpenAI errors, how a relayed stream ends, authentication, the body limit and
readiness.
"""

from __future__ import annotations

import asyncio
import re
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import httpx
import orjson
import pytest
import respx

from gateway import __version__
from gateway.config import ModelRoute, parse_config
from gateway.server.app import create_app
from gateway.server.hotpath import HotPath
from tests.helpers.servers import completion_of, sse
from tests.helpers.streams import agent_stream, choice, chunk

T = TypeVar("T")

UPSTREAM = "http://upstream.test/v1"
PROVIDER_KEY = "sk-provider-secret-0123456789"
CLIENT_KEYS = ("gw-first-key-0123456789", "gw-second-key-9876543210")
LIMIT = 4096
USER = [{"role": "user", "content": "Hi"}]
AGENT_CHUNKS = agent_stream(['{"inner_thoughts": "PRIVATE", "message": "Hello"}'])
COMPLETION = completion_of(AGENT_CHUNKS)
GENERATED_ID = re.compile(r"req_[0-9a-f]{32}")
OPENAI_ERROR = {
    "error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit_exceeded"}
}

# One upstream attempt per request: retries, where the gateway has them, are not what these tests are about.
ONE_ATTEMPT = "max_retries: 0" if "max_retries" in ModelRoute.model_fields else ""

CONFIG = """
server:
  api_keys: {api_keys}
  max_body_bytes: {limit}
providers:
  up:
    base_url: {upstream}
    api_key: {provider_key}
    headers: {{x-extra: "yes", openai-organization: org-test}}
    forward_headers: [openai-beta, x-extra, x-end-to-end, x-hop-only]
models:
  - name: agent
    provider: up
    model: upstream-model
    rewrite: {{inject_tools: false}}
    {one_attempt}
  - name: plain
    provider: up
    model: upstream-plain
    {one_attempt}
"""


# Shared helpers.


def make_app(api_keys: tuple[str, ...] = ()) -> HotPath:
    text = CONFIG.format(
        api_keys=list(api_keys), limit=LIMIT, upstream=UPSTREAM, provider_key=PROVIDER_KEY, one_attempt=ONE_ATTEMPT
    )
    # httpx's own transport, which respx mocks; the gateway's transport is tested against real servers.
    return create_app(parse_config(text, "unit.yaml", env={}), {"up": httpx.AsyncHTTPTransport()})


def asgi_client(app: HotPath) -> httpx.AsyncClient:
    # Unhandled exceptions become the app's 500 answer instead of being raised here.
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://gw")


def run(app: HotPath, scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run a scenario against a started gateway (ASGITransport does not run the lifespan)."""

    async def main() -> T:
        gateway = app.service
        await gateway.start()
        try:
            async with asgi_client(app) as client:
                return await scenario(client)
        finally:
            await gateway.stop()

    return asyncio.run(main())


def send(method: str, path: str, *, app: HotPath | None = None, **options: Any) -> httpx.Response:
    return run(app or make_app(), lambda client: client.request(method, path, **options))


def post_chat(body: dict[str, Any], *, app: HotPath | None = None, **options: Any) -> httpx.Response:
    return send("POST", "/v1/chat/completions", app=app, json=body, **options)


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def reads(*pieces: bytes, then: Exception | None = None) -> AsyncIterator[bytes]:
    """An upstream body arriving in the given reads, optionally failing after the last one."""
    for piece in pieces:
        yield piece
    if then is not None:
        raise then


def sse_response(*pieces: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(200, headers={"content-type": "text/event-stream", **(headers or {})}, content=reads(*pieces))


def mock_chat(router: respx.MockRouter, answer: Callable[[], httpx.Response]) -> respx.Route:
    """Mock the upstream chat endpoint; ``answer`` makes each call's response (a streamed body is read once)."""
    return router.post("/chat/completions").mock(side_effect=lambda request: answer())


def events(body: bytes) -> list[bytes]:
    """The data payloads of the client's SSE body, ``[DONE]`` included."""
    return [event.removeprefix(b"data: ") for event in body.split(b"\n\n") if event.startswith(b"data: ")]


def error_code(response: httpx.Response) -> str | None:
    """The code of an OpenAI error answer, after checking its shape."""
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error["code"]


def final_error(body: bytes) -> dict[str, Any]:
    """The error event a failed stream ends with; the stream must carry no ``[DONE]``."""
    sent = events(body)
    assert b"[DONE]" not in sent
    return orjson.loads(sent[-1])["error"]


@pytest.fixture
def upstream() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=UPSTREAM, assert_all_called=False) as router:
        yield router


# The request sent upstream.


@pytest.mark.parametrize(("route", "upstream_model"), [("plain", "upstream-plain"), ("agent", "upstream-model")])
@pytest.mark.parametrize("stream", [False, True])
def test_chat_request_is_forwarded_with_only_the_model_replaced_and_a_stream_asking_for_usage(
    upstream: respx.MockRouter, route: str, upstream_model: str, stream: bool
) -> None:
    mocked = mock_chat(
        upstream, lambda: sse_response(*sse(AGENT_CHUNKS)) if stream else httpx.Response(200, json=COMPLETION)
    )
    body = {
        "model": route,
        "messages": [*USER, {"role": "assistant", "content": [{"type": "text", "text": "é 😀"}]}],
        "stream": stream,
        "temperature": 0.3,
        "seed": -9007199254740993,
        "x_vendor_option": {"nested": [1, 2.5, None, True, {"deep": ["a", {}]}], "empty": []},
        "metadata": {"k": "v"},
    }
    assert post_chat(body).status_code == 200
    sent = mocked.calls.last.request
    assert sent.method == "POST" and sent.url == f"{UPSTREAM}/chat/completions"
    usage = {"stream_options": {"include_usage": True}} if stream else {}
    assert orjson.loads(sent.content) == {**body, "model": upstream_model, **usage}
    assert sent.headers["content-type"] == "application/json"
    assert sent.headers["accept"] == ("text/event-stream" if stream else "application/json")


@pytest.mark.parametrize(
    "number",
    [
        b"123456789012345678901234567890",
        b"18446744073709551616",
        b"-18446744073709551616",
        b"-9223372036854775809",
    ],
)
@pytest.mark.parametrize(
    ("path", "route", "upstream_model"),
    [
        ("/chat/completions", "agent", "upstream-model"),
        ("/chat/completions", "plain", "upstream-plain"),
        ("/embeddings", "plain", "upstream-plain"),
    ],
)
def test_integers_beyond_64_bits_are_forwarded_unchanged(
    upstream: respx.MockRouter, number: bytes, path: str, route: str, upstream_model: str
) -> None:
    mocked = upstream.post(path).respond(json=COMPLETION)
    raw = b'{"model": "%s", "messages": [], "x_big": [%s]}' % (route.encode(), number)
    assert send("POST", f"/v1{path}", content=raw, headers={"content-type": "application/json"}).status_code == 200
    sent = mocked.calls.last.request.content
    assert b"[" + number + b"]" in sent and b'"model":"%s"' % upstream_model.encode() in sent


@pytest.mark.parametrize(
    ("method", "path", "upstream_path", "query", "options"),
    [
        ("POST", "/v1/chat/completions", "/chat/completions", b"", {"json": {"model": "plain", "messages": USER}}),
        ("POST", "/v1/embeddings?user=u1", "/embeddings", b"user=u1", {"json": {"model": "plain", "input": "x"}}),
        ("GET", "/v1/files?purpose=fine-tune&limit=2", "/files", b"purpose=fine-tune&limit=2", {}),
    ],
)
def test_provider_key_and_headers_go_upstream_never_the_clients_key(
    upstream: respx.MockRouter, method: str, path: str, upstream_path: str, query: bytes, options: dict[str, Any]
) -> None:
    mocked = upstream.route(method=method, path=upstream_path).respond(json=COMPLETION)
    response = send(method, path, app=make_app(CLIENT_KEYS), headers=bearer(CLIENT_KEYS[0]), **options)
    assert response.status_code == 200
    sent = mocked.calls.last.request
    assert sent.url.path == f"/v1{upstream_path}" and sent.url.query == query
    assert sent.headers.get_list("authorization") == [f"Bearer {PROVIDER_KEY}"]
    assert sent.headers["x-extra"] == "yes" and sent.headers["openai-organization"] == "org-test"
    assert not any(CLIENT_KEYS[0] in value for value in sent.headers.values())


def test_passthrough_forwards_only_the_body_type_accept_and_allowed_headers(upstream: respx.MockRouter) -> None:
    mocked = upstream.post("/embeddings").respond(json={"object": "list", "data": []})
    refused = {
        "connection": "upgrade",
        "upgrade": "h2c",
        "te": "trailers",
        "proxy-authorization": "Basic cHJveHk=",
        "x-api-key": "client-1",
        "api-key": "client-2",
        "openai-organization": "org-client",
        "openai-project": "proj",
        "x-goog-api-key": "client-3",
        "ocp-apim-subscription-key": "client-4",
        "x-auth-token": "client-5",
        "cookie": "s=1",
        "user-agent": "client-agent/1",
        "x-custom": "not asked for",
        "accept-encoding": "gzip",
    }
    client = {**refused, "openai-beta": "assistants=v2", "accept": "application/json"}
    response = send("POST", "/v1/embeddings", json={"model": "plain", "input": "x"}, headers=client)
    assert response.status_code == 200
    sent = mocked.calls.last.request
    assert dict(sent.headers) == {
        "host": "upstream.test",
        "content-type": "application/json",
        "content-length": str(len(sent.content)),
        "accept": "application/json",
        "openai-beta": "assistants=v2",
        "x-request-id": response.headers["x-request-id"],
        "user-agent": f"agent-gateway/{__version__}",
        "x-extra": "yes",
        "openai-organization": "org-test",
        "authorization": f"Bearer {PROVIDER_KEY}",
    }
    assert orjson.loads(sent.content) == {"model": "upstream-plain", "input": "x"}


def test_provider_headers_win_over_the_clients_even_when_allowed(upstream: respx.MockRouter) -> None:
    mocked = upstream.get("/files").respond(json={"data": []})
    send("GET", "/v1/files", headers={"x-extra": "from-client", "openai-organization": "org-client"})
    sent = mocked.calls.last.request.headers
    assert sent.get_list("x-extra") == ["yes"] and sent.get_list("openai-organization") == ["org-test"]


def test_passthrough_drops_headers_the_connection_header_nominates(upstream: respx.MockRouter) -> None:
    mocked = upstream.post("/embeddings").respond(json={"object": "list", "data": []})
    headers = {"connection": "x-hop-only, keep-alive", "x-hop-only": "secret", "x-end-to-end": "kept"}
    send("POST", "/v1/embeddings", json={"model": "plain", "input": "x"}, headers=headers)
    sent = mocked.calls.last.request.headers
    assert sent["x-end-to-end"] == "kept" and "x-hop-only" not in sent


# Response headers.

UPSTREAM_HEADERS = {
    "x-ratelimit-remaining-requests": "41",
    "x-ratelimit-reset-tokens": "6ms",
    "retry-after": "7",
    "openai-processing-ms": "123",
    "x-request-id": "upstream-id-1",
    "connection": "close",
    "keep-alive": "timeout=5",
    "transfer-encoding": "chunked",
}


def assert_relayed(response: httpx.Response, sent: dict[str, str], names: tuple[str, ...]) -> None:
    """The named upstream headers reached the client, hop-by-hop ones did not, and the ids are kept apart:
    the upstream's rate-limit headers are renamed, as ``x-ratelimit-*`` are the gateway's own."""
    for name in names:
        if name.startswith("x-ratelimit-"):
            assert response.headers["x-upstream-" + name[2:]] == sent[name] and name not in response.headers
        else:
            assert response.headers[name] == sent[name]
    for name in ("connection", "keep-alive", "transfer-encoding"):
        assert name not in response.headers
    assert response.headers["x-upstream-request-id"] == "upstream-id-1"
    [request_id] = response.headers.get_list("x-request-id")
    assert GENERATED_ID.fullmatch(request_id)


@pytest.mark.parametrize(
    ("stream", "answer"),
    [
        pytest.param(False, lambda: httpx.Response(200, headers=UPSTREAM_HEADERS, json=COMPLETION), id="json"),
        pytest.param(True, lambda: sse_response(*sse(AGENT_CHUNKS), headers=UPSTREAM_HEADERS), id="stream"),
        pytest.param(
            False, lambda: httpx.Response(429, headers=UPSTREAM_HEADERS, json=OPENAI_ERROR), id="openai-error"
        ),
        pytest.param(
            True, lambda: httpx.Response(503, headers=UPSTREAM_HEADERS, text="<html>down</html>"), id="other-error"
        ),
    ],
)
@pytest.mark.parametrize("route", ["agent", "plain"])
def test_chat_relays_rate_limit_headers_and_the_upstream_id(
    upstream: respx.MockRouter, stream: bool, answer: Callable[[], httpx.Response], route: str
) -> None:
    mock_chat(upstream, answer)
    response = post_chat({"model": route, "messages": USER, "stream": stream})
    assert_relayed(
        response,
        UPSTREAM_HEADERS,
        ("x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens", "retry-after", "openai-processing-ms"),
    )


def test_passthrough_relays_upstream_headers_except_hop_by_hop_cookies_and_host_ones(
    upstream: respx.MockRouter,
) -> None:
    never = {
        "set-cookie": "session=upstream-secret; Path=/",
        "set-cookie2": "old=1",
        "alt-svc": 'h3=":443"',
        "strict-transport-security": "max-age=31536000",
        "x-nominated": "hop",
        "connection": "x-nominated",
    }
    headers = {**UPSTREAM_HEADERS, **never, "x-custom": "1", "content-disposition": "attachment"}
    upstream.post("/embeddings").respond(429, headers=headers, json=OPENAI_ERROR)
    response = send("POST", "/v1/embeddings", json={"model": "plain", "input": "x"})
    assert response.status_code == 429 and response.json() == OPENAI_ERROR
    kept = ("x-ratelimit-remaining-requests", "x-ratelimit-reset-tokens", "retry-after", "openai-processing-ms")
    assert_relayed(response, headers, (*kept, "x-custom", "content-disposition"))
    assert not set(never) & set(response.headers)


@pytest.mark.parametrize(
    ("incoming", "honoured"), [("client-id_42:a/b", True), ("has spaces", False), ("x" * 200, False)]
)
@pytest.mark.parametrize(
    ("path", "upstream_path", "body"),
    [
        ("/v1/chat/completions", "/chat/completions", {"model": "agent", "messages": USER}),
        ("/v1/embeddings", "/embeddings", {"model": "plain", "input": "x"}),
    ],
)
def test_request_id_is_honoured_only_when_valid_and_sent_upstream(
    upstream: respx.MockRouter, incoming: str, honoured: bool, path: str, upstream_path: str, body: dict[str, Any]
) -> None:
    mocked = upstream.post(upstream_path).respond(json=COMPLETION, headers={"x-request-id": "upstream-id-1"})
    response = send("POST", path, json=body, headers={"x-request-id": incoming})
    [request_id] = response.headers.get_list("x-request-id")
    assert (request_id == incoming) if honoured else GENERATED_ID.fullmatch(request_id)
    assert mocked.calls.last.request.headers.get_list("x-request-id") == [request_id]


# Upstream failures.

TARGETS = [
    pytest.param("POST", "/v1/chat/completions", "/chat/completions", {"model": "agent", "messages": USER}, id="chat"),
    pytest.param(
        "POST",
        "/v1/chat/completions",
        "/chat/completions",
        {"model": "agent", "messages": USER, "stream": True},
        id="stream",
    ),
    pytest.param("POST", "/v1/chat/completions", "/chat/completions", {"model": "plain", "messages": USER}, id="plain"),
    pytest.param("POST", "/v1/embeddings", "/embeddings", {"model": "plain", "input": "x"}, id="passthrough"),
]


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [
        (httpx.ConnectError("refused"), 502, "upstream_unreachable"),
        (httpx.ConnectTimeout("slow connect"), 504, "upstream_timeout"),
        (httpx.ReadTimeout("slow answer"), 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize(("method", "path", "upstream_path", "body"), TARGETS)
def test_transport_failures_map_to_openai_errors(
    upstream: respx.MockRouter,
    failure: Exception,
    status: int,
    code: str,
    method: str,
    path: str,
    upstream_path: str,
    body: dict[str, Any],
) -> None:
    upstream.route(method=method, path=upstream_path).mock(side_effect=failure)
    response = send(method, path, json=body)
    assert response.status_code == status and error_code(response) == code
    assert response.json()["error"]["type"] == "api_error"


@pytest.mark.parametrize(
    ("failure", "status", "code"),
    [(httpx.ReadTimeout("stalled"), 504, "upstream_timeout"), (httpx.ReadError("reset"), 502, "upstream_unreachable")],
)
@pytest.mark.parametrize("route", ["agent", "plain"])
def test_non_streaming_body_failing_midway_is_an_error(
    upstream: respx.MockRouter, failure: Exception, status: int, code: str, route: str
) -> None:
    mock_chat(upstream, lambda: httpx.Response(200, content=reads(b'{"id": "x", ', then=failure)))
    response = post_chat({"model": route, "messages": USER})
    assert response.status_code == status and error_code(response) == code


@pytest.mark.parametrize("status", [400, 401, 404, 429, 500, 503])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_openai_error_keeps_status_and_body(upstream: respx.MockRouter, status: int, stream: bool) -> None:
    raw = b'{ "error" : {"message": "nope \\u00e9", "type": "x", "param": null, "code": "c", "extra": 1} }'
    upstream.post("/chat/completions").respond(status, content=raw, headers={"content-type": "application/json"})
    response = post_chat({"model": "agent", "messages": USER, "stream": stream})
    assert response.status_code == status and response.content == raw
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>"),
        (b'{"detail": "x"}', '{"detail": "x"}'),
        (b"[1, 2]", "[1, 2]"),
        (b'{"error": "a string"}', '{"error": "a string"}'),
        (b"", None),
    ],
)
@pytest.mark.parametrize(
    ("status", "kind"), [(400, "invalid_request_error"), (422, "invalid_request_error"), (502, "api_error")]
)
def test_upstream_error_without_an_openai_body_is_wrapped(
    upstream: respx.MockRouter, raw: bytes, shown: str | None, status: int, kind: str
) -> None:
    upstream.post("/chat/completions").respond(status, content=raw)
    response = post_chat({"model": "agent", "messages": USER})
    assert response.status_code == status and error_code(response) == "upstream_error"
    error = response.json()["error"]
    assert error["type"] == kind and str(status) in error["message"] and "'up'" in error["message"]
    assert shown is None or shown in error["message"]


def test_non_json_success_on_a_rewrite_route_is_502(upstream: respx.MockRouter) -> None:
    upstream.post("/chat/completions").respond(200, text="<html>maintenance</html>")
    response = post_chat({"model": "agent", "messages": USER})
    assert response.status_code == 502 and error_code(response) == "upstream_invalid_response"


@pytest.mark.parametrize("raw", [b"[]", b"null", b'"text"', b"42"])
def test_json_success_that_is_not_an_object_on_a_rewrite_route_is_502(upstream: respx.MockRouter, raw: bytes) -> None:
    upstream.post("/chat/completions").respond(200, content=raw, headers={"content-type": "application/json"})
    response = post_chat({"model": "agent", "messages": USER})
    assert response.status_code == 502 and error_code(response) == "upstream_invalid_response"


@pytest.mark.parametrize(
    ("path", "upstream_path", "body"),
    [
        ("/v1/chat/completions", "/chat/completions", {"model": "plain", "messages": USER}),
        ("/v1/embeddings", "/embeddings", {"model": "plain", "input": "x"}),
    ],
)
def test_passthrough_returns_the_upstream_body_byte_for_byte(
    upstream: respx.MockRouter, path: str, upstream_path: str, body: dict[str, Any]
) -> None:
    raw = b'{ "id" : "x",\n  "choices": [ ], "n": 1.50, "s": "\\u00e9\xc3\xa9", "z": 1e2 }'
    upstream.post(upstream_path).respond(200, content=raw, headers={"content-type": "application/json"})
    response = send("POST", path, json=body)
    assert response.status_code == 200 and response.content == raw
    assert response.headers["content-type"] == "application/json"


# How a relayed stream ends.

UNFINISHED = [chunk(choice(role="assistant", content="Hi")), chunk(choice(content=" there"))]
FINISHED = [*UNFINISHED, chunk(choice(finish="stop"))]


def stream_through(route: str, *pieces: bytes) -> bytes:
    """The client's body for a streaming request whose upstream sends these reads."""
    with respx.mock(base_url=UPSTREAM) as router:
        mock_chat(router, lambda: sse_response(*pieces))
        response = post_chat({"model": route, "messages": USER, "stream": True})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    return response.content


@pytest.mark.parametrize("route", ["agent", "plain"])
@pytest.mark.parametrize("same_read", [False, True])
def test_invalid_data_line_ends_the_stream_with_an_error_event(route: str, same_read: bool) -> None:
    first, second, *rest = sse(FINISHED)
    bad = b"data: {not json\n\n"
    pieces = [first, second + bad, *rest] if same_read else [first, second, bad, *rest]
    body = stream_through(route, *pieces)
    as_sent = orjson.loads(first.removeprefix(b"data: ").removesuffix(b"\n\n"))
    assert orjson.loads(events(body)[0]) == {**as_sent, "model": route}, "the stream had begun"
    assert b" there" in body, "what came before the invalid event is relayed, whichever read it shared"
    assert final_error(body)["code"] == "upstream_invalid_event"
    assert b'"stop"' not in body, "nothing after the invalid event is relayed"


@pytest.mark.parametrize("route", ["agent", "plain"])
@pytest.mark.parametrize(
    "payload", [b"[1, 2]", b"null", b'"text"', b'{"choices":[{"index":[1],"delta":{"content":"x"}}]}']
)
def test_event_that_is_not_a_chunk_ends_the_stream_with_an_error_event(route: str, payload: bytes) -> None:
    first, *rest = sse(FINISHED)
    body = stream_through(route, first, b"data: " + payload + b"\n\n", *rest)
    assert final_error(body)["code"] == "upstream_invalid_event"


@pytest.mark.parametrize("route", ["agent", "plain"])
def test_a_compressed_stream_is_decompressed_before_it_is_read(route: str) -> None:
    # The gateway asks for no encoding; an upstream (or a proxy before it) may compress anyway.
    compressor = zlib.compressobj(wbits=31)  # gzip
    raw = b"".join(sse(AGENT_CHUNKS if route == "agent" else FINISHED))
    compressed = compressor.compress(raw) + compressor.flush()
    with respx.mock(base_url=UPSTREAM) as router:
        mock_chat(router, lambda: sse_response(compressed[:10], compressed[10:], headers={"content-encoding": "gzip"}))
        response = post_chat({"model": route, "messages": USER, "stream": True})
    assert response.status_code == 200 and response.content.endswith(b"data: [DONE]\n\n")
    assert "content-encoding" not in response.headers
    assert (b"Hello" if route == "agent" else b" there") in response.content


@pytest.mark.parametrize("route", ["agent", "plain"])
@pytest.mark.parametrize("done", [False, True])
def test_stream_without_finish_reason_ends_with_upstream_incomplete(route: str, done: bool) -> None:
    body = stream_through(route, *sse(UNFINISHED, done=done))
    assert final_error(body)["code"] == "upstream_incomplete"
    assert b" there" in body, "what did arrive is relayed before the error"


@pytest.mark.parametrize("route", ["agent", "plain"])
@pytest.mark.parametrize("same_read", [False, True])
def test_done_ends_the_stream_once_and_later_events_are_ignored(route: str, same_read: bool) -> None:
    answer = AGENT_CHUNKS if route == "agent" else FINISHED
    late = [*sse([chunk(choice(content="LATE"))]), b": late comment\n\n"]
    pieces = sse(answer)
    pieces = [*pieces[:-1], b"".join([pieces[-1], *late])] if same_read else [*pieces, *late]
    body = stream_through(route, *pieces)
    assert body.endswith(b"data: [DONE]\n\n") and body.count(b"[DONE]") == 1
    assert b"LATE" not in body and b"late comment" not in body
    if route == "agent":
        assert b"Hello" in body and b"PRIVATE" not in body


# Authentication.

PROTECTED = [
    pytest.param("GET", "/v1/models", {}, id="models"),
    pytest.param("POST", "/v1/chat/completions", {"json": {"model": "agent", "messages": USER}}, id="chat"),
    pytest.param("POST", "/v1/embeddings", {"json": {"model": "plain", "input": "x"}}, id="embeddings"),
    pytest.param("GET", "/v1/files?purpose=fine-tune", {}, id="files"),
]


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-key",
        f"Basic {CLIENT_KEYS[0]}",
        f"Bearer {CLIENT_KEYS[0].upper()}",
        f"Bearer {CLIENT_KEYS[0][:-1]}",
        CLIENT_KEYS[0],
        "Bearer ",
    ],
)
@pytest.mark.parametrize(("method", "path", "options"), PROTECTED)
def test_protected_paths_refuse_a_missing_or_wrong_key(
    upstream: respx.MockRouter, authorization: str | None, method: str, path: str, options: dict[str, Any]
) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    response = send(method, path, app=make_app(CLIENT_KEYS), headers=headers, **options)
    assert response.status_code == 401 and error_code(response) == "invalid_api_key"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert not upstream.calls


@pytest.mark.parametrize("key", CLIENT_KEYS)
@pytest.mark.parametrize(("method", "path", "options"), PROTECTED)
def test_every_configured_key_is_accepted(
    upstream: respx.MockRouter, key: str, method: str, path: str, options: dict[str, Any]
) -> None:
    upstream.route(method=method).respond(json=COMPLETION)
    response = send(method, path, app=make_app(CLIENT_KEYS), headers=bearer(key), **options)
    assert response.status_code == 200
    assert len(upstream.calls) == (0 if path == "/v1/models" else 1)


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_and_readiness_need_no_key(path: str) -> None:
    response = send("GET", path, app=make_app(CLIENT_KEYS))
    assert response.status_code == 200


# The request body limit.

BODY_PATHS = [
    pytest.param("/v1/chat/completions", id="chat"),
    pytest.param("/v1/embeddings", id="passthrough"),
]


@pytest.mark.parametrize("path", BODY_PATHS)
def test_content_length_over_the_limit_is_refused_without_reading_the_body(
    upstream: respx.MockRouter, path: str
) -> None:
    read: list[bytes] = []

    async def body() -> AsyncIterator[bytes]:
        read.append(b"")
        yield b"x" * (LIMIT + 1)

    response = send(
        "POST", path, content=body(), headers={"content-length": str(LIMIT + 1), "content-type": "application/json"}
    )
    assert response.status_code == 413 and error_code(response) == "request_too_large"
    assert read == [] and not upstream.calls


@pytest.mark.parametrize("path", BODY_PATHS)
def test_chunked_body_over_the_limit_is_refused_as_soon_as_it_exceeds(upstream: respx.MockRouter, path: str) -> None:
    read: list[int] = []

    async def body() -> AsyncIterator[bytes]:
        for number, piece in enumerate([b" " * LIMIT, b" ", *[b" " * 1000] * 10]):
            read.append(number)
            yield piece

    response = send("POST", path, content=body(), headers={"content-type": "application/json"})
    assert response.status_code == 413 and error_code(response) == "request_too_large"
    assert read == [0, 1], "reading stops at the piece that crosses the limit by one byte"
    assert not upstream.calls


@pytest.mark.parametrize("path", BODY_PATHS)
def test_body_of_exactly_the_limit_is_accepted(upstream: respx.MockRouter, path: str) -> None:
    mocked = upstream.post(path.removeprefix("/v1")).respond(json=COMPLETION)
    body = {"model": "plain", "messages": USER, "pad": ""}
    body["pad"] = "x" * (LIMIT - len(orjson.dumps(body)))
    raw = orjson.dumps(body)
    assert len(raw) == LIMIT
    assert send("POST", path, content=raw, headers={"content-type": "application/json"}).status_code == 200
    assert mocked.called


# Readiness.


def test_readyz_is_ready_only_between_start_and_stop() -> None:
    app = make_app()
    gateway = app.service

    async def statuses() -> list[int]:
        async with asgi_client(app) as client:
            seen = [(await client.get("/readyz")).status_code]
            await gateway.start()
            seen.append((await client.get("/readyz")).status_code)
            await gateway.stop()
            seen.append((await client.get("/readyz")).status_code)
            return seen

    assert asyncio.run(statuses()) == [503, 200, 503]


def test_passthrough_keeps_the_escapes_a_segment_may_carry(upstream: respx.MockRouter) -> None:
    mocked = upstream.get(url__regex=r".*/files/.*").respond(json={"ok": True})
    assert send("GET", "/v1/files/ft%3Amodel%20%C3%A9:x@y/content").status_code == 200
    assert mocked.calls.last.request.url.raw_path == b"/v1/files/ft%3Amodel%20%C3%A9:x@y/content"


@pytest.mark.parametrize("path", ["/v1/files/folder%2Fname/content", "/v1/files/%2e%2e/content", "/v1/files//content"])
def test_passthrough_refuses_a_path_that_could_leave_its_segment(upstream: respx.MockRouter, path: str) -> None:
    mocked = upstream.route().respond(json={"ok": True})
    response = send("GET", path)
    assert response.status_code == 400 and error_code(response) == "invalid_path"
    assert not mocked.calls


def test_passthrough_forwards_only_the_providers_endpoints(upstream: respx.MockRouter) -> None:
    mocked = upstream.route().respond(json={"ok": True})
    response = send("POST", "/v1/admin/keys", json={"model": "plain"})
    assert response.status_code == 404 and error_code(response) == "not_found"
    assert not mocked.calls


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nope", 404, "not_found"),
        ("DELETE", "/healthz", 405, "method_not_allowed"),
        ("GET", "/v1/files/", 400, "invalid_path"),
    ],
)
def test_unknown_paths_and_methods_are_openai_errors_not_redirects(
    method: str, path: str, status: int, code: str
) -> None:
    response = send(method, path)
    assert response.status_code == status and error_code(response) == code


@pytest.mark.parametrize(
    ("path", "shape"),
    [("/v1/chat/completions", "openai"), ("/v1/responses", "openai"), ("/v1/messages", "anthropic")],
)
def test_an_unexpected_failure_is_a_500_in_the_door_s_own_shape(
    monkeypatch: pytest.MonkeyPatch, path: str, shape: str
) -> None:
    app = make_app()

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.service.completions, "answer", broken)
    body = {"model": "agent", "messages": [{"role": "user", "content": "Hi"}], "input": "Hi", "max_tokens": 5}
    response = send("POST", path, app=app, json=body)
    assert response.status_code == 500 and response.headers["connection"] == "close"
    if shape == "anthropic":
        assert response.json() == {
            "type": "error",
            "error": {"type": "api_error", "message": "The gateway failed to handle the request."},
        }
    else:
        assert response.json()["error"]["type"] == "server_error" and "a bug" not in response.text


def test_a_path_under_the_messages_door_that_does_not_exist_is_an_anthropic_404() -> None:
    response = send("POST", "/v1/messages/nope", json={"model": "agent"})
    assert response.status_code == 404
    assert response.json()["type"] == "error" and response.json()["error"]["type"] == "not_found_error"


# Hosted tools on the Responses door: left out and named, or refused, as the route says.

HOSTED_CONFIG = """
providers:
  up: {{base_url: {upstream}}}
models:
  - {{name: lenient, provider: up, max_retries: 0}}
  - {{name: strict, provider: up, max_retries: 0, hosted_tools: refuse}}
"""
HOSTED_TOOLS = [
    {"type": "function", "name": "f", "parameters": {"type": "object"}},
    {"type": "web_search", "external_web_access": False},
    {"type": "file_search", "vector_store_ids": ["vs"]},
]


def test_hosted_tools_are_left_out_and_named_in_a_header_with_one_warning_per_route(
    upstream: respx.MockRouter, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(
        parse_config(HOSTED_CONFIG.format(upstream=UPSTREAM), "unit.yaml", env={}), {"up": httpx.AsyncHTTPTransport()}
    )
    answer = completion_of([chunk(choice(role="assistant", content="Hi"), choice(finish="stop"))])
    route = upstream.post("/chat/completions").mock(return_value=httpx.Response(200, json=answer))
    body = {"model": "lenient", "input": "Hi", "tools": HOSTED_TOOLS}

    async def twice(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/v1/responses", json=body) for _ in range(2)]

    with caplog.at_level("WARNING", logger="gateway.requests"):
        answers = run(app, twice)
    for response in answers:
        assert response.status_code == 200 and response.headers["x-gateway-dropped-tools"] == "web_search, file_search"
    sent = orjson.loads(route.calls[-1].request.content)
    assert [t["function"]["name"] for t in sent["tools"]] == ["f"]
    [warning] = [r.getMessage() for r in caplog.records if r.name == "gateway.requests"]
    assert "'lenient'" in warning and "web_search, file_search" in warning
    plain = send("POST", "/v1/responses", app=app, json={**body, "tools": HOSTED_TOOLS[:1]})
    assert plain.status_code == 200 and "x-gateway-dropped-tools" not in plain.headers


def test_a_route_that_refuses_hosted_tools_answers_400_naming_them(upstream: respx.MockRouter) -> None:
    app = create_app(
        parse_config(HOSTED_CONFIG.format(upstream=UPSTREAM), "unit.yaml", env={}), {"up": httpx.AsyncHTTPTransport()}
    )
    route = upstream.post("/chat/completions")
    response = send("POST", "/v1/responses", app=app, json={"model": "strict", "input": "Hi", "tools": HOSTED_TOOLS})
    assert response.status_code == 400 and not route.called
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("tools", "unsupported_value")
    assert "web_search, file_search" in error["message"] and "hosted_tools: refuse" in error["message"]
