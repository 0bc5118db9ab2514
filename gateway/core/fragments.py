"""Recognising, by their bytes, the chunks that only carry a tool call's next argument fragment.

A streamed tool call is tens to thousands of chunks that differ only in their
``arguments`` string: same id, model, choice and call. Once one of them has
been decoded, ``FragmentTemplate`` recognises the next ones as the same bytes
around one JSON string, so they need not be decoded; and it puts a rewritten
delta back between the same bytes, so they need not be encoded whole either.
``FragmentRecogniser`` does that for a ``StreamRewriter``, with the same
result as decoding every chunk and feeding it.

A template is kept only if it is sound: putting another value in each of its
two holes must decode to the learned chunk with exactly that value changed. A
hole starts right after a key's colon, so it holds a JSON value whatever is
put there; and since the value decoded at the intended place changed, and
nothing else did, the hole is the arguments string (or the delta object) and
nothing else.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from gateway.core.rewriter import StreamRewriter

__all__ = ["FragmentRecogniser", "FragmentTemplate"]

Chunk = dict[str, Any]

_WHITESPACE: Final = b" \t\r\n"
_OPEN: Final = frozenset(b"{[")
_CLOSE: Final = frozenset(b"}]")
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")


class FragmentTemplate:
    """The bytes of one kind of fragment chunk, with holes at the arguments string and the delta.

    ``chunk`` is the decoded chunk it was learned from: every chunk it
    recognises decodes to ``chunk`` with another arguments string.
    """

    __slots__ = ("chunk", "_head", "_tail", "_smallest", "_delta_head", "_delta_tail")

    def __init__(self, chunk: Chunk, payload: bytes, arguments: tuple[int, int], delta: tuple[int, int]) -> None:
        self.chunk = chunk
        self._head = payload[: arguments[0]]
        self._tail = payload[arguments[1] :]
        self._smallest = len(self._head) + len(self._tail) + 2
        self._delta_head = payload[: delta[0]]
        self._delta_tail = payload[delta[1] :]

    @classmethod
    def learn(cls, payload: bytes, chunk: Any) -> FragmentTemplate | None:
        """The template of ``payload``, which decodes to ``chunk``; None unless it has one sound template.

        ``chunk`` must have one choice whose delta's first tool call has an arguments string.
        """
        try:
            choice = chunk["choices"][0]
            function = choice["delta"]["tool_calls"][0]["function"]
            if not isinstance(function["arguments"], str):
                return None
        except (KeyError, IndexError, TypeError):
            return None
        delta = _hole(payload, b'"delta":', 0, len(payload), b"{")
        arguments = _hole(payload, b'"arguments":', delta[0], delta[1], b'"') if delta is not None else None
        if delta is None or arguments is None:
            return None
        template = cls(chunk, payload, arguments, delta)
        # Values unlike the learned ones: the delta holds a tool call, so it is not empty.
        probe = "x" if function["arguments"] == "" else ""
        sound = _decodes_to(
            template._head + orjson.dumps(probe) + template._tail, _with_arguments(chunk, probe)
        ) and _decodes_to(template._delta_head + b"{}" + template._delta_tail, _with_delta(chunk, {}))
        return template if sound else None

    def arguments(self, payload: bytes) -> str | None:
        """The arguments string, if ``payload`` is this template's bytes around one; else None."""
        if len(payload) < self._smallest or not (payload.startswith(self._head) and payload.endswith(self._tail)):
            return None
        try:
            value = orjson.loads(payload[len(self._head) : len(payload) - len(self._tail)])
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, str) else None

    def render(self, delta: Chunk) -> bytes:
        """A recognised chunk with ``delta`` in place of its delta: the learned bytes around it."""
        return b"".join((self._delta_head, orjson.dumps(delta), self._delta_tail))


class FragmentRecogniser:
    """Answers, for a ``StreamRewriter``, the chunks a learned template recognises.

    ``recognise`` returns the encoded chunks to send for such a chunk, or None:
    the caller then decodes the chunk, feeds it to the rewriter and hands it
    to ``learn``. A new template replaces the old one when a fragment chunk is
    not recognised, at most ``learns`` times: enough to get past a first
    fragment unlike the rest, few enough that a provider whose every chunk
    differs (a per-chunk nonce, say) costs next to nothing.
    """

    __slots__ = ("_rewriter", "_template", "_learns")

    def __init__(self, rewriter: StreamRewriter, learns: int = 3) -> None:
        self._rewriter = rewriter
        self._template: FragmentTemplate | None = None
        self._learns = learns

    def recognise(self, payload: bytes) -> list[bytes] | None:
        template = self._template
        if template is None:
            return None
        arguments = template.arguments(payload)
        if arguments is None:
            return None
        delta = self._rewriter.feed_fragment(template.chunk, arguments)
        return [] if delta is None else [template.render(delta)]

    def learn(self, payload: bytes, chunk: Any) -> None:
        """Take the template of a chunk just fed, if it only continued a tool call."""
        if self._learns and StreamRewriter.continues(chunk):
            self._learns -= 1
            self._template = FragmentTemplate.learn(payload, chunk) or self._template


def _hole(payload: bytes, key: bytes, start: int, end: int, opening: bytes) -> tuple[int, int] | None:
    """Where the value of the last ``key`` in ``payload[start:end]`` is, if it starts with ``opening``."""
    at = payload.rfind(key, start, end)
    if at < 0:
        return None
    begin = at + len(key)
    while begin < end and payload[begin] in _WHITESPACE:
        begin += 1
    if not payload.startswith(opening, begin):
        return None
    finish = _value_end(payload, begin)
    return (begin, finish) if finish is not None and finish <= end else None


def _value_end(payload: bytes, begin: int) -> int | None:
    """Where the object, array or string starting at ``begin`` ends (just past it)."""
    depth = 0
    position = begin
    size = len(payload)
    while position < size:
        byte = payload[position]
        if byte == _QUOTE:
            string_end = _string_end(payload, position)
            if string_end is None or depth == 0:
                return string_end
            position = string_end
            continue
        if byte in _OPEN:
            depth += 1
        elif byte in _CLOSE:
            depth -= 1
            if depth == 0:
                return position + 1
        position += 1
    return None


def _string_end(payload: bytes, begin: int) -> int | None:
    """Just past the quote that closes the string opened at ``begin``."""
    position = begin + 1
    while True:
        quote = payload.find(b'"', position)
        if quote < 0:
            return None
        backslashes = 0
        while payload[quote - 1 - backslashes] == _BACKSLASH:
            backslashes += 1
        if backslashes % 2 == 0:
            return quote + 1
        position = quote + 1


def _decodes_to(payload: bytes, expected: Chunk) -> bool:
    try:
        return bool(orjson.loads(payload) == expected)
    except orjson.JSONDecodeError:
        return False


def _with_delta(chunk: Chunk, delta: Any) -> Chunk:
    choice = chunk["choices"][0]
    return {**chunk, "choices": [{**choice, "delta": delta}, *chunk["choices"][1:]]}


def _with_arguments(chunk: Chunk, arguments: str) -> Chunk:
    delta = chunk["choices"][0]["delta"]
    call, *others = delta["tool_calls"]
    function = {**call["function"], "arguments": arguments}
    return _with_delta(chunk, {**delta, "tool_calls": [{**call, "function": function}, *others]})
