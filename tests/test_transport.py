"""The gateway's HTTP/1.1 transport, against raw servers that send exactly the bytes each test needs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import uvloop
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.config import ProviderConfig
from gateway.core.errors import GatewayError
from gateway.upstream.transport import Http1Transport
from gateway.upstream.provider import Provider

T = TypeVar("T")

Handler = Callable[["Server", "Peer"], Awaitable[None]]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, T]], T]:
    """Run a coroutine on the standard event loop and on uvloop (the gateway's), whose transports differ."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else None

    def run(main: Coroutine[Any, Any, T]) -> T:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(main, 20))

    return run


@dataclass
class Request:
    head: list[bytes]
    body: bytes

    @property
    def line(self) -> bytes:
        return self.head[0]

    def header(self, name: bytes) -> bytes | None:
        fields = (line.split(b":", 1) for line in self.head[1:])
        return next((value.strip() for key, value in fields if key.lower() == name), None)


@dataclass
class Peer:
    """One accepted connection, for a handler to read requests from and write raw bytes to."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    number: int

    async def request(self) -> Request | None:
        """The next request on this connection, or None when the client closed it."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        request = Request(head[:-4].split(b"\r\n"), b"")
        length = request.header(b"content-length")
        if length:
            request.body = await self.reader.readexactly(int(length))
        return request

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


@dataclass
class Server:
    url: str = ""
    connections: int = 0
    requests: list[Request] = field(default_factory=list)


@contextlib.asynccontextmanager
async def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 running ``handler`` for each connection it accepts."""
    server = Server()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await handler(server, Peer(reader, writer, server.connections))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    listening = await asyncio.start_server(accept, "127.0.0.1", 0, ssl=tls)
    server.url = f"{'https' if tls else 'http'}://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    async with listening:
        yield server


async def answer(server: Server, peer: Peer, *responses: bytes) -> bool:
    """Answer the next requests on this connection with these responses; False if the client left first."""
    for response in responses:
        request = await peer.request()
        if request is None:
            return False
        server.requests.append(request)
        await peer.send(response)
    return True


def keep_alive(*responses: bytes) -> Handler:
    """Each connection answers its requests with these responses, then waits for the client to leave."""

    async def handler(server: Server, peer: Peer) -> None:
        if await answer(server, peer, *responses):
            await peer.reader.read()

    return handler


def once(response: bytes) -> Handler:
    """Each connection answers one request with this response, then hangs up."""

    async def handler(server: Server, peer: Peer) -> None:
        await answer(server, peer, response)

    return handler


def ok(body: bytes, *headers: bytes) -> bytes:
    extra = b"".join(header + b"\r\n" for header in headers)
    return b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def chunked(*chunks: bytes) -> bytes:
    framed = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks if chunk)
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        + framed
        + b"0\r\n\r\n"
    )


async def fetch(
    http: httpx.AsyncClient, method: str = "GET", path: str = "/", **options: Any
) -> tuple[httpx.Response, list[bytes]]:
    """A response and its body as the reads that delivered it."""
    async with http.stream(method, path, **options) as response:
        return response, [part async for part in response.aiter_raw()]


async def against(
    handler: Handler, scenario: Callable[[Server, httpx.AsyncClient], Awaitable[None]], **transport: Any
) -> None:
    """Run a scenario with a client on the gateway's transport against a raw server."""
    tls = transport.pop("tls", None)
    async with (
        raw_server(handler, tls) as server,
        httpx.AsyncClient(transport=Http1Transport(**transport), base_url=server.url, timeout=5) as http,
    ):
        await scenario(server, http)


# Framing and reads.


def test_a_burst_of_chunks_arrives_as_one_read(run: Callable[..., Any]) -> None:
    events = [b'data: {"n": %d}\n\n' % n for n in range(50)]

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        response, reads = await fetch(http)
        assert response.status_code == 200 and response.headers["content-type"] == "text/event-stream"
        assert reads == [b"".join(events)], "one socket read is one body piece, not one per HTTP chunk"

    run(against(keep_alive(chunked(*events)), scenario))


FRAMINGS = {
    "content-length": (ok(b"hello world"), b"hello world", True),
    "chunked": (chunked(b"hello", b" ", b"world"), b"hello world", True),
    "204": (b"HTTP/1.1 204 No Content\r\n\r\n", b"", True),
    "until close": (b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nhello world", b"hello world", False),
    "connection close": (ok(b"hello world", b"connection: close"), b"hello world", False),
    "HTTP/1.0": (b"HTTP/1.0 200 OK\r\ncontent-length: 11\r\n\r\nhello world", b"hello world", False),
}


@pytest.mark.parametrize("framing", FRAMINGS)
def test_bodies_end_where_their_framing_says_and_keep_alive_reuses_the_connection(
    run: Callable[..., Any], framing: str
) -> None:
    raw, body, reusable = FRAMINGS[framing]

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        for _ in range(3):
            _, reads = await fetch(http)
            assert b"".join(reads) == body
        assert server.connections == (1 if reusable else 3)

    run(against(keep_alive(raw, raw, raw) if reusable else once(raw), scenario))


def test_interim_100_continue_is_skipped(run: Callable[..., Any]) -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b"final", b"x-final: yes")

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        response, reads = await fetch(http, "POST", content=b"{}")
        assert response.status_code == 200 and response.headers["x-final"] == "yes" and b"".join(reads) == b"final"

    run(against(keep_alive(raw), scenario))


def test_head_response_has_no_body(run: Callable[..., Any]) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        response, reads = await fetch(http, "HEAD")
        assert response.headers["content-length"] == "1000" and b"".join(reads) == b""

    run(against(keep_alive(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n"), scenario))


def test_request_goes_out_as_built(run: Callable[..., Any]) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        await fetch(http, "POST", "/v1/files/a%2Fb/content?x=1&y=%20", content=b'{"a": 1}', headers={"x-extra": "yes"})
        await fetch(http, "GET", "/v1/models")
        post, get = server.requests
        assert post.line == b"POST /v1/files/a%2Fb/content?x=1&y=%20 HTTP/1.1"
        assert post.header(b"host") == server.url.removeprefix("http://").encode()
        assert post.header(b"x-extra") == b"yes" and post.header(b"content-length") == b"8" and post.body == b'{"a": 1}'
        assert get.line == b"GET /v1/models HTTP/1.1" and get.header(b"content-length") is None

    run(against(keep_alive(ok(b"1"), ok(b"2")), scenario))


def test_header_that_would_split_the_request_is_refused(run: Callable[..., Any]) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.LocalProtocolError):
            await fetch(http, headers={"x-evil": "a\r\nx-injected: 1"})
        assert server.requests == []

    run(against(keep_alive(ok(b"")), scenario))


# Connections that go away.


def test_idle_connection_the_server_closed_is_not_used_again(run: Callable[..., Any]) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        await fetch(http)
        await asyncio.sleep(0.1)
        _, reads = await fetch(http)
        assert b"".join(reads) == b"once" and server.connections == 2 and len(server.requests) == 2

    run(against(once(ok(b"once")), scenario))


@pytest.mark.parametrize("extra", [ok(b"unasked"), b"garbage"], ids=["a second response", "garbage"])
def test_bytes_after_the_response_make_its_connection_unusable(run: Callable[..., Any], extra: bytes) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        for _ in range(2):
            _, reads = await fetch(http)
            assert b"".join(reads) == b"asked"
        assert server.connections == 2

    run(against(keep_alive(ok(b"asked") + extra, ok(b"asked") + extra), scenario))


def test_connections_left_idle_after_a_peak_are_closed_once_expired(run: Callable[..., Any]) -> None:
    async def main() -> None:
        closed = 0

        async def handler(server: Server, peer: Peer) -> None:
            nonlocal closed
            while await answer(server, peer, ok(b"x")):
                pass
            closed += 1

        async with (
            raw_server(handler) as server,
            httpx.AsyncClient(transport=Http1Transport(keepalive_expiry=0.3), base_url=server.url) as http,
        ):
            await asyncio.gather(*(http.get("/") for _ in range(3)))  # a peak: three connections
            assert server.connections == 3
            for _ in range(8):  # then one request at a time, on the most recently used connection
                await http.get("/")
                await asyncio.sleep(0.1)
            assert closed == 2 and server.connections == 3

    run(main())


def test_idle_connections_are_closed_on_time_without_the_pool_being_used_again(run: Callable[..., Any]) -> None:
    async def main() -> None:
        closed: list[float] = []
        loop = asyncio.get_running_loop()

        async def handler(server: Server, peer: Peer) -> None:
            while await answer(server, peer, ok(b"x")):
                pass
            closed.append(loop.time())

        async with (
            raw_server(handler) as server,
            httpx.AsyncClient(transport=Http1Transport(keepalive_expiry=0.3), base_url=server.url) as http,
        ):
            await asyncio.gather(*(http.get("/") for _ in range(3)))
            await http.get("/")  # one of the three is used again, so it expires later than the others
            idle_from = loop.time()
            assert server.connections == 3 and closed == []
            deadline = idle_from + 5
            while len(closed) < 3 and loop.time() < deadline:
                await asyncio.sleep(0.02)
            assert len(closed) == 3, "every idle connection was closed, though nothing used the pool"
            assert min(closed) - idle_from >= 0.25, "none before its keep-alive expiry"

    run(main())


def test_reused_connection_lost_before_any_answer_is_retried_once_on_a_new_one(run: Callable[..., Any]) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        if peer.number == 1:
            await answer(server, peer, ok(b"first"))
            request = await peer.request()  # read the second request, then hang up without a word
            assert request is not None
            server.requests.append(request)
        else:
            await keep_alive(ok(b"second"))(server, peer)

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        await fetch(http)
        _, reads = await fetch(http)
        assert b"".join(reads) == b"second" and server.connections == 2 and len(server.requests) == 3

    run(against(handler, scenario))


def test_new_connection_lost_before_any_answer_is_an_error_not_retried(run: Callable[..., Any]) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        server.requests.append(request)

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(http, "POST", content=b"{}")
        assert len(server.requests) == 1

    run(against(handler, scenario))


@pytest.mark.parametrize(
    "raw",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly ten b",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-le",
        b"<html>not http</html>\r\n\r\n",
    ],
    ids=["content-length", "chunked", "head", "not http"],
)
def test_a_response_cut_mid_way_or_not_http_raises(run: Callable[..., Any], raw: bytes) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.RemoteProtocolError):
            await fetch(http)

    run(against(once(raw), scenario))


def test_connection_refused_is_a_connect_error(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with raw_server(once(b"")) as server:
            url = server.url
        async with httpx.AsyncClient(transport=Http1Transport()) as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(url)

    run(main())


@pytest.mark.parametrize("stall", ["head", "body"])
def test_read_timeout(run: Callable[..., Any], stall: str) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        await peer.request()
        if stall == "body":
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
        await peer.reader.read()

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.ReadTimeout):
            await fetch(http, timeout=httpx.Timeout(5, read=0.2))

    run(against(handler, scenario))


def test_cancelled_request_closes_its_connection(run: Callable[..., Any]) -> None:
    async def main() -> None:
        hung_up = asyncio.Event()

        async def handler(server: Server, peer: Peer) -> None:
            if peer.number == 1:
                await peer.request()
                await peer.reader.read()  # never answers; returns once the client hangs up
                hung_up.set()
            else:
                await keep_alive(ok(b"fresh"))(server, peer)

        async with (
            raw_server(handler) as server,
            httpx.AsyncClient(transport=Http1Transport(), base_url=server.url) as http,
        ):
            request = asyncio.ensure_future(http.get("/"))
            await asyncio.sleep(0.1)
            request.cancel()
            await asyncio.wait_for(hung_up.wait(), 2)
            assert (await http.get("/")).content == b"fresh" and server.connections == 2

    run(main())


def test_a_slow_reader_stops_the_socket_being_read(run: Callable[..., Any]) -> None:
    size = 64 * 1024 * 1024
    block = b"x" * (1024 * 1024)
    written = 0

    async def handler(server: Server, peer: Peer) -> None:
        nonlocal written
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % size)
        for _ in range(size // len(block)):
            await peer.send(block)
            written += len(block)

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/") as response:
            await asyncio.sleep(0.5)
            assert written < size / 2, "the transport buffered the body for a reader that was not reading"
            assert sum([len(part) async for part in response.aiter_raw()]) == size

    run(against(handler, scenario))


# TLS.


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def test_https_to_a_trusted_certificate_works_and_keeps_alive(
    run: Callable[..., Any], certificate: tuple[Path, Path]
) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    response = chunked(b"secure ", b"hello")

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        for _ in range(2):
            _, reads = await fetch(http, "POST", content=b"{}")
            assert b"".join(reads) == b"secure hello"
        assert server.connections == 1 and len(server.requests) == 2

    run(
        against(
            keep_alive(response, response), scenario, tls=tls, ssl_context=ssl.create_default_context(cafile=str(cert))
        )
    )


def test_https_to_an_untrusted_certificate_is_refused(run: Callable[..., Any], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        with pytest.raises(httpx.ConnectError):
            await fetch(http)
        assert server.requests == []

    run(against(keep_alive(ok(b"")), scenario, tls=tls))


# Every way the response's bytes can be split across socket reads.


@settings(max_examples=100, deadline=None)
@given(body=st.binary(max_size=300), size=st.integers(1, 64), cuts=st.lists(st.integers(0, 10_000), max_size=10))
def test_any_split_of_the_response_gives_the_same_body(body: bytes, size: int, cuts: list[int]) -> None:
    raw = chunked(*[body[i : i + size] for i in range(0, len(body), size)])
    points = sorted({cut % (len(raw) + 1) for cut in cuts} | {0, len(raw)})

    async def handler(server: Server, peer: Peer) -> None:
        await peer.request()
        for start, end in itertools.pairwise(points):
            await peer.send(raw[start:end])
            await asyncio.sleep(0.001)  # most likely a read of its own
        await peer.reader.read()

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        _, reads = await fetch(http)
        assert b"".join(reads) == body

    asyncio.run(against(handler, scenario))


# The provider on top: what it sends, through which transport.


def test_provider_sends_its_key_and_headers_over_the_callers_and_keeps_no_cookies(run: Callable[..., Any]) -> None:
    response = ok(b"{}", b"set-cookie: session=upstream-secret; Path=/")

    async def main() -> None:
        async with raw_server(keep_alive(response, response)) as server:
            config = ProviderConfig(base_url=server.url + "/v1/", api_key="sk-provider", headers={"X-Extra": "yes"})
            provider = Provider("up", config)
            try:
                for _ in range(2):
                    reply = await provider.call(
                        "POST", "/chat/completions", content=b"{}", headers={"x-extra": "override"}
                    )
                    assert reply.status == 200 and await reply.read() == b"{}"
                    await reply.aclose()
            finally:
                await provider.aclose()
            first, second = server.requests
        assert (
            first.line == b"POST /v1/chat/completions HTTP/1.1"
            and first.header(b"authorization") == b"Bearer sk-provider"
        )
        assert [line for line in first.head if line.lower().startswith(b"x-extra")] == [b"x-extra: yes"]
        assert second.header(b"cookie") is None, "a cookie one client's answer set must not reach the next request"

    run(main())


def test_provider_goes_through_the_proxy_the_environment_names(
    run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    async def main() -> None:
        async with raw_server(keep_alive(ok(b"via proxy"))) as proxy:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.delenv("NO_PROXY", raising=False)
            monkeypatch.delenv("no_proxy", raising=False)
            provider = Provider("up", ProviderConfig(base_url="http://upstream.invalid/v1"))
            try:
                reply = await provider.call("GET", "/models")
                assert await reply.read() == b"via proxy"
                await reply.aclose()
            finally:
                await provider.aclose()
        assert proxy.requests[0].line == b"GET http://upstream.invalid/v1/models HTTP/1.1"

    run(main())


def test_no_proxy_sends_the_request_directly(run: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    async def main() -> None:
        async with raw_server(keep_alive(ok(b"proxied"))) as proxy, raw_server(keep_alive(ok(b"direct"))) as upstream:
            monkeypatch.setenv("HTTP_PROXY", proxy.url)
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
            provider = Provider("up", ProviderConfig(base_url=upstream.url + "/v1"))
            try:
                reply = await provider.call("GET", "/models")
                assert await reply.read() == b"direct"
                await reply.aclose()
            finally:
                await provider.aclose()
            assert proxy.requests == []

    run(main())


def test_provider_maps_a_refused_connection_to_upstream_unreachable(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with raw_server(once(b"")) as server:
            url = server.url
        provider = Provider("down", ProviderConfig(base_url=url))
        try:
            with pytest.raises(GatewayError) as raised:
                await provider.call("GET", "/models")
        finally:
            await provider.aclose()
        assert raised.value.status == 502 and raised.value.code == "upstream_unreachable"

    run(main())
