"""Texts with think tags, labelled character by character: what is answer, what is reasoning, what is dropped."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import strategies as st

from gateway.core.think import (
    DEFAULT_TAGS,
    WHITESPACE,
)

THINK = DEFAULT_TAGS[0]
KIMI = ("◁think▷", "◁/think▷")


VISIBLE, THOUGHT, DROPPED = "V", "T", "X"

# Text that looks like tags, whole or in part, among ordinary characters and whitespace.
tokens = st.sampled_from(
    [
        "<",
        ">",
        "/",
        "<thin",
        "</th",
        "<think",
        "</think",
        "<think>",
        "</think>",
        "think>",
        "<<",
        "</",
        "◁",
        "▷",
        "◁think",
        "◁/think",
        "◁think▷",
        "◁/think▷",
        " ",
        "\n",
        "\t",
        "\r\n",
        "a",
        "Ok",
        "é",
        "😀",
    ]
)
texts = st.lists(st.one_of(tokens, st.text(max_size=3)), max_size=10).map("".join)
spaces = st.text(alphabet=WHITESPACE, max_size=3)


@dataclass(frozen=True)
class Segment:
    """One segment of text, with each character's label: visible, reasoning, or dropped."""

    text: str
    labels: str

    def of(self, label: str, upto: int | None = None) -> str:
        end = len(self.text) if upto is None else upto
        return "".join(char for char, mark in zip(self.text[:end], self.labels[:end], strict=True) if mark == label)


def segment_of(parts: list[tuple[str, str]]) -> Segment:
    return Segment("".join(text for text, _ in parts), "".join(label * len(text) for text, label in parts))


def without(text: str, tags: tuple[str, ...]) -> str:
    """``text`` with no occurrence of any of ``tags`` (each loses its last character until none is left)."""
    while any(tag in text for tag in tags):
        for tag in tags:
            text = text.replace(tag, tag[:-1])
    return text


@st.composite
def segments(
    draw: st.DrawFn,
    tags: tuple[tuple[str, str], ...],
    inside: bool,
    last: bool,
    *,
    thoughts: st.SearchStrategy[str] | None = None,
    answers: st.SearchStrategy[str] | None = None,
    most_blocks: int = 3,
) -> Segment:
    """Leading whitespace, think blocks (the first one template-opened when ``inside``), then the answer.

    Only the last segment of a text may end inside a block. ``thoughts`` and ``answers`` draw the
    blocks' and the answer's texts (default: ``texts``).
    """
    thoughts = texts if thoughts is None else thoughts
    answers = texts if answers is None else answers
    openers = tuple(opener for opener, _ in tags)
    blocks = draw(st.integers(min_value=1 if inside else 0, max_value=most_blocks))
    lead = "" if inside else draw(spaces)
    parts: list[tuple[str, str]] = [(lead, DROPPED if blocks else VISIBLE)]
    for number in range(blocks):
        if number == 0 and inside:
            opener, closers = "", tuple(closer for _, closer in tags)
        else:
            opener, closer = draw(st.sampled_from(tags))
            closers = (closer,)
        parts += [(opener, DROPPED), (without(draw(thoughts), closers), THOUGHT)]
        if last and number == blocks - 1 and draw(st.booleans()):
            return segment_of(parts)
        parts += [(draw(st.sampled_from(closers)), DROPPED), (draw(spaces), DROPPED)]
    answer = draw(answers)
    if answer.lstrip(WHITESPACE).startswith(openers):
        answer = "." + answer  # a block here would open: the answer starts with something else
    if blocks:
        start = len(answer) - len(answer.lstrip(WHITESPACE))
        parts += [(answer[:start], DROPPED), (answer[start:], VISIBLE)]
    else:
        parts.append((answer, VISIBLE))
    return segment_of(parts)
