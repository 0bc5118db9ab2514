"""The translator's side of the chat pass-through: chunks that need not be decoded, or not rewritten.

Two shortcuts stand in for ``StreamRewriter.feed`` of a decoded chunk:

- *fragments*: a chunk that only carries a tool call's next argument
  fragment is recognised by its bytes (``fragments.Fragments``) and goes to
  ``StreamRewriter.feed_fragment`` with its frame, undecoded;
- *relay*: on a route without a rewrite, to a client that reads unchanged
  chunks as their bytes (``StreamEncoder.raw_chunks``), a chunk's choices
  make no events: only its usage and each choice's finish are kept, which
  decide the stream's end.

``Shortcuts.CHECK`` feeds every chunk the general way too, to a second
rewriter, and raises ``ShortcutMismatch`` where the two disagree on anything a
client could see.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from enum import Enum
from typing import Any

import orjson

from gateway.core.events import ChoiceStart, ChunkStart, Event, ToolCallEnd, Usage
from gateway.core.passthrough.fragments import Fragments
from gateway.core.rewriter import Chunk, InvalidChunk, StreamRewriter, choice_index, finish_label
from gateway.core.usage import usage_of

__all__ = ["ChatPassThrough", "ShortcutMismatch", "Shortcuts"]


class Shortcuts(Enum):
    """Whether the chat wire's speed shortcuts are taken."""

    ON = "taken"
    OFF = "the general path only"
    CHECK = "taken, and compared with the general path"


class ShortcutMismatch(AssertionError):
    """A shortcut gave what the general path would not (raised only under ``Shortcuts.CHECK``)."""


class ChatPassThrough:
    """How one stream's chunks reach its rewriter: the general ``feed``, or a shortcut where one applies.

    ``recognised`` takes a chunk's bytes before they are decoded: the chunk's
    events when it is an argument fragment a learned template covers, else
    None, and the caller decodes it and calls ``feed``; ``recognising`` says
    whether a template is learned, so that a caller may skip asking. ``feed``
    is the rewriter's own once there is nothing to learn or check, to keep the
    usual chunk's path one call deep.
    """

    __slots__ = ("recognising", "feed", "_rewriter", "_fragments", "_relay", "_finished", "_general")

    def __init__(self, rewriter: StreamRewriter, *, raw_chunks: bool, shortcuts: Shortcuts = Shortcuts.ON) -> None:
        options = rewriter.options
        taken = shortcuts is not Shortcuts.OFF
        self._rewriter = rewriter
        self._fragments = Fragments() if taken and not options.passthrough else None
        self._relay = taken and raw_chunks and options.passthrough
        self._finished: dict[Hashable, bool] = {}  # each choice's finish, as the relay keeps it
        self._general = StreamRewriter(options) if shortcuts is Shortcuts.CHECK else None
        self.recognising = False
        self.feed: Callable[[Chunk, bytes], list[Event]] = self._feed
        if self._relay:
            self.feed = self._relayed
        elif self._fragments is None and self._general is None:
            self.feed = rewriter.feed

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has received its ``finish_reason``."""
        if not self._relay:
            return self._rewriter.finished
        return bool(self._finished) and all(self._finished.values())

    def recognised(self, payload: bytes) -> list[Event] | None:
        fragments = self._fragments
        if fragments is None or (matched := fragments.match(payload)) is None:
            return None
        arguments, chunk, frame = matched
        events = self._rewriter.feed_fragment(chunk, arguments, frame)
        if self._general is not None:
            _check_fragment(payload, events, self._general.feed(orjson.loads(payload), payload))
        return events

    def _feed(self, chunk: Chunk, payload: bytes) -> list[Event]:
        """The events of a decoded chunk, whose bytes are ``payload``; a template learned from it."""
        events = self._rewriter.feed(chunk, payload)
        if self._general is not None:
            self._general.feed(chunk, payload)  # the same call: it only keeps the second rewriter in step
        fragments = self._fragments
        if fragments is not None and fragments.learning and StreamRewriter.continues(chunk):
            fragments.learn(payload, chunk)
            self.recognising = fragments.learned
            if not fragments.learning and self._general is None:
                self.feed = self._rewriter.feed
        return events

    def finish(self) -> list[Event]:
        """Settle what the stream left open (``StreamRewriter.finish``)."""
        if not self._relay:
            events = self._rewriter.finish()
            if self._general is not None and _meaning(events) != _meaning(self._general.finish()):
                raise ShortcutMismatch("the stream's end settles differently after the shortcuts")
            return events
        if self._general is not None:
            unread = [e for e in self._general.finish() if type(e) not in (ChunkStart, ChoiceStart, ToolCallEnd)]
            if unread:
                raise ShortcutMismatch(f"the relay drops what the stream's end settles: {unread}")
        return []

    def _relayed(self, chunk: Chunk, payload: bytes) -> list[Event]:
        """The chunk as it came, but for a choice without a delta, which gets an empty one (Azure sends
        content-filter results so; stock clients read ``choice.delta``); and its usage."""
        events = self._relay_events(chunk, payload)
        if self._general is not None:
            _check_relayed(chunk, events, self._general.feed(chunk, payload))
            if self.finished != self._general.finished:
                raise ShortcutMismatch("the relay and the rewrite disagree on whether the stream is finished")
        return events

    def _relay_events(self, chunk: Chunk, payload: bytes) -> list[Event]:
        choices = chunk.get("choices")
        events: list[Event] = [ChunkStart(chunk, payload)]
        if isinstance(choices, list):
            whole = True
            for position, choice in enumerate(choices):
                if not isinstance(choice, dict):
                    raise InvalidChunk("a choice is not an object")
                index = choice_index(choice, position)
                if (reason := choice.get("finish_reason")) is not None:
                    self._finished[index] = True
                    self._rewriter.stats.finish_reasons.append(finish_label(reason))
                else:
                    self._finished.setdefault(index, False)
                whole = whole and isinstance(choice.get("delta"), dict)
            if not whole:
                deltas = [c if isinstance(c.get("delta"), dict) else {**c, "delta": {}} for c in choices]
                patched = {**chunk, "choices": deltas}
                events[0] = ChunkStart(patched, orjson.dumps(patched))
        if (usage := chunk.get("usage")) is not None and (counted := usage_of(usage)) is not None:
            events.append(Usage(counted))
        return events


def _meaning(events: list[Event]) -> list[object]:
    """What the events say, without the bytes that stand for their chunk, nor the delta a fragment's chunk
    was learned with (the events that follow it say what its delta is)."""
    said: list[object] = []
    for event in events:
        if type(event) is ChunkStart:
            said.append(("chunk", _without(event.fields, "choices")))
        elif type(event) is ChoiceStart:
            fields = None if event.fields is None else _without(event.fields, "delta")
            said.append(("choice", event.choice, fields, event.first))
        else:
            said.append(event)
    return said


def _without(fields: Mapping[str, Any], key: str) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name != key}


def _check_fragment(payload: bytes, fast: list[Event], general: list[Event]) -> None:
    if _meaning(fast) != _meaning(general):
        raise ShortcutMismatch(f"a recognised fragment rewrites as {fast}, decoded as {general}")
    start = fast[0]
    assert type(start) is ChunkStart and start.frame is not None
    head, tail = start.frame
    probe = {"content": '\u2028"\\'}
    decoded = orjson.loads(payload)
    expected = {**decoded, "choices": [{**decoded["choices"][0], "delta": probe}]}
    if orjson.loads(head + orjson.dumps(probe) + tail) != expected:
        raise ShortcutMismatch("a fragment's frame does not hold its chunk around a new delta")


def _check_relayed(chunk: Chunk, fast: list[Event], general: list[Event]) -> None:
    start = fast[0]
    assert type(start) is ChunkStart and start.raw is not None
    if orjson.loads(start.raw) != start.fields:
        raise ShortcutMismatch("a relayed chunk's bytes are not its fields")
    usages = [e for e in general if type(e) is Usage]
    if [e for e in fast if type(e) is Usage] != usages:
        raise ShortcutMismatch("the relay reports other usage than the rewrite")
    general_start = general[0]
    assert type(general_start) is ChunkStart
    if general_start.raw is not None:
        if start.raw != general_start.raw:
            raise ShortcutMismatch("the relay changed a chunk the rewrite leaves as it came")
        return
    choices = start.fields.get("choices")
    if not isinstance(choices, list) or _without(start.fields, "choices") != _without(chunk, "choices"):
        raise ShortcutMismatch("the relay changed more of a chunk than its choices' missing deltas")
    for sent, came in zip(choices, chunk["choices"], strict=True):
        delta = came["delta"] if isinstance(came.get("delta"), dict) else {}
        if _without(sent, "delta") != _without(came, "delta") or sent["delta"] != delta:
            raise ShortcutMismatch("the relay changed more of a choice than a missing delta")
