"""Server-sent events, decoded incrementally from upstream bytes and encoded for the client.

Upstream reads may cut an event, a line or a multi-byte character anywhere,
and lines may end in ``\\n``, ``\\r\\n`` or ``\\r``. The decoder works on bytes
(payloads go straight to ``orjson.loads``), keeps only the unfinished line and
event between reads, and refuses an event larger than its limit instead of
buffering without bound.
"""

from __future__ import annotations

from typing import Final, NamedTuple

__all__ = ["SSEComment", "SSEDecoder", "SSEError", "SSEEvent", "encode_comment", "encode_event", "line_safe"]


class SSEComment(NamedTuple):
    """A comment line (``: keep-alive``), without its colon and leading space."""

    text: bytes


SSEEvent = bytes | SSEComment
"""A dispatched event is its data (its data lines joined by newlines); a comment is an ``SSEComment``."""


class SSEError(Exception):
    """The upstream stream cannot be decoded within the limits.

    ``events`` are the ones the failing read completed before the fault, so a
    consumer can handle them first, whichever read the fault happened to land in.
    """

    def __init__(self, message: str, events: list[SSEEvent] | None = None) -> None:
        super().__init__(message)
        self.events: list[SSEEvent] = events or []


class SSEDecoder:
    __slots__ = ("max_event_bytes", "_line", "_line_size", "_data", "_data_size", "_cr")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._line: list[bytes] = []  # pieces of the unfinished line
        self._line_size = 0
        self._data: list[bytes] = []  # data lines of the unfinished event
        self._data_size = 0
        self._cr = False  # the previous read ended in "\r": a "\n" next is the same line end

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if self._cr:
            self._cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            self._cr = chunk.endswith(b"\r")
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        tail = lines.pop()
        events: list[SSEEvent] = []
        if lines:
            if self._line:
                self._line.append(lines[0])
                lines[0] = b"".join(self._line)
                self._line.clear()
                self._line_size = 0
            for line in lines:
                self._line_done(line, events)
        if tail:
            self._line.append(tail)
            self._line_size += len(tail)
            if self._line_size + self._data_size > self.max_event_bytes:
                raise SSEError(f"an upstream event exceeds {self.max_event_bytes} bytes", events)
        return events

    def close(self) -> list[SSEEvent]:
        """End of stream: an event not closed by a blank line is still dispatched."""
        events: list[SSEEvent] = []
        if self._line:
            self._line_done(b"".join(self._line), events)
            self._line.clear()
        self._line_done(b"", events)
        return events

    def _line_done(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(b"\n".join(self._data))
                self._data.clear()
                self._data_size = 0
            return
        if line[0] == 0x3A:  # ":"
            events.append(SSEComment(line[1:].lstrip(b" ")))
            return
        field, _, value = line.partition(b":")
        if field == b"data":
            if value[:1] == b" ":
                value = value[1:]
            self._data.append(value)
            self._data_size += len(value)
            if self._data_size > self.max_event_bytes:
                raise SSEError(f"an upstream event exceeds {self.max_event_bytes} bytes", events)


# Characters JSON may hold raw that a client splitting lines like str.splitlines (httpx's iter_lines) takes for a
# line break, which would let an answer's text inject an SSE line: U+2028, U+2029 and U+0085, in UTF-8.
_LINE_LIKE: Final = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def line_safe(data: bytes) -> bytes:
    """JSON with the characters some clients take for a line break escaped: they can only be inside its strings,
    where an escape means the same."""
    if b"\xe2\x80" in data or b"\xc2\x85" in data:
        return _escaped(data)
    return data


def encode_event(data: bytes, event: bytes | None = None) -> bytes:
    """One event for the client. ``data`` is JSON, which holds no line break, and is made ``line_safe``."""
    data = line_safe(data)
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event + b"\ndata: " + data + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    """A comment for the client (a keep-alive), with what could break its line taken out."""
    for raw, _ in _LINE_LIKE:
        text = text.replace(raw, b"")
    return b": " + text.replace(b"\r", b"").replace(b"\n", b"") + b"\n\n"


def _escaped(data: bytes) -> bytes:
    for raw, escape in _LINE_LIKE:
        data = data.replace(raw, escape)
    return data
