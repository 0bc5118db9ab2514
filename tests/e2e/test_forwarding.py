"""Forwarded requests, from the attacker's side: a key holder can reach only what the operator forwards.

Paths stay below the provider's base URL however a server on the way decodes
them, client credentials never cross, the provider's headers win, and
cookies and hop-by-hop headers never come back.
"""

from __future__ import annotations

import asyncio
import http.client
import re
import socket
import urllib.parse
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway import __version__
from gateway.config import ConfigError, ProviderConfig, parse_config
from gateway.core import forwarding
from gateway.core.errors import GatewayError
from gateway.server.app import create_app
from gateway.server.hotpath import HotPath
from gateway.upstream.provider import Provider
from tests.helpers.servers import RecordingTransport, Reply, ScriptedUpstream, json_reply, serve

GATEWAY_KEY = "gw-key-0123456789abcdef"
PROVIDER_KEY = "sk-provider-0123456789abcdef"
OPERATOR_API_KEY = "azure-operator-key-0123456789"


# The path rule, on its own.

VALID = [
    b"/v1/embeddings",
    b"/v1/files/file-abc123/content",
    b"/v1/models/ft:gpt-4o-mini:org::abc",
    b"/v1/models/ft%3Agpt-4o-mini%3Aorg%3A%3Aabc",
    b"/v1/files/name%20with%20spaces.jsonl",
    b"/v1/files/%C3%A9t%C3%A9",
    b"/v1/vector_stores/vs_1/files/file_2",
    b"/v1/files/a.b..c",
]
INVALID = [
    b"/v1/../../admin",
    b"/v1/../admin",
    b"/v1/embeddings/../../../admin",
    b"/v1/./embeddings",
    b"/v1/%2e%2e/admin",
    b"/v1/%2E%2E/admin",
    b"/v1/files/.%2e/admin",
    b"/v1/files/%2e./admin",
    b"/v1/files/%252e%252e/admin",
    b"/v1/files/..%2fadmin",
    b"/v1/files/..%2F..%2Fadmin",
    b"/v1/files/a%252fb",
    b"/v1/files/..%5cadmin",
    b"/v1/files/a%5Cb",
    b"/v1/files\\..\\admin",
    b"/v1/files/..;/admin",
    b"/v1/files/a;b",
    b"/v1/files/a%3bb",
    b"/v1/files/%c0%ae%c0%ae/admin",
    b"/v1/files/%e0%80%ae",
    b"/v1/files/..%00/admin",
    b"/v1/files/a%0d%0ab",
    b"/v1/files/%2",
    b"/v1/files/a%zz",
    b"/v1/files/%41",
    b"/v1/files/...",
    b"/v1/files/..%20",
    b"/v1//admin",
    b"/v1/files/",
    b"/v1/",
    b"/v1%2f..%2fadmin",
    b"/v1/files/\xc3\xa9",
]


@pytest.mark.parametrize("raw", VALID)
def test_ordinary_api_paths_are_kept_exactly(raw: bytes) -> None:
    assert forwarding.checked_path(raw).encode() == raw.removeprefix(b"/v1")


@pytest.mark.parametrize("raw", INVALID)
def test_paths_that_could_leave_the_base_are_refused(raw: bytes) -> None:
    with pytest.raises(GatewayError) as caught:
        forwarding.checked_path(raw)
    assert caught.value.status == 400 and caught.value.code == "invalid_path"


def decodings(path: str) -> list[bytes]:
    """The path as servers that decode it once, twice or three times would see it."""
    seen = [path.encode()]
    for _ in range(3):
        seen.append(urllib.parse.unquote_to_bytes(seen[-1]))
    return seen


def stays_below(relative: str) -> bool:
    """Whether no decoding of the path, split on / or \\ (and ; cut off, as Java servers do), climbs
    or skips a level: every segment keeps something besides dots and spaces, and no control byte appears."""
    for text in decodings(relative):
        if re.search(rb"[\x00-\x1f\x7f]", text):
            return False
        for segment in re.split(rb"[/\\]", text.removeprefix(b"/")):
            if not segment.split(b";")[0].rstrip(b". "):
                return False
    return True


PIECES = [
    ".",
    "..",
    "...",
    "/",
    "\\",
    "%",
    "%2",
    "%2e",
    "%2E",
    "%252e",
    "%252E",
    "%25252e",
    "%2f",
    "%2F",
    "%252f",
    "%5c",
    "%5C",
    "%255c",
    "%25",
    "%3b",
    "%3B",
    ";",
    "%00",
    "%0a",
    "%20",
    "%41",
    "%7e",
    "%c0%ae",
    "%C0%AE",
    "%e0%80%ae",
    "%C3%A9",
    "%3A",
    ":",
    "@",
    "~",
    "-",
    "a",
    "files",
    "embeddings",
    "admin",
]
# Pieces of ordinary ids, weighted up so that many generated paths are valid and get forwarded.
ORDINARY = ["a", "files", "file-1", "x_2", ".", "%20", "%C3%A9", "%3A", ":", "@", "~", "-", "."]
pieces = st.sampled_from(PIECES)
mostly_ordinary = st.sampled_from(PIECES + ORDINARY * 20)
raw_paths = st.one_of(
    st.lists(pieces, max_size=12).map(lambda parts: "/v1/" + "".join(parts)),
    st.lists(st.lists(pieces, min_size=1, max_size=4).map("".join), min_size=1, max_size=5).map(
        lambda segments: "/v1/" + "/".join(segments)
    ),
    st.lists(st.lists(mostly_ordinary, min_size=1, max_size=4).map("".join), min_size=1, max_size=5).map(
        lambda segments: "/v1/" + "/".join(segments)
    ),
).map(str.encode)


@settings(max_examples=1500)
@given(raw_paths)
def test_an_accepted_path_stays_below_the_base_url_for_any_server(raw: bytes) -> None:
    try:
        relative = forwarding.checked_path(raw)
    except GatewayError as error:
        assert error.status == 400 and error.code == "invalid_path"
        event("refused")
        return
    event("accepted")
    assert b"/v1" + relative.encode() == raw, "forwarded exactly as sent"
    assert httpx.URL("http://upstream.test/prefix/v1" + relative).raw_path == b"/prefix/v1" + relative.encode()
    assert stays_below(relative), relative
    urllib.parse.unquote_to_bytes(relative).decode("utf-8")  # no overlong or broken UTF-8 either


# Through the gateway: what reaches the upstream, for any path a client can send.


def recorded_app(forward: str = "['/**']") -> tuple[HotPath, RecordingTransport]:
    config = f"""
providers:
  up: {{base_url: "http://upstream.test/prefix/v1", api_key: {PROVIDER_KEY}, forward: {forward}}}
models:
  - {{name: plain, provider: up, model: upstream-plain}}
  - {{name: agent, provider: up, rewrite: {{}}}}
"""
    recorder = RecordingTransport(headers={"set-cookie": "s=upstream", "x-upstream": "1"})
    return create_app(parse_config(config, "t.yaml", env={}), {"up": recorder}), recorder


def call(
    app: HotPath, method: str, raw_path: bytes, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """One request straight into the ASGI app, with the raw path exactly as given (no client normalises it)."""

    async def main() -> tuple[int, bytes]:
        gateway = app.service
        await gateway.start()
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": urllib.parse.unquote(raw_path.decode("latin-1")),
            "raw_path": raw_path,
            "query_string": b"",
            "root_path": "",
            "client": ("127.0.0.1", 1),
            "server": ("gw", 80),
            "headers": [
                (k.encode(), v.encode()) for k, v in {"content-type": "application/json", **(headers or {})}.items()
            ],
        }
        incoming = [{"type": "http.request", "body": body, "more_body": False}]
        status = 0
        parts: list[bytes] = []

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop()
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                parts.append(message.get("body", b""))

        try:
            await app(scope, receive, send)
        finally:
            await gateway.stop()
        return status, b"".join(parts)

    return asyncio.run(main())


def openai_error(body: bytes) -> dict[str, Any]:
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


@settings(max_examples=300)
@given(raw_paths, st.sampled_from(["GET", "POST", "DELETE"]))
def test_what_reaches_the_upstream_is_below_its_base_path_or_nothing(raw: bytes, method: str) -> None:
    app, recorder = recorded_app()
    status, body = call(app, method, raw)
    if status in (400, 404):  # a bad path, or one no route matches (a decoded line break)
        assert openai_error(body)["code"] in ("invalid_path", "not_found") and recorder.requests == []
        return
    assert status == 200, body
    [sent] = recorder.requests
    assert sent.url.raw_path == b"/prefix" + raw and sent.url.host == "upstream.test"
    assert stays_below(sent.url.raw_path.decode().removeprefix("/prefix/v1"))


def test_the_provider_refuses_a_url_that_would_leave_its_base() -> None:
    recorder = RecordingTransport()
    provider = Provider("up", ProviderConfig(base_url="http://upstream.test/prefix/v1"), recorder)

    async def main() -> None:
        with pytest.raises(GatewayError) as caught:
            await provider.call("GET", "/../../admin")
        assert caught.value.code == "invalid_path"

    asyncio.run(main())
    assert recorder.requests == []


# The allow-list of forwarded endpoints.


@pytest.mark.parametrize(
    ("path", "patterns", "allowed"),
    [
        ("/embeddings", ["/embeddings"], True),
        ("/embeddings/x", ["/embeddings"], False),
        ("/files", ["/files/**"], True),
        ("/files/f1/content", ["/files/**"], True),
        ("/filesx", ["/files/**"], False),
        ("/files/f1/content", ["/files/*"], False),
        ("/files/f1", ["/files/*"], True),
        ("/batches/b1/cancel", ["/batches/*/cancel"], True),
        ("/batches/b1/b2/cancel", ["/batches/*/cancel"], False),
        ("/anything/at/all", ["/**"], True),
        ("/embeddings", [], False),
        ("/chat/completions", list(forwarding.DEFAULT_FORWARD), False),
        ("/models/gpt-4o", list(forwarding.DEFAULT_FORWARD), False),
        ("/audio/transcriptions", list(forwarding.DEFAULT_FORWARD), True),
    ],
)
def test_forward_patterns_match_whole_segments(path: str, patterns: list[str], allowed: bool) -> None:
    assert forwarding.allowed_path(path, patterns) is allowed


@pytest.mark.parametrize(
    ("forward", "problem"),
    [
        ("['embeddings']", "starting with '/'"),
        ("['/**/x']", "'**' may only end"),
        ("['/../admin']", "expected path segments"),
        ("['/a//b']", "expected path segments"),
    ],
)
def test_config_refuses_forward_patterns_that_are_not_paths(forward: str, problem: str) -> None:
    text = f"providers: {{up: {{base_url: 'http://u/v1', forward: {forward}}}}}\nmodels: [{{name: m, provider: up}}]"
    with pytest.raises(ConfigError, match=re.escape(problem)):
        parse_config(text, "t.yaml", env={})


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "x-api-key",
        "api-key",
        "Cookie",
        "openai-organization",
        "openai-project",
        "x-auth-token",
        "ocp-apim-subscription-key",
        "connection",
        "host",
        "x-request-id",
        "user-agent",
    ],
)
def test_config_refuses_to_forward_credentials_hop_by_hop_or_own_headers(name: str) -> None:
    text = (
        f"providers: {{up: {{base_url: 'http://u/v1', forward_headers: ['{name}']}}}}\n"
        "models: [{name: m, provider: up}]"
    )
    with pytest.raises(ConfigError, match="never forwarded"):
        parse_config(text, "t.yaml", env={})


def test_a_path_outside_the_allow_list_is_404_and_nothing_is_sent() -> None:
    app, recorder = recorded_app("['/embeddings']")
    status, body = call(app, "GET", b"/v1/files")
    assert status == 404 and openai_error(body)["code"] == "not_found" and recorder.requests == []
    status, _ = call(app, "POST", b"/v1/embeddings", orjson.dumps({"model": "plain", "input": "x"}))
    assert status == 200 and [r.url.raw_path for r in recorder.requests] == [b"/prefix/v1/embeddings"]


# A forwarded request naming a rewrite route (issue 13, item 5).


@pytest.mark.parametrize("path", [b"/v1/completions", b"/v1/threads/t1/runs"])
def test_an_endpoint_where_the_model_answers_refuses_a_rewrite_route(path: bytes) -> None:
    app, recorder = recorded_app()
    status, body = call(app, "POST", path, orjson.dumps({"model": "agent", "input": "Hi"}))
    error = openai_error(body)
    assert status == 400 and error["param"] == "model" and error["code"] == "unsupported_endpoint"
    assert "/v1/chat/completions" in error["message"] and "'agent'" in error["message"]
    assert recorder.requests == []


def test_other_endpoints_and_plain_routes_still_forward() -> None:
    app, recorder = recorded_app()
    assert call(app, "POST", b"/v1/embeddings", orjson.dumps({"model": "agent", "input": "x"}))[0] == 200
    assert call(app, "POST", b"/v1/completions", orjson.dumps({"model": "plain", "prompt": "x"}))[0] == 200
    assert [orjson.loads(r.content)["model"] for r in recorder.requests] == ["agent", "upstream-plain"]


def test_responses_are_translated_unless_every_provider_of_a_plain_route_serves_them_natively() -> None:
    completion = {
        "id": "c",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
    }
    for native, route, upstream_path in [
        ("translate", "plain", b"/prefix/v1/chat/completions"),
        ("native", "agent", b"/prefix/v1/chat/completions"),
        ("native", "plain", b"/prefix/v1/responses"),
    ]:
        config = f"""
providers: {{up: {{base_url: "http://upstream.test/prefix/v1", api_key: {PROVIDER_KEY}, responses: {native}}}}}
models:
  - {{name: plain, provider: up, model: upstream-plain}}
  - {{name: agent, provider: up, rewrite: {{}}}}
"""
        recorder = RecordingTransport(orjson.dumps(completion))
        app = create_app(parse_config(config, "t.yaml", env={}), {"up": recorder})
        body = (
            {"model": route, "input": "Hi", "previous_response_id": "resp_1"}
            if native == "native" and route == "plain"
            else {"model": route, "input": "Hi"}
        )
        status, _ = call(app, "POST", b"/v1/responses", orjson.dumps(body))
        assert status == 200
        [sent] = recorder.requests
        assert sent.url.raw_path == upstream_path and sent.headers["authorization"] == f"Bearer {PROVIDER_KEY}"
        if upstream_path.endswith(b"/responses"):  # as the client sent it, state and all, but for the model
            assert orjson.loads(sent.content) == {**body, "model": "upstream-plain"}


# End to end: raw sockets against a real gateway, so paths arrive exactly as an attacker writes them.


@pytest.fixture(scope="module")
def attack() -> Iterator[tuple[ScriptedUpstream, int]]:
    upstream = ScriptedUpstream(
        default=lambda request: json_reply({"ok": True}, headers={"set-cookie": "session=upstream", "x-upstream": "1"})
    )
    with serve(upstream) as upstream_url:
        config = f"""
server: {{api_keys: [{GATEWAY_KEY}]}}
providers:
  azure:
    base_url: "{upstream_url}/prefix/v1"
    api_key: {PROVIDER_KEY}
    headers: {{api-key: {OPERATOR_API_KEY}}}
models:
  - {{name: plain, provider: azure, model: upstream-plain}}
  - {{name: agent, provider: azure, rewrite: {{}}}}
"""
        with serve(create_app(parse_config(config, "attack.yaml", env={}))) as url:
            yield upstream, int(url.rsplit(":", 1)[1])


def raw_request(
    port: int, method: str, target: bytes, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict[str, str], bytes]:
    """One request written byte for byte on a socket (like ``curl --path-as-is``), and its answer."""
    lines = [method.encode() + b" " + target + b" HTTP/1.1", b"host: gateway", b"connection: close"]
    for name, value in {"authorization": f"Bearer {GATEWAY_KEY}", **(headers or {})}.items():
        lines.append(f"{name}: {value}".encode())
    lines.append(b"content-length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


@pytest.mark.parametrize("target", INVALID[:-1], ids=lambda raw: raw.decode("latin-1"))
def test_attack_paths_sent_as_is_reach_nothing(attack: tuple[ScriptedUpstream, int], target: bytes) -> None:
    upstream, port = attack
    upstream.requests.clear()
    method, body = ("POST", b'{"model": "plain", "input": "x"}') if b"embeddings" in target else ("GET", b"")
    status, _, answer = raw_request(port, method, target, {"content-type": "application/json"}, body)
    assert status in (400, 404) and openai_error(answer)["message"]
    assert upstream.requests == []


@pytest.mark.parametrize("target", [b"/v1/../admin", b"/v1/files/%2e%2e/keys", b"/v1/embeddings"])
def test_a_caller_without_a_key_is_refused_before_its_path_is_judged(
    attack: tuple[ScriptedUpstream, int], target: bytes
) -> None:
    upstream, port = attack
    upstream.requests.clear()
    status, _, answer = raw_request(port, "GET", target, {"authorization": "Bearer not-a-key"})
    assert status == 401 and openai_error(answer)["code"] != "invalid_path"
    assert upstream.requests == []


@pytest.mark.parametrize("target", [b"/v1/admin", b"/v1/models/gpt-4o", b"/v1/chat/completions/stored-1"])
def test_paths_outside_the_openai_surface_are_404(attack: tuple[ScriptedUpstream, int], target: bytes) -> None:
    upstream, port = attack
    upstream.requests.clear()
    status, _, answer = raw_request(port, "GET", target)
    assert status == 404 and openai_error(answer)["code"] == "not_found" and upstream.requests == []


def test_a_forwarded_request_carries_no_client_credential_and_brings_back_no_cookie(
    attack: tuple[ScriptedUpstream, int],
) -> None:
    upstream, port = attack
    upstream.requests.clear()
    body = b'{"model": "plain", "input": "x"}'
    client = {
        "content-type": "application/json",
        "accept": "application/json",
        "x-api-key": "attacker-1",
        "api-key": "attacker-2",
        "openai-organization": "org-attacker",
        "openai-project": "proj-attacker",
        "user-agent": "attacker/1",
        "cookie": "a=1",
        "x-forwarded-for": "10.0.0.1",
        "openai-beta": "assistants=v2",
    }
    status, headers, answer = raw_request(port, "POST", b"/v1/embeddings?user=u1", client, body)
    assert status == 200 and orjson.loads(answer) == {"ok": True}
    assert "set-cookie" not in headers and headers["x-upstream"] == "1"
    [sent] = upstream.requests
    assert sent.raw_path == b"/prefix/v1/embeddings"
    assert sent.headers == {
        "host": sent.headers["host"],
        "content-type": "application/json",
        "content-length": str(len(sent.body)),
        "accept": "application/json",
        "openai-beta": "assistants=v2",
        "x-request-id": headers["x-request-id"],
        "user-agent": f"agent-gateway/{__version__}",
        "api-key": OPERATOR_API_KEY,
        "authorization": f"Bearer {PROVIDER_KEY}",
    }
    assert sent.json == {"model": "upstream-plain", "input": "x"}


def test_a_valid_path_reaches_exactly_its_place_below_the_base(attack: tuple[ScriptedUpstream, int]) -> None:
    upstream, port = attack
    upstream.requests.clear()
    upstream.reply(Reply([b"file bytes"], content_type="application/octet-stream"))
    status, _, answer = raw_request(port, "GET", b"/v1/files/file-abc123/content")
    assert status == 200 and answer == b"file bytes"
    assert [r.raw_path for r in upstream.requests] == [b"/prefix/v1/files/file-abc123/content"]


def test_a_rewrite_route_on_the_responses_endpoint_is_translated_never_forwarded(
    attack: tuple[ScriptedUpstream, int],
) -> None:
    upstream, port = attack
    upstream.requests.clear()
    body = b'{"model": "agent", "input": "Hi"}'
    status, _, answer = raw_request(port, "POST", b"/v1/responses", {"content-type": "application/json"}, body)
    # The scripted upstream answers {"ok": true}, which is no chat completion: a 502 saying so.
    assert status == 502 and openai_error(answer)["code"] == "upstream_invalid_response"
    [sent] = upstream.requests
    assert sent.raw_path == b"/prefix/v1/chat/completions"
    assert [tool["function"]["name"] for tool in sent.json["tools"]] == ["send_message"]


# Forwarded requests take a slot of the provider like every other upstream request.


def test_a_forwarded_request_counts_against_max_concurrency() -> None:
    upstream = ScriptedUpstream()
    with serve(upstream) as upstream_url:
        config = f"""
providers:
  up: {{base_url: "{upstream_url}/v1", max_concurrency: 1, queue_timeout: 0.2}}
models: [{{name: plain, provider: up}}]
"""
        with serve(create_app(parse_config(config, "t.yaml", env={}))) as url:
            # A forwarded download the upstream holds open takes the provider's only slot...
            upstream.reply(Reply([b"part one, "], content_type="application/octet-stream", then="hang"))
            with httpx.stream("GET", url + "/v1/files/file-1/content", timeout=10) as download:
                assert download.status_code == 200
                body = download.iter_raw()  # kept: a discarded iterator would close the response
                assert next(body) == b"part one, "
                # ...so a chat request waits for it up to the queue timeout, then is refused as busy,
                busy = httpx.post(url + "/v1/chat/completions", json={"model": "plain", "messages": []}, timeout=10)
                assert busy.status_code == 503 and busy.json()["error"]["code"] == "provider_busy", busy.text
                # and so is another forwarded request.
                second = httpx.get(url + "/v1/files/file-2/content", timeout=10)
                assert second.status_code == 503 and second.json()["error"]["code"] == "provider_busy"
            assert [request.path for request in upstream.requests] == ["/v1/files/file-1/content"]
            # The slot comes back when the download ends.
            upstream.reply(json_reply({"ok": True}))
            assert httpx.get(url + "/v1/files/file-3/content", timeout=10).status_code == 200
