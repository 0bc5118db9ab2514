"""A lean HTTP/1.1 transport for httpx, on asyncio protocols and httptools.

httpx's default stack (httpcore and h11) costs a streaming proxy where it
hurts: it probes every idle pooled connection on each request, and it yields
one body piece per HTTP chunk, so a burst of 50 SSE events takes 50 trips
through every layer. Here a connection is an ``asyncio.Protocol`` that the
event loop feeds, parsed by httptools (uvicorn's parser), and a body read
returns everything that arrived since the previous one. An idle connection
learns from the event loop that the server closed it, so the pool never probes.

It honours the four timeouts of httpx's ``timeout`` extension: ``connect``;
``write``, the longest the upstream may go without taking any of the request's
bytes; ``read``, the longest it may go without sending any; and ``pool``, the
longest a request waits for a connection when its origin is at
``max_connections``.

It speaks direct HTTP/1.1, plain or TLS. A provider that a proxy setting
(``HTTPS_PROXY``...) covers gets httpx's own transport instead (see ``provider``).
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from enum import Enum
from typing import Any, cast

import httptools
import httpx

__all__ = ["Http1Transport"]

# Body bytes a connection buffers for a slow reader before it stops reading the socket.
_HIGH_WATER = 256 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})

_Origin = tuple[str, str, int]


class _Awaiting(Enum):
    """What a request waits on its connection for: it says which timeout runs and what counts as progress."""

    WRITE = "write"  # the transport to take the request's bytes (its buffer under the low-water mark)
    READ = "read"  # response bytes


class _State(Enum):
    """Where a connection is in its life; only an ``IDLE`` one goes back to the pool."""

    NEW = "handed out, not yet connected"
    IDLE = "connected, no request on it"
    ACTIVE = "carrying a request"
    CLOSED = "closed"


class _Response(Enum):
    """How far the response to the connection's current request has come."""

    AWAITED = "no head yet"
    BODY = "head read, body arriving"
    COMPLETE = "whole"


# The members as globals: looking one up on the Enum class costs several times more, per read.
_NEW, _IDLE, _ACTIVE, _CLOSED = _State.NEW, _State.IDLE, _State.ACTIVE, _State.CLOSED
_AWAITED, _BODY, _COMPLETE = _Response.AWAITED, _Response.BODY, _Response.COMPLETE


class _Connection(asyncio.Protocol):
    """One upstream connection, carrying one request at a time.

    It holds one of its origin's ``max_connections`` places from the moment the
    pool hands it out, before it is even connected, until it closes.
    """

    def __init__(self, pool: _Pool, origin: _Origin) -> None:
        self._pool = pool
        self.origin = origin
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._state = _NEW
        self.idle_since = 0.0
        self._write_paused = False
        self._reset()

    def _reset(self) -> None:
        self._parser = httptools.HttpResponseParser(self)
        self._headers: list[tuple[bytes, bytes]] = []
        self._status = 0
        self._response = _AWAITED
        self._until_close = False
        self._keep_alive = False
        self.received = False
        self._body: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._awaiting = _Awaiting.READ
        self._timeout = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._last_progress = 0.0
        self._unsent = 0

    @property
    def connected(self) -> bool:
        return self._state is not _NEW

    @property
    def closed(self) -> bool:
        return self._state is _CLOSED

    # The event loop's side.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports don't subclass asyncio's
        if self._state is _NEW:
            self._state = _IDLE

    def data_received(self, data: bytes) -> None:
        if self._state is not _ACTIVE or self._response is _COMPLETE:
            # Bytes nobody asked for: the connection can't be trusted any more.
            self._keep_alive = False
            if self._state is not _ACTIVE:
                self.close()
            return
        self.received = True
        self._last_progress = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self._response is _COMPLETE:  # the response was whole; what followed it only spoils the connection
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
        if self._response is _BODY and self._until_close and self._error is None:
            self._response = _COMPLETE  # a body without length or chunks ends where the connection does
        elif self._response is not _COMPLETE:
            self._fail(
                httpx.RemoteProtocolError("The upstream closed the connection before the response was complete.")
            )
        self._wake()
        if self._state is not _CLOSED:
            self._state = _CLOSED
            self._pool.discard(self)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # httptools' callbacks.

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self._response is _COMPLETE:  # a second response in the same read as the first: see data_received
            self._keep_alive = False
            return
        status = self._parser.get_status_code()
        if 100 <= status < 200:
            self._headers = []  # an interim response; the real one follows
            return
        self._status = status
        self._response = _BODY
        self._keep_alive = self._parser.should_keep_alive()
        names = {name.lower() for name, _ in self._headers}
        self._until_close = (
            status not in _NO_BODY_STATUSES and b"content-length" not in names and b"transfer-encoding" not in names
        )

    def on_body(self, body: bytes) -> None:
        if self._response is _COMPLETE:
            return
        self._body.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._response is _BODY:
            self._response = _COMPLETE

    # The request's side.

    def send(self, data: bytes) -> None:
        if self._state is not _IDLE or self._transport is None:
            raise httpx.RemoteProtocolError("The upstream connection is closed.")
        self._state = _ACTIVE
        self._transport.write(data)

    async def sent(self, timeout: float | None) -> None:
        """Wait until the transport has taken the request, or the response has begun (then the rest of the
        request no longer matters, and the connection is not reused unless it all went out)."""
        while self._write_paused and self._response is _AWAITED:
            await self._wait(_Awaiting.WRITE, timeout)

    async def response_head(self, timeout: float | None) -> tuple[int, list[tuple[bytes, bytes]]]:
        while self._response is _AWAITED:
            await self._wait(_Awaiting.READ, timeout)
        return self._status, self._headers

    async def read(self, timeout: float | None) -> bytes:
        """Every body byte that arrived since the last read; ``b""`` once the body is complete."""
        while not self._body:
            if self._response is _COMPLETE:
                return b""
            await self._wait(_Awaiting.READ, timeout)
        data = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._buffered = 0
        if self._paused and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """The response is whole, the server keeps the connection open, and the request went out entirely."""
        return (
            self._response is _COMPLETE
            and self._keep_alive
            and self._state is _ACTIVE
            and self._transport is not None
            and self._transport.get_write_buffer_size() == 0
        )

    def recycle(self) -> None:
        """Ready for the next request, once the pool takes it back."""
        self._state = _IDLE
        self._reset()

    def close(self) -> None:
        """Close it (if it is not yet), and give its place in the pool to whoever waits for one."""
        if self._state is _CLOSED:
            return
        self._state = _CLOSED
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.close()
        self._pool.discard(self)

    async def _wait(self, awaiting: _Awaiting, timeout: float | None) -> None:
        if self._error is not None:
            raise self._error
        if self._state is _CLOSED and self._response is not _COMPLETE:
            raise httpx.RemoteProtocolError("The upstream connection is closed.")
        self._waiter = self._loop.create_future()
        self._awaiting = awaiting
        self._last_progress = now = self._loop.time()
        if awaiting is _Awaiting.WRITE and self._transport is not None:
            self._unsent = self._transport.get_write_buffer_size()
        if timeout is not None:
            self._timeout = timeout
            if self._timer is not None and self._timer.when() > now + timeout:
                self._timer.cancel()
                self._timer = None
            if self._timer is None:
                self._timer = self._loop.call_at(now + timeout, self._check_timeout)
        try:
            await self._waiter
        finally:
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _check_timeout(self) -> None:
        """One timer per connection, moved on lazily: progress (bytes read, or the request's
        bytes taken while writing) only notes the time."""
        self._timer = None
        if self._waiter is None or self._waiter.done():
            return
        now = self._loop.time()
        if self._awaiting is _Awaiting.WRITE and self._transport is not None:
            unsent = self._transport.get_write_buffer_size()
            if unsent < self._unsent:
                self._unsent = unsent
                self._last_progress = now
        due = self._last_progress + self._timeout
        if now < due:
            self._timer = self._loop.call_at(due, self._check_timeout)
            return
        if self._awaiting is _Awaiting.WRITE:
            self._fail(httpx.WriteTimeout("Timed out writing to the upstream: it took none of the request's bytes."))
        else:
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
    """The connections to each origin: at most ``max_connections`` open at once (in use, idle or
    opening), idle ones kept for reuse, least recently used first, and the requests waiting for one.

    A connection whose response completed goes to the oldest waiting request, else joins the idle
    ones; one that closes hands its place to the oldest waiting request, which opens a new one. So
    requests are served in the order they came, and a place is never lost: a waiter that leaves
    (cancelled, timed out) after a connection was handed to it hands that connection on.
    Idle connections are closed once idle for ``keepalive_expiry`` seconds, by one timer for the
    whole pool, set for the oldest idle connection's expiry.
    """

    def __init__(self, max_connections: int | None, max_idle: int, keepalive_expiry: float) -> None:
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._open: dict[_Origin, int] = {}
        # Per origin, the requests waiting for a connection, oldest first (a dict: ordered, and O(1) to leave).
        self._waiting: dict[_Origin, dict[asyncio.Future[_Connection], None]] = {}
        self._max_connections = max_connections
        self._max_idle = max_idle
        self._expiry = keepalive_expiry
        self._timer: asyncio.TimerHandle | None = None

    async def acquire(self, origin: _Origin, timeout: float | None, request: httpx.Request) -> _Connection:
        """An idle connection, else a new one (not yet connected) when the origin has room, else the first
        connection or place that comes back within ``timeout`` seconds (``httpx.PoolTimeout`` otherwise)."""
        connection = self._take(origin)
        if connection is not None:
            return connection
        opened = self._open.get(origin, 0)
        if self._max_connections is None or opened < self._max_connections:
            self._open[origin] = opened + 1
            return _Connection(self, origin)
        if timeout is not None and timeout <= 0:
            raise _pool_timeout(request)
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[_Connection] = loop.create_future()
        waiting = self._waiting.setdefault(origin, {})
        waiting[waiter] = None
        timer = None if timeout is None else loop.call_later(timeout, _expire_waiter, waiter, request)
        try:
            return await waiter
        except BaseException:
            waiting.pop(waiter, None)
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._hand_back(waiter.result())  # handed over just as this request gave up
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _take(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < self._expiry:
                return connection
            connection.close()
        return None

    def _hand_over(self, origin: _Origin, connection: _Connection) -> bool:
        """Give a connection (or, unconnected, a place) to the oldest request waiting for one, if any."""
        waiting = self._waiting.get(origin)
        while waiting:
            waiter = next(iter(waiting))
            del waiting[waiter]
            if not waiter.done():
                waiter.set_result(connection)
                return True
        return False

    def _hand_back(self, connection: _Connection) -> None:
        """A connection handed to a request that left before using it."""
        if connection.connected and not connection.closed:
            self.put(connection)
        else:
            connection.close()

    def put(self, connection: _Connection) -> None:
        """A connection ready for another request: to the oldest waiting one, else idle."""
        connection.recycle()
        if self._hand_over(connection.origin, connection):
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self._max_idle:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)
        if self._timer is None:
            self._schedule()

    def discard(self, connection: _Connection) -> None:
        """A connection closed (once each): out of the idle ones, and its place to the oldest waiting request."""
        origin = connection.origin
        idle = self._idle.get(origin)
        if idle and connection in idle:
            idle.remove(connection)
        if not self._hand_over(origin, _Connection(self, origin)):
            self._open[origin] -= 1

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
        for idle in list(self._idle.values()):
            for connection in list(idle):
                connection.close()
        self._idle.clear()


def _pool_timeout(request: httpx.Request) -> httpx.PoolTimeout:
    return httpx.PoolTimeout("Timed out waiting for a connection: the origin is at max_connections.", request=request)


def _expire_waiter(waiter: asyncio.Future[_Connection], request: httpx.Request) -> None:
    if not waiter.done():
        waiter.set_exception(_pool_timeout(request))


class Http1Transport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with keep-alive; one connection per request in flight, idle ones kept for reuse.

    ``max_connections`` caps the connections per origin (None: no cap); requests beyond it wait,
    in order, up to the request's ``pool`` timeout.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int | None = None,
        max_idle: int = 256,
        keepalive_expiry: float = 60.0,
    ) -> None:
        self._ssl = ssl_context
        self._pool = _Pool(max_connections, max_idle, keepalive_expiry)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise httpx.UnsupportedProtocol(f"Unsupported URL scheme {url.scheme!r}.", request=request)
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        message = _serialize(request, await request.aread())
        while True:
            connection = await self._pool.acquire(origin, timeouts.get("pool"), request)
            reused = connection.connected
            try:
                if not reused:
                    await self._connect(connection, timeouts, request)
                status, headers = await self._exchange(connection, message, timeouts)
                break
            except httpx.TransportError as exc:
                # A kept-alive connection the server closed just as we sent: the request goes again on another.
                if not reused or connection.received or isinstance(exc, httpx.TimeoutException):
                    exc.request = request
                    raise
        if request.method == "HEAD":
            connection.close()  # its Content-Length describes a body that never comes; not worth tracking
            stream: httpx.AsyncByteStream = httpx.ByteStream(b"")
        else:
            stream = _ResponseBody(connection, timeouts.get("read"))
        return httpx.Response(status, headers=headers, stream=stream, extensions={"http_version": b"HTTP/1.1"})

    @staticmethod
    async def _exchange(
        connection: _Connection, message: bytes, timeouts: dict[str, Any]
    ) -> tuple[int, list[tuple[bytes, bytes]]]:
        """Send the request and wait for the response head; a connection that fails is closed."""
        try:
            connection.send(message)
            await connection.sent(timeouts.get("write"))
            return await connection.response_head(timeouts.get("read"))
        except BaseException:
            connection.close()
            raise

    async def _connect(self, connection: _Connection, timeouts: dict[str, Any], request: httpx.Request) -> None:
        """Connect a connection the pool made room for; one that fails is closed, giving its place back."""
        scheme, host, port = connection.origin
        timeout = timeouts.get("connect")
        loop = asyncio.get_running_loop()
        tls = self._tls_context() if scheme == "https" else None
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
        except BaseException:
            connection.close()
            raise

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
