"""The answer as items: what the translated front doors build from the neutral events, and only serialise.

A chat client reads an answer as chunks, but the Responses and Messages APIs
read it as a list of items (output items, content blocks) that start, grow and
end: visible text, exposed reasoning, the client's own tool calls. ``Answer``
turns one answer's neutral events into those item events, with every rule the
two doors share, written once:

- the answered choice is the first one seen (a translated request asks for one);
- text and reasoning continue the item of their kind that is open, else start a
  new one, ending the one before;
- a tool call is not started until its arguments say more than ``{``, so the
  reasoning an agent-style model puts first (its inner thoughts, exposed) comes
  out before the call, as a real model's would; a call still waiting is started
  when another item starts;
- a call whose arguments are not yet a whole JSON value stays open when another
  call or text starts (an upstream that interleaves parallel calls), and its
  later pieces go on to it; a call whose arguments are whole is done;
- reasoning that arrives while a call is open (inner thoughts written after the
  other arguments) is held, and becomes a reasoning item as soon as the call is
  done, so no item's pieces arrive inside another's;
- a signature ends the reasoning item it signs, and a redacted block is an item
  of its own, so that each goes back to the provider as the block it was;
- the answer ends in exactly one ``AnswerDone`` (its finish reason, the
  upstream's choice object, its usage) or ``AnswerFailed``, every item done first.

Pure and synchronous, like the rest of the core; each door's encoder maps these
events to its wire shape, and builds its whole answer from ``items``.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import orjson

from gateway.core.errors import GatewayError
from gateway.core.events import (
    ChoiceStart,
    Done,
    Error,
    Event,
    Finish,
    FinishReason,
    ReasoningDelta,
    ReasoningRedacted,
    ReasoningSigned,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from gateway.core.usage import TokenUsage

__all__ = [
    "Answer",
    "AnswerDone",
    "AnswerEvent",
    "AnswerFailed",
    "Item",
    "ItemDelta",
    "ItemDone",
    "ItemKind",
    "ItemStarted",
]

logger = logging.getLogger("gateway.answers")


class ItemKind(Enum):
    TEXT = "text"
    REASONING = "reasoning"
    TOOL_CALL = "tool call"


class _Stage(Enum):
    PENDING = "not started"  # a tool call whose arguments have said no more than "{"
    OPEN = "started"
    DONE = "done"


@dataclass(slots=True, eq=False)
class Item:
    """One item of the answer; ``index`` is its place among the started ones (-1 until it starts).

    ``call_id`` and ``name`` are a tool call's. ``text`` is its text, reasoning or arguments so far.
    ``signature`` is a reasoning block's, once it is signed (the signature ends it); ``redacted`` the whole of
    a block the provider sent only encrypted.
    """

    kind: ItemKind
    call_id: str = ""
    name: str = ""
    index: int = -1
    pieces: list[str] = field(default_factory=list)
    stage: _Stage = _Stage.PENDING
    signature: str | None = None
    redacted: str | None = None

    @property
    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces[:] = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    @property
    def done(self) -> bool:
        return self.stage is _Stage.DONE


@dataclass(slots=True)
class ItemStarted:
    item: Item


@dataclass(slots=True)
class ItemDelta:
    item: Item
    text: str


@dataclass(slots=True)
class ItemDone:
    item: Item


@dataclass(slots=True)
class AnswerDone:
    """The answer is whole. ``finish`` is the chat finish reason the client is told, ``choice`` the upstream's
    choice object it came with (some name the stop sequence that matched)."""

    finish: FinishReason | None
    choice: Mapping[str, Any] | None
    usage: TokenUsage | None


@dataclass(slots=True)
class AnswerFailed:
    error: GatewayError
    usage: TokenUsage | None


AnswerEvent = ItemStarted | ItemDelta | ItemDone | AnswerDone | AnswerFailed


class Answer:
    """One answer being built: ``feed`` neutral events (in order, ``Done`` or ``Error`` last), get item events."""

    def __init__(self) -> None:
        self.items: list[Item] = []  # started, in order
        self.usage: TokenUsage | None = None
        self.ended = False
        self._choice: Hashable | None = None
        self._choice_fields: Mapping[str, Any] | None = None
        self._finish: FinishReason | None = None
        self._finish_fields: Mapping[str, Any] | None = None
        self._current: Item | None = None  # the item the last text went to
        self._calls: dict[int, Item] = {}
        self._held: list[str] = []  # reasoning that came while a call was open

    @property
    def finish(self) -> FinishReason | None:
        """The finish reason, once the answered choice has one (its items are being closed then)."""
        return self._finish

    def feed(self, events: Iterable[Event]) -> list[AnswerEvent]:
        out: list[AnswerEvent] = []
        for event in events:
            if self.ended:
                break
            self._event(event, out)
        return out

    def _event(self, event: Event, out: list[AnswerEvent]) -> None:
        kind = type(event)
        if kind is Usage:
            assert isinstance(event, Usage)
            self.usage = event.usage
            return
        if kind is Done:
            self._close_all(out)
            self.ended = True
            out.append(AnswerDone(self._finish, self._finish_fields, self.usage))
            return
        if kind is Error:
            assert isinstance(event, Error)
            self.ended = True
            out.append(AnswerFailed(event.error, self.usage))
            return
        if kind is ChoiceStart:
            assert isinstance(event, ChoiceStart)
            self.chose(event.choice, event.fields)
            return
        choice = getattr(event, "choice", None)
        if choice is None:
            return  # ChunkStart, Comment: nothing of the answer's items
        if self._choice is None:
            self._choice = choice
        elif choice != self._choice:
            return  # another choice: a translated request asks for one
        if kind is TextDelta or kind is ReasoningDelta:
            assert isinstance(event, TextDelta | ReasoningDelta)
            if event.text:
                self._text(ItemKind.TEXT if kind is TextDelta else ItemKind.REASONING, event.text, out)
        elif kind is ToolCallDelta:
            assert isinstance(event, ToolCallDelta)
            self._call_delta(event, out)
        elif kind is ToolCallStart:
            assert isinstance(event, ToolCallStart)
            call = self._calls[event.call] = Item(ItemKind.TOOL_CALL, event.id, event.name)
            self._switch(call, out)
        elif kind is ToolCallEnd:
            assert isinstance(event, ToolCallEnd)
            self._close(self._calls[event.call], out)
        elif kind is ReasoningSigned:
            assert isinstance(event, ReasoningSigned)
            self._sealed(Item(ItemKind.REASONING), event.signature, out)
        elif kind is ReasoningRedacted:
            assert isinstance(event, ReasoningRedacted)
            self._sealed(Item(ItemKind.REASONING, redacted=event.data), None, out)
        elif kind is Finish:
            assert isinstance(event, Finish)
            self._finish, self._finish_fields = event.reason, self._choice_fields
            self._close_all(out)

    def growing(self, kind: ItemKind, choice: Hashable, text: str) -> Item | None:
        """The open item that a delta of ``text`` of this kind and choice would only grow: feeding it would make
        one ``ItemDelta`` of that item and nothing else (``grow`` is the rest of what it would do). None where it
        would do more, or nothing. Changes nothing."""
        if self.ended or not text or choice != self._choice:
            return None
        return self._open(kind)

    def chose(self, choice: Hashable, fields: Mapping[str, Any] | None) -> None:
        """What feeding a chunk's ``ChunkStart`` and ``ChoiceStart`` (and nothing else) does: the answered choice
        is the first one seen, and its fields are kept."""
        if self.ended:
            return
        if self._choice is None:
            self._choice = choice
        elif choice != self._choice:
            return
        if fields is not None:
            self._choice_fields = fields

    def grow(self, item: Item, text: str, choice_fields: Mapping[str, Any] | None) -> None:
        """What feeding the delta ``growing`` answered for (after its chunk's ``ChoiceStart`` with these
        ``fields``) does besides its ``ItemDelta``."""
        item.pieces.append(text)
        if choice_fields is not None:
            self._choice_fields = choice_fields

    def _open(self, kind: ItemKind) -> Item | None:
        """The item the last text went to, if it is open and of this kind: more of that kind only grows it."""
        current = self._current
        return current if current is not None and current.kind is kind and current.stage is _Stage.OPEN else None

    def _text(self, kind: ItemKind, text: str, out: list[AnswerEvent]) -> None:
        if kind is ItemKind.REASONING and self._open(ItemKind.TOOL_CALL) is not None:
            self._held.append(text)
            return
        current = self._open(kind)
        if current is None:
            current = Item(kind)
            self._switch(current, out)
            self._start(current, out)
        current.pieces.append(text)
        out.append(ItemDelta(current, text))

    def _sealed(self, block: Item, signature: str | None, out: list[AnswerEvent]) -> None:
        """A reasoning block ends, signed (the open reasoning, or an empty block when there is none) or whole and
        encrypted (``block``): a client sends it back as it came, so nothing may be added to it."""
        if self._open(ItemKind.TOOL_CALL) is not None:
            # Reasoning inside a call is held, unsigned; the provider would refuse it back with this seal.
            logger.debug("answer: a reasoning block's seal inside a tool call was not sent")
            return
        if signature is not None and (open_reasoning := self._open(ItemKind.REASONING)) is not None:
            block = open_reasoning
        else:
            self._switch(block, out)
            self._start(block, out)
        block.signature = signature
        self._close(block, out)

    def _call_delta(self, event: ToolCallDelta, out: list[AnswerEvent]) -> None:
        call = self._calls[event.call]
        if event.name:
            call.name += event.name
        if not event.arguments:
            return
        if call.stage is _Stage.DONE:
            # Done because its arguments were a whole JSON value: what follows can only spoil them.
            logger.debug("answer: arguments after a call's complete JSON value were not sent")
            return
        call.pieces.append(event.arguments)
        if call.stage is _Stage.OPEN:
            self._switch(call, out)
            out.append(ItemDelta(call, event.arguments))
        elif call.text.strip() not in ("", "{"):
            self._switch(call, out)
            self._start(call, out)

    def _switch(self, item: Item, out: list[AnswerEvent]) -> None:
        """Text now goes to ``item``: the item before it is done (a call still waiting is started first), unless
        it is a call whose arguments are not yet a whole JSON value."""
        current = self._current
        if current is item:
            return
        if current is not None:
            if current.stage is _Stage.PENDING and item.kind is not ItemKind.REASONING:
                self._start(current, out)  # reasoning does not start a waiting call: it comes before it
            if current.stage is _Stage.OPEN and (current.kind is not ItemKind.TOOL_CALL or _whole_json(current.text)):
                self._close(current, out)
        self._current = item

    def _start(self, item: Item, out: list[AnswerEvent]) -> None:
        """Announce an item, with what a call held back while it waited."""
        item.stage = _Stage.OPEN
        item.index = len(self.items)
        self.items.append(item)
        out.append(ItemStarted(item))
        if item.kind is ItemKind.TOOL_CALL and item.pieces:
            out.append(ItemDelta(item, item.text))

    def _close(self, item: Item, out: list[AnswerEvent]) -> None:
        if item.stage is _Stage.DONE:
            return
        if item.stage is _Stage.PENDING:
            self._start(item, out)
        item.stage = _Stage.DONE
        if self._current is item:
            self._current = None
        out.append(ItemDone(item))
        if item.kind is ItemKind.TOOL_CALL and self._held:
            reasoning = Item(ItemKind.REASONING, pieces=["".join(self._held)])
            self._held.clear()
            self._start(reasoning, out)
            out.append(ItemDelta(reasoning, reasoning.text))
            self._close(reasoning, out)

    def _close_all(self, out: list[AnswerEvent]) -> None:
        for item in [*self.items, *self._calls.values()]:
            self._close(item, out)
        self._current = None


def _whole_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True
