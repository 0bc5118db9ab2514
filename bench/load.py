"""The load driver: raw HTTP/1.1 keep-alive connections over asyncio protocols, closed and open loop.

Not httpx: the client shares two cores with the servers it measures, so it
does as little as it can per response. One callback per socket read, no
parsing of chunks or events: the body's end is found from its last bytes
(the zero-size chunk, or the content length), and a stream counts as complete
only when it ends with ``data: [DONE]`` (from the Messages front door, with
``message_stop``; a Responses stream, which has no ``[DONE]``: when its ``response.completed``
event arrived). A connection made with ``keep_body`` keeps the decoded body, for checking answers
outside the measurements; one made with ``keep_reads`` keeps every read with its arrival time, from
which ``timed_payloads`` tells when each event arrived, once the answer is over.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import orjson
from common import HOST

Meters = Mapping[str, Callable[[], float]]
"""Named readings (CPU seconds, say) taken when a measurement window opens and when it closes."""

MESSAGES = [
    {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
    {"role": "user", "content": "How does the gateway stream an agent's reply to a stock chat client?"},
]
_CHUNKED_END = b"\r\n0\r\n\r\n"
_STREAM_END = b"data: [DONE]\n\n" + _CHUNKED_END
_MESSAGES_END = b'data: {"type":"message_stop"}\n\n' + _CHUNKED_END
_TAIL = max(len(_STREAM_END), len(_MESSAGES_END))
_RESPONSES = b"POST /v1/responses "
_COMPLETED = b"event: response.completed\n"


def chat_request(port: int, model: str, stream: bool, headers: Mapping[str, str] | None = None) -> bytes:
    """The raw bytes of one chat completion request, built once and sent many times."""
    body = {"model": model, "messages": MESSAGES, "stream": stream}
    return _post(port, b"/v1/chat/completions", body, stream, headers)


def responses_request(port: int, model: str, stream: bool, headers: Mapping[str, str] | None = None) -> bytes:
    """The same conversation as ``chat_request``, as a Responses API request (``POST /v1/responses``)."""
    body = {"model": model, "instructions": MESSAGES[0]["content"], "input": MESSAGES[1]["content"], "stream": stream}
    return _post(port, b"/v1/responses", body, stream, headers)


def _post(port: int, path: bytes, body: dict[str, Any], stream: bool, headers: Mapping[str, str] | None) -> bytes:
    content = orjson.dumps(body)
    accept = b"text/event-stream" if stream else b"application/json"
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items()).encode()
    head = (
        b"POST %s HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\naccept: %s\r\n"
        b"%scontent-length: %d\r\n\r\n"
    )
    return head % (path, HOST.encode(), port, accept, extra, len(content)) + content


@dataclass(slots=True)
class Exchange:
    """One request's timing, from its last byte written to the first and last body bytes read."""

    sent: float
    first: float
    last: float
    status: int
    complete: bool
    body: bytes | None = None
    """The decoded body, for a connection made with ``keep_body``."""
    reads: list[tuple[float, bytes]] | None = None
    """Every read of the body as it came (still chunked), with its time, for a connection made with ``keep_reads``."""
    chunked: bool = False

    @property
    def ttfb(self) -> float:
        return self.first - self.sent

    @property
    def ttlb(self) -> float:
        return self.last - self.sent


class Connection(asyncio.Protocol):
    """One keep-alive connection, one exchange at a time."""

    def __init__(self, keep_body: bool = False, keep_reads: bool = False) -> None:
        self.transport: asyncio.Transport | None = None
        self.keep_body = keep_body
        self.keep_reads = keep_reads
        self.reads: list[tuple[float, bytes]] = []
        self.waiter: asyncio.Future[Exchange] | None = None
        self.head = bytearray()
        self.in_body = False
        self.chunked = False
        self.remaining = 0
        self.received = 0
        self.tail = b""
        self.parts: list[bytes] = []
        self.status = 0
        self.sent = 0.0
        self.first = 0.0
        self.body_started = asyncio.Event()
        """Set when the current answer's body starts (``receiving``), for waiting on it."""
        self.responses = False
        """Whether the answer is a Responses stream, complete once ``response.completed`` was seen."""
        self.completed_seen = False
        self.marker_tail = b""

    @property
    def closed(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    @property
    def receiving(self) -> bool:
        """Whether the current answer's body has started."""
        return self.first > 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the server closed the connection mid-answer"))

    async def request(self, data: bytes) -> Exchange:
        if self.transport is None:
            raise ConnectionError("the connection is closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.head.clear()
        self.in_body = self.chunked = False
        self.remaining = self.received = 0
        self.tail = b""
        self.parts = []
        self.reads = []
        self.first = 0.0
        self.body_started.clear()
        self.responses = data.startswith(_RESPONSES)
        self.completed_seen = False
        self.marker_tail = b""
        self.transport.write(data)
        self.sent = time.perf_counter()
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        if self.waiter is None or self.waiter.done():
            return
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.head[:end]).lower()
            data = bytes(self.head[end + 4 :])
            self.in_body = True
            self.status = int(head[9:12])
            self.chunked = b"\r\ntransfer-encoding: chunked" in head
            if not self.chunked:
                start = head.find(b"\r\ncontent-length:")
                self.remaining = int(head[start + 17 :].split(b"\r\n", 1)[0]) if start >= 0 else 0
                if not self.remaining:
                    self._finish(now, self.status == 200)
                    return
        if not data:
            return
        if not self.first:
            self.first = now
            self.body_started.set()
        if self.keep_body:
            self.parts.append(data)
        if self.keep_reads:
            self.reads.append((now, data))
        if self.chunked:
            self.received += len(data)
            if self.responses and not self.completed_seen:
                # The event line may be cut between two reads: the end of the last one is searched with this one.
                marker = len(_COMPLETED)
                self.completed_seen = _COMPLETED in data or _COMPLETED in self.marker_tail + data[: marker - 1]
                self.marker_tail = (self.marker_tail + data[-marker:])[-marker:]
            window = self.tail + data[-_TAIL:]
            self.tail = window[-_TAIL:]
            if window.endswith(_CHUNKED_END) or (self.received == 5 and window == b"0\r\n\r\n"):
                ended = self.completed_seen if self.responses else window.endswith((_STREAM_END, _MESSAGES_END))
                self._finish(now, self.status == 200 and ended)
        else:
            self.remaining -= len(data)
            if self.remaining <= 0:
                self._finish(now, self.status == 200)

    def _finish(self, now: float, complete: bool) -> None:
        assert self.waiter is not None
        body = None
        if self.keep_body:
            body = b"".join(self.parts)
            body = _dechunk(body) if self.chunked else body
        reads = self.reads if self.keep_reads else None
        self.waiter.set_result(
            Exchange(self.sent, self.first or now, now, self.status, complete, body, reads, self.chunked)
        )


async def connect(port: int, keep_body: bool = False, keep_reads: bool = False) -> Connection:
    _, connection = await asyncio.get_running_loop().create_connection(
        lambda: Connection(keep_body, keep_reads), HOST, port
    )
    return connection


async def connect_many(port: int, count: int, batch: int = 200) -> list[Connection]:
    """Connections opened a batch at a time, so the listen backlog never overflows."""
    connections: list[Connection] = []
    while len(connections) < count:
        size = min(batch, count - len(connections))
        connections += await asyncio.gather(*(connect(port) for _ in range(size)))
    return connections


def _dechunk(raw: bytes) -> bytes:
    """A chunked body's content."""
    out: list[bytes] = []
    position = 0
    while True:
        end = raw.index(b"\r\n", position)
        size = int(raw[position:end].split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(raw[end + 2 : end + 2 + size])
        position = end + 2 + size + 2


def timed_payloads(exchange: Exchange) -> list[tuple[float, bytes]]:
    """The ``data:`` payloads of a streamed answer kept with ``keep_reads``, each with the arrival time
    of the read that completed its event."""
    reads = exchange.reads or []
    raw = b"".join(data for _, data in reads)
    read_ends = []
    end = 0
    for _, data in reads:
        end += len(data)
        read_ends.append(end)
    # The content, and for each piece of it where it starts in the content and in the raw bytes.
    content = bytearray()
    pieces: list[tuple[int, int]] = []
    if exchange.chunked:
        position = 0
        while True:
            line_end = raw.index(b"\r\n", position)
            size = int(raw[position:line_end].split(b";")[0], 16)
            if size == 0:
                break
            pieces.append((len(content), line_end + 2))
            content += raw[line_end + 2 : line_end + 2 + size]
            position = line_end + 2 + size + 2
    else:
        pieces.append((0, 0))
        content += raw
    starts = [start for start, _ in pieces]
    timed = []
    position = 0
    while (event_end := content.find(b"\n\n", position)) >= 0:
        last = event_end + 1
        piece = bisect.bisect_right(starts, last) - 1
        raw_position = pieces[piece][1] + last - pieces[piece][0]
        arrived = reads[bisect.bisect_right(read_ends, raw_position)][0]
        payloads = sse_payloads(bytes(content[position : event_end + 2]))
        if payloads:
            timed.append((arrived, payloads[0]))
        position = event_end + 2
    return timed


def sse_payloads(body: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, ``[DONE]`` included."""
    payloads = []
    for event in body.split(b"\n\n"):
        data = [line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:")]
        if data:
            payloads.append(b"\n".join(data))
    return payloads


class _Window:
    """The measurement window: meters read when it opens and when it closes."""

    def __init__(self, meters: Meters | None) -> None:
        self.meters = dict(meters or {})
        self.opened: dict[str, float] = {}
        self.usage: dict[str, float] = {}

    def open(self) -> None:
        self.opened = {name: read() for name, read in self.meters.items()}

    def close(self) -> None:
        self.usage = {name: read() - self.opened[name] for name, read in self.meters.items()}


async def _read_meters_at(window: _Window, opens_at: float, closes_at: float) -> None:
    await asyncio.sleep(max(0.0, opens_at - time.perf_counter()))
    window.open()
    await asyncio.sleep(max(0.0, closes_at - time.perf_counter()))
    window.close()


@dataclass
class ClosedLoopResult:
    completed: int
    errors: int
    seconds: float
    usage: dict[str, float] = field(default_factory=dict)
    exchanges: list[Exchange] = field(default_factory=list)
    """The complete answers that ended inside the window (their reads dropped once digested)."""
    digests: list[Any] = field(default_factory=list)
    """What ``digest`` made of each of them."""

    @property
    def rate(self) -> float:
        return self.completed / self.seconds


async def closed_loop(
    port: int,
    request: bytes,
    concurrency: int,
    seconds: float,
    warmup: float,
    meters: Meters | None = None,
    digest: Callable[[Exchange], Any] | None = None,
) -> ClosedLoopResult:
    """``concurrency`` clients, each sending its next request as soon as the last answer ends.

    Only answers that end inside the window (after ``warmup``) count; the
    meters are read when the window opens and closes. With ``digest``, the
    connections keep their reads, and ``digest`` is called on each complete
    answer in the window, as it ends.
    """
    opens_at = time.perf_counter() + warmup
    closes_at = opens_at + seconds
    window = _Window(meters)
    result = ClosedLoopResult(0, 0, seconds)
    keep_reads = digest is not None

    async def client() -> None:
        connection = await connect(port, keep_reads=keep_reads)
        try:
            while time.perf_counter() < closes_at:
                if connection.closed:
                    connection = await connect(port, keep_reads=keep_reads)
                try:
                    exchange = await connection.request(request)
                except ConnectionError:
                    result.errors += 1
                    continue
                if opens_at <= exchange.last < closes_at:
                    if exchange.complete:
                        result.completed += 1
                        if digest is not None:
                            result.digests.append(digest(exchange))
                            exchange.reads = None
                        result.exchanges.append(exchange)
                    else:
                        result.errors += 1
        finally:
            connection.close()

    await asyncio.gather(_read_meters_at(window, opens_at, closes_at), *(client() for _ in range(concurrency)))
    result.usage = window.usage
    return result


@dataclass
class OpenLoopResult:
    exchanges: list[Exchange]
    errors: int
    max_lag: float
    """The latest a request left after its due time: above a millisecond or so, the driver fell behind."""
    usage: dict[str, float] = field(default_factory=dict)


async def open_loop(
    port: int, request: bytes, rate: float, seconds: float, pool: int, meters: Meters | None = None
) -> OpenLoopResult:
    """Requests at a fixed rate, whatever the answers do, each on an idle pooled connection.

    The meters are read before the first request and after the last answer.
    """
    idle = await connect_many(port, pool)
    exchanges: list[Exchange] = []
    errors = 0

    async def one() -> None:
        nonlocal errors
        connection = None
        while idle and connection is None:
            candidate = idle.pop()
            connection = None if candidate.closed else candidate  # servers close idle keep-alive connections
        if connection is None:
            connection = await connect(port)
        try:
            exchange = await connection.request(request)
        except ConnectionError:
            errors += 1
            return
        if exchange.complete:
            exchanges.append(exchange)
        else:
            errors += 1
        if not connection.closed:
            idle.append(connection)

    window = _Window(meters)
    window.open()
    tasks = []
    max_lag = 0.0
    start = time.perf_counter() + 0.01
    for i in range(round(rate * seconds)):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        max_lag = max(max_lag, time.perf_counter() - due)
        tasks.append(asyncio.create_task(one()))
    await asyncio.gather(*tasks)
    window.close()
    for connection in idle:
        connection.close()
    return OpenLoopResult(exchanges, errors, max_lag, window.usage)


@dataclass
class HoldResult:
    opened: int
    """Streams whose body had started, and none had ended, when ``sample`` ran."""
    sample: Any


async def hold_open(
    port: int, request: bytes, count: int, sample: Callable[[], Any], open_within: float = 60.0
) -> HoldResult:
    """Open ``count`` streams at once, call ``sample`` while all of them are open, then hang up on them.

    ``sample`` runs once every stream's body has started (or its request ended), or after ``open_within``
    seconds with those that have. The upstream must be paced slowly enough that the first stream is still
    open when the last one starts.
    """
    connections = await connect_many(port, count)
    tasks = [asyncio.create_task(connection.request(request)) for connection in connections]

    async def started_or_ended(connection: Connection, task: asyncio.Task[Exchange]) -> None:
        started = asyncio.create_task(connection.body_started.wait())
        try:
            await asyncio.wait([started, task], return_when=asyncio.FIRST_COMPLETED)
        finally:
            started.cancel()

    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(open_within):
            await asyncio.gather(*(started_or_ended(c, t) for c, t in zip(connections, tasks, strict=True)))
    opened = sum(1 for c, t in zip(connections, tasks, strict=True) if c.receiving and not t.done())
    value = sample()
    for connection in connections:
        connection.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return HoldResult(opened, value)
