"""Separates the reasoning a model writes inside its visible text, between think tags, from the answer.

Open reasoning models served without a reasoning parser (DeepSeek-R1 and its distills, QwQ, Qwen3,
GLM, MiniMax, Kimi) write their reasoning into the content itself: ``<think>…</think>`` before the
answer, ``◁think▷…◁/think▷`` for Kimi, or only the closing tag when the chat template opened the block
in the prompt. ``ThinkFilter`` is fed one choice's visible text in pieces cut anywhere and returns it
as ``Visible`` text and ``Thought`` text, tags removed.

Where a tag counts, so that a model writing about ``<think>`` in the middle of its answer is not cut:

- An opening tag counts at the start of a segment (the start of the text, or after ``restart()``),
  after at most ``LEADING_WHITESPACE`` whitespace characters, and right after the closing tag of a
  previous block, after any amount of whitespace. Anywhere else it is ordinary text.
- Inside a block only the closing tag of the block's own pair counts; with ``start_inside`` the
  first block, opened by the template, is closed by the closing tag of any pair. Outside a block a
  closing tag is ordinary text.
- A block still open when a segment ends stays open into the next one. When the text ends, a tag
  cut short is text: visible outside a block, thought inside one.

Whitespace (``WHITESPACE``: space, tab, line feed, carriage return):

- before an opening tag at the start of a segment it is dropped with the tag; when no block opens
  there it is visible text, held back until the first other character decides;
- after a closing tag, up to the next block or the first visible character, it is dropped;
- inside a block it belongs to the thought, as written.

What is held back between calls (``held``) is only what may still become a tag: a proper prefix of a
tag the current state looks for (at most the longest tag's length minus one characters), after the
leading whitespace of a segment (at most ``LEADING_WHITESPACE`` characters). Once a segment's answer
has begun, text passes straight through, unexamined, until the next segment.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final

__all__ = [
    "DEFAULT_TAGS",
    "LEADING_WHITESPACE",
    "WHITESPACE",
    "Piece",
    "ThinkFilter",
    "ThinkState",
    "Thought",
    "Visible",
]

DEFAULT_TAGS: Final = (("<think>", "</think>"),)
WHITESPACE: Final = " \t\n\r"
LEADING_WHITESPACE: Final = 64
"""Whitespace characters a segment may begin with before its opening tag; beyond them, the segment is answer."""

_SPACE_RUN: Final = re.compile(r"[ \t\n\r]*")


@dataclass(slots=True)
class Visible:
    """Text the client may see."""

    text: str


@dataclass(slots=True)
class Thought:
    """Reasoning found inside a think block, tags removed."""

    text: str


Piece = Visible | Thought
"""Pieces are values, never changed once made.

Not frozen: a frozen dataclass costs three times as much to make.
"""


class ThinkState(Enum):
    """Where the filter is in the text."""

    START = "start"  # a segment's beginning: its leading whitespace is held, a block may open
    INSIDE = "inside"  # in a think block, until its closing tag
    AFTER = "after"  # right after a block: whitespace is dropped, another block may open
    ANSWER = "answer"  # the answer: tags are ordinary text until the next segment
    CLOSED = "closed"  # close() was called


_START: Final = ThinkState.START
_INSIDE: Final = ThinkState.INSIDE
_AFTER: Final = ThinkState.AFTER
_ANSWER: Final = ThinkState.ANSWER
_CLOSED: Final = ThinkState.CLOSED


class _Closers:
    """The closing tags that end the current block, with what finding them quickly needs."""

    __slots__ = ("any", "firsts", "longest", "partial", "single", "tags")

    def __init__(self, tags: tuple[str, ...]) -> None:
        self.tags = tags
        self.firsts = tuple(dict.fromkeys(tag[0] for tag in tags))
        self.longest = max(map(len, tags))
        self.single = tags[0] if len(tags) == 1 else None
        self.any = re.compile("|".join(map(re.escape, tags)))
        self.partial = _partial_pattern(tags)

    def find(self, data: str, pos: int) -> tuple[int, int]:
        """Start and end of the first closing tag at or after ``pos``, or ``(-1, -1)``."""
        if self.single is not None:
            start = data.find(self.single, pos)
            return (start, start + len(self.single)) if start >= 0 else (-1, -1)
        match = self.any.search(data, pos)
        return match.span() if match is not None else (-1, -1)


def _partial_pattern(tags: Sequence[str]) -> re.Pattern[str] | None:
    """Matches, anchored at the end of the text, a non-empty proper prefix of one of ``tags``.

    Searched from the first position that could start one, its leftmost match is the longest such end.
    """
    options = []
    for tag in tags:
        if len(tag) < 2:
            continue
        nested = ""
        for char in reversed(tag[1:-1]):
            nested = f"(?:{re.escape(char)}{nested})?"
        options.append(re.escape(tag[0]) + nested)
    return re.compile(f"(?:{'|'.join(options)})\\Z") if options else None


class _Table:
    """What recognising one set of tag pairs needs, built once per set."""

    __slots__ = ("any_closer", "closers_of", "longest_opener", "openers")

    def __init__(self, pairs: tuple[tuple[str, str], ...]) -> None:
        if not pairs:
            raise ValueError("at least one pair of think tags is needed")
        for opener, closer in pairs:
            if not opener or not closer or opener[0] in WHITESPACE or closer[0] in WHITESPACE:
                raise ValueError(f"a think tag is empty or begins with whitespace: {opener!r}, {closer!r}")
        for side in (0, 1):
            names = [pair[side] for pair in pairs]
            for a in names:
                if any(b != a and b.startswith(a) for b in names):
                    raise ValueError(f"the think tag {a!r} is the beginning of another, which makes it ambiguous")
        self.openers = tuple(dict.fromkeys(opener for opener, _ in pairs))
        self.longest_opener = max(map(len, self.openers))
        # An opening tag shared by several pairs is closed by any of their closing tags.
        by_opener: dict[str, list[str]] = {}
        for opener, closer in pairs:
            by_opener.setdefault(opener, []).append(closer)
        self.closers_of = {opener: _Closers(tuple(dict.fromkeys(c))) for opener, c in by_opener.items()}
        # A block the template opened is closed by any pair's closing tag.
        self.any_closer = _Closers(tuple(dict.fromkeys(closer for _, closer in pairs)))


@functools.lru_cache(maxsize=64)
def _table(pairs: tuple[tuple[str, str], ...]) -> _Table:
    """The tables of a tag set, shared by every filter of a route instead of rebuilt per stream."""
    return _Table(pairs)


def _add(out: list[Piece], kind: type[Visible | Thought], text: str) -> None:
    """Appends ``text`` as a piece of ``kind``, merged into the last piece when that is of the same kind."""
    if not text:
        return
    if out and type(out[-1]) is kind:
        out[-1] = kind(out[-1].text + text)
    else:
        out.append(kind(text))


class ThinkFilter:
    """Splits one choice's visible text, fed in pieces cut anywhere, into the answer and the reasoning.

    ``tags`` are the (opening, closing) pairs; ``start_inside`` says the text begins inside a block that
    the chat template opened, so everything before the first closing tag is reasoning. Each call returns
    what became certain, adjacent pieces of one kind merged; linear in the text, with no re-scan beyond
    the few characters held back.
    """

    __slots__ = ("_closers", "_closers_of", "_longest_opener", "_openers", "_prefix", "_space", "_state")

    def __init__(self, tags: Sequence[tuple[str, str]] = DEFAULT_TAGS, *, start_inside: bool = False) -> None:
        table = _table(tuple((opener, closer) for opener, closer in tags))
        self._openers = table.openers
        self._closers_of = table.closers_of
        self._longest_opener = table.longest_opener
        # The closing tags that end the current block; only read inside one.
        self._closers = table.any_closer
        self._state = _INSIDE if start_inside else _START
        self._space = ""  # the held leading whitespace of a segment
        self._prefix = ""  # the held text that may still become a tag

    @property
    def state(self) -> ThinkState:
        """Where the filter is: at a segment's start, in a block, after one, in the answer, or closed."""
        return self._state

    @property
    def held(self) -> str:
        """The text held back because it may still become a tag (or precede one)."""
        return self._space + self._prefix

    def feed(self, text: str) -> list[Piece]:
        """Consumes the next piece of the text and returns what became certain."""
        state = self._state
        if state is _ANSWER:
            return [Visible(text)] if text else []
        if state is _CLOSED:
            raise ValueError("the think filter was fed after close()")
        out: list[Piece] = []
        if not text:
            return out
        if state is _INSIDE and not self._prefix:
            # Reasoning with no character that begins a closing tag: all of it is thought, nothing to look at.
            for first in self._closers.firsts:
                if first in text:
                    break
            else:
                return [Thought(text)]
        data = self._prefix + text if self._prefix else text
        self._prefix = ""
        pos = 0
        end = len(data)
        while pos < end:
            state = self._state
            if state is _INSIDE:
                pos = self._inside(data, pos, out)
            elif state is _ANSWER:
                _add(out, Visible, data[pos:])
                pos = end
            else:
                pos = self._opening(data, pos, out)
        return out

    def restart(self) -> list[Piece]:
        """A new segment of visible text begins (after a tool call, say): a block may open at its start.

        Returns what the end of the old segment releases. A block still open stays open: what follows
        is reasoning until its closing tag, so that an unclosed block never leaks into the next segment.
        """
        if self._state is _CLOSED:
            raise ValueError("the think filter was restarted after close()")
        out = self._release()
        if self._state is not _INSIDE:
            self._state = _START
        return out

    def close(self) -> list[Piece]:
        """Marks the end of the text and releases what was held back.

        A tag cut short is text: visible outside a block, a thought inside one. Calling it again returns nothing.
        """
        if self._state is _CLOSED:
            return []
        out = self._release()
        self._state = _CLOSED
        return out

    def _release(self) -> list[Piece]:
        out: list[Piece] = []
        _add(out, Thought if self._state is _INSIDE else Visible, self._space + self._prefix)
        self._space = self._prefix = ""
        return out

    def _inside(self, data: str, pos: int, out: list[Piece]) -> int:
        """Reads reasoning from ``pos`` up to the closing tag, or holds a possible tag at the end."""
        closers = self._closers
        start, stop = closers.find(data, pos)
        if start >= 0:
            _add(out, Thought, data[pos:start])
            self._state = _AFTER
            return stop
        end = len(data)
        if closers.partial is not None:
            match = closers.partial.search(data, max(pos, end - closers.longest + 1))
            if match is not None:
                self._prefix = data[match.start() :]
                end = match.start()
        _add(out, Thought, data[pos:end])
        return len(data)

    def _opening(self, data: str, pos: int, out: list[Piece]) -> int:
        """At a segment's start or after a block: skips whitespace, then opens a block or begins the answer."""
        end = len(data)
        skipped = _SPACE_RUN.match(data, pos)
        stop = skipped.end() if skipped is not None else pos
        if stop > pos:
            if self._state is _START:
                self._space += data[pos:stop]
                if len(self._space) > LEADING_WHITESPACE:
                    return self._answer(out, stop)
            pos = stop
            if pos == end:
                return end
        for opener in self._openers:
            if data.startswith(opener, pos):
                self._space = ""
                self._state = _INSIDE
                self._closers = self._closers_of[opener]
                return pos + len(opener)
        if end - pos < self._longest_opener:
            rest = data[pos:]
            if any(opener.startswith(rest) for opener in self._openers):
                self._prefix = rest
                return end
        return self._answer(out, pos)

    def _answer(self, out: list[Piece], resume: int) -> int:
        """The segment's answer begins: its held leading whitespace is visible after all."""
        _add(out, Visible, self._space)
        self._space = ""
        self._state = _ANSWER
        return resume
