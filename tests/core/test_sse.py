"""The incremental SSE decoder: the same events however the bytes are cut."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.sse import SSEComment, SSEDecoder, SSEError, SSEEvent

payloads = st.text(
    alphabet=st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=30
)
events = st.lists(st.tuples(st.booleans(), payloads), max_size=8)


def body_of(items: list[tuple[bool, str]], newline: str) -> bytes:
    text = "".join((f":{p}" if is_comment else f"data: {p}") + newline * 2 for is_comment, p in items)
    return text.encode()


def expected(items: list[tuple[bool, str]]) -> list[tuple[int, bytes]]:
    return [SSEComment(p.encode().lstrip(b" ")) if is_comment else p.encode() for is_comment, p in items]


def decode(pieces: list[bytes], **options: int) -> list[SSEEvent]:
    decoder = SSEDecoder(**options)
    out = [event for piece in pieces for event in decoder.feed(piece)]
    return out + decoder.close()


@given(events, st.sampled_from(["\n", "\r\n", "\r"]), st.data())
def test_any_split_and_any_line_ending_give_the_same_events(
    items: list[tuple[bool, str]], newline: str, data: st.DataObject
) -> None:
    body = body_of(items, newline)
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)), max_size=12)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(pieces) == expected(items)


def test_one_byte_at_a_time_with_multibyte_characters() -> None:
    body = 'data: é😀\r\n\r\ndata: {"a": 1}\n\n'.encode()
    assert decode([body[i : i + 1] for i in range(len(body))]) == ["é😀".encode(), b'{"a": 1}']


def test_multi_line_data_other_fields_and_a_last_event_without_blank_line() -> None:
    body = b"event: x\nid: 7\ndata: a\ndata:b\nretry: 5\n\ndata: tail"
    assert decode([body]) == [b"a\nb", b"tail"]


def test_an_event_over_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: " + b"x" * 60 + b"\n")
    with pytest.raises(SSEError):
        decoder.feed(b"data: " + b"y" * 50)
    with pytest.raises(SSEError):
        SSEDecoder(max_event_bytes=10).feed(b"data: " + b"z" * 20)


def test_events_completed_before_the_fault_travel_with_the_error() -> None:
    """A consumer handles them first, so where the fault lands among reads changes nothing."""
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(SSEError) as raised:
        decoder.feed(b"data: one\n\n: note\ndata: two\n\ndata: " + b"x" * 200)
    assert raised.value.events == [b"one", SSEComment(b"note"), b"two"]


lines = st.lists(
    st.one_of(
        st.just(""),
        payloads.map(lambda p: f"data: {p}"),
        payloads.map(lambda p: f"data:{p}"),
        payloads.map(lambda p: f":{p}"),
        payloads.map(lambda p: f"event: {p}"),
        st.just("id: 7"),
    ),
    max_size=16,
)


def reference(text: str) -> list[SSEEvent]:
    """The SSE rules, line by line, for a whole body whose lines end in ``\\n``."""
    out: list[SSEEvent] = []
    data: list[bytes] = []
    for line in text.encode().split(b"\n"):
        if not line:
            if data:
                out.append(b"\n".join(data))
                data = []
        elif line.startswith(b":"):
            out.append(SSEComment(line[1:].lstrip(b" ")))
        elif line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    if data:
        out.append(b"\n".join(data))
    return out


@given(lines, st.data())
def test_events_of_every_shape_decode_as_the_rules_say_however_cut(lines: list[str], data: st.DataObject) -> None:
    """Whole single-line events are cut out at once, the rest line by line: the result is the rules' either way."""
    text = "".join(line + "\n" for line in lines)
    body = text.encode()
    cuts = sorted(data.draw(st.sets(st.integers(0, len(body)), max_size=12)))
    pieces = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert decode(pieces) == reference(text)


def test_a_whole_event_over_the_limit_is_refused_with_the_events_before_it() -> None:
    decoder = SSEDecoder(max_event_bytes=10)
    with pytest.raises(SSEError) as raised:
        decoder.feed(b"data: short\n\ndata: " + b"x" * 11 + b"\n\n")
    assert raised.value.events == [b"short"]
