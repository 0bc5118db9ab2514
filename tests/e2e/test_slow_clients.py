"""Slow clients, from the attacker's side: raw sockets that send nothing, or drip a request byte by byte,
against a real ``gateway serve`` process. Each is cut off with a 408; open connections are capped."""

from __future__ import annotations

import http.client
import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.servers import Running, ScriptedUpstream, gateway_process, json_reply, serve

KEY = "gw-key-0123456789abcdef"


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[ScriptedUpstream, str]]:
    scripted = ScriptedUpstream(default=lambda request: json_reply({"object": "list", "data": []}))
    with serve(scripted) as url:
        yield scripted, url


def start(tmp_path: Path, upstream_url: str, server: str) -> Any:
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"server: {{api_keys: [{KEY}], drain_delay: 0, {server}}}\n"
        f"providers: {{up: {{base_url: '{upstream_url}/v1'}}}}\nmodels: [{{name: plain, provider: up}}]\n"
    )
    return gateway_process("--config", str(config))


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, upstream: tuple[ScriptedUpstream, str]) -> Iterator[Running]:
    with start(tmp_path_factory.mktemp("slow"), upstream[1], "header_timeout: 1, body_timeout: 1") as running:
        yield running


def connect(running: Running) -> socket.socket:
    host, port = running.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def answer(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the server has closed the connection (after whatever it sent was read)."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def drip(sock: socket.socket, data: bytes, every: float) -> int:
    """Send one byte at a time until all are sent or the server answers; how many were sent."""
    for sent, byte in enumerate(data):
        if select.select([sock], [], [], every)[0]:
            return sent
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            return sent
    return len(data)


def request_head(length: int | None = None, path: str = "/v1/embeddings") -> bytes:
    lines = [f"POST {path} HTTP/1.1", "host: gateway", f"authorization: Bearer {KEY}", "content-type: application/json"]
    if length is not None:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_timed_out(sock: socket.socket, what: str) -> None:
    status, headers, body = answer(sock)
    error = json.loads(body)["error"]
    assert status == 408 and error["code"] == "request_timeout" and f"request {what}" in error["message"]
    assert headers["connection"] == "close" and closed_by_peer(sock)


def test_a_connection_that_sends_nothing_gets_408_and_is_closed(gateway: Running) -> None:
    with connect(gateway) as sock:
        assert_timed_out(sock, "head")


def test_a_head_dripped_byte_by_byte_is_cut_off(gateway: Running, upstream: tuple[ScriptedUpstream, str]) -> None:
    scripted, _ = upstream
    scripted.requests.clear()
    head = request_head(2)
    with connect(gateway) as sock:
        sent = drip(sock, head, every=0.1)  # about 10 s for the whole head, against a 1 s deadline
        assert sent < len(head)
        assert_timed_out(sock, "head")
    assert scripted.requests == []


def test_a_body_dripped_byte_by_byte_is_cut_off_while_others_are_served(
    gateway: Running, upstream: tuple[ScriptedUpstream, str]
) -> None:
    scripted, _ = upstream
    scripted.requests.clear()
    body = json.dumps({"model": "plain", "input": "x" * 200}).encode()
    with connect(gateway) as sock:
        sock.sendall(request_head(len(body)))
        other = httpx.post(
            gateway.url + "/v1/embeddings",
            json={"model": "plain", "input": "y"},
            headers={"authorization": f"Bearer {KEY}"},
        )
        assert other.status_code == 200, "a client at full speed is served meanwhile"
        sent = drip(sock, body, every=0.1)
        assert sent < len(body)
        assert_timed_out(sock, "body")
    assert [request.json["input"] for request in scripted.requests] == ["y"], "the cut-off request went nowhere"
    logged = [
        json.loads(line)
        for line in gateway.stderr().splitlines()
        if '"path": "/v1/embeddings"' in line or '"path":"/v1/embeddings"' in line
    ]
    assert any(line.get("client_disconnected") for line in logged), "logged as a client that went away"
    assert "Traceback" not in gateway.stderr()


def test_a_messages_body_too_slow_to_arrive_is_cut_off_in_anthropic_s_shape(gateway: Running) -> None:
    with connect(gateway) as sock:
        sock.sendall(request_head(100, "/v1/messages"))
        status, headers, body = answer(sock)
    assert status == 408 and headers["connection"] == "close"
    assert json.loads(body) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "The request body was not received within 1 seconds."},
    }


def test_the_head_deadline_starts_with_a_later_requests_first_byte(gateway: Running) -> None:
    get = b"GET /healthz HTTP/1.1\r\nhost: gateway\r\n\r\n"
    with connect(gateway) as sock:
        sock.sendall(get)
        assert answer(sock)[0] == 200
        time.sleep(1.5)  # idle past header_timeout, within uvicorn's 5 s keep-alive
        sock.sendall(get)
        assert answer(sock)[0] == 200


def test_connections_beyond_the_cap_get_503_and_are_closed(
    tmp_path: Path, upstream: tuple[ScriptedUpstream, str]
) -> None:
    with start(tmp_path, upstream[1], "header_timeout: 30, max_connections: 3") as running:
        idle = [connect(running) for _ in range(3)]
        try:
            time.sleep(0.2)  # let the server take them all in
            with connect(running) as refused:
                status, headers, body = answer(refused)
                assert status == 503 and json.loads(body)["error"]["code"] == "too_many_connections"
                assert headers["retry-after"] == "1" and closed_by_peer(refused)
            idle.pop().close()
            deadline = time.monotonic() + 10
            while True:  # once the server has noticed the close, a new connection is served
                with connect(running) as sock:
                    sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\r\n")
                    if answer(sock)[0] == 200:
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            for sock in idle:
                sock.close()


def test_an_upgrade_request_is_answered_as_plain_http(gateway: Running) -> None:
    upgrade = (
        b"GET /healthz HTTP/1.1\r\nhost: gateway\r\nconnection: upgrade\r\nupgrade: websocket\r\n"
        b"sec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    with connect(gateway) as sock:
        sock.sendall(upgrade)
        status, _, body = answer(sock)
        assert status == 200 and json.loads(body) == {"status": "ok"}
