"""The whole stream path without sockets: upstream bytes, split every way, through the translator and the chat
encoder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.errors import ErrorKind
from gateway.core.events import Done, Error, Event
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.think import DEFAULT_TAGS, ThinkFilter, Visible
from gateway.core.translator import StreamPhase, StreamTranslator
from gateway.core.usage import TokenUsage
from gateway.dialects.chat import ChatStreamEncoder
from gateway.dialects.openai_errors import error_object
from tests.helpers.streams import (
    agent_stream,
    options_of,
    partitions,
    recorded_body,
    recorded_files,
    split_evenly,
    sse,
    translate,
)

RECORDED = recorded_files()
INNER = "PRIVATE reasoning"


def run(
    reads: list[bytes], options: RewriteOptions | None = None, *, raw_chunks: bool = True, **limits: Any
) -> tuple[bytes, list[Event]]:
    """What a chat client receives for these upstream reads, and the events behind it.

    ``raw_chunks=False`` has the translator make every event, as for a front door that reads them all.
    """
    return translate(
        reads, options or RewriteOptions(**limits), ChatStreamEncoder(shortcuts=Shortcuts.CHECK), raw_chunks=raw_chunks
    )


def payloads(body: bytes) -> list[Any]:
    return [orjson.loads(line[6:]) for line in body.split(b"\n\n") if line.startswith(b"data: {")]


def visible_text(body: bytes) -> str:
    return "".join(
        (ch.get("delta") or {}).get("content") or "" for p in payloads(body) for ch in p.get("choices") or ()
    )


def agent_body(message: str, size: int = 3) -> bytes:
    document = json.dumps({"inner_thoughts": INNER, "message": message})
    return sse(agent_stream(split_evenly(document, size)))


# Splits never change what the client gets.


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
@pytest.mark.parametrize("route", ["rewrite", "plain"])
def test_every_split_of_a_recorded_stream_gives_the_same_client_bytes(path: Path, route: str) -> None:
    body = recorded_body(path)
    options = RewriteOptions.plain() if route == "plain" else options_of(reasoning="expose")
    whole, events = run([body], options)
    assert isinstance(events[-1], Done)
    for cut in range(1, len(body)):
        assert run([body[:cut], body[cut:]], options)[0] == whole, f"split at {cut}"
    assert run([body[i : i + 1] for i in range(len(body))], options)[0] == whole


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_a_plain_route_relays_recorded_streams_byte_for_byte(path: Path) -> None:
    body = recorded_body(path)
    relayed, _ = run([body], RewriteOptions.plain())
    events = [e for e in body.replace(b"\r\n", b"\n").split(b"\n\n") if e.strip()]
    assert relayed == b"".join(e.strip(b"\n") + b"\n\n" for e in events)


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_a_plain_route_gives_a_chat_client_the_same_bytes_with_or_without_the_choices_events(path: Path) -> None:
    body = recorded_body(path)
    relayed, events = run([body], RewriteOptions.plain())
    assert relayed == run([body], RewriteOptions.plain(), raw_chunks=False)[0] and isinstance(events[-1], Done)


@st.composite
def plain_streams(draw: st.DrawFn) -> bytes:
    """Streams of one or two choices with content, tool calls, choices without a delta, usage; some unfinished."""
    head = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    chunks: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(1, 8))):
        choices = []
        for index in draw(st.sampled_from([[0], [1], [0, 1]])):
            shape = draw(st.sampled_from(["content", "call", "no delta", "empty"]))
            delta: dict[str, Any] = {
                "content": {"content": draw(st.text(max_size=5))},
                "call": {"tool_calls": [{"index": 0, "function": {"arguments": draw(st.text(max_size=5))}}]},
                "empty": {},
            }.get(shape, {})
            finish = draw(st.sampled_from([None, None, "stop", "tool_calls", "length"]))
            choice: dict[str, Any] = {"index": index, "finish_reason": finish, "x_filter": {"ok": True}}
            if shape != "no delta":
                choice["delta"] = delta
            choices.append(choice)
        chunks.append({**head, "choices": choices})
    if draw(st.booleans()):
        chunks.append({**head, "choices": [], "usage": {"total_tokens": 3}})
    return sse(chunks, done=draw(st.booleans()))


@settings(max_examples=200)
@given(plain_streams(), st.data())
def test_a_plain_route_gives_a_chat_client_every_chunk_as_it_came(body: bytes, data: Any) -> None:
    # As it came, but a choice without a delta gets an empty one; and the stream ends as it would with
    # every event made (for the other front doors).
    reads = data.draw(partitions(body))
    relayed, events = run(reads, RewriteOptions.plain())
    expected = [
        {**c, "choices": [choice if "delta" in choice else {**choice, "delta": {}} for choice in c["choices"]]}
        for c in payloads(body)
    ]
    sent = payloads(relayed)
    if isinstance(events[-1], Done):
        assert sent == expected and relayed.endswith(b"data: [DONE]\n\n")
    else:
        assert sent[:-1] == expected and "error" in sent[-1]
    _, every_event = run(reads, RewriteOptions.plain(), raw_chunks=False)
    last, also_last = events[-1], every_event[-1]
    assert type(last) is type(also_last) and type(last) in (Done, Error)
    if isinstance(last, Error) and isinstance(also_last, Error):
        assert last.error.kind is also_last.error.kind


@pytest.mark.parametrize("route", ["rewrite", "plain"])
def test_an_event_sent_as_several_data_lines_reaches_the_client_as_one(route: str) -> None:
    body = (
        b'data: {"id":"x","choices":[{"index":0,\ndata: "delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    client, _ = run([body], RewriteOptions.plain() if route == "plain" else RewriteOptions())
    assert (
        client == b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )


message_text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=80)


def shown_of(message: str) -> str:
    """What a client sees of a message-tool text: a segment like any other, read by the think filter (a text that
    begins with an opening tag opens a block; one never closed was all reasoning)."""
    think = ThinkFilter(DEFAULT_TAGS)
    return "".join(piece.text for piece in [*think.feed(message), *think.close()] if isinstance(piece, Visible))


@settings(max_examples=150)
@given(st.data())
def test_agent_streams_under_random_reads_give_the_message_exactly(data: st.DataObject) -> None:
    message = data.draw(message_text | st.sampled_from(["<think>", " <think>x</think>Hi", "Hi <think>", "</think>"]))
    body = agent_body(message, data.draw(st.integers(1, 7)))
    whole, _ = run([body])
    split, events = run(data.draw(partitions(body)))
    assert split == whole
    assert visible_text(split) == shown_of(message)
    assert INNER not in split.decode() and isinstance(events[-1], Done)
    assert split.endswith(b"data: [DONE]\n\n")


def test_every_split_of_an_agent_stream() -> None:
    body = agent_body('Hi "you" \\ é 😀\nbye', size=2)
    whole, _ = run([body])
    assert visible_text(whole) == 'Hi "you" \\ é 😀\nbye'
    for cut in range(1, len(body)):
        assert run([body[:cut], body[cut:]])[0] == whole


# Every fault ends the stream in exactly one error event, after whatever came before it.


def errors(events: list[Event]) -> list[Error]:
    return [e for e in events if isinstance(e, Error)]


FAULTS = {
    "garbage data": (lambda good: [*good[:2], b"data: {not json\n\n", *good[2:]], ErrorKind.INVALID_RESPONSE),
    "not an object": (lambda good: [*good[:2], b"data: [1, 2]\n\n", *good[2:]], ErrorKind.INVALID_RESPONSE),
    "over the limit": (
        lambda good: [*good[:2], b"data: " + b"x" * 5000 + b"\n\n", *good[2:]],
        ErrorKind.INVALID_RESPONSE,
    ),
    "no finish": (lambda good: [*good[:-2], b"data: [DONE]\n\n"], ErrorKind.INCOMPLETE),
    "cut short": (lambda good: good[:-2], ErrorKind.INCOMPLETE),
    "upstream error": (
        lambda good: [*good[:2], b'data: {"error": {"message": "overloaded", "type": "server_error"}}\n\n', *good[2:]],
        ErrorKind.UPSTREAM_ERROR,
    ),
}


@pytest.mark.parametrize("fault", FAULTS)
@settings(max_examples=30)
@given(data=st.data())
def test_every_fault_ends_in_exactly_one_error_event(fault: str, data: st.DataObject) -> None:
    good = [e + b"\n\n" for e in agent_body("Hello there, friend.").split(b"\n\n") if e]
    make, kind = FAULTS[fault]
    body = b"".join(make(good))
    client, events = run(data.draw(partitions(body)), max_event_bytes=4096)
    [error] = errors(events)
    assert events[-1] is error and error.error.kind is kind
    assert not any(isinstance(e, Done) for e in events)
    assert client.endswith(b"data: " + orjson.dumps(error_object(error.error)) + b"\n\n")
    assert b"[DONE]" not in client
    # What came before the fault reached the client first, however the reads were cut.
    assert client == run([body], max_event_bytes=4096)[0]


def test_an_upstream_error_event_reaches_a_chat_client_as_it_came() -> None:
    upstream = {"error": {"message": "overloaded", "type": "server_error", "code": 529}}
    body = sse(agent_stream(['{"message": "Hi"']), done=False)[:-2] + b"\n\ndata: " + orjson.dumps(upstream) + b"\n\n"
    client, _ = run([body])
    assert payloads(client)[-1] == upstream


def test_a_stream_that_ends_before_anything_is_retryable_and_commits_nothing() -> None:
    translator = StreamTranslator(RewriteOptions(), "up")
    assert translator.feed(b": keep-alive\n\n")[0].text == b"keep-alive"  # type: ignore[union-attr]
    [error] = translator.end()
    assert isinstance(error, Error) and error.error.retryable and error.error.kind is ErrorKind.INCOMPLETE
    assert translator.chunks == 0 and translator.phase is StreamPhase.FAILED


def test_a_fault_the_shell_reports_is_the_last_event_and_only_once() -> None:
    from gateway.core.errors import GatewayError

    translator = StreamTranslator(RewriteOptions(), "up")
    translator.feed(agent_body("Hi")[:200])
    timeout = GatewayError(ErrorKind.TIMEOUT, "The upstream provider 'up' timed out mid-stream.")
    assert translator.fail(timeout) == [Error(timeout)]
    assert translator.fail(timeout) == [] and translator.feed(b"data: [DONE]\n\n") == [] and translator.end() == []


def test_bytes_after_done_are_ignored() -> None:
    body = agent_body("Hi") + b'data: {"choices": [{"index": 0, "delta": {"content": "late"}}]}\n\n'
    client, events = run([body])
    assert b"late" not in client and isinstance(events[-1], Done)


def test_usage_is_kept_for_the_shell() -> None:
    chunks = agent_stream(['{"message": "Hi"}'])
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    translator = StreamTranslator(RewriteOptions(), "up")
    translator.feed(sse([*chunks, {"id": "x", "choices": [], "usage": usage}]))
    assert translator.usage == TokenUsage(prompt=3, completion=4) and translator.phase is StreamPhase.ENDED


@pytest.mark.parametrize("route", ["rewrite", "plain"])
def test_every_choice_a_client_gets_has_a_delta_and_content_filter_fields_survive(route: str) -> None:
    """Azure sends, after a choice's finish, a choice with content-filter results and no delta at all."""
    import openai.types.chat as types

    tail = {
        "index": 0,
        "finish_reason": None,
        "content_filter_offsets": {"check_offset": 35, "start_offset": 35},
        "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
    }
    head = {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body = sse(
        [
            {**head, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}, "finish_reason": None}]},
            {**head, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**head, "choices": [tail]},
        ]
    )
    client, events = run([body], RewriteOptions.plain() if route == "plain" else RewriteOptions())
    sent = payloads(client)
    for chunk in sent:
        parsed = types.ChatCompletionChunk.model_validate(chunk)
        assert all(choice.delta is not None for choice in parsed.choices)  # what a stock client reads
    assert sent[-1]["choices"] == [{**tail, "delta": {}}] and isinstance(events[-1], Done)


# An event that is not a chunk is never relayed on a rewrite route.

NOT_CHUNKS = [
    {"choices": "not a list", "note": "SECRET-590"},
    {"choices": {"0": {"delta": {"content": "SECRET-590"}}}},
    {"id": "x", "note": "SECRET-590"},
]


@pytest.mark.parametrize("bad", NOT_CHUNKS, ids=["choices a string", "choices an object", "no choices"])
def test_an_event_that_is_not_a_chunk_fails_a_rewrite_route_and_is_relayed_on_a_plain_one(bad: dict[str, Any]) -> None:
    stream = agent_stream(split_evenly(json.dumps({"inner_thoughts": INNER, "message": "Hello."}), 3))
    body = sse([stream[0], bad, *stream[1:]])
    client, events = run([body], options_of(), raw_chunks=False)
    assert isinstance(events[-1], Error) and events[-1].error.kind is ErrorKind.INVALID_RESPONSE
    assert b"SECRET" not in client and b"[DONE]" not in client
    assert payloads(client)[-1]["error"]["code"] == "upstream_invalid_event"
    plain, events = run([sse([{"choices": [{"index": 0, "delta": {"content": "Hi"}}]}, bad])], RewriteOptions.plain())
    assert orjson.dumps(bad) in plain  # a plain route relays what it does not rewrite, as it came
