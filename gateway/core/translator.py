"""The stream translator: upstream SSE bytes in, however the reads split them; neutral client events out.

It owns the whole stream protocol: SSE decoding, ``[DONE]``, an upstream's
own error event, finish tracking, the limits on event and argument size, and
the rule that a stream ends in exactly one ``Done`` or one ``Error`` event,
never in a clean-looking end after a truncated answer. The I/O shell only
reads, feeds, writes, and reports faults it saw itself (``fail``), such as a
timeout or a broken connection.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

import orjson

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import Comment, Done, Error, Event, Usage
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import ChatPassThrough, Shortcuts
from gateway.core.rewriter import ArgumentsTooLong, InvalidChunk, RewriteStats, StreamRewriter
from gateway.core.sse import SSEComment, SSEDecoder, SSEError, SSEEvent
from gateway.core.usage import TokenUsage
from gateway.core.wires import Fragment, WireFailure, WireReader

__all__ = ["StreamPhase", "StreamTranslator"]

_DONE = b"[DONE]"


class StreamPhase(Enum):
    """Where a stream is; the shell retries an attempt only while it is ``WAITING``."""

    WAITING = "no chunk yet"
    STREAMING = "chunks arriving"
    ENDED = "ended with Done"
    FAILED = "ended with Error"


# The members as globals: looking one up on the Enum class costs several times more, per chunk.
_WAITING, _STREAMING = StreamPhase.WAITING, StreamPhase.STREAMING
_ENDED, _FAILED = StreamPhase.ENDED, StreamPhase.FAILED


class StreamTranslator:
    """Translates one upstream chat-completions stream.

    ``feed`` takes the next upstream read; ``end`` is the end of the upstream
    body; ``fail`` reports a fault the shell saw. Each returns the events it
    produced. Once the stream has ended (``phase`` is ``ENDED`` or
    ``FAILED``) they return nothing, so the last event is always the one
    ``Done`` or ``Error``.

    ``raw_chunks`` is the encoder's promise (``StreamEncoder.raw_chunks``) to
    send an unchanged chunk as its bytes and read nothing else of it: on a
    route without a rewrite, the chunks' own events are then not made.
    ``shortcuts`` says whether the chat pass-through's shortcuts are taken
    (``gateway.core.passthrough``). ``wire`` reads an upstream of another API
    (``gateway.core.wires``) into the chunks the rewrite reads; the chat
    shortcuts, which work on a chat upstream's bytes, are then not taken.
    """

    def __init__(
        self,
        options: RewriteOptions,
        provider: str,
        stats: RewriteStats | None = None,
        *,
        raw_chunks: bool = False,
        shortcuts: Shortcuts = Shortcuts.ON,
        wire: WireReader | None = None,
    ) -> None:
        self.phase: StreamPhase = _WAITING
        self.provider = provider
        # The last usage the upstream reported, for metrics and token limits.
        self.usage: TokenUsage | None = None
        # Data events translated so far: the shell's idle timer counts only these, not comments or partial bytes.
        self.chunks = 0
        self._decoder = SSEDecoder(options.max_event_bytes)
        self._wire = wire
        self._rewriter = StreamRewriter(options, stats)
        # A wire's argument fragments go to the rewriter's feed_fragment, but with the shortcuts off.
        self._fragments = shortcuts is not Shortcuts.OFF
        if wire is not None:
            raw_chunks, shortcuts = False, Shortcuts.OFF
        self._chunks = ChatPassThrough(self._rewriter, raw_chunks=raw_chunks, shortcuts=shortcuts)

    @property
    def ended(self) -> bool:
        return self.phase is _ENDED or self.phase is _FAILED

    def feed(self, data: bytes) -> list[Event]:
        if self.phase is _ENDED or self.phase is _FAILED:
            return []
        out: list[Event] = []
        try:
            decoded = self._decoder.feed(data)
        except SSEError as error:
            # What the read completed before the fault goes out first, whatever read the fault landed in.
            self._translate(error.events, out)
            message = f"The upstream provider {self.provider!r} sent an invalid event stream: {error}."
            self._fail(out, ErrorKind.INVALID_RESPONSE, message)
            return out
        self._translate(decoded, out)
        return out

    def end(self) -> list[Event]:
        """The upstream body is complete: settle the answer, or say why it is not whole."""
        if self.ended:
            return []
        out: list[Event] = []
        self._translate(self._decoder.close(), out)
        if not self.ended:
            self._settle(out)
        return out

    def fail(self, error: GatewayError) -> list[Event]:
        """A fault the shell saw (timeout, broken connection, shutdown) ends the stream, unless it already ended."""
        if self.ended:
            return []
        self.phase = _FAILED
        return [Error(error)]

    def _translate(self, events: list[SSEEvent], out: list[Event]) -> None:
        for event in events:
            if self.phase is _ENDED or self.phase is _FAILED:
                return
            if type(event) is bytes:
                if event == _DONE:
                    self._settle(out)
                    return
                if self._wire is not None:
                    self._wire_event(self._wire, event, out)
                else:
                    self._chunk(event, out)
            elif isinstance(event, SSEComment):
                out.append(Comment(event.text))

    def _chunk(self, payload: bytes, out: list[Event]) -> None:
        chunks = self._chunks
        if chunks.recognising:
            try:
                recognised = chunks.recognised(payload)
            except ArgumentsTooLong as exc:
                self._fail(out, ErrorKind.RESPONSE_TOO_LARGE, f"The answer was cut: {exc}.")
                return
            if recognised is not None:
                out += recognised
                self.chunks += 1
                return
        try:
            chunk = orjson.loads(payload)
            if not isinstance(chunk, dict):
                raise InvalidChunk("an event is not a JSON object")
            if "error" in chunk and "choices" not in chunk:
                message = f"The upstream provider {self.provider!r} reported an error mid-stream."
                error = chunk["error"]
                if isinstance(error, dict) and isinstance(error.get("message"), str):
                    message = f"{message[:-1]}: {error['message']}"
                self._fail(out, ErrorKind.UPSTREAM_ERROR, message, upstream=chunk)
                return
            if b"\n" in payload:  # sent as several data lines: its bytes cannot go out as one
                payload = orjson.dumps(chunk)
            events = chunks.feed(chunk, payload)
        except (orjson.JSONDecodeError, InvalidChunk):
            message = f"The upstream provider {self.provider!r} sent an invalid event stream."
            self._fail(out, ErrorKind.INVALID_RESPONSE, message)
            return
        except ArgumentsTooLong as exc:
            self._fail(out, ErrorKind.RESPONSE_TOO_LARGE, f"The answer was cut: {exc}.")
            return
        self._fed(chunk, events, out)

    def _fed(self, chunk: dict[str, Any], events: list[Event], out: list[Event]) -> None:
        if chunk.get("usage") is not None:  # most chunks carry none; the feed read it into a Usage event
            for event in events:
                if type(event) is Usage:
                    self.usage = event.usage
        self.chunks += 1
        self.phase = _STREAMING
        out += events

    def _wire_event(self, wire: WireReader, payload: bytes, out: list[Event]) -> None:
        """One event of another wire: the chunks it stands for through the rewrite, its failure, or its end."""
        try:
            event = orjson.loads(payload)
            if not isinstance(event, dict):
                raise InvalidChunk("an event is not a JSON object")
            rewriter = self._rewriter
            for item in wire.read(event):
                if isinstance(item, Fragment):
                    if self._fragments:
                        out += rewriter.feed_fragment(item.like, item.arguments, item.frame)
                        self.chunks += 1
                        continue
                    chunk = item.chunk
                else:
                    chunk = item
                self._fed(chunk, rewriter.feed(chunk), out)
        except WireFailure as failure:
            error = failure.error
            # An attempt is retried only while nothing went out: a stream cut short is never made to look whole.
            error.retryable = error.retryable and self.phase is _WAITING
            self.phase = _FAILED
            out.append(Error(error))
            return
        except (orjson.JSONDecodeError, InvalidChunk):
            message = f"The upstream provider {self.provider!r} sent an invalid event stream."
            self._fail(out, ErrorKind.INVALID_RESPONSE, message)
            return
        except ArgumentsTooLong as exc:
            self._fail(out, ErrorKind.RESPONSE_TOO_LARGE, f"The answer was cut: {exc}.")
            return
        if wire.ended:
            self._settle(out)

    def _settle(self, out: list[Event]) -> None:
        """``[DONE]`` or the end of the body: a whole answer ends in ``Done``, anything less in ``Error``."""
        if self.phase is _WAITING:
            message = f"The upstream provider {self.provider!r} ended the stream before sending anything."
            self._fail(out, ErrorKind.INCOMPLETE, message, retryable=True)
            return
        out += self._chunks.finish()
        if self._chunks.finished:
            self.phase = _ENDED
            out.append(Done())
            return
        message = f"The upstream provider {self.provider!r} ended the stream before the answer was finished."
        self._fail(out, ErrorKind.INCOMPLETE, message)

    def _fail(
        self,
        out: list[Event],
        kind: ErrorKind,
        message: str,
        *,
        retryable: bool = False,
        upstream: Mapping[str, Any] | None = None,
    ) -> None:
        self.phase = _FAILED
        out.append(Error(GatewayError(kind, message, retryable=retryable, upstream=upstream)))
