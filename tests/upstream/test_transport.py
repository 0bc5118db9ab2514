"""The gateway's HTTP/1.1 transport, against raw servers that send exactly the bytes each test needs."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
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

from gateway.config import ProviderConfig, Timeouts
from gateway.core.errors import ErrorKind, GatewayError
from gateway.upstream.provider import Provider
from gateway.upstream.transport import Http1Transport

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
async def raw_server(
    handler: Handler, tls: ssl.SSLContext | None = None, receive_buffer: int | None = None
) -> AsyncIterator[Server]:
    """A server on 127.0.0.1 running ``handler`` for each connection it accepts.

    ``receive_buffer`` fixes its connections' kernel receive buffer (``SO_RCVBUF``), so that a
    request body it does not read stops the sender after that many bytes, not after megabytes.
    """
    server = Server()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        try:
            await handler(server, Peer(reader, writer, server.connections))
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)  # accepted sockets inherit it
    sock.bind(("127.0.0.1", 0))
    listening = await asyncio.start_server(accept, sock=sock, ssl=tls)
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
        all_closed = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def handler(server: Server, peer: Peer) -> None:
            while await answer(server, peer, ok(b"x")):
                pass
            closed.append(loop.time())
            if len(closed) >= 3:
                all_closed.set()

        async with (
            raw_server(handler) as server,
            httpx.AsyncClient(transport=Http1Transport(keepalive_expiry=0.3), base_url=server.url) as http,
        ):
            await asyncio.gather(*(http.get("/") for _ in range(3)))
            await http.get("/")  # one of the three is used again, so it expires later than the others
            idle_from = loop.time()
            assert server.connections == 3 and closed == []
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(all_closed.wait(), 5)
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


# The connection cap: requests beyond it wait, in order, up to the pool timeout.


def holding(response: bytes) -> Handler:
    """The first connection answers its first request only with the head and some of the body, and holds
    it; every connection after it answers each request with ``response``."""

    async def handler(server: Server, peer: Peer) -> None:
        if peer.number == 1:
            await answer(server, peer, b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf")
            await peer.reader.read()
        else:
            await keep_alive(*[response] * 10)(server, peer)

    return handler


def test_a_full_pool_times_out_after_the_pool_timeout_without_opening_a_connection(run: Callable[..., Any]) -> None:
    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/held"):
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/waits", timeout=httpx.Timeout(5, pool=0.2))
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/does-not-wait", timeout=httpx.Timeout(5, pool=0))
        assert server.connections == 1 and len(server.requests) == 1

    run(against(holding(ok(b"")), scenario, max_connections=1))


def test_the_cap_is_per_origin(run: Callable[..., Any]) -> None:
    async def main() -> None:
        transport = Http1Transport(max_connections=1)
        async with (
            raw_server(holding(ok(b""))) as first,
            raw_server(keep_alive(ok(b"other origin"))) as second,
            httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5, pool=0.2)) as http,
            http.stream("GET", first.url),
        ):
            assert (await http.get(second.url)).content == b"other origin"

    run(main())


def test_waiting_requests_are_served_in_the_order_they_came(
    run: Callable[..., Any],
) -> None:
    go = asyncio.Event()

    async def handler(server: Server, peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            path = request.line.split()[1]
            if path == b"/first":
                await go.wait()
            await peer.send(ok(path))

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        first = asyncio.ensure_future(fetch(http, path="/first"))
        waiting = []
        for name in "abcdef":
            waiting.append(asyncio.ensure_future(fetch(http, path=f"/{name}")))
            await asyncio.sleep(0.01)
        go.set()
        await first
        for name, request in zip("abcdef", waiting, strict=True):
            _, reads = await request
            assert reads == [f"/{name}".encode()]
        served = [request.line.split()[1] for request in server.requests]
        assert served == [b"/first", *(f"/{name}".encode() for name in "abcdef")]
        assert server.connections == 1

    run(against(handler, scenario, max_connections=1))


def test_requests_that_give_up_waiting_take_no_connection_with_them(run: Callable[..., Any]) -> None:
    """One cancelled while it waits, one cancelled just as a connection was handed to it: the next gets it."""
    go = asyncio.Event()

    async def handler(server: Server, peer: Peer) -> None:
        while (request := await peer.request()) is not None:
            server.requests.append(request)
            if request.line.startswith(b"GET /first"):
                await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\n")
                await go.wait()
                await peer.send(b"served")
            else:
                await peer.send(ok(b"served"))

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        async with http.stream("GET", "/first") as first:
            waiting = []
            for name in ("cancelled", "handed-over", "next"):
                waiting.append(asyncio.ensure_future(http.get(f"/{name}")))
                await asyncio.sleep(0.01)
            cancelled, handed_over, after = waiting
            with pytest.raises(httpx.PoolTimeout):
                await http.get("/timed-out", timeout=httpx.Timeout(5, pool=0.05))
            cancelled.cancel()
            go.set()
            await first.aread()  # the connection goes back to the pool, handed to the first request still waiting...
        handed_over.cancel()  # ...which is cancelled before it could run
        assert (await after).content == b"served"
        assert (await http.get("/again")).content == b"served"
        assert cancelled.cancelled() and handed_over.cancelled()
        assert [request.line.split()[1] for request in server.requests] == [b"/first", b"/next", b"/again"]
        assert server.connections == 1

    run(against(handler, scenario, max_connections=1))


ENDINGS = ["closed after its answer", "read timeout", "cancelled", "body left unread", "invalid HTTP"]


@pytest.mark.parametrize("ending", ENDINGS)
def test_a_connection_that_ends_gives_its_place_to_the_next_waiting_request(
    run: Callable[..., Any], ending: str
) -> None:
    go = asyncio.Event()

    async def handler(server: Server, peer: Peer) -> None:
        if peer.number > 1:
            await keep_alive(ok(b"fresh"))(server, peer)
            return
        request = await peer.request()
        assert request is not None
        server.requests.append(request)
        await go.wait()
        if ending == "closed after its answer":
            await peer.send(ok(b"last", b"connection: close"))
        elif ending == "body left unread":
            await peer.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nsome")
            await peer.reader.read()
        elif ending == "invalid HTTP":
            await peer.send(b"<html>not http</html>\r\n\r\n")
            await peer.reader.read()
        else:
            await peer.reader.read()

    async def first_request(http: httpx.AsyncClient) -> None:
        if ending == "closed after its answer":
            await fetch(http)
        elif ending == "read timeout":
            with pytest.raises(httpx.ReadTimeout):
                await fetch(http, timeout=httpx.Timeout(5, read=0.2))
        elif ending == "body left unread":
            async with http.stream("GET", "/"):
                pass
        elif ending == "invalid HTTP":
            with pytest.raises(httpx.RemoteProtocolError):
                await fetch(http)
        else:
            await fetch(http)

    async def scenario(server: Server, http: httpx.AsyncClient) -> None:
        first = asyncio.ensure_future(first_request(http))
        await asyncio.sleep(0.05)
        second = asyncio.ensure_future(fetch(http, path="/second"))
        await asyncio.sleep(0.05)
        assert not second.done() and server.connections == 1, "the second request waits for the only place"
        go.set()
        if ending == "cancelled":
            first.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await first
        _, reads = await second
        assert b"".join(reads) == b"fresh" and server.connections == 2

    run(against(handler, scenario, max_connections=1))


def test_a_failed_connect_gives_its_place_back(run: Callable[..., Any]) -> None:
    async def main() -> None:
        async with raw_server(once(b"")) as server:
            url = server.url
        timeout = httpx.Timeout(5, pool=1)
        async with httpx.AsyncClient(transport=Http1Transport(max_connections=1), timeout=timeout) as http:
            results = await asyncio.gather(*(http.get(url) for _ in range(3)), return_exceptions=True)
        assert [type(result) for result in results] == [httpx.ConnectError] * 3

    run(main())


# Writing the request: the write timeout is the longest the upstream may take none of its bytes.

LARGE = 16 * 1024 * 1024  # well beyond every buffer on the way: the sender's socket, the receiver's, asyncio's
TAKEN = 64 * 1024  # the raw server's socket receive buffer in these tests


def test_a_server_that_never_reads_the_body_is_a_write_timeout(run: Callable[..., Any]) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")  # the head only
        await asyncio.Event().wait()

    async def main() -> None:
        async with (
            raw_server(handler, receive_buffer=TAKEN) as server,
            httpx.AsyncClient(transport=Http1Transport(), base_url=server.url) as http,
        ):
            with pytest.raises(httpx.WriteTimeout):
                await http.post("/", content=b"x" * LARGE, timeout=httpx.Timeout(60, write=0.3))

    run(main())


def test_a_server_that_reads_slowly_but_steadily_gets_the_whole_body(run: Callable[..., Any]) -> None:
    step = 1024 * 1024

    async def handler(server: Server, peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        received = 0
        while received < LARGE:
            received += len(await peer.reader.readexactly(step))
            await asyncio.sleep(0.1)  # sixteen pauses, well over the write timeout together, each well under it
        await peer.send(ok(b"%d" % received))
        await peer.reader.read()

    async def main() -> None:
        async with (
            raw_server(handler, receive_buffer=TAKEN) as server,
            httpx.AsyncClient(transport=Http1Transport(), base_url=server.url) as http,
        ):
            response = await http.post("/", content=b"x" * LARGE, timeout=httpx.Timeout(60, write=1))
            assert response.content == b"%d" % LARGE

    run(main())


def test_an_answer_before_the_body_was_taken_is_the_answer_and_the_connection_is_not_reused(
    run: Callable[..., Any],
) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        if peer.number > 1:
            await keep_alive(ok(b"fresh"))(server, peer)
            return
        await peer.reader.readuntil(b"\r\n\r\n")
        await peer.send(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\n\r\ntoo long")
        await asyncio.Event().wait()  # keeps the connection open, never reading the body

    async def main() -> None:
        async with (
            raw_server(handler, receive_buffer=TAKEN) as server,
            httpx.AsyncClient(transport=Http1Transport(), base_url=server.url) as http,
        ):
            response = await http.post("/", content=b"x" * LARGE, timeout=httpx.Timeout(60, write=30))
            assert response.status_code == 413 and response.content == b"too long"
            assert (await http.get("/")).content == b"fresh" and server.connections == 2

    run(main())


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


# The provider's transport setting, and what its connection cap and write timeout become, on either transport.

TRANSPORTS = ["gateway", "httpx"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_provider_transport_setting_chooses_the_http_client(run: Callable[..., Any], transport: str) -> None:
    events = [b'data: {"n": %d}\n\n' % n for n in range(50)]

    async def main() -> None:
        async with raw_server(keep_alive(chunked(*events))) as server:
            provider = Provider("up", ProviderConfig(base_url=server.url + "/v1", transport=transport))
            try:
                reply = await provider.call("GET", "/stream")
                reads = [part async for part in reply.reads()]
                await reply.aclose()
            finally:
                await provider.aclose()
        assert b"".join(reads) == b"".join(events)
        # The gateway's transport hands over what one socket read brought; httpx's, one piece per HTTP chunk.
        assert len(reads) == (1 if transport == "gateway" else len(events))

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_provider_at_its_connection_limit_is_busy(run: Callable[..., Any], transport: str) -> None:
    async def main() -> None:
        async with raw_server(holding(ok(b"{}"))) as server:
            config = ProviderConfig(base_url=server.url, transport=transport, max_connections=1, queue_timeout=0.2)
            provider = Provider("up", config)
            try:
                held = await provider.call("GET", "/held")
                with pytest.raises(GatewayError) as raised:
                    await provider.call("GET", "/waits")
                await held.aclose()
                reply = await provider.call("GET", "/after")
                assert await reply.read() == b"{}"
                await reply.aclose()
            finally:
                await provider.aclose()
            assert [request.line.split()[1] for request in server.requests] == [b"/held", b"/after"]
        error = raised.value
        assert error.kind is ErrorKind.BUSY and error.status == 503 and error.code == "provider_busy"
        assert error.retryable and error.headers == {"retry-after": "1"}
        assert "max_connections" in error.message

    run(main())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_provider_whose_upstream_never_takes_the_body_times_out(run: Callable[..., Any], transport: str) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        await peer.reader.readuntil(b"\r\n\r\n")
        await asyncio.Event().wait()

    async def main() -> None:
        async with raw_server(handler, receive_buffer=TAKEN) as server:
            config = ProviderConfig(base_url=server.url, transport=transport, timeout={"read": 0.3})
            provider = Provider("up", config)
            try:
                with pytest.raises(GatewayError) as raised:
                    await provider.call("POST", "/chat/completions", content=b"x" * LARGE)
            finally:
                await provider.aclose()
        error = raised.value
        assert error.kind is ErrorKind.TIMEOUT and error.status == 504 and error.retryable

    run(main())


PROVIDER_ENDINGS = ["first_byte timeout", "cancelled", "read timeout", "body left unread", "broken mid-body"]


@pytest.mark.parametrize("ending", PROVIDER_ENDINGS)
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_provider_at_one_connection_gets_it_back_however_a_request_ends(
    run: Callable[..., Any], transport: str, ending: str
) -> None:
    async def handler(server: Server, peer: Peer) -> None:
        if peer.number > 1:
            await keep_alive(*[ok(b"fresh")] * 3)(server, peer)
            return
        await answer(server, peer, b"" if ending in ("first_byte timeout", "cancelled") else ok(b"0123456789")[:-5])
        if ending != "broken mid-body":
            await peer.reader.read()

    async def first_request(provider: Provider) -> None:
        if ending == "first_byte timeout":
            with pytest.raises(GatewayError) as raised:
                await provider.call("GET", "/first", timeouts=Timeouts(first_byte=0.2))
            assert raised.value.kind is ErrorKind.TIMEOUT
            return
        if ending == "cancelled":
            call = asyncio.ensure_future(provider.call("GET", "/first"))
            await asyncio.sleep(0.2)
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            return
        reply = await provider.call("GET", "/first", timeouts=Timeouts(read=0.2))
        try:
            if ending != "body left unread":
                with pytest.raises(httpx.TransportError):
                    async for _ in reply.reads():
                        pass
        finally:
            await reply.aclose()

    async def main() -> None:
        async with raw_server(handler) as server:
            config = ProviderConfig(base_url=server.url, transport=transport, max_connections=1, queue_timeout=2)
            provider = Provider("up", config)
            try:
                await first_request(provider)
                for _ in range(2):
                    reply = await provider.call("GET", "/next")
                    assert await reply.read() == b"fresh"
                    await reply.aclose()
            finally:
                await provider.aclose()
            assert server.connections == 2

    run(main())
