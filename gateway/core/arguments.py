"""An incremental, optimistic parser for streamed tool-call arguments.

Tool-call arguments reach the gateway as fragments of one JSON object, cut
anywhere: mid-key, mid-escape, between the halves of a surrogate pair. The
parser is a state machine fed one fragment at a time. It emits the decoded
text of chosen top-level string members as soon as each character is certain,
and can stream the object back out with one member removed.

Every input character is examined a bounded number of times: runs of ordinary
string characters are consumed in bulk by a compiled regex, and the only text
kept between calls is an incomplete escape (at most 11 characters), a key
being read, or a scalar token being read.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum
from typing import Final, NamedTuple

import orjson

__all__ = ["ArgumentsParser", "Captured", "Filtered", "Piece", "extract_strings", "strip_member"]


class Captured(NamedTuple):
    """Decoded text of the captured top-level string member ``key``."""

    key: str
    text: str


class Filtered(NamedTuple):
    """The next piece of the object with the dropped member removed (see ``ArgumentsParser(drop=...)``)."""

    text: str


Piece = Captured | Filtered

# Internally, runs of output are keyed by the captured member, or by this for the filtered object.
_FILTERED: Final = ""


class _State(Enum):
    """Where the parser is in the top-level object."""

    BEFORE = "before the object"
    KEY_OR_END = "a key or the end"
    KEY_START = "a key"
    COLON = "a colon"
    VALUE = "a value"
    AFTER_VALUE = "a comma or the end"
    STRING = "inside a string"
    NESTED = "inside a nested value"
    SCALAR = "inside a number or literal"
    DONE = "after the object"
    ERROR = "after an error"


class _StringKind(Enum):
    """What a string being read is."""

    KEY = "an object key"
    VALUE = "a top-level value"
    NESTED = "a string inside a nested value"


# Module-level names for the hot loop: an identity test against a global is the cheapest comparison.
_BEFORE, _KEY_OR_END, _KEY_START, _COLON, _VALUE, _AFTER_VALUE = (
    _State.BEFORE,
    _State.KEY_OR_END,
    _State.KEY_START,
    _State.COLON,
    _State.VALUE,
    _State.AFTER_VALUE,
)
_STRING, _NESTED, _SCALAR, _DONE, _ERROR = _State.STRING, _State.NESTED, _State.SCALAR, _State.DONE, _State.ERROR
_IS_KEY, _IS_VALUE, _IS_NESTED = _StringKind.KEY, _StringKind.VALUE, _StringKind.NESTED

_WHITESPACE: Final = " \t\n\r"
_STRING_SPECIAL: Final = re.compile(r'["\\]')
_NESTED_SPECIAL: Final = re.compile(r'["{}\[\]]')
# Outside strings, a nested value holds nothing but these: separators, numbers, true, false, null.
_NESTED_STRAY: Final = re.compile(r"[^ \t\n\r,:0-9.eE+\-truefalsn]")
_SCALAR_RUN: Final = re.compile(r'[^ \t\n\r,}\]"{\[:]*')
_SCALAR_VALID: Final = re.compile(r"true|false|null|-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_SCALAR_START: Final = frozenset("-0123456789tfn")
_HEX4: Final = re.compile(r"[0-9a-fA-F]{4}")
_HEX_PREFIX: Final = re.compile(r"[0-9a-fA-F]{0,3}")
# What may still become a low surrogate escape (\uDC00-\uDFFF) once more arrives.
_LOW_SURROGATE_PREFIX: Final = re.compile(r"(?:\\(?:u(?:[dD](?:[c-fC-F][0-9a-fA-F]{0,2})?)?)?)?")
_SIMPLE_ESCAPES: Final = {
    '"': '"',
    "\\": "\\",
    "/": "/",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
}
_CLOSERS: Final = {"{": "}", "[": "]"}
_STRIP_WHITESPACE: Final = str.maketrans("", "", _WHITESPACE)


class _Invalid(Exception):
    """Raised inside the parser at the first character that cannot be JSON."""


class ArgumentsParser:
    """Streams the members of one JSON object, fed in arbitrary fragments.

    ``capture`` names the top-level keys whose string values are emitted,
    decoded, as ``Captured(key, text)``. With ``drop``, the parser also emits
    the object itself as ``Filtered`` pieces with that member removed, compact
    at the top level, and the dropped member's string value as
    ``Captured(drop, text)``. The first occurrence of a key wins; later ones are not captured.

    Invalid input never raises: emission stops and ``error`` says why.
    """

    __slots__ = (
        "capture",
        "drop",
        "error",
        "_state",
        "_pending",
        "_seen",
        "_key_parts",
        "_string_kind",
        "_string_event",
        "_keep",
        "_kept_members",
        "_stack",
        "_scalar",
    )

    def __init__(self, capture: Iterable[str] = ("message", "inner_thoughts"), drop: str | None = None) -> None:
        keys = set(capture)
        if drop is not None:
            keys.add(drop)
        if _FILTERED in keys:
            raise ValueError("a captured key must not be empty")
        self.capture: frozenset[str] = frozenset(keys)
        self.drop = drop
        self.error: str | None = None
        self._state: _State = _BEFORE
        self._pending = ""
        self._seen: set[str] = set()
        self._key_parts: list[str] = []
        self._string_kind: _StringKind = _IS_KEY
        self._string_event: str | None = None
        # Whether the member being read goes to the filtered output.
        self._keep = False
        self._kept_members = 0
        self._stack: list[str] = []
        self._scalar: list[str] = []

    def feed(self, fragment: str) -> list[Piece]:
        """Consume the next fragment and return what became certain."""
        if self._state is _ERROR or not fragment:
            return []
        data = self._pending + fragment if self._pending else fragment
        self._pending = ""
        out: list[tuple[str, list[str]]] = []
        try:
            self._run(data, out)
        except _Invalid as exc:
            self.error = str(exc)
            self._state = _ERROR
        return [Filtered("".join(parts)) if key is _FILTERED else Captured(key, "".join(parts)) for key, parts in out]

    def close(self) -> None:
        """Mark the end of input; a document cut short is reported, not raised."""
        if self._state is not _DONE and self._state is not _ERROR:
            self.error = "truncated: the arguments ended before the object was closed"

    # The state machine. Each branch consumes from ``pos`` and either advances
    # the state or leaves an incomplete escape in ``_pending`` and returns.

    def _run(self, data: str, out: list[tuple[str, list[str]]]) -> None:
        pos = 0
        end = len(data)
        filtering = self.drop is not None
        while pos < end:
            state = self._state
            if state is _STRING:
                pos = self._read_string(data, pos, out)
                if pos < 0:
                    return
                continue
            if state is _NESTED:
                pos = self._read_nested(data, pos, out)
                continue
            if state is _SCALAR:
                run = _SCALAR_RUN.match(data, pos)  # a "*" pattern: it always matches, maybe empty
                stop = run.end() if run is not None else pos
                if stop > pos:
                    self._scalar.append(data[pos:stop])
                    if self._keep:
                        _emit(out, _FILTERED, data[pos:stop])
                if stop < end:
                    token = "".join(self._scalar)
                    if not _SCALAR_VALID.fullmatch(token):
                        raise _Invalid(f"invalid value {token[:20]!r}")
                    self._scalar.clear()
                    self._state = _AFTER_VALUE
                pos = stop
                continue

            char = data[pos]
            if char in _WHITESPACE:
                pos += 1
                continue
            pos += 1
            if state is _BEFORE:
                if char != "{":
                    raise _Invalid("the arguments are not a JSON object")
                if filtering:
                    _emit(out, _FILTERED, "{")
                self._state = _KEY_OR_END
            elif state is _KEY_OR_END or state is _KEY_START:
                if char == '"':
                    self._start_string(_IS_KEY, None)
                elif char == "}" and state is _KEY_OR_END:
                    self._close_object(out, filtering)
                else:
                    raise _Invalid(f"expected a key, found {char!r}")
            elif state is _COLON:
                if char != ":":
                    raise _Invalid(f"expected ':', found {char!r}")
                self._state = _VALUE
            elif state is _VALUE:
                self._start_value(char, out)
            elif state is _AFTER_VALUE:
                if char == ",":
                    self._state = _KEY_START
                elif char == "}":
                    self._close_object(out, filtering)
                else:
                    raise _Invalid(f"expected ',' or '}}', found {char!r}")
            elif state is _DONE:
                raise _Invalid("unexpected text after the object")

    def _close_object(self, out: list[tuple[str, list[str]]], filtering: bool) -> None:
        if filtering:
            _emit(out, _FILTERED, "}")
        self._state = _DONE

    def _start_string(self, kind: _StringKind, event: str | None) -> None:
        self._string_kind = kind
        self._string_event = event
        self._state = _STRING

    def _start_value(self, char: str, out: list[tuple[str, list[str]]]) -> None:
        if char == '"':
            if self._keep:
                _emit(out, _FILTERED, '"')
            self._start_string(_IS_VALUE, self._string_event)
        elif char in _CLOSERS:
            if self._keep:
                _emit(out, _FILTERED, char)
            self._stack.append(_CLOSERS[char])
            self._state = _NESTED
        elif char in _SCALAR_START:
            if self._keep:
                _emit(out, _FILTERED, char)
            self._scalar.append(char)
            self._state = _SCALAR
        else:
            raise _Invalid(f"expected a value, found {char!r}")

    def _end_key(self, out: list[tuple[str, list[str]]]) -> None:
        """Decide what happens to the member whose key was just read."""
        key = "".join(self._key_parts)
        self._key_parts.clear()
        event = None
        if key in self.capture and key not in self._seen:
            self._seen.add(key)
            event = key
        self._string_event = event
        self._keep = self.drop is not None and key != self.drop
        if self._keep:
            separator = "," if self._kept_members else ""
            self._kept_members += 1
            _emit(out, _FILTERED, separator + orjson.dumps(key).decode() + ":")
        self._state = _COLON

    def _read_nested(self, data: str, pos: int, out: list[tuple[str, list[str]]]) -> int:
        """Skip (or pass through) a nested object or array up to its end.

        Its brackets must balance, its strings be valid and nothing else be stray
        characters; its grammar is not checked further (it is forwarded as it came).
        """
        stack = self._stack
        keep = self._keep
        while True:
            match = _NESTED_SPECIAL.search(data, pos)
            stop = len(data) if match is None else match.start()
            stray = _NESTED_STRAY.search(data, pos, stop)
            if stray is not None:
                raise _Invalid(f"unexpected {stray.group()!r} in a nested value")
            if keep and stop > pos:
                compact = data[pos:stop].translate(_STRIP_WHITESPACE)
                if compact:
                    _emit(out, _FILTERED, compact)
            if match is None:
                return stop
            char = data[stop]
            if keep:
                _emit(out, _FILTERED, char)
            pos = stop + 1
            if char == '"':
                self._start_string(_IS_NESTED, None)
                return pos
            if char in _CLOSERS:
                stack.append(_CLOSERS[char])
            elif not stack or stack.pop() != char:
                raise _Invalid(f"unbalanced {char!r}")
            elif not stack:
                self._state = _AFTER_VALUE
                return pos

    def _read_string(self, data: str, pos: int, out: list[tuple[str, list[str]]]) -> int:
        """Decode up to the closing quote, or up to what is certain.

        Returns the position after what was consumed, or -1 when the rest of
        ``data`` is an incomplete escape, kept in ``_pending``.
        """
        parts: list[str] = []
        end = len(data)
        closed = False
        while True:
            match = _STRING_SPECIAL.search(data, pos)
            if match is None:
                if pos < end:
                    parts.append(data[pos:])
                pos = end
                break
            i = match.start()
            if i > pos:
                parts.append(data[pos:i])
            if data[i] == '"':
                pos = i + 1
                closed = True
                break
            try:
                decoded, consumed = _decode_escape(data, i)
            except _Invalid:
                if parts:  # what precedes the bad escape was certain
                    self._deliver("".join(parts), out)
                raise
            if consumed == 0:
                self._pending = data[i:]
                pos = -1
                break
            parts.append(decoded)
            pos = i + consumed
        if parts:
            self._deliver("".join(parts), out)
        if closed:
            self._end_string(out)
        return pos

    def _deliver(self, text: str, out: list[tuple[str, list[str]]]) -> None:
        kind = self._string_kind
        if kind is _IS_KEY:
            self._key_parts.append(text)
            return
        if kind is _IS_VALUE and self._string_event is not None:
            _emit(out, self._string_event, text)
        if self._keep:
            _emit(out, _FILTERED, orjson.dumps(text).decode()[1:-1])

    def _end_string(self, out: list[tuple[str, list[str]]]) -> None:
        kind = self._string_kind
        if kind is _IS_KEY:
            self._end_key(out)
            return
        if self._keep:
            _emit(out, _FILTERED, '"')
        self._state = _AFTER_VALUE if kind is _IS_VALUE else _NESTED


def _emit(out: list[tuple[str, list[str]]], key: str, text: str) -> None:
    """Append text, merging runs for the same key so one feed yields few events."""
    if out and out[-1][0] == key:
        out[-1][1].append(text)
    else:
        out.append((key, [text]))


def _decode_escape(data: str, i: int) -> tuple[str, int]:
    """Decode the escape at ``data[i] == '\\'``: ``(text, characters consumed)``.

    Consumes nothing (returns 0) while the escape may still be incomplete, so
    the caller keeps it for the next fragment. A lone surrogate becomes U+FFFD.
    """
    if i + 1 >= len(data):
        return "", 0
    kind = data[i + 1]
    simple = _SIMPLE_ESCAPES.get(kind)
    if simple is not None:
        return simple, 2
    if kind != "u":
        raise _Invalid(f"invalid escape \\{kind}")
    digits = data[i + 2 : i + 6]
    if len(digits) < 4:
        if not _HEX_PREFIX.fullmatch(digits):
            raise _Invalid("invalid \\u escape")
        return "", 0
    if not _HEX4.fullmatch(digits):
        raise _Invalid("invalid \\u escape")
    code = int(digits, 16)
    if 0xDC00 <= code <= 0xDFFF:
        return "\ufffd", 6
    if not 0xD800 <= code <= 0xDBFF:
        return chr(code), 6
    follower = data[i + 6 : i + 12]
    if len(follower) == 6 and follower[:2] == "\\u" and _HEX4.fullmatch(follower, 2):
        low = int(follower[2:], 16)
        if 0xDC00 <= low <= 0xDFFF:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
    elif len(follower) < 6 and _LOW_SURROGATE_PREFIX.fullmatch(follower):
        return "", 0
    return "\ufffd", 6


def extract_strings(document: str, keys: Iterable[str]) -> dict[str, str]:
    """Optimistically decode chosen top-level string members of a whole (maybe truncated) document."""
    parser = ArgumentsParser(capture=keys)
    found: dict[str, list[str]] = {}
    for piece in parser.feed(document):
        if type(piece) is Captured:
            found.setdefault(piece.key, []).append(piece.text)
    return {key: "".join(parts) for key, parts in found.items()}


def strip_member(document: str, key: str) -> tuple[str, str | None, str | None]:
    """Remove one top-level member from a whole document.

    Returns ``(filtered object text, the member's string value or None, parse error or None)``.
    """
    parser = ArgumentsParser(capture=(), drop=key)
    filtered: list[str] = []
    removed: list[str] = []
    for piece in parser.feed(document):
        (removed if type(piece) is Captured else filtered).append(piece.text)
    parser.close()
    return "".join(filtered), ("".join(removed) if removed else None), parser.error
