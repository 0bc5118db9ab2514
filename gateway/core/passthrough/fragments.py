"""Recognising, by their bytes, the chunks that only carry a tool call's next argument fragment.

A streamed tool call is tens to thousands of chunks that differ only in their
``arguments`` string: same id, model, choice and call. Once one of them has
been decoded, ``FragmentTemplate`` recognises the next ones as the same bytes
around one JSON string, so they need not be decoded; and it knows the bytes
around their delta (the ``frame``), so a chat client's rewritten chunk is those
bytes around the new delta, not a whole chunk encoded again. OpenAI also puts
a random ``obfuscation`` string in every chunk by default; a template holds it
as a second hole, decoded, and relayed as it came. ``Fragments`` does this for
the stream translator, with the same events as decoding every chunk and
feeding it.

It is the stream path's one performance bet: most chunks of an agent-style
answer are argument fragments, and decoding and re-encoding them whole costs
more than the rest of their rewrite (``bench/bench_core.py``).

A template is kept only if it is sound: putting another value in each of its
holes must decode to the learned chunk with exactly that value changed. A
hole starts right after a key's colon, so it holds a JSON value whatever is
put there; and since the value decoded at the intended place changed, and
nothing else did, the hole is the arguments string (the delta object, the
nonce) and nothing else.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = ["FragmentTemplate", "Fragments", "Frame"]

Chunk = dict[str, Any]
Frame = tuple[bytes, bytes]
"""A chunk's bytes before and after its one choice's delta object."""

# OpenAI's padding against length side channels: a top-level string that differs in every chunk.
_NONCE: Final = "obfuscation"
_WHITESPACE: Final = b" \t\r\n"
_OPEN: Final = frozenset(b"{[")
_CLOSE: Final = frozenset(b"}]")
_QUOTE: Final = ord('"')
_BACKSLASH: Final = ord("\\")


class FragmentTemplate:
    """The bytes of one kind of fragment chunk, with holes at the arguments string, the delta and the nonce.

    ``chunk`` is the decoded chunk it was learned from: every chunk it
    recognises decodes to ``chunk`` with another arguments string (and
    another nonce, when it has one after its choices).
    """

    __slots__ = ("chunk", "_nonce", "_head", "_between", "_end", "_smallest", "_delta_head", "_delta_between", "_frame")

    def __init__(
        self,
        chunk: Chunk,
        payload: bytes,
        arguments: tuple[int, int],
        delta: tuple[int, int],
        nonce: tuple[int, int] | None,
    ) -> None:
        self.chunk = chunk
        self._nonce = nonce is not None
        rest = nonce or (len(payload), len(payload))
        self._head = payload[: arguments[0]]
        self._between = payload[arguments[1] : rest[0]]
        self._end = payload[rest[1] :]
        self._smallest = len(self._head) + len(self._between) + len(self._end) + 2
        self._delta_head = payload[: delta[0]]
        self._delta_between = payload[delta[1] : rest[0]]
        # Without a nonce every recognised chunk has the same frame.
        self._frame = (self._delta_head, self._delta_between + self._end)

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
        nonce = None
        if isinstance(chunk.get(_NONCE), str):
            nonce = _hole(payload, b'"%s":' % _NONCE.encode(), delta[1], len(payload), b'"')
            if nonce is None:  # not after the choices: every chunk would look different
                return None
        # Values unlike the learned ones: the delta holds a tool call, so it is not empty.
        probe = "x" if function["arguments"] == "" else ""
        sound = _decodes_to(
            payload[: arguments[0]] + orjson.dumps(probe) + payload[arguments[1] :], _with_arguments(chunk, probe)
        ) and _decodes_to(payload[: delta[0]] + b"{}" + payload[delta[1] :], _with_delta(chunk, {}))
        if nonce is not None:
            other = "x" if chunk[_NONCE] == "" else ""
            sound = sound and _decodes_to(
                payload[: nonce[0]] + orjson.dumps(other) + payload[nonce[1] :], {**chunk, _NONCE: other}
            )
        return cls(chunk, payload, arguments, delta, nonce) if sound else None

    def match(self, payload: bytes) -> tuple[str, Chunk, bytes] | None:
        """For this template's bytes around an arguments string (and a nonce), what they hold; else None.

        That is the arguments string, the decoded chunk but for its delta,
        and the nonce's bytes (empty without one), for ``frame``.
        """
        head, between = self._head, self._between
        if len(payload) < self._smallest or not payload.startswith(head):
            return None
        start = len(head)
        if not self._nonce:
            if not payload.endswith(between):
                return None
            arguments_end, nonce = len(payload) - len(between), b""
        else:
            # The bytes between hold the nonce's key in raw quotes, which no string can contain:
            # their first occurrence is past the arguments string.
            arguments_end = payload.find(between, start + 2)
            nonce_start, nonce_end = arguments_end + len(between), len(payload) - len(self._end)
            if arguments_end < 0 or nonce_end <= nonce_start or not payload.endswith(self._end):
                return None
            nonce = payload[nonce_start:nonce_end]
        try:
            arguments = orjson.loads(payload[start:arguments_end])
            chunk = {**self.chunk, _NONCE: orjson.loads(nonce)} if nonce else self.chunk
        except orjson.JSONDecodeError:
            return None
        if not isinstance(arguments, str) or (nonce and not isinstance(chunk[_NONCE], str)):
            return None
        return arguments, chunk, nonce

    def frame(self, nonce: bytes = b"") -> Frame:
        """A recognised chunk's bytes around its delta: the learned bytes, with its own nonce."""
        if not nonce:
            return self._frame
        return self._delta_head, b"".join((self._delta_between, nonce, self._end))


class Fragments:
    """The templates of one stream's fragment chunks: learned from decoded ones, then matched by bytes.

    ``match`` recognises a chunk a learned template covers; otherwise the
    caller decodes the chunk and, once it is fed, offers it to ``learn``. A new
    template replaces the old one when a fragment chunk is not recognised, at
    most ``learns`` times: enough to get past a first fragment unlike the rest,
    few enough that a provider whose chunks all differ in some other way than
    OpenAI's padding costs next to nothing.
    """

    __slots__ = ("_template", "_learns")

    def __init__(self, learns: int = 3) -> None:
        self._template: FragmentTemplate | None = None
        self._learns = learns

    def match(self, payload: bytes) -> tuple[str, Chunk, Frame] | None:
        """The arguments string, the chunk (as decoding would give it, but for them) and its frame; or None."""
        template = self._template
        if template is None:
            return None
        matched = template.match(payload)
        if matched is None:
            return None
        arguments, chunk, nonce = matched
        return arguments, chunk, template.frame(nonce)

    @property
    def learned(self) -> bool:
        """Whether a template is learned, so that ``match`` may recognise a chunk."""
        return self._template is not None

    @property
    def learning(self) -> bool:
        """Whether a template may still be learned."""
        return self._learns > 0

    def learn(self, payload: bytes, chunk: Chunk) -> None:
        """Take the template of a chunk just decoded and fed, one that only continued a tool call."""
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
