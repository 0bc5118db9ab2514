"""The encoder's side of the chat pass-through: a chat client's chunk as the upstream's own bytes.

A chunk the rewrite left alone (``ChunkStart.raw``) goes out as it came, and
an argument fragment recognised by its bytes (``ChunkStart.frame``) as those
bytes around its new delta; neither is encoded again. Both still carry the
model name the client asked for (``ModelName``). The general path encodes the
decoded chunk; under ``Shortcuts.CHECK`` the encoder runs both and
``same_chunks`` compares what a client would decode from each.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from gateway.core.events import ChoiceStart, ChunkStart, Event, TextDelta
from gateway.core.passthrough.fragments import Frame
from gateway.core.passthrough.stream import ShortcutMismatch, Shortcuts
from gateway.core.sse import encode_event

__all__ = ["ChunkBytes", "ModelName", "same_chunks"]


class ModelName:
    """The answer's ``model`` as the client asked for it (the route's name, not the upstream's model).

    A chunk that goes out as the upstream's bytes gets the name replaced in them: the top-level ``"model"``
    member holds the only unescaped ``"model":`` of a chunk (a string cannot hold a raw quote), unless some
    nested object has one too, which is why the name is replaced only when it is the decoded chunk's.
    """

    __slots__ = ("_new", "_old", "_wanted")

    def __init__(self, model: str) -> None:
        self._wanted = model
        self._old: tuple[str, tuple[bytes, ...]] | None = None  # an upstream name and its spellings in bytes
        self._new = b'"model":' + orjson.dumps(model)

    def in_fields(self, chunk: dict[str, Any]) -> dict[str, Any]:
        if isinstance(chunk.get("model"), str):
            chunk["model"] = self._wanted
        return chunk

    def in_bytes(self, data: bytes, fields: Mapping[str, Any]) -> bytes:
        """``data`` (a chunk or a completion, whose decoded form is ``fields``) with the client's model name."""
        spelt = self._spellings(fields)
        if spelt is None:
            return data
        for old in spelt:
            if old in data:
                return data.replace(old, self._new, 1)
        return orjson.dumps(self.in_fields(dict(fields)))

    def in_frame(self, frame: Frame, fields: Mapping[str, Any]) -> Frame | None:
        """A fragment's frame with the client's model name; None when it cannot be found in the bytes."""
        spelt = self._spellings(fields)
        if spelt is None:
            return frame
        head, tail = frame
        for old in spelt:
            if old in head:
                return head.replace(old, self._new, 1), tail
        return None

    def _spellings(self, fields: Mapping[str, Any]) -> tuple[bytes, ...] | None:
        """How the upstream's name is written in its bytes, or None when there is nothing to rename."""
        upstream = fields.get("model")
        if not isinstance(upstream, str) or upstream == self._wanted:
            return None
        if self._old is None or self._old[0] != upstream:
            value = orjson.dumps(upstream)
            self._old = (upstream, (b'"model":' + value, b'"model": ' + value))
        return self._old[1]


class ChunkBytes:
    """A chat client's SSE event for a chunk, from the upstream's bytes where they can stand for it.

    ``model`` is the name the client asked for (None: the upstream's, as it came). Each method returns
    None where the bytes cannot be used (or ``shortcuts`` is ``OFF``): the caller then encodes the chunk.
    """

    __slots__ = ("taken", "_name")

    def __init__(self, model: str | None, shortcuts: Shortcuts = Shortcuts.ON) -> None:
        self.taken = shortcuts is not Shortcuts.OFF
        self._name = ModelName(model) if model is not None else None

    def in_fields(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """A decoded chunk (a fresh dict) with the client's model name: the general path."""
        return chunk if self._name is None else self._name.in_fields(chunk)

    def unchanged(self, start: ChunkStart) -> bytes:
        """The event of a chunk that goes out as it came."""
        if self.taken and start.raw is not None:
            raw = start.raw if self._name is None else self._name.in_bytes(start.raw, start.fields)
            return encode_event(raw)
        return encode_event(orjson.dumps(self.in_fields(dict(start.fields))))

    def framed(self, start: ChunkStart, delta: dict[str, Any]) -> bytes | None:
        """The event of a recognised fragment's chunk with ``delta`` in place of its own."""
        frame = start.frame
        if not self.taken or frame is None:
            return None
        if self._name is not None and (frame := self._name.in_frame(frame, start.fields)) is None:
            return None
        head, tail = frame
        return encode_event(head + orjson.dumps(delta) + tail)

    def quick(self, events: list[Event], *, drop_usage: bool) -> bytes | None:
        """The usual reads without building a chunk, else None: one the route left unchanged, and an
        argument fragment that shows some text or nothing."""
        if not self.taken or not 0 < len(events) <= 3 or type(start := events[0]) is not ChunkStart:
            return None
        size = len(events)
        if size == 1 and start.raw is not None and not drop_usage:
            return self.unchanged(start)
        if start.frame is not None and type(events[1]) is ChoiceStart:
            if size == 2:
                return b""
            if type(text := events[2]) is TextDelta and text.text:
                return self.framed(start, {"content": text.text})
        return None


def same_chunks(fast: bytes, general: bytes) -> None:
    """Raise ``ShortcutMismatch`` unless a client decodes the same events from both encodings."""
    if _decoded(fast) != _decoded(general):
        raise ShortcutMismatch(f"the chunk shortcuts sent {fast!r} where the general path sends {general!r}")


def _decoded(data: bytes) -> list[object]:
    said: list[object] = []
    for event in data.split(b"\n\n"):
        if event.startswith(b"data: {"):
            said.append(orjson.loads(event[6:]))
        elif event:
            said.append(event)
    return said
