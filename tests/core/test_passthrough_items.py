"""The translated doors' item shortcut: a delta that only grows the open item goes out as its template filled in,
byte for byte what the door's general path sends, and its checking mode says when not."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.options import RewriteOptions
from gateway.core.passthrough import ShortcutMismatch, Shortcuts
from gateway.core.passthrough import items as item_shortcut
from gateway.dialects import StreamEncoder
from gateway.dialects.anthropic import AnthropicStreamEncoder
from gateway.dialects.responses import ResponsesStreamEncoder
from tests.helpers import anthropic as anthropic_door
from tests.helpers import responses as responses_door
from tests.helpers.streams import (
    agent_answer,
    choice,
    chunk,
    options_of,
    partitions,
    split_evenly,
    sse,
    sse_payloads,
    translate,
)

DOORS: dict[str, Callable[[Shortcuts], StreamEncoder]] = {
    "responses": lambda shortcuts: ResponsesStreamEncoder(
        responses_door.request_of(stream=True), created=1, shortcuts=shortcuts
    ),
    "messages": lambda shortcuts: AnthropicStreamEncoder(anthropic_door.STREAMING, created=0, shortcuts=shortcuts),
}
# The doors' own ids are random: a stream is compared with them named by their order.
IDS = re.compile(rb'"((?:resp|msg|rs|fc)_[0-9a-f]{24,48})"')
# Text with what JSON escapes, characters some clients take for a line break, and a character beyond the BMP.
TEXT = st.text(alphabet=st.sampled_from(list('ab "\\\n\u2028\u0085é😀')), min_size=1, max_size=40)


def named(body: bytes) -> bytes:
    order: dict[bytes, bytes] = {}
    return IDS.sub(lambda m: b'"id%d"' % order.setdefault(m.group(1), len(order)), body)


def client_bytes(reads: list[bytes], options: RewriteOptions, door: str, shortcuts: Shortcuts) -> bytes:
    body, _ = translate(reads, options, DOORS[door](shortcuts))
    return named(body)


def content_body(pieces: list[str]) -> bytes:
    """Plain content in these pieces, then a stop: what a plain route relays."""
    chunks = [chunk(choice(role="assistant", content=""))]
    chunks += [chunk(choice(content=piece)) for piece in pieces]
    return sse([*chunks, chunk(choice(finish="stop"))])


@pytest.mark.parametrize("door", sorted(DOORS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_the_shortcut_sends_what_the_general_path_sends_under_any_split(door: str, data: st.DataObject) -> None:
    thoughts, message = data.draw(TEXT), data.draw(TEXT)
    route = data.draw(st.sampled_from(["agent", "exposed", "plain"]))
    size = data.draw(st.integers(min_value=1, max_value=9))
    if route == "plain":
        body, options = content_body(split_evenly(message, size)), RewriteOptions.plain()
    else:
        body = sse(agent_answer(thoughts, message, size=size))
        options = options_of(reasoning="expose") if route == "exposed" else options_of()
    reads = data.draw(partitions(body))
    general = client_bytes(reads, options, door, Shortcuts.OFF)
    assert client_bytes(reads, options, door, Shortcuts.ON) == general
    assert client_bytes(reads, options, door, Shortcuts.CHECK) == general
    assert read(general) == (message, thoughts if route == "exposed" else "")


def read(body: bytes) -> tuple[str, str]:
    """The text and the reasoning a client of either door reads in a stream."""
    text, reasoning = [], []
    for event in sse_payloads(body):
        delta = event.get("delta")
        if event["type"] == "response.output_text.delta":
            text.append(delta)
        elif event["type"] == "response.reasoning_summary_text.delta":
            reasoning.append(delta)
        elif event["type"] == "content_block_delta":
            text.append(delta.get("text", ""))
            reasoning.append(delta.get("thinking", ""))
    return "".join(text), "".join(reasoning)


@pytest.mark.parametrize("door", sorted(DOORS))
def test_the_shortcut_is_taken_for_the_answers_deltas_and_its_hidden_thoughts(
    door: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    general = 0
    door_class = type(DOORS[door](Shortcuts.ON))
    encode = door_class._encode  # type: ignore[attr-defined]

    def counted(encoder: Any, events: Any) -> Any:
        nonlocal general
        general += 1
        return encode(encoder, events)

    monkeypatch.setattr(door_class, "_encode", counted)
    body = sse(agent_answer("thinking it over " * 40, "word " * 200, size=4))
    translate([body[i : i + 64] for i in range(0, len(body), 64)], options_of(), DOORS[door](Shortcuts.ON))
    chunks = len(body.split(b"\n\n"))
    assert general < chunks / 20, f"{general} of {chunks} chunks took the door's general path"


@pytest.mark.parametrize("door", sorted(DOORS))
def test_the_check_catches_a_template_that_does_not_hold_its_event(door: str, monkeypatch: pytest.MonkeyPatch) -> None:
    made = item_shortcut._Template.of

    def spoiled(sample: bytes, *, numbered: bool) -> Any:
        template = made(sample, numbered=numbered)
        return template._replace(tail=template.tail.replace(b"}", b',"x":1}', 1)) if template else None

    monkeypatch.setattr(item_shortcut._Template, "of", spoiled)
    reads = [sse(agent_answer("hm", "Hello there, friend", size=3))]
    general = client_bytes(reads, options_of(), door, Shortcuts.OFF)
    assert client_bytes(reads, options_of(), door, Shortcuts.ON) != general, "the broken shortcut reaches the client"
    with pytest.raises(ShortcutMismatch, match="item template"):
        client_bytes(reads, options_of(), door, Shortcuts.CHECK)
