"""Server-sent events, decoded incrementally from bytes and encoded for the client.

Upstream reads may cut an event, a line or a multi-byte character anywhere,
and lines may end in ``\\n``, ``\\r\\n`` or ``\\r``. The decoder works on bytes
(payloads go straight to ``orjson.loads``), keeps only the unfinished line and
event between reads, and refuses an event larger than its limit instead of
buffering without bound.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMENT", "DATA", "DONE", "SSEDecoder", "SSEError", "encode_comment", "encode_data"]

DATA: Final = 0
COMMENT: Final = 1
DONE: Final = b"data: [DONE]\n\n"

Event = tuple[int, bytes]
"""``(DATA, payload)`` for a dispatched event's joined data lines, ``(COMMENT, text)`` for a comment line."""


class SSEError(Exception):
    """The upstream stream cannot be decoded within the limits.

    ``events`` are the ones the failing read completed before the fault, so a
    consumer can handle them first, whichever read the fault happened to land in.
    """

    def __init__(self, message: str, events: list[Event] | None = None) -> None:
        super().__init__(message)
        self.events: list[Event] = events or []


class SSEDecoder:
    __slots__ = ("max_event_bytes", "_line", "_line_size", "_data", "_data_size", "_cr")

    def __init__(self, max_event_bytes: int = 16 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._line: list[bytes] = []  # pieces of the unfinished line
        self._line_size = 0
        self._data: list[bytes] = []  # data lines of the unfinished event
        self._data_size = 0
        self._cr = False  # the previous read ended in "\r": a "\n" next is the same line end

    def feed(self, chunk: bytes) -> list[Event]:
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
        events: list[Event] = []
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

    def close(self) -> list[Event]:
        """End of stream: an event not closed by a blank line is still dispatched."""
        events: list[Event] = []
        if self._line:
            self._line_done(b"".join(self._line), events)
            self._line.clear()
        self._line_done(b"", events)
        return events

    def _line_done(self, line: bytes, events: list[Event]) -> None:
        if not line:
            if self._data:
                events.append((DATA, b"\n".join(self._data)))
                self._data.clear()
                self._data_size = 0
            return
        if line[0] == 0x3A:  # ":"
            events.append((COMMENT, line[1:].lstrip(b" ")))
            return
        field, _, value = line.partition(b":")
        if field == b"data":
            if value[:1] == b" ":
                value = value[1:]
            self._data.append(value)
            self._data_size += len(value)
            if self._data_size > self.max_event_bytes:
                raise SSEError(f"an upstream event exceeds {self.max_event_bytes} bytes", events)


def encode_data(payload: bytes) -> bytes:
    return b"data: " + payload + b"\n\n"


def encode_comment(text: bytes) -> bytes:
    return b": " + text + b"\n\n"
