"""Relaying an upstream stream to the client: the I/O around the stream translator.

The relay reads, feeds the translator, has the front door's encoder turn the
events into bytes, and writes them: what one upstream read brings leaves in
one write. It also keeps the timers (idle and total deadlines, a shutdown
abort) and turns the faults it sees (a timeout, a broken connection) into the
translator's last event. Everything about the stream's content, the
translator decides.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from enum import Enum
from typing import Any

import anyio
import httpx

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import Error
from gateway.core.translator import StreamPhase, StreamTranslator
from gateway.core.usage import TokenUsage
from gateway.dialects import StreamEncoder
from gateway.server.metrics import RequestRecord
from gateway.upstream.provider import UpstreamResponse

__all__ = ["Relay"]


class _End(Enum):
    """Whether ``on_end`` is still to be told that the answer is over."""

    UNCOMMITTED = "not started: a failed start is the caller's to retry"
    DUE = "committed to the client: tell on_end once it is over"
    TOLD = "on_end was told"


class Relay:
    """One upstream stream on its way to the client.

    ``start`` reads until the translator commits to an answer (its first
    chunk), so an upstream that fails before it can still be retried: then it
    raises the failure. ``body`` is the client's body. The upstream response
    is closed, and ``on_close`` called, on every exit. Once committed, the
    answer's end is awaited by ``on_end`` (for its usage), once: before the
    last bytes of a stream that ended go out, or as a stream cut short closes.
    """

    def __init__(
        self,
        upstream: UpstreamResponse,
        translator: StreamTranslator,
        encoder: StreamEncoder,
        *,
        idle: float,
        deadline: float | None,
        record: RequestRecord,
        on_close: Callable[[Relay], None],
        on_end: Callable[[Relay], Awaitable[None]] | None = None,
    ) -> None:
        self._upstream = upstream
        self._reads = upstream.reads()
        self._translator = translator
        self._encoder = encoder
        self._idle = idle
        self._deadline = deadline
        self._record = record
        self._on_close = on_close
        self._on_end = on_end
        self._end = _End.UNCOMMITTED
        self._loop = asyncio.get_running_loop()
        self._last_event = self._loop.time()
        # One watchdog timer per stream enforces the idle and total deadlines (and a shutdown abort)
        # by cancelling the read it interrupts; reads themselves only note the time.
        self._watchdog = self._loop.call_at(self._next_deadline(), self._check)
        self._task: asyncio.Task[Any] | None = None  # the task reading, in start() and then in body()
        self._reading = False
        self._expiry: GatewayError | None = None  # set when the watchdog (or an abort) ends the stream
        self._pending: list[bytes] = []  # encoded, not yet written
        self._closed = False

    @property
    def usage(self) -> TokenUsage | None:
        """The last usage the upstream reported."""
        return self._translator.usage

    @property
    def chunks(self) -> int:
        """The upstream chunks relayed so far."""
        return self._translator.chunks

    async def start(self) -> None:
        """Read until the first chunk; a failure before it is raised (``retryable`` says whether to try again)."""
        self._task = asyncio.current_task()
        translator = self._translator
        try:
            while translator.phase is StreamPhase.WAITING:
                failure = await self._read()
                if failure is not None and translator.chunks == 0:
                    raise failure
        except BaseException:
            await self.close()
            raise
        self._end = _End.DUE

    async def body(self) -> AsyncIterator[bytes]:
        self._task = asyncio.current_task()
        translator = self._translator
        try:
            while True:
                ended = translator.ended
                if ended:
                    await self._tell_end()
                if self._pending:
                    data = b"".join(self._pending)
                    self._pending.clear()
                    yield data
                if ended:
                    break
                await self._read()
            if translator.phase is StreamPhase.ENDED:
                await self._drain()
        except (asyncio.CancelledError, GeneratorExit):
            self._record.disconnected = True
            raise
        finally:
            await self.close()

    def abort(self, message: str) -> None:
        """End the stream at its next read with an error event (graceful shutdown's last resort)."""
        self._expire(GatewayError(ErrorKind.UNAVAILABLE, message, code="gateway_shutdown"))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._watchdog.cancel()
        usage = self._translator.usage
        if usage is not None:
            self._record.usage(usage)
        with anyio.CancelScope(shield=True):
            await self._upstream.aclose()
            await self._tell_end()
        self._on_close(self)

    async def _tell_end(self) -> None:
        if self._end is _End.DUE:
            self._end = _End.TOLD
            if self._on_end is not None:
                await self._on_end(self)

    async def _read(self) -> GatewayError | None:
        """One upstream read through the translator into ``_pending``; returns the failure it ended in, if any."""
        translator = self._translator
        if self._expiry is not None:
            events = translator.fail(self._expiry)
        else:
            chunks = translator.chunks
            waiting = self._loop.time()
            self._reading = True
            try:
                events = translator.feed(await anext(self._reads))
            except StopAsyncIteration:
                events = translator.end()
            except asyncio.CancelledError:
                if self._expiry is None or self._task is None:
                    raise
                self._task.uncancel()  # the watchdog's cancellation, not the server's
                events = translator.fail(self._expiry)
            except httpx.TimeoutException:
                events = translator.fail(self._timeout())
            except httpx.TransportError:
                message = f"The connection to the upstream provider {translator.provider!r} broke mid-stream."
                events = translator.fail(GatewayError(ErrorKind.DISCONNECTED, message, retryable=True))
            finally:
                self._reading = False
                self._record.upstream_seconds += self._loop.time() - waiting
            if translator.chunks != chunks:
                self._last_event = self._loop.time()
        if events and (data := self._encoder.encode(events)):
            self._pending.append(data)  # nothing to send (reasoning hidden, say) is no write at all
        if translator.phase is not StreamPhase.FAILED:
            return None
        error = events[-1]
        assert isinstance(error, Error)
        if translator.chunks:
            self._record.error_kind = "gateway_shutdown" if error.error.code == "gateway_shutdown" else "mid_stream"
        return error.error

    async def _drain(self) -> None:
        """Read what follows the end (normally just the end of the body), so the connection can be reused."""
        left = 64 * 1024
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(1):
                async for raw in self._reads:
                    left -= len(raw)
                    if left < 0:
                        return

    def _timeout(self) -> GatewayError:
        message = f"The upstream provider {self._translator.provider!r} timed out mid-stream."
        return GatewayError(ErrorKind.TIMEOUT, message, retryable=True)

    def _next_deadline(self) -> float:
        deadline = self._last_event + self._idle
        return deadline if self._deadline is None else min(deadline, self._deadline)

    def _check(self) -> None:
        deadline = self._next_deadline()
        if self._loop.time() < deadline:
            self._watchdog = self._loop.call_at(deadline, self._check)
        else:
            self._expire(self._timeout())

    def _expire(self, error: GatewayError) -> None:
        if self._expiry is None:
            self._expiry = error
        if self._reading and self._task is not None:
            self._task.cancel()
