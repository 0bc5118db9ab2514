"""The translated doors' side of the pass-through: a delta that only grows the open item, as bytes from a template.

Most of an answer reaches a Responses or Messages client as one event per
upstream chunk: the next piece of the open item's text (or exposed
reasoning), an ``output_text.delta`` or a ``content_block_delta``. Feeding
that chunk's events to the answer, building the event as an object and
encoding it costs more than the rest of the chunk's way, and the event's bytes
differ from the last one's only in the delta and, on the Responses door, the
sequence number. ``ItemBytes`` keeps each item's delta event as a template,
made once by the door's own general path with markers where the delta and the
number go, and fills it in. A chunk that shows nothing (an agent's hidden inner
thoughts) is only read by the answer. Under ``Shortcuts.CHECK`` every filled
template, and every silence, is compared with what the general path sends for
the same events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Final, NamedTuple, Protocol

import orjson

from gateway.core.answer import Answer, Item, ItemKind
from gateway.core.events import ChoiceStart, ChunkStart, Event, ReasoningDelta, TextDelta
from gateway.core.passthrough.stream import ShortcutMismatch, Shortcuts
from gateway.core.sse import line_safe

__all__ = ["DeltaEvent", "ItemBytes", "Numbering"]

# What the door's general path is given in place of a delta and a sequence number, to find where they go.
_TEXT: Final = "\x00gateway:delta\x00"
_NUMBER: Final = "\x00gateway:number\x00"
_TEXT_JSON: Final = orjson.dumps(_TEXT)
_NUMBER_JSON: Final = orjson.dumps(_NUMBER)

DeltaEvent = Callable[[Item, str, int | str], bytes]
"""A door's general path for one delta event: the item, its text and the event's sequence number, as bytes."""


class Numbering(Protocol):
    """A door that numbers its events (the Responses API's ``sequence_number``): the next event's number."""

    sequence: int


class _Template(NamedTuple):
    """An item's delta event around its holes: ``head``, the number (when ``middle`` is not None), the text."""

    head: bytes
    middle: bytes | None
    tail: bytes

    @classmethod
    def of(cls, sample: bytes, *, numbered: bool) -> _Template | None:
        """The template of an event made with the markers, None unless each is found where one value goes (the
        number only in a ``numbered`` door's event, before the text)."""
        head, found, tail = sample.partition(_TEXT_JSON)
        if not found or _TEXT_JSON in tail or _NUMBER_JSON in tail:
            return None
        before, found, middle = head.partition(_NUMBER_JSON)
        if not found:
            return cls(head, None, tail) if not numbered else None
        return cls(before, middle, tail) if numbered and _NUMBER_JSON not in middle else None


class ItemBytes:
    """A door's events for a chunk, by a template where the chunk only grows the open item, else ``general``.

    ``event`` is the door's general path for one delta event, from which the
    templates are made; ``numbering`` the door whose events are numbered, if
    they are; ``general`` encodes any events the door's usual way. The door
    sends every read's events to ``encode``: only a chunk that grows an open item
    is made from a template, and an item is open only once the door's stream has
    started, until it ends.
    """

    __slots__ = ("_answer", "_event", "_general", "_numbering", "_templates", "_taken", "_check", "_started")

    def __init__(
        self,
        answer: Answer,
        event: DeltaEvent,
        general: Callable[[Iterable[Event]], bytes],
        numbering: Numbering | None = None,
        shortcuts: Shortcuts = Shortcuts.ON,
    ) -> None:
        self._answer = answer
        self._event = event
        self._general = general
        self._numbering = numbering
        self._templates: dict[Item, _Template | None] = {}
        self._taken = shortcuts is not Shortcuts.OFF
        self._check = shortcuts is Shortcuts.CHECK
        self._started = False  # whether the door's general path has encoded anything: its stream has begun

    def encode(self, events: Iterable[Event]) -> bytes:
        """The events of one upstream read: each chunk's in turn (the door encodes events one after another, so
        a read's events may be encoded a chunk at a time)."""
        if not self._taken or type(events) is not list:
            return self._general(events)
        if len(events) < 6:  # less than two chunks
            return self._chunk(events)
        out: list[bytes] = []
        start = 0
        for end in range(1, len(events)):
            if type(events[end]) is ChunkStart:
                out.append(self._chunk(events[start:end]))
                start = end
        out.append(self._chunk(events[start:]))
        return b"".join(out)

    def _chunk(self, events: list[Event]) -> bytes:
        # A hot path: the usual chunk's three events (``ChunkStart``, ``ChoiceStart``, a text or reasoning delta)
        # told by their types, and one question to the answer: whether the delta only grows its open item.
        size = len(events)
        if size != 3:
            if self._started and (size == 0 or (size == 2 and type(events[0]) is ChunkStart)):
                choice = events[1] if size else None
                if choice is None or type(choice) is ChoiceStart:
                    return self._quiet(events, choice)
            return self._general_path(events)
        start, choice, delta = events
        if type(delta) is TextDelta:
            kind = ItemKind.TEXT
        elif type(delta) is ReasoningDelta:
            kind = ItemKind.REASONING
        else:
            return self._general_path(events)
        if type(start) is not ChunkStart or type(choice) is not ChoiceStart:
            return self._general_path(events)
        text = delta.text
        item = self._answer.growing(kind, choice.choice, text) if choice.choice == delta.choice else None
        if item is None:
            return self._general_path(events)
        try:
            template = self._templates[item]
        except KeyError:
            template = self._templates[item] = self._template(item)
        if template is None:
            return self._general_path(events)
        data = line_safe(orjson.dumps(text))
        numbering = self._numbering
        if numbering is None:
            filled = template.head + data + template.tail
        else:
            filled = b"".join((template.head, b"%d" % numbering.sequence, template.middle or b"", data, template.tail))
        if self._check:
            said = self._general_path(events)
            if said != filled:
                raise ShortcutMismatch(f"the item template sent {filled!r} where the general path sends {said!r}")
            return said
        self._answer.grow(item, text, choice.fields)
        if numbering is not None:
            numbering.sequence += 1
        return filled

    def _quiet(self, events: list[Event], choice: ChoiceStart | None) -> bytes:
        """A chunk that shows nothing (an agent's hidden inner thoughts), or a read that ends no chunk, once the
        stream has started: the answer reads the choice, the client gets no event."""
        if self._check:
            said = self._general_path(events)
            if said:
                raise ShortcutMismatch(f"a chunk that shows nothing sent {said!r} on the general path")
            return said
        if choice is not None:
            self._answer.chose(choice.choice, choice.fields)
        return b""

    def _general_path(self, events: list[Event]) -> bytes:
        """The door's own encoding; once it has run, the door's stream has begun (its first events went out)."""
        self._started = True
        return self._general(events)

    def _template(self, item: Item) -> _Template | None:
        return _Template.of(self._event(item, _TEXT, _NUMBER), numbered=self._numbering is not None)
