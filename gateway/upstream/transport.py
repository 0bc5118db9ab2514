"""A lean HTTP/1.1 transport for httpx, on asyncio protocols and httptools.

httpx's default stack (httpcore and h11) costs a streaming proxy where it
hurts: it probes every idle pooled connection on each request, and it yields
one body piece per HTTP chunk, so a burst of 50 SSE events takes 50 trips
through every layer. Here a connection is an ``asyncio.Protocol`` that the
event loop feeds, parsed by httptools (uvicorn's parser), and a body read
returns everything that arrived since the previous one. An idle connection
learns from the event loop that the server closed it, so the pool never probes.

It speaks direct HTTP/1.1, plain or TLS. A provider that a proxy setting
(``HTTPS_PROXY``...) covers gets httpx's own transport instead (see ``upstream``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx

__all__ = ["Http1Transport"]

# Body bytes a connection buffers for a slow reader before it stops reading the socket.
_HIGH_WATER = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})

_Origin = tuple[str, str, int]


class _Connection(asyncio.Protocol):
    """One upstream connection, carrying one request at a time."""

    def __init__(self, pool: _Pool, origin: _Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._in_use = False
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._status = 0
        self._head = False
        self._until_close = False
        self._keep_alive = False
        self._complete = False
        self.received = False
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._last_read = 0.0

    # The event loop's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's

    def data_received(self, data: bytes) -> None:
        if not self._in_use or self._complete:  # bytes nobody asked for: the connection can't be trusted any more
            self._keep_alive = False
            if not self._in_use:
                self.close()
            return
        self.received = True
        self._last_read = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._complete:  # the response was whole; what followed it only spoils the connection
                self._keep_alive = False
                self._wake()
                return
            self._fail(httpx.RemoteProtocolError(f"The upstream sent invalid HTTP: {exc}."))
            self.close()
            return
        if self._buffered > _HIGH_WATER and not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool:
        return False  # close our side too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._head and self._until_close and not self._complete and self._error is None:
            self._complete = True  # a body without length or chunks ends where the connection does
        elif not self._complete:
            self._fail(
                httpx.RemoteProtocolError("The upstream closed the connection before the response was complete.")
            )
        self._wake()
        self._pool.forget(self)

    # httptools' callbacks.

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._complete:  # a second response in the same read as the first: see data_received
            self._keep_alive = False
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._headers = []  # an interim response; the real one follows
            return
        self._status = status
        self._head = True
        self._keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self._headers}
        self._until_close = (
            status not in _NO_BODY_STATUSES and b"content-length" not in names and b"transfer-encoding" not in names
        )

    def on_body(self, body: bytes) -> None:
        if self._complete:
            return
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._head:
            self._complete = True

    # The request's side.

    def send(self, data: bytes) -> None:
        assert self._transport is not None
        self._in_use = True
        self._transport.write(data)

    async def response_head(self, timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        while not self._head:
            await self._wait(timeout)
        return self._status, self._headers

    async def read(self, timeout: float | None) -> bytes:
        """Every body byte that arrived since the last read; ``b""`` once the body is complete."""
        while not self._body:
            if self._complete:
                return b""
            await self._wait(timeout)
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        return self._complete and self._keep_alive and not self.closed

    def recycle(self) -> None:
        """Ready for the next request, once the pool takes it back."""
        self._in_use = False
        self._reset()

    def close(self) -> None:
        if self._transport is not None and not self.closed:
            self._transport.close()
        self.closed = True

    async def _wait(self, timeout: float | None) -> None:
        if self._error is not None:
            raise self._error
        if self.closed and not self._complete:
            raise httpx.RemoteProtocolError("The upstream connection is closed.")
        self._waiter = self._loop.create_future()
        self._last_read = self._loop.time()
        if timeout is not None and self._timer is None:
            self._timer = self._loop.call_at(self._last_read + timeout, self._check_timeout, timeout)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _check_timeout(self, timeout: float) -> None:
        """One timer per connection, moved on lazily: reads only note the time."""
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        due = self._last_read + timeout
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._check_timeout, timeout)
            return
        self._fail(httpx.ReadTimeout("Timed out reading from the upstream."))
        self.close()
        self._wake()

    def _fail(self, error: httpx.TransportError) -> None:
        if self._error is None:
            self._error = error

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.reusable:
            self._pool.put(self)
        else:
            self.close()


class _ResponseBody(httpx.AsyncByteStream):
    """A response body read straight off its connection, which goes back to the pool at the end."""

    def __init__(self, connection: _Connection, timeout: float | None) -> None:
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        try:
            while data := await connection.read(self._timeout):
                yield data
        except BaseException:
            await self.aclose()
            raise
        await self.aclose()

    async def aclose(self) -> None:
        if self._connection is not None:
            self._connection.release()
            self._connection = None


class _Pool:
    """Idle keep-alive connections per origin, least recently used first.

    Each is closed once it has been idle for ``keepalive_expiry`` seconds, by one
    timer for the whole pool, set for the oldest idle connection's expiry.
    """

    def __init__(self, max_idle: int, keepalive_expiry: float) -> None:
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._timer: asyncio.TimerHandle | None = None

    def take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._expiry:
                return connection
            connection.close()
        return None

    def put(self, connection: _Connection) -> None:
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        connection.recycle()
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)
        if self._timer is None:
            self._schedule()

    def forget(self, connection: _Connection) -> None:
        """A connection closed while idle leaves the pool at once."""
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    def _schedule(self) -> None:
        oldest = min((idle[0].idle_since for idle in self._idle.values() if idle), default=None)
        if oldest is not None:
            self._timer = asyncio.get_running_loop().call_at(oldest + self._expiry, self._expire)

    def _expire(self) -> None:
        self._timer = None
        now = asyncio.get_running_loop().time()
        for idle in self._idle.values():
            while idle and now - idle[0].idle_since >= self._expiry:
                idle.pop(0).close()
        self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; one connection per request in flight, idle ones kept for reuse."""

    def __init__(
        self, *, ssl_context: ssl.SSLContext | None = None, max_idle: int = 256, keepalive_expiry: float = 60.0
    ) -> None:
        self._ssl = ssl_context
        self._pool = _Pool(max_idle, keepalive_expiry)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {url.scheme!r}.", request=request)
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        message = _serialize(request, await request.aread())
        pooled = self._pool.take(origin)
        try:
            connection, status, headers = await self._exchange(
                pooled or await self._connect(origin, timeouts, request), message, timeouts
            )
        except httpx.TransportError as exc:
            # A kept-alive connection the server closed just as we sent: the request goes again on a new one.
            if pooled is None or pooled.received or isinstance(exc, httpx.TimeoutException):
                exc.request = request
                raise
            connection, status, headers = await self._exchange(
                await self._connect(origin, timeouts, request), message, timeouts
            )
        if request.method == "HEAD":
            connection.close()  # its Content-Length describes a body that never comes; not worth tracking
            stream: httpx.AsyncByteStream = httpx.ByteStream(b"")
        else:
            stream = _ResponseBody(connection, timeouts.get("read"))
        return httpx.Response(status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"})

    @staticmethod
    async def _exchange(
        connection: _Connection, message: bytes, timeouts: dict[str, Any]
    ) -> tuple[_Connection, int, list[tuple[bytes, bytes]]]:
        """Send the request and wait for the response head; a connection that fails is closed."""
        try:
            connection.send(message)
            status, headers = await connection.response_head(timeouts.get("read"))
        except BaseException:
            connection.close()
            raise
        return connection, status, headers

    async def _connect(self, origin: _Origin, timeouts: dict[str, Any], request: httpx.Request) -> _Connection:
        scheme, host, port = origin
        timeout = timeouts.get("connect")
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if scheme == "https" else None
        connection = _Connection(self._pool, origin)
        try:
            async with asyncio.timeout(timeout):
                await loop.create_connection(
                    lambda: connection, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            connection.close()
            raise httpx.ConnectTimeout(f"Timed out connecting to {host}:{port}.", request=request) from None
        except OSError as exc:  # ssl.SSLError included
            connection.close()
            raise httpx.ConnectError(f"Could not connect to {host}:{port}: {exc}", request=request) from None
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def aclose(self) -> None:
        self._pool.close()


def _serialize(request: httpx.Request, body: bytes) -> bytes:
    """The request head and body as one write, framed by Content-Length."""
    lines = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        lowered = name.lower()
        if lowered in (b"content-length", b"transfer-encoding"):
            continue
        if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name:
            raise httpx.LocalProtocolError(f"Invalid header {name!r}.", request=request)
        lines += (name, b": ", value, b"\r\n")
    if body or request.method in ("POST", "PUT", "PATCH"):
        lines += (b"content-length: ", str(len(body)).encode("ascii"), b"\r\n")
    lines += (b"\r\n", body)
    return b"".join(lines)
