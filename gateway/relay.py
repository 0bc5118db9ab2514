"""Relaying an upstream event stream to the client, through the rewrite core.

What arrives in one upstream read leaves in one write, except that the
response starts as soon as the first event is translated. Chunks the rewriter
leaves untouched are forwarded as their original bytes, and chunks that only
continue a tool call's arguments are recognised by their bytes instead of
decoded (``FragmentRecogniser``). A stream that breaks, stalls, times out or
ends before every choice has finished ends with an OpenAI error event, never
with a clean-looking ``[DONE]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import orjson

from gateway.core.fragments import FragmentRecogniser
from gateway.core.rewriter import InvalidChunk, StreamRewriter, choice_index
from gateway.errors import GatewayError, error_body
from gateway.metrics import RequestRecord
from gateway.sse import COMMENT, DONE, Event, SSEDecoder, SSEError, encode_comment, encode_data

__all__ = ["StreamRelay"]

# A backlog entry marking where the upstream's bytes stopped being a valid event stream.
_UNDECODABLE = -1


class _FinishTracker:
    """Which choices of a pass-through stream have finished (the rewriter tracks its own)."""

    __slots__ = ("open", "seen")
    failure = None

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self.seen = False

    def feed(self, chunk: dict[str, Any]) -> list[Any]:
        choices = chunk.get("choices")
        if isinstance(choices, list):
            for position, choice in enumerate(choices):
                if isinstance(choice, dict):
                    self.seen = True
                    index = choice_index(choice, position)
                    if choice.get("finish_reason") is None:
                        self.open.add(index)
                    else:
                        self.open.discard(index)
        return [chunk]

    def finish(self) -> list[Any]:
        return []

    @property
    def finished(self) -> bool:
        return self.seen and not self.open


def error_event(message: str, code: str) -> bytes:
    return encode_data(orjson.dumps(error_body(message, "api_error", code)))


class _StreamFailed(Exception):
    """The stream cannot go on; ``code`` and the message become the client's error event."""

    def __init__(self, message: str, code: str, status: int, retryable: bool) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.retryable = retryable

    def as_error(self) -> GatewayError:
        return GatewayError(self.status, str(self), "api_error", self.code, retryable=self.retryable)


class StreamRelay:
    """One upstream stream on its way to the client.

    ``start`` reads up to the first data event, so an upstream that fails
    before it can still be retried; ``body`` is the client's SSE body. The
    upstream response is closed, and ``on_close`` called, on every exit.
    """

    def __init__(
        self,
        response: httpx.Response,
        rewriter: StreamRewriter | None,
        provider: str,
        *,
        idle: float,
        deadline: float | None,
        max_event_bytes: int,
        record: RequestRecord,
        on_close: Callable[[StreamRelay], None],
    ) -> None:
        self._response = response
        # The gateway asks for no encoding, so reads are usually taken as they come; an upstream
        # that compresses anyway is decompressed.
        self._reads = response.aiter_bytes() if "content-encoding" in response.headers else response.aiter_raw()
        self._rewrite: StreamRewriter | _FinishTracker = rewriter if rewriter is not None else _FinishTracker()
        self._fragments = FragmentRecogniser(rewriter) if rewriter is not None else None
        self._provider = provider
        self._decoder = SSEDecoder(max_event_bytes)
        self._idle = idle
        self._deadline = deadline
        self._record = record
        self._on_close = on_close
        self._loop = asyncio.get_running_loop()
        self._last_event = self._loop.time()
        # One watchdog timer per stream enforces the idle and total deadlines (and a shutdown
        # abort) by cancelling the read it interrupts; reads themselves only note the time.
        self._watchdog = self._loop.call_at(self._next_deadline(), self._check)
        self._task: asyncio.Task[Any] | None = None  # the task reading, in start() and then in body()
        self._reading = False
        self._expired = False
        self._first = b""
        self._backlog: list[Event] = []  # decoded, not yet translated: what start() read past the first event
        self._streaming = False
        self._events = 0
        self._eof = False
        self._done = False
        self._upstream_error = False
        self._aborted: str | None = None
        self._closed = False

    async def start(self) -> None:
        """Read until the first data event; failures here raise ``GatewayError`` with ``retryable`` set."""
        out: list[bytes] = []
        self._task = asyncio.current_task()
        try:
            while not self._events:
                await self._read_into(out)
                if (self._done or self._eof) and not self._events:
                    raise _StreamFailed(
                        f"The upstream provider {self._provider!r} ended the stream before sending anything.",
                        "upstream_incomplete", 502, retryable=True,
                    )
        except _StreamFailed as failed:
            await self.close()
            raise failed.as_error() from None
        except BaseException:
            await self.close()
            raise
        self._first = b"".join(out)

    async def body(self) -> AsyncIterator[bytes]:
        self._task = asyncio.current_task()
        try:
            self._streaming = True
            if self._first:
                yield self._first
            try:
                out: list[bytes] = []
                self._translate_backlog(out)
                while True:
                    if out:
                        yield b"".join(out)
                    if self._done or self._eof:
                        break
                    out = []
                    await self._read_into(out)
            except _StreamFailed as failed:
                # What the failing read translated before the fault still goes out, ahead of the error.
                self._record.error_kind = "gateway_shutdown" if failed.code == "gateway_shutdown" else "mid_stream"
                yield b"".join([*out, error_event(str(failed), failed.code)])
                return
            yield self._end()
            await self._drain()
        except (asyncio.CancelledError, GeneratorExit):
            self._record.disconnected = True
            raise
        finally:
            await self.close()

    def abort(self, message: str) -> None:
        """End the stream at its next read with an error event (graceful shutdown's last resort)."""
        self._aborted = message
        self._expire()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._watchdog.cancel()
        with anyio.CancelScope(shield=True):
            await self._response.aclose()
        self._on_close(self)

    def _next_deadline(self) -> float:
        deadline = self._last_event + self._idle
        return deadline if self._deadline is None else min(deadline, self._deadline)

    def _check(self) -> None:
        deadline = self._next_deadline()
        if self._loop.time() < deadline:
            self._watchdog = self._loop.call_at(deadline, self._check)
        else:
            self._expire()

    def _expire(self) -> None:
        self._expired = True
        if self._reading and self._task is not None:
            self._task.cancel()

    def _expiry(self) -> _StreamFailed:
        if self._aborted is not None:
            return _StreamFailed(self._aborted, "gateway_shutdown", 503, retryable=False)
        message = f"The upstream provider {self._provider!r} timed out mid-stream."
        return _StreamFailed(message, "upstream_timeout", 504, retryable=True)

    async def _read_into(self, out: list[bytes]) -> None:
        """One upstream read turned into client bytes; sets ``_eof`` at the end of the upstream body."""
        if self._expired:
            raise self._expiry()
        waiting = self._loop.time()
        self._reading = True
        try:
            raw = await anext(self._reads)
        except StopAsyncIteration:
            self._eof = True
            self._translate_checked(None, out)
            return
        except asyncio.CancelledError:
            if not self._expired or self._task is None:
                raise
            self._task.uncancel()  # the watchdog's cancellation, not the server's
            raise self._expiry() from None
        except httpx.TimeoutException:
            raise self._expiry() from None
        except httpx.TransportError:
            raise _StreamFailed(
                f"The connection to the upstream provider {self._provider!r} broke mid-stream.",
                "upstream_disconnected", 502, retryable=True,
            ) from None
        finally:
            self._reading = False
            self._record.upstream_seconds += self._loop.time() - waiting
        self._translate_checked(raw, out)

    async def _drain(self) -> None:
        """Read what follows ``[DONE]`` (normally just the end of the body), so the connection can be reused."""
        left = 64 * 1024
        with contextlib.suppress(TimeoutError, httpx.HTTPError):
            async with asyncio.timeout(1):
                async for raw in self._reads:
                    left -= len(raw)
                    if left < 0:
                        return

    def _translate_checked(self, raw: bytes | None, out: list[bytes]) -> None:
        """Translate a read (``None``: the end of the body), mapping bad input to a stream failure."""
        try:
            self._backlog += self._decoder.close() if raw is None else self._decoder.feed(raw)
        except SSEError as error:
            self._backlog += [*error.events, (_UNDECODABLE, b"")]  # the fault, in its place in the stream
        self._translate_backlog(out)

    def _translate_backlog(self, out: list[bytes]) -> None:
        try:
            self._translate(out)
        except (orjson.JSONDecodeError, SSEError, InvalidChunk):
            raise _StreamFailed(
                f"The upstream provider {self._provider!r} sent an invalid event stream.",
                "upstream_invalid_event", 502, retryable=False,
            ) from None
        failure = self._rewrite.failure
        if failure is not None:
            raise _StreamFailed(f"The answer was cut: {failure}.", "upstream_too_large", 502, retryable=False)

    def _translate(self, out: list[bytes]) -> None:
        """Translate the backlog; until the response has started, only up to the first data event."""
        events, self._backlog = self._backlog, []
        for position, (kind, payload) in enumerate(events):
            if kind == COMMENT:
                out.append(encode_comment(payload))
                continue
            if kind == _UNDECODABLE:
                raise SSEError("undecodable")
            if payload == b"[DONE]":
                self._done = True
                return
            self._events += 1
            self._last_event = self._loop.time()
            self._translate_chunk(payload, out)
            if not self._streaming:
                self._backlog = events[position + 1 :]
                return

    def _translate_chunk(self, payload: bytes, out: list[bytes]) -> None:
        """One chunk; one that only continues a tool call's arguments is recognised without decoding it."""
        fragments = self._fragments
        if fragments is not None:
            recognised = fragments.recognise(payload)
            if recognised is not None:
                out += map(encode_data, recognised)
                return
        chunk = orjson.loads(payload)
        if not isinstance(chunk, dict):
            raise SSEError("an event is not a JSON object")
        if "error" in chunk and "choices" not in chunk:
            self._upstream_error = True
            self._record.error_kind = "mid_stream"
        if chunk.get("usage"):
            self._record.usage(chunk["usage"])
        for sent in self._rewrite.feed(chunk):
            out.append(encode_data(payload) if sent is chunk else encode_data(orjson.dumps(sent)))
        if fragments is not None:
            fragments.learn(payload, chunk)

    def _end(self) -> bytes:
        """The last bytes: what the rewriter settled, then ``[DONE]`` or an error event."""
        out = [encode_data(orjson.dumps(sent)) for sent in self._rewrite.finish()]
        if self._upstream_error:  # the provider's own error event is the last word
            return b"".join(out)
        if self._rewrite.finished:
            out.append(DONE)
        else:
            self._record.error_kind = "mid_stream"
            message = f"The upstream provider {self._provider!r} ended the stream before the answer was finished."
            out.append(error_event(message, "upstream_incomplete"))
        return b"".join(out)
