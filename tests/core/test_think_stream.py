"""Think tags through the rewrite and the whole stream path: generated texts, cut anywhere.

A script is a few segments of visible text, labelled character by character as answer, reasoning or
dropped (the tags and the whitespace they take with them), each carried as plain content or as the
message tool's argument (escaped JSON, cut anywhere), with client tool calls between them. The tags
also appear inside answers, whole and in part, where they are text. The rewriter is fed chunk by
chunk and checked after each one: the visible text released so far is a prefix of the answer and
lacks no more than what may still be the start of a tag. The same stream is then read through the
translator and the chat encoder in random reads: the same bytes every time, the answer exactly, and
under ``hide`` not one character of the reasoning.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.events import Done, ReasoningDelta, TextDelta
from gateway.core.options import RewriteOptions
from gateway.core.rewriter import StreamRewriter
from gateway.core.think import WHITESPACE
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.chat import chat_bytes, read_chat
from tests.helpers.streams import call, choice, chunk, options_of, splits, sse, translate
from tests.helpers.think import KIMI, THINK, THOUGHT, VISIBLE, Segment, segment_of, tokens
from tests.helpers.think import segments as think_segments

HIDDEN = "αβγδεζηθλμ"
"""Reasoning is written with these letters (and tag look-alikes); answers never contain them."""
TAG_SETS = ((THINK,), (THINK, KIMI))
CITY = {"city": "Oslo"}

thought_texts = st.lists(st.one_of(tokens, st.text(alphabet=HIDDEN, min_size=1, max_size=3)), max_size=8).map("".join)
answer_chars = st.characters(codec="utf-8", exclude_characters=HIDDEN)
answer_texts = st.lists(st.one_of(tokens, st.text(alphabet=answer_chars, max_size=3)), max_size=8).map("".join)
inner_texts = st.text(alphabet=HIDDEN + ' "\\\n<>/', min_size=1, max_size=16)


def segments(tags: tuple[tuple[str, str], ...], inside: bool, last: bool) -> st.SearchStrategy[Segment]:
    """The think tests' segments, with reasoning and answers this module can tell apart, two blocks at most."""
    return think_segments(tags, inside, last, thoughts=thought_texts, answers=answer_texts, most_blocks=2)


@dataclass(frozen=True)
class Part:
    """One segment of visible text and how the upstream carries it."""

    segment: Segment
    message: bool  # the message tool's argument, else plain content
    inner: str  # the message call's inner thoughts (kwarg mode), else ""
    ascii: bool  # the argument's JSON escapes every non-ASCII character
    client_call: str | None  # the inner thoughts of a client call after this segment ("" in none mode), or None

    @property
    def document(self) -> str:
        """The message call's arguments: inner thoughts first (as the injected schema orders them), then the message."""
        inner = f'"inner_thoughts": {json.dumps(self.inner, ensure_ascii=self.ascii)}, ' if self.inner else ""
        return "{" + inner + '"message": ' + json.dumps(self.segment.text, ensure_ascii=self.ascii) + "}"

    @property
    def carried(self) -> str:
        """The text the upstream cuts into chunks: the content itself, or the JSON document."""
        return self.document if self.message else self.segment.text

    def decoded(self, fed: int) -> int:
        """How many characters of the segment the first ``fed`` characters of ``carried`` make certain."""
        if not self.message:
            return fed
        document = self.document
        start = document.index('"message": ') + len('"message": ') + 1
        literal = document[start : max(start, min(fed, len(document) - 2))]
        for cut in range(len(literal), max(len(literal) - 13, -1), -1):
            try:
                text = json.loads(f'"{literal[:cut]}"')
            except ValueError:
                continue
            if self.segment.text.startswith(text):
                return len(text)
        raise AssertionError(f"no certain prefix of {literal!r}")


@dataclass(frozen=True)
class Script:
    tags: tuple[tuple[str, str], ...]
    inside: bool  # think_open: the first segment begins inside a block
    kwarg: bool  # inner thoughts as a kwarg (else the none mode)
    exposed: bool
    finish: str
    parts: tuple[Part, ...]

    @property
    def options(self) -> RewriteOptions:
        return options_of(
            inner_thoughts="kwarg" if self.kwarg else "none",
            reasoning="expose" if self.exposed else "hide",
            think_tags=self.tags,
            think_open=self.inside,
        )

    @property
    def slack(self) -> int:
        """What the filter may hold back once a segment is past its start: a tag's length minus one."""
        return max(len(tag) for pair in self.tags for tag in pair) - 1

    @property
    def client_calls(self) -> list[tuple[str, str, Any]]:
        return [(f"call_c{i}", "get_weather", CITY) for i, p in enumerate(self.parts) if p.client_call is not None]

    @property
    def client_finish(self) -> str:
        if self.finish == "length":
            return "length"
        return "tool_calls" if self.client_calls else "stop"

    def visible(self, decided: Iterable[int]) -> str:
        """The answer as far as each segment's first ``decided`` characters say, segments set off by a blank line."""
        out, last = "", None
        for number, (part, upto) in enumerate(zip(self.parts, decided, strict=True)):
            text = part.segment.of(VISIBLE, upto)
            if text:
                carrier = ("call", number) if part.message else "content"
                out += ("\n\n" if last not in (None, carrier) else "") + text
                last = carrier
        return out

    @property
    def answer(self) -> str:
        return self.visible(len(part.segment.text) for part in self.parts)

    @property
    def reasoning(self) -> str:
        """The reasoning in the order it arrives: a message call's inner thoughts before its blocks' text."""
        pieces: list[tuple[object, str]] = []
        for number, part in enumerate(self.parts):
            carrier = ("call", number) if part.message else "content"
            pieces += [(carrier, part.inner), (carrier, part.segment.of(THOUGHT))]
            if part.client_call:
                pieces.append((("client", number), part.client_call))
        out = ""
        last: object = None
        for source, text in pieces:
            if text:
                out += ("\n\n" if last not in (None, source) else "") + text
                last = source
        return out

    def certain(self, available: list[int]) -> list[int]:
        """How many characters of each segment the filter must have decided, given what has arrived of each.

        The latest segment with text may hold its leading whitespace while a block can still open there,
        else at most ``slack`` characters; the ones before it were released when it began.
        """
        latest = max((i for i, a in enumerate(available) if a), default=-1)
        decided = []
        for number, (part, arrived) in enumerate(zip(self.parts, available, strict=True)):
            if number != latest:
                decided.append(len(part.segment.text) if number < latest else 0)
                continue
            rest = part.segment.text[:arrived].lstrip(WHITESPACE)
            at_start = not (self.inside and number == 0)
            if at_start and any(opener.startswith(rest) and opener != rest for opener, _ in self.tags):
                decided.append(0)
            else:
                decided.append(max(0, arrived - self.slack))
        return decided


@st.composite
def scripts(draw: st.DrawFn, max_parts: int = 3) -> Script:
    tags = draw(st.sampled_from(TAG_SETS))
    inside, kwarg, exposed = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    count = draw(st.integers(min_value=1, max_value=max_parts))
    messages = [draw(st.booleans()) for _ in range(count)]
    parts: list[Part] = []
    for number, message in enumerate(messages):
        segment = draw(segments(tags, inside and number == 0, number == count - 1))
        inner = draw(inner_texts) if message and kwarg else ""
        # Content right after content is the same segment unless a call comes between: the script puts one there.
        between_contents = number + 1 < count and not message and not messages[number + 1]
        has_call = number + 1 < count and (between_contents or draw(st.booleans()))
        client_call = (draw(inner_texts) if kwarg else "") if has_call else None
        parts.append(Part(segment, message, inner, draw(st.booleans()), client_call))
    return Script(tags, inside, kwarg, exposed, draw(st.sampled_from(["stop", "tool_calls", "length"])), tuple(parts))


@dataclass
class Chunk:
    """One upstream chunk, with how much of each segment has arrived once it is read."""

    body: dict[str, Any]
    available: list[int] | None  # None: the answer is over, all of it must be out


def stream(script: Script, cuts: list[list[str]]) -> list[Chunk]:
    """The upstream chunks of a script, each part's carried text cut as given."""
    available = [0] * len(script.parts)
    out = [Chunk(chunk(choice(role="assistant", content="")), list(available))]
    calls = 0
    for number, (part, pieces) in enumerate(zip(script.parts, cuts, strict=True)):
        assert "".join(pieces) == part.carried
        if part.message:
            header = call(calls, "", id=f"call_m{number}", name="send_message")
            out.append(Chunk(chunk(choice(tool_calls=[header])), list(available)))
        fed = 0
        for piece in pieces:
            fed += len(piece)
            available[number] = part.decoded(fed)
            delta = {"tool_calls": [call(calls, piece)]} if part.message else {"content": piece}
            out.append(Chunk(chunk(choice(**delta)), list(available)))
        calls += part.message
        if part.client_call is not None:
            arguments = json.dumps({"inner_thoughts": part.client_call, **CITY} if script.kwarg else CITY)
            header = call(calls, arguments[:7], id=f"call_c{number}", name="get_weather")
            out.append(Chunk(chunk(choice(tool_calls=[header])), list(available)))
            out.append(Chunk(chunk(choice(tool_calls=[call(calls, arguments[7:])])), list(available)))
            calls += 1
    out.append(Chunk(chunk(choice(finish=script.finish)), None))
    return out


def check_rewriter(script: Script, chunks: list[Chunk]) -> None:
    """Chunk by chunk: what is released is a prefix of the answer and lacks only what may still be a tag."""
    rewriter = StreamRewriter(script.options)
    answer = script.answer
    visible = reasoning = ""
    for upstream in chunks:
        events = rewriter.feed(upstream.body)
        visible += "".join(e.text for e in events if isinstance(e, TextDelta))
        reasoning += "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        assert answer.startswith(visible), (visible, answer)
        required = answer if upstream.available is None else script.visible(script.certain(upstream.available))
        assert visible.startswith(required), (visible, required)
    assert rewriter.finish() == []  # the finish released everything
    assert visible == answer
    assert reasoning == (script.reasoning if script.exposed else "")


def check_client(script: Script, chunks: list[Chunk], reads: list[bytes] | None = None) -> bytes:
    """Through the translator and the chat encoder: the client's answer, and the same bytes for ``reads``."""
    body = sse([c.body for c in chunks])
    client, events = translate([body], script.options, ChatStreamEncoder())
    assert isinstance(events[-1], Done)
    answer = read_chat(client)
    assert answer.content == script.answer
    assert answer.calls == script.client_calls and answer.finish == [script.client_finish]
    assert not answer.keys & {"reasoning", "reasoning_details"}
    if script.exposed:
        assert answer.reasoning == script.reasoning
    else:
        assert "reasoning_content" not in answer.keys
        assert not set(client.decode()) & set(HIDDEN), "hidden reasoning reached the client"
    if reads is not None:
        assert b"".join(reads) == body
        assert chat_bytes(reads, script.options) == client
    return body


@st.composite
def partitions(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(body) - 1, 1)), max_size=40)))
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_random_scripts_cut_anywhere_and_read_in_random_reads(data: st.DataObject) -> None:
    script = data.draw(scripts())
    chunks = stream(script, [data.draw(splits(part.carried)) for part in script.parts])
    check_rewriter(script, chunks)
    body = sse([c.body for c in chunks])
    check_client(script, chunks, data.draw(partitions(body)))


@settings(max_examples=60, deadline=None)
@given(scripts(max_parts=1))
def test_every_split_point_of_one_segment_and_one_character_at_a_time(script: Script) -> None:
    (part,) = script.parts
    text = part.carried
    for cut in range(len(text) + 1):
        check_rewriter(script, stream(script, [[piece for piece in (text[:cut], text[cut:]) if piece]]))
    check_rewriter(script, stream(script, [list(text)]))
    check_client(script, stream(script, [list(text)]))


@settings(max_examples=60, deadline=None)
@given(scripts())
def test_one_character_at_a_time_across_segments_and_calls(script: Script) -> None:
    chunks = stream(script, [list(part.carried) for part in script.parts])
    check_rewriter(script, chunks)
    body = check_client(script, chunks)
    assert chat_bytes([body[i : i + 1] for i in range(len(body))], script.options) == chat_bytes([body], script.options)


def test_the_scripts_reach_every_case_the_properties_are_about() -> None:
    """Coverage of the generator itself: each case the properties claim to check actually occurs."""
    seen: set[str] = set()

    @settings(max_examples=400, deadline=None)
    @given(scripts())
    def collect(script: Script) -> None:
        for part in script.parts:
            text, labels = part.segment.text, part.segment.labels
            answer = part.segment.of(VISIBLE)
            if any(o in answer for o, _ in script.tags):
                seen.add("whole opening tag inside an answer")
            if any(c in answer for _, c in script.tags):
                seen.add("closing tag inside an answer")
            if "<thin" in answer or "</th" in answer:
                seen.add("partial tag inside an answer")
            if THOUGHT in labels:
                seen.add("reasoning")
            if labels.endswith(THOUGHT):
                seen.add("ends inside a block")
            if part.message and any(ord(ch) > 127 for ch in text) and part.ascii:
                seen.add("escaped non-ASCII in the argument")
            if part.client_call is not None:
                seen.add("client call between segments")
        if len(script.parts) > 1 and script.parts[1].segment.labels.count(THOUGHT):
            seen.add("think block after the first segment")
        if script.inside:
            seen.add("template-opened")

    collect()
    assert seen == {
        "whole opening tag inside an answer",
        "closing tag inside an answer",
        "partial tag inside an answer",
        "reasoning",
        "ends inside a block",
        "escaped non-ASCII in the argument",
        "client call between segments",
        "think block after the first segment",
        "template-opened",
    }


def test_a_held_tag_prefix_is_released_by_the_next_segment_and_no_later() -> None:
    """``<thin`` ends the content: held, since it may become ``<think>``, until the call after it begins."""
    first = Part(segment_of([("<thin", VISIBLE)]), False, "", True, "")
    script = Script(
        (THINK,), False, False, False, "tool_calls", (first, Part(segment_of([("Hi", VISIBLE)]), True, "", True, None))
    )
    chunks = stream(script, [["<thin"], ['{"message": "', 'Hi"}']])
    check_rewriter(script, chunks)
    rewriter = StreamRewriter(script.options)
    events = [rewriter.feed(c.body) for c in chunks]
    released = ["".join(e.text for e in chunk_events if isinstance(e, TextDelta)) for chunk_events in events]
    # The content, the client call (whose start releases the held text), the message call, the finish.
    assert released == ["", "", "<thin", "", "", "", "\n\nHi", ""]
    assert [type(e).__name__ for e in events[2][2:]] == ["TextDelta", "ToolCallStart", "ToolCallDelta"]
