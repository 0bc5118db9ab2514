"""The think-tag filter: reasoning written inside the visible text never comes out as visible text.

The property tests build a text from labelled parts (visible answer, reasoning, tags and dropped
whitespace), so every character's fate is known in advance, then feed it cut anywhere.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.think import (
    DEFAULT_TAGS,
    LEADING_WHITESPACE,
    WHITESPACE,
    Piece,
    ThinkFilter,
    ThinkState,
    Thought,
    Visible,
)
from tests.helpers.paths import FIXTURES
from tests.helpers.streams import recorded_chunks, splits
from tests.helpers.think import KIMI, THINK, THOUGHT, VISIBLE, Segment, segments

TAG_SETS = ((THINK,), (THINK, KIMI))


@st.composite
def scripts(draw: st.DrawFn, max_segments: int = 3) -> tuple[tuple[tuple[str, str], ...], bool, list[Segment]]:
    tags = draw(st.sampled_from(TAG_SETS))
    inside = draw(st.booleans())
    count = draw(st.integers(min_value=1, max_value=max_segments))
    return tags, inside, [draw(segments(tags, inside and i == 0, i == count - 1)) for i in range(count)]


def held_may_begin_a_tag(f: ThinkFilter, tags: tuple[tuple[str, str], ...]) -> bool:
    """What the filter holds back is exactly what may still become a tag where it stands, and no more."""
    held = f.held
    longest = max(len(tag) for pair in tags for tag in pair)
    if f.state is ThinkState.START:
        rest = held.lstrip(WHITESPACE)
        leading = len(held) - len(rest)
        return leading <= LEADING_WHITESPACE and (rest == "" or any(o.startswith(rest) and o != rest for o, _ in tags))
    if f.state is ThinkState.AFTER:
        candidates = [opener for opener, _ in tags]
    elif f.state is ThinkState.INSIDE:
        candidates = [closer for _, closer in tags]
    else:
        return held == ""
    return len(held) < longest and (held == "" or any(t.startswith(held) and t != held for t in candidates))


def collect(pieces: list[Piece], visible: list[str], thoughts: list[str]) -> None:
    """Adds a result's text to the running totals, checking that it is merged and has no empty piece."""
    for piece, following in itertools.pairwise(pieces):
        assert type(piece) is not type(following), "adjacent pieces of one kind are merged"
    for piece in pieces:
        assert piece.text, "no empty pieces"
        (visible if isinstance(piece, Visible) else thoughts).append(piece.text)


def check(tags: tuple[tuple[str, str], ...], inside: bool, script: list[Segment], partitions: list[list[str]]) -> None:
    """Feeds each segment cut as given, with ``restart()`` between segments, checking after every call."""
    f = ThinkFilter(tags, start_inside=inside)
    visible: list[str] = []
    thoughts: list[str] = []
    before_visible = before_thoughts = ""
    for number, (segment, pieces) in enumerate(zip(script, partitions, strict=True)):
        assert "".join(pieces) == segment.text
        if number:
            collect(f.restart(), visible, thoughts)
            assert "".join(visible) == before_visible and "".join(thoughts) == before_thoughts
        fed = 0
        for piece in pieces:
            collect(f.feed(piece), visible, thoughts)
            fed += len(piece)
            held = f.held
            assert segment.text[:fed].endswith(held)
            assert held_may_begin_a_tag(f, tags), (f.state, held)
            # Everything before the held tail has come out, and as what it is.
            decided = fed - len(held)
            assert "".join(visible) == before_visible + segment.of(VISIBLE, decided)
            assert "".join(thoughts) == before_thoughts + segment.of(THOUGHT, decided)
        before_visible += segment.of(VISIBLE)
        before_thoughts += segment.of(THOUGHT)
    collect(f.close(), visible, thoughts)
    assert "".join(visible) == before_visible
    assert "".join(thoughts) == before_thoughts
    assert f.close() == []


@settings(max_examples=200)
@given(st.data())
def test_answer_and_reasoning_come_out_exactly_under_random_partitions(data: st.DataObject) -> None:
    tags, inside, script = data.draw(scripts())
    check(tags, inside, script, [data.draw(splits(segment.text)) for segment in script])


@settings(max_examples=100)
@given(scripts(max_segments=1))
def test_every_split_point_and_one_character_at_a_time(
    script: tuple[tuple[tuple[str, str], ...], bool, list[Segment]],
) -> None:
    tags, inside, (segment,) = script
    text = segment.text
    for cut in range(len(text) + 1):
        check(tags, inside, [segment], [[text[:cut], text[cut:]]])
    check(tags, inside, [segment], [list(text)])


@settings(max_examples=100)
@given(scripts())
def test_one_character_at_a_time_across_segments(
    script: tuple[tuple[tuple[str, str], ...], bool, list[Segment]],
) -> None:
    tags, inside, segments_ = script
    check(tags, inside, segments_, [list(segment.text) for segment in segments_])


def run(
    pieces: list[str], tags: tuple[tuple[str, str], ...] = DEFAULT_TAGS, start_inside: bool = False
) -> list[list[Piece]]:
    """Each feed's result, then close()'s."""
    f = ThinkFilter(tags, start_inside=start_inside)
    return [*(f.feed(piece) for piece in pieces), f.close()]


def texts_of(results: list[list[Piece]]) -> tuple[str, str]:
    pieces = [piece for result in results for piece in result]
    return (
        "".join(p.text for p in pieces if isinstance(p, Visible)),
        "".join(p.text for p in pieces if isinstance(p, Thought)),
    )


def test_deepseek_r1_style_each_chunk_releases_what_it_can() -> None:
    chunks = [
        "",
        "<think>",
        "\n",
        "Okay",
        ", the user",
        " greets me.",
        "\n",
        "</think>",
        "\n\n",
        "Hello",
        "! How",
        " can I help?",
    ]
    assert run(chunks) == [
        [],
        [],
        [Thought("\n")],
        [Thought("Okay")],
        [Thought(", the user")],
        [Thought(" greets me.")],
        [Thought("\n")],
        [],
        [],
        [Visible("Hello")],
        [Visible("! How")],
        [Visible(" can I help?")],
        [],
    ]


def test_a_chunk_holding_the_end_of_the_reasoning_and_the_start_of_the_answer() -> None:
    assert run(["<think>Plan: gree", "t.</think>\n\nHi", " there"]) == [
        [Thought("Plan: gree")],
        [Thought("t."), Visible("Hi")],
        [Visible(" there")],
        [],
    ]


def test_an_empty_think_block() -> None:
    assert texts_of(run(["<think>", "\n\n", "</think>", "\n\n", "Hello!"])) == ("Hello!", "\n\n")
    assert texts_of(run(["<think>\n\n</think>\n\n"])) == ("", "\n\n")


def test_template_opened_block() -> None:
    results = run(["Let me think", " about it.</th", "ink>\n\nThe answer", " is 4."], start_inside=True)
    assert results == [
        [Thought("Let me think")],
        [Thought(" about it.")],
        [Visible("The answer")],
        [Visible(" is 4.")],
        [],
    ]
    assert texts_of(run(["no closing tag, ", "all reasoning"], start_inside=True)) == (
        "",
        "no closing tag, all reasoning",
    )


def test_template_opened_block_closes_with_any_pairs_closing_tag() -> None:
    assert texts_of(run(["r</think>a"], (THINK, KIMI), start_inside=True)) == ("a", "r")
    assert texts_of(run(["r◁/think▷a"], (THINK, KIMI), start_inside=True)) == ("a", "r")


def test_kimi_style_tags() -> None:
    chunks = ["◁", "think▷", "The user asks", " for a poem.◁/", "think▷", "\n", "Roses are red"]
    assert texts_of(run(chunks, (KIMI,))) == ("Roses are red", "The user asks for a poem.")
    assert texts_of(run(["<think>x</think>y"], (KIMI,))) == ("<think>x</think>y", "")


def test_a_block_closes_only_with_the_closing_tag_of_its_own_pair() -> None:
    text = "◁think▷a</think>b◁/think▷\n<think>c◁/think▷d</think>answer"
    assert texts_of(run(list(text), (THINK, KIMI))) == ("answer", "a</think>bc◁/think▷d")


def test_several_blocks_in_a_row_and_in_one_chunk() -> None:
    text = "<think>first</think>\n\n<think>second</think>\n\nThe answer."
    assert run([text]) == [[Thought("firstsecond"), Visible("The answer.")], []]
    assert texts_of(run(list(text))) == ("The answer.", "firstsecond")


def test_a_block_after_restart() -> None:
    f = ThinkFilter()
    assert f.feed("<think>look it up</think>\n\nChecking <think> in the docs") == [
        Thought("look it up"),
        Visible("Checking <think> in the docs"),
    ]
    assert f.restart() == []
    assert f.feed("\n<think>found it</think>\n\n") == [Thought("found it")]
    assert f.feed("It is a tag.") == [Visible("It is a tag.")]
    assert f.close() == []


def test_restart_releases_a_cut_tag_as_what_it_turned_out_to_be() -> None:
    f = ThinkFilter()
    assert f.feed("Result: <thi") == [Visible("Result: <thi")]  # mid-answer: not a tag, not held
    assert f.restart() == []
    assert f.feed("  <thi") == []
    assert f.held == "  <thi"
    assert f.restart() == [Visible("  <thi")]
    assert f.feed("nk>") == [Visible("nk>")]


def test_a_block_left_open_at_a_segment_end_stays_open() -> None:
    f = ThinkFilter()
    assert f.feed("<think>call the tool</thi") == [Thought("call the tool")]
    assert f.restart() == [Thought("</thi")]
    assert f.feed("then answer</think> Done") == [Thought("then answer"), Visible("Done")]


def test_a_stream_ending_inside_a_block_is_all_reasoning() -> None:
    assert run(["<think>", "I was cut off", " by the length li", "mit</th"]) == [
        [],
        [Thought("I was cut off")],
        [Thought(" by the length li")],
        [Thought("mit")],
        [Thought("</th")],
    ]
    assert run(["<think"]) == [[], [Visible("<think")]]


def test_a_lone_closing_tag_mid_answer_is_visible() -> None:
    text = "Close a block with </think> and you are done."
    assert texts_of(run([text])) == (text, "")
    assert texts_of(run(list(text))) == (text, "")
    assert texts_of(run(["</think>", " at the start"])) == ("</think> at the start", "")


def test_a_tag_mid_sentence_is_text() -> None:
    text = "Models write <think> before their reasoning."
    assert run(list(text))[-1] == []
    assert texts_of(run(list(text))) == (text, "")


def test_a_possible_tag_is_released_the_moment_it_cannot_be_one() -> None:
    f = ThinkFilter()
    assert f.feed("<th") == []
    assert f.held == "<th"
    assert f.feed("e answer") == [Visible("<the answer")]
    assert f.held == ""


def test_leading_whitespace_is_dropped_before_a_block_and_kept_before_an_answer() -> None:
    assert texts_of(run(["\n", "\n<think>r</think>", " answer"])) == ("answer", "r")
    f = ThinkFilter()
    assert f.feed("\n ") == []
    assert f.held == "\n "
    assert f.feed("  Indented") == [Visible("\n   Indented")]


def test_leading_whitespace_beyond_the_limit_is_answer() -> None:
    f = ThinkFilter()
    assert f.feed(" " * LEADING_WHITESPACE) == []
    assert f.feed(" ") == [Visible(" " * (LEADING_WHITESPACE + 1))]
    assert f.feed("<think>x</think>") == [Visible("<think>x</think>")]


def test_whitespace_after_a_block_is_dropped_up_to_the_answer() -> None:
    f = ThinkFilter()
    assert f.feed("<think>r</think>") == [Thought("r")]
    assert [f.feed(" "), f.feed("\n\n"), f.feed("\t")] == [[], [], []]
    assert f.held == ""
    assert f.feed(" Answer \n") == [Visible("Answer \n")]


def test_whitespace_only_text_around_a_block_leaves_nothing_visible() -> None:
    assert texts_of(run(["  <think>r</think>  \n"])) == ("", "r")
    assert texts_of(run(["  \n"])) == ("  \n", "")


def test_after_close_the_filter_takes_no_more_text() -> None:
    f = ThinkFilter()
    f.feed("Hi")
    assert f.close() == []
    assert f.close() == []
    with pytest.raises(ValueError, match="after close"):
        f.feed("more")
    with pytest.raises(ValueError, match="after close"):
        f.restart()


@pytest.mark.parametrize(
    "tags",
    [
        (),
        (("", "</think>"),),
        (("<think>", ""),),
        ((" <think>", "</think>"),),
        (("<think>", "</think>"), ("<think>x", "</x>")),
        (("<think>", "</think>"), ("<t>", "</think")),
    ],
)
def test_tags_that_cannot_be_recognised_are_refused(tags: tuple[tuple[str, str], ...]) -> None:
    with pytest.raises(ValueError):
        ThinkFilter(tags)


REASONING = FIXTURES / "reasoning"


@pytest.mark.parametrize(
    "name", ["groq-chat-deepseek-r1-distill-raw-think.sse", "azure-ai-deepseek-r1-think-in-content.jsonl"]
)
def test_recorded_think_in_content(name: str) -> None:
    contents = [
        choice["delta"].get("content") or ""
        for chunk in recorded_chunks(REASONING / name)
        for choice in chunk.get("choices") or ()
    ]
    opened, close_tag, after = "".join(contents).partition("</think>")
    assert opened.startswith("<think>") and close_tag
    visible, thoughts = texts_of(run(contents))
    assert visible == after.lstrip(WHITESPACE) and visible
    assert thoughts == opened.removeprefix("<think>")
