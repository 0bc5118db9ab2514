"""Reasoning wherever a provider puts it, through the whole answer path without sockets.

The provider fields (``reasoning_content``, ``reasoning``, OpenRouter's ``reasoning_details``) and
think tags in the visible text, on routes that hide and that expose reasoning: streamed through the
stream translator and the chat, Responses and Anthropic encoders, and non-streaming through
``replay_completion`` and each front door's builder. The recorded reasoning streams are read from
``tests/fixtures/recorded/reasoning``; the scripted ones are shaped like the servers they name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.events import Done, ReasoningDelta, TextDelta
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.rewriter import StreamRewriter, replay_completion
from gateway.dialects import anthropic as anthropic_dialect
from gateway.dialects import chat as chat_dialect
from gateway.dialects import responses as responses_dialect
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers import anthropic as anthropic_helpers
from tests.helpers import responses as responses_helpers
from tests.helpers.chat import ChatAnswer, chat_bytes, read_chat
from tests.helpers.paths import FIXTURES
from tests.helpers.streams import (
    call,
    choice,
    chunk,
    options_of,
    recorded_body,
    recorded_files,
    sse,
    sse_payloads,
    translate,
)

WHITESPACE = " \t\n\r"
REASONING_DIR = FIXTURES / "reasoning"
RECORDED = recorded_files("reasoning")
RESPONSES_REQUEST = responses_helpers.request_of(stream=True)
MESSAGES_REQUEST = anthropic_helpers.STREAMING


def route(reasoning: str, **options: Any) -> RewriteOptions:
    """A reasoning model's route: no agent mode, the reasoning hidden or exposed (think tags on by default)."""
    return options_of(reasoning=reasoning, inner_thoughts="none", inject_tools=False, **options)


def agent_route(reasoning: str, **options: Any) -> RewriteOptions:
    """An agent route (send_message, inner thoughts as a kwarg), the reasoning hidden or exposed."""
    return options_of(reasoning=reasoning, **options)


def leaked(body: bytes, reasoning: str, allowed: str) -> list[str]:
    """Stretches of the reasoning (12 characters, raw or as JSON writes them) found in the client's bytes.

    A stretch that also occurs in ``allowed`` (the visible text, a call's arguments) proves nothing and is skipped.
    """
    text = body.decode()
    found = []
    for start in range(0, max(len(reasoning) - 11, 1), 5):
        stretch = reasoning[start : start + 12]
        if len(stretch) < 4 or stretch in allowed:
            continue
        if stretch in text or orjson.dumps(stretch).decode()[1:-1] in text:
            found.append(stretch)
    return found


def assert_chat(answer: ChatAnswer, reasoning: str, exposed: bool, text: str, allowed: str = "") -> None:
    """The visible text is ``text`` exactly; the reasoning arrives whole as ``reasoning_content`` or not at all.

    The provider fields never reach a chat client as they came, on either route.
    """
    assert answer.content == text
    assert not answer.keys & {"reasoning", "reasoning_details"}, answer.keys
    if exposed:
        assert answer.reasoning == reasoning
    else:
        assert "reasoning_content" not in answer.keys
        assert not leaked(answer.body, reasoning, text + allowed)


# 1. The provider reasoning fields, each one alone and in the pairs servers send.

REASONING_TEXT = "The user greets me; a short greeting back."
PIECES = ["The user greets", " me; a short", " greeting back."]
ANSWER = "Hello! How can I help?"


def detail(kind: str, text: str, **more: Any) -> dict[str, Any]:
    """One OpenRouter ``reasoning_details`` item; ``text`` goes where its type keeps it."""
    key = {"reasoning.text": "text", "reasoning.summary": "summary", "reasoning.encrypted": "data"}[kind]
    return {"type": kind, key: text, "format": "anthropic-claude-v1", "index": 0, **more}


FIELD_SHAPES: dict[str, Callable[[str], dict[str, Any]]] = {
    "reasoning_content": lambda text: {"reasoning_content": text},
    "reasoning": lambda text: {"reasoning": text},
    "reasoning_details text": lambda text: {"reasoning_details": [detail("reasoning.text", text)]},
    "reasoning_details summary": lambda text: {"reasoning_details": [detail("reasoning.summary", text)]},
    # vLLM fills both names with the same text while it renames the field; OpenRouter sends both forms.
    "reasoning_content and reasoning": lambda text: {"reasoning_content": text, "reasoning": text},
    "reasoning and reasoning_details": lambda text: {
        "reasoning": text,
        "reasoning_details": [detail("reasoning.text", text, signature="")],
    },
}


def field_stream(shape: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    chunks = [chunk(choice(role="assistant", content="", **shape(PIECES[0])))]
    chunks += [chunk(choice(**shape(piece))) for piece in PIECES[1:]]
    chunks += [chunk(choice(content=piece)) for piece in ("Hello! ", "How can I help?")]
    return [*chunks, chunk(choice(finish="stop"))]


@pytest.mark.parametrize("exposed", [False, True], ids=["hide", "expose"])
@pytest.mark.parametrize("shape", FIELD_SHAPES)
@pytest.mark.parametrize("make_route", [route, agent_route], ids=["reasoning model", "agent"])
def test_each_reasoning_field_streams_hidden_or_exposed_and_counts_once(
    shape: str, exposed: bool, make_route: Callable[..., RewriteOptions]
) -> None:
    body = sse(field_stream(FIELD_SHAPES[shape]))
    answer = read_chat(chat_bytes([body], make_route("expose" if exposed else "hide")))
    assert_chat(answer, REASONING_TEXT, exposed, ANSWER)
    assert answer.finish == ["stop"]


@pytest.mark.parametrize("exposed", [False, True], ids=["hide", "expose"])
@pytest.mark.parametrize("shape", FIELD_SHAPES)
def test_each_reasoning_field_reaches_the_other_front_doors_as_reasoning(shape: str, exposed: bool) -> None:
    body = sse(field_stream(FIELD_SHAPES[shape]))
    options = route("expose" if exposed else "hide")
    events, _, responses_body = responses_helpers.run([body], RESPONSES_REQUEST, options)
    final = responses_helpers.check_protocol(events)
    assert responses_helpers.deltas(events) == ANSWER
    assert responses_helpers.reasoning_of(final) == (REASONING_TEXT if exposed else "")
    assert [item["type"] for item in final["output"]] == (["reasoning", "message"] if exposed else ["message"])
    messages_body, _ = translate(
        [body], options, anthropic_dialect.encoder(MESSAGES_REQUEST, created=0, shortcuts=Shortcuts.CHECK)
    )
    stream = anthropic_helpers.read(messages_body)
    assert stream.joined("text") == ANSWER
    assert stream.joined("thinking") == (REASONING_TEXT if exposed else "")
    if not exposed:
        assert not leaked(responses_body, REASONING_TEXT, ANSWER) and not leaked(messages_body, REASONING_TEXT, ANSWER)


def test_details_without_readable_text_add_nothing_and_never_pass_raw() -> None:
    """Encrypted items, signatures and empty lists carry no text: nothing to expose, and the field is not relayed."""
    chunks = [
        chunk(choice(role="assistant", content="", reasoning_details=[])),
        chunk(choice(reasoning_details=[detail("reasoning.encrypted", "gAAAAB-opaque-blob")])),
        chunk(choice(reasoning_details=[{"type": "reasoning.text", "signature": "sig-bytes", "index": 0}])),
        chunk(choice(reasoning_details=[{"type": "reasoning.text", "text": None}, "not an item", {"text": "untyped"}])),
        chunk(choice(content=ANSWER, reasoning_details=[])),
        chunk(choice(finish="stop")),
    ]
    for reasoning in ("hide", "expose"):
        answer = read_chat(chat_bytes([sse(chunks)], route(reasoning)))
        assert answer.content == ANSWER and answer.reasoning == ""
        assert "reasoning_details" not in answer.keys
        assert b"opaque" not in answer.body and b"sig-bytes" not in answer.body and b"untyped" not in answer.body


def test_details_text_counts_when_the_reasoning_string_is_empty_or_null() -> None:
    chunks = [
        chunk(choice(role="assistant", reasoning=None, reasoning_details=[detail("reasoning.summary", "Summed ")])),
        chunk(choice(reasoning="", reasoning_content=None, reasoning_details=[detail("reasoning.text", "up.")])),
        chunk(choice(content="Ok", finish="stop")),
    ]
    answer = read_chat(chat_bytes([sse(chunks)], route("expose")))
    assert answer.reasoning == "Summed up." and answer.content == "Ok"


def test_several_detail_items_in_one_delta_are_read_in_order() -> None:
    items = [
        detail("reasoning.summary", "First, "),
        detail("reasoning.encrypted", "blob"),
        detail("reasoning.text", "then."),
    ]
    chunks = [chunk(choice(role="assistant", reasoning_details=items)), chunk(choice(content="Ok", finish="stop"))]
    assert read_chat(chat_bytes([sse(chunks)], route("expose"))).reasoning == "First, then."


def completion(message: dict[str, Any], finish: str = "stop") -> dict[str, Any]:
    choice_ = {"index": 0, "message": {"role": "assistant", **message}, "logprobs": None, "finish_reason": finish}
    usage = {"prompt_tokens": 9, "completion_tokens": 21, "total_tokens": 30}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [choice_],
        "usage": usage,
    }


@dataclass
class Built:
    """A non-streaming answer as each front door builds it: (text, reasoning) per door, and the chat body."""

    chat: dict[str, Any]
    views: dict[str, tuple[str, str]]


def build_all(upstream: dict[str, Any], options: RewriteOptions) -> Built:
    """The non-streaming answer path: the completion replayed through the rewrite, then each door's builder."""
    raw = orjson.dumps(upstream)
    events = replay_completion(upstream, options, raw=raw)
    chat_body = orjson.loads(
        chat_dialect.build(chat_dialect.parse_request(b'{"model": "m", "messages": []}'), events, created=1)
    )
    message = chat_body["choices"][0]["message"]
    request = responses_helpers.request_of()
    response = responses_dialect.response_object(request, events, created=1)
    anthropic = orjson.loads(anthropic_dialect.build(anthropic_helpers.request_of(), events, created=1))
    views = {
        "chat": (message.get("content") or "", message.get("reasoning_content") or ""),
        "responses": (
            "".join(responses_helpers.item_text(i) for i in response["output"] if i["type"] == "message"),
            responses_helpers.reasoning_of(response),
        ),
        "anthropic": (
            "".join(b["text"] for b in anthropic["content"] if b["type"] == "text"),
            "".join(b["thinking"] for b in anthropic["content"] if b["type"] == "thinking"),
        ),
    }
    return Built(chat_body, views)


NON_STREAMING_FIELDS: dict[str, dict[str, Any]] = {
    "reasoning_content": {"reasoning_content": REASONING_TEXT},
    "reasoning": {"reasoning": REASONING_TEXT},
    "reasoning_details text": {"reasoning_details": [detail("reasoning.text", REASONING_TEXT, signature="c2ln")]},
    "reasoning_details summary": {"reasoning_details": [detail("reasoning.summary", REASONING_TEXT)]},
    "reasoning and reasoning_details": {
        "reasoning": REASONING_TEXT,
        "reasoning_details": [detail("reasoning.text", REASONING_TEXT, signature="c2ln")],
    },
    "reasoning_content and reasoning": {"reasoning_content": REASONING_TEXT, "reasoning": REASONING_TEXT},
    "think tags": {"content_prefix": f"<think>{REASONING_TEXT}</think>\n\n"},
    "think tags, template-opened": {"content_prefix": f"{REASONING_TEXT}</think>\n\n", "think_open": True},
}


@pytest.mark.parametrize("exposed", [False, True], ids=["hide", "expose"])
@pytest.mark.parametrize("shape", NON_STREAMING_FIELDS)
def test_non_streaming_answers_hide_or_expose_every_kind_of_reasoning_on_every_front_door(
    shape: str, exposed: bool
) -> None:
    fields = dict(NON_STREAMING_FIELDS[shape])
    think_open = fields.pop("think_open", False)
    message = {"content": fields.pop("content_prefix", "") + ANSWER, **fields}
    built = build_all(completion(message), route("expose" if exposed else "hide", think_open=think_open))
    expected = (ANSWER, REASONING_TEXT if exposed else "")
    assert built.views == {"chat": expected, "responses": expected, "anthropic": expected}
    chat_message = built.chat["choices"][0]["message"]
    assert not chat_message.keys() & {"reasoning", "reasoning_details"}
    assert ("reasoning_content" in chat_message) is exposed
    assert built.chat["choices"][0]["finish_reason"] == "stop" and built.chat["usage"]["total_tokens"] == 30


def test_a_non_streaming_answer_left_inside_a_think_block_is_only_reasoning_and_keeps_its_finish() -> None:
    upstream = completion({"content": "<think>\nStill weighing the options when the limit"}, finish="length")
    for exposed in (False, True):
        built = build_all(upstream, route("expose" if exposed else "hide"))
        thought = "\nStill weighing the options when the limit" if exposed else ""
        assert built.views == {"chat": ("", thought), "responses": ("", thought), "anthropic": ("", thought)}
        assert built.chat["choices"][0]["finish_reason"] == "length"
        assert built.chat["choices"][0]["message"]["content"] is None


# 2. Content mode with think tags: the content is reasoning, the message is the answer.


def content_mode_stream(content: list[str], message: str) -> list[dict[str, Any]]:
    document = json.dumps({"message": message})
    chunks = [chunk(choice(role="assistant", content=content[0]))]
    chunks += [chunk(choice(content=piece)) for piece in content[1:]]
    chunks.append(chunk(choice(tool_calls=[call(0, "", id="call_m", name="send_message")])))
    chunks += [chunk(choice(tool_calls=[call(0, document[i : i + 5])])) for i in range(0, len(document), 5)]
    return [*chunks, chunk(choice(finish="tool_calls"))]


@pytest.mark.parametrize(
    ("think_open", "content", "message", "reasoning"),
    [
        (
            False,
            ["<think>", "Plan: gree", "t.</th", "ink>\n\nI will greet."],
            "Hi <think> there",
            "Plan: greet.\n\nI will greet.",
        ),
        (False, ["I will greet."], "<think>Be brief.</think>\n\nHi <think> there", "I will greet.\n\nBe brief."),
        # The template opened the block: the content closes it, so the message is the answer.
        (True, ["Plan: greet.", "</think>", "\n\nI will greet."], "Hi <think> there", "Plan: greet.\n\nI will greet."),
    ],
)
def test_content_mode_with_think_tags_shows_only_the_message(
    think_open: bool, content: list[str], message: str, reasoning: str
) -> None:
    body = sse(content_mode_stream(content, message))
    for exposed in (False, True):
        options = agent_route("expose" if exposed else "hide", inner_thoughts="content", think_open=think_open)
        answer = read_chat(chat_bytes([body], options))
        assert_chat(answer, reasoning, exposed, "Hi <think> there")
        assert answer.finish == ["stop"] and answer.calls == []
        if not exposed:
            assert b"greet" not in answer.body and b"brief" not in answer.body


# 3. The recorded reasoning streams, golden: the answer as it was, the reasoning hidden or whole.


@dataclass(frozen=True)
class Recording:
    """What a recorded stream says, read independently of the gateway: its answer, its reasoning, its calls."""

    body: bytes
    answer: str
    reasoning: str
    calls: list[tuple[str, str, Any]]
    finish: str
    think_tags: bool  # the reasoning is between think tags in the content


def recording(path: Path) -> Recording:
    return recording_from(recorded_body(path))


def recording_from(body: bytes) -> Recording:
    deltas = [
        item.get("delta") or {}
        for payload in sse_payloads(body)
        for item in payload.get("choices") or ()
        if isinstance(item, dict)
    ]
    content = "".join(d.get("content") or "" for d in deltas)
    named = {key: "".join(d.get(key) or "" for d in deltas) for key in ("reasoning_content", "reasoning")}
    details = "".join(
        item.get("text") or ""
        for d in deltas
        for item in d.get("reasoning_details") or ()
        if item.get("type") == "reasoning.text"
    )
    assert not (named["reasoning_content"] and named["reasoning"]), "no recording fills both names"
    fields = named["reasoning_content"] or named["reasoning"]
    assert details in ("", fields), "OpenRouter's details repeat its reasoning"
    think_tags = content.lstrip(WHITESPACE).startswith("<think>")
    if think_tags:
        assert not fields
        block, closing, after = content.lstrip(WHITESPACE).removeprefix("<think>").partition("</think>")
        assert closing
        reasoning, answer = block, after.lstrip(WHITESPACE)
    else:
        reasoning, answer = fields, content
    assert reasoning, "every reasoning recording reasons"
    calls: dict[int, list[str]] = {}
    for d in deltas:
        for position, tool_call in enumerate(d.get("tool_calls") or ()):
            slot = calls.setdefault(tool_call.get("index", position), ["", "", ""])
            slot[0] = slot[0] or tool_call.get("id") or ""
            slot[1] += tool_call["function"].get("name") or ""
            slot[2] += tool_call["function"].get("arguments") or ""
    finish = [
        item["finish_reason"]
        for payload in sse_payloads(body)
        for item in payload.get("choices") or ()
        if item.get("finish_reason")
    ]
    parsed = [(i, n, json.loads(a)) for i, n, a in (calls[k] for k in sorted(calls))]
    return Recording(body, answer, reasoning, parsed, finish[-1], think_tags)


def recorded(name: str) -> Recording:
    return recording(REASONING_DIR / name)


RECORDED_ROUTES = {
    "hide": route("hide"),
    "expose": route("expose"),
    "agent hide": agent_route("hide"),
    "agent expose": agent_route("expose"),
}


def arguments_text(calls: list[tuple[str, str, Any]]) -> str:
    return "".join(json.dumps(arguments) for _, _, arguments in calls)


@pytest.mark.parametrize("name", RECORDED_ROUTES)
@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_reasoning_streams_on_the_chat_front_door(path: Path, name: str) -> None:
    expected = recording(path)
    exposed = name.endswith("expose")
    answer = read_chat(chat_bytes([expected.body], RECORDED_ROUTES[name]))
    assert_chat(answer, expected.reasoning, exposed, expected.answer, arguments_text(expected.calls))
    assert answer.calls == expected.calls and answer.finish == [expected.finish]


@pytest.mark.parametrize("exposed", [False, True], ids=["hide", "expose"])
@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_reasoning_streams_on_the_responses_front_door(path: Path, exposed: bool) -> None:
    expected = recording(path)
    options = route("expose" if exposed else "hide")
    events, _, body = responses_helpers.run([expected.body], RESPONSES_REQUEST, options)
    final = responses_helpers.check_protocol(events)
    assert final["status"] == "completed"
    assert responses_helpers.deltas(events) == expected.answer
    assert responses_helpers.reasoning_of(final) == (expected.reasoning if exposed else "")
    assert [(name, arguments) for _, name, arguments in responses_helpers.calls_of(final)] == [
        (name, arguments) for _, name, arguments in expected.calls
    ]
    if not exposed:
        assert not any(item["type"] == "reasoning" for item in final["output"])
        assert not leaked(body, expected.reasoning, expected.answer + arguments_text(expected.calls))
    split, _, _ = responses_helpers.run(pieces_of(expected.body, 61), RESPONSES_REQUEST, options)
    assert [responses_helpers.strip_ids(e) for e in split] == [responses_helpers.strip_ids(e) for e in events]


@pytest.mark.parametrize("exposed", [False, True], ids=["hide", "expose"])
@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_reasoning_streams_on_the_anthropic_front_door(path: Path, exposed: bool) -> None:
    expected = recording(path)
    options = route("expose" if exposed else "hide")
    body, _ = translate(
        [expected.body], options, anthropic_dialect.encoder(MESSAGES_REQUEST, created=0, shortcuts=Shortcuts.CHECK)
    )
    stream = anthropic_helpers.read(body)
    assert stream.joined("text") == expected.answer
    assert stream.joined("thinking") == (expected.reasoning if exposed else "")
    assert [orjson.loads(b.text) for b in stream.blocks if b.type == "tool_use"] == [a for _, _, a in expected.calls]
    assert stream.delta is not None
    assert stream.delta["delta"]["stop_reason"] == ("tool_use" if expected.calls else "end_turn")
    if not exposed:
        assert all(block.type != "thinking" for block in stream.blocks)
        assert not leaked(body, expected.reasoning, expected.answer + arguments_text(expected.calls))
    split, _ = translate(
        pieces_of(expected.body, 61),
        options,
        anthropic_dialect.encoder(MESSAGES_REQUEST, created=0, shortcuts=Shortcuts.CHECK),
    )
    assert [(b.type, b.text) for b in anthropic_helpers.read(split).blocks] == [(b.type, b.text) for b in stream.blocks]


def pieces_of(body: bytes, size: int) -> list[bytes]:
    return [body[i : i + size] for i in range(0, len(body), size)]


def sse_events(body: bytes) -> list[bytes]:
    """The body's events (comments included), each with its blank line."""
    return [event + b"\n\n" for event in body.split(b"\n\n") if event]


def landmarks(body: bytes) -> dict[int, tuple[Any, ...]]:
    """The events where the answer changes course (a think tag, reasoning starting or stopping, a call, a finish),
    by position, with what each says: reasoning, a tag, content, a call, its finish reason."""
    marks = {}
    previous: tuple[Any, ...] | None = None
    for position, event in enumerate(sse_events(body)):
        if not event.startswith(b"data: {"):
            continue
        item: dict[str, Any] = next(iter(orjson.loads(event[6:]).get("choices") or ()), {})
        delta = item.get("delta") or {}
        content = delta.get("content") or ""
        kind = (
            bool(delta.get("reasoning_content") or delta.get("reasoning")),
            "think>" in content,
            bool(content),
            bool(delta.get("tool_calls")),
            item.get("finish_reason"),
        )
        if kind != previous or kind[-1] is not None:
            marks[position] = kind
        previous = kind
    return marks


def excerpt(body: bytes, around: int = 2) -> bytes:
    """The recording's own events around each landmark, with its first and last ones; the long runs between are
    left out."""
    events = sse_events(body)
    keep = set(range(3)) | set(range(len(events) - 3, len(events)))
    for mark in landmarks(body):
        keep |= set(range(max(mark - around, 0), min(mark + around + 1, len(events))))
    return b"".join(events[i] for i in sorted(keep))


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_every_split_of_the_reads_gives_the_same_client_bytes(path: Path) -> None:
    """Every two-read split of the recording's landmarks, in an excerpt that keeps its own events (on the route that
    exposes reasoning, every fifth); the whole recording read a byte at a time and in larger pieces."""
    body = excerpt(recorded_body(path))
    full = recorded_body(path)
    for reasoning, step in (("hide", 1), ("expose", 5)):
        whole = chat_bytes([body], route(reasoning))
        for cut in range(1, len(body), step):
            assert chat_bytes([body[:cut], body[cut:]], route(reasoning)) == whole, (reasoning, cut)
        whole = chat_bytes([full], route(reasoning))
        for size in (1, 7, 333):
            assert chat_bytes(pieces_of(full, size), route(reasoning)) == whole, (reasoning, size)


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_random_reads_of_the_recorded_streams_give_the_same_client_bytes(data: st.DataObject) -> None:
    path = data.draw(st.sampled_from(RECORDED))
    options = route(data.draw(st.sampled_from(["hide", "expose"])))
    body = recorded_body(path)
    cuts = sorted(data.draw(st.sets(st.integers(1, len(body) - 1), max_size=60)))
    reads = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)], strict=True)]
    assert chat_bytes(reads, options) == chat_bytes([body], options)


def test_the_excerpts_keep_every_landmark_of_the_recordings() -> None:
    """The split test reads each recording's think tags, its turn from reasoning to answer, its calls and its finish."""
    for path in RECORDED:
        full, short = recorded_body(path), excerpt(recorded_body(path))
        assert list(landmarks(short).values()) == list(landmarks(full).values()), path.name
        assert len(short) < 8_000 and short.endswith(b"data: [DONE]\n\n")


# 4. Scripted streams shaped like the servers that put reasoning in the text.


def released(chunks: list[dict[str, Any]], options: RewriteOptions) -> list[tuple[str, str]]:
    """What each upstream chunk releases, (visible text, exposed reasoning), in order; the stream's end last."""
    rewriter = StreamRewriter(options)
    out = []
    for events in [*(rewriter.feed(c) for c in chunks), rewriter.finish()]:
        visible = "".join(e.text for e in events if isinstance(e, TextDelta))
        reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
        out.append((visible, reasoning))
    return out


def vllm(
    *deltas: dict[str, Any], finish: str = "stop", model: str = "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
) -> list[dict[str, Any]]:
    """A vLLM stream: an empty first content with the role, one delta per chunk, the finish on an empty content."""
    head = {"id": "chatcmpl-7f3a", "object": "chat.completion.chunk", "created": 1735689600, "model": model}

    def make(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        item = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason, "stop_reason": None}
        return {**head, "choices": [item]}

    usage = {"prompt_tokens": 12, "total_tokens": 60, "completion_tokens": 48}
    chunks = [make({"role": "assistant", "content": ""}), *map(make, deltas), make({"content": ""}, finish)]
    return [*chunks, {**head, "choices": [], "usage": usage}]


def contents(*texts: str) -> list[dict[str, Any]]:
    return [{"content": text} for text in texts]


R1_TOKENS = [
    "<think>",
    "\n",
    "Okay",
    ",",
    " the",
    " user",
    " said",
    " hi",
    ".",
    " I",
    " should",
    " greet",
    " them",
    ".\n",
]
R1_TOKENS += ["</think>", "\n\n", "Hello", "!", " How", " can", " I", " help", " you", " today", "?"]


def test_deepseek_r1_on_vllm_without_a_reasoning_parser_each_token_is_released_as_it_comes() -> None:
    chunks = vllm(*contents(*R1_TOKENS))
    thought = "\nOkay, the user said hi. I should greet them.\n"
    for exposed in (False, True):
        steps = released(chunks, route("expose" if exposed else "hide"))
        tokens = ["", *R1_TOKENS, "", "", ""]  # the role chunk; the finish, usage and end release nothing
        answer_from = R1_TOKENS.index("Hello") + 1
        assert [visible for visible, _ in steps] == [
            t if i >= answer_from and t.strip() else "" for i, t in enumerate(tokens)
        ]
        assert "".join(reasoning for _, reasoning in steps) == (thought if exposed else "")
        if exposed:  # each reasoning token goes out with its own chunk, the tags never
            assert [r for _, r in steps[2 : answer_from - 2]] == R1_TOKENS[1:-11]
        body = sse(chunks)
        answer = read_chat(chat_bytes([body], route("expose" if exposed else "hide")))
        assert_chat(answer, thought, exposed, "Hello! How can I help you today?")
        assert answer.finish == ["stop"]
    # Hidden, every answer chunk reaches the client as the bytes the upstream sent.
    body = chat_bytes([sse(chunks)], route("hide"))
    for token in R1_TOKENS[R1_TOKENS.index("Hello") :]:
        assert orjson.dumps(vllm(*contents(token))[1]) in body


def test_deepseek_r1_on_vllm_with_merged_deltas_cut_inside_the_tags() -> None:
    """vLLM with a stream interval merges tokens: a delta holds the end of the reasoning and the start of the answer."""
    pieces = [
        "<th",
        "ink>\nOkay, the user said hi.",
        " I should greet them.\n</th",
        "ink>\n\nHello! How",
        " can I help?",
    ]
    steps = released(vllm(*contents(*pieces)), route("expose"))
    assert steps == [
        ("", ""),
        ("", ""),
        ("", "\nOkay, the user said hi."),
        ("", " I should greet them.\n"),
        ("Hello! How", ""),
        (" can I help?", ""),
        ("", ""),
        ("", ""),
        ("", ""),
    ]


QWEN3 = "Qwen/Qwen3-32B"


def tool_call_deltas(index: int, call_id: str, name: str, arguments: str, size: int = 9) -> list[dict[str, Any]]:
    """A call as vLLM's hermes parser streams it: the name first, then the arguments in pieces."""
    header = {"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": {"name": name}}]}
    pieces = [arguments[i : i + size] for i in range(0, len(arguments), size)]
    return [header, *({"tool_calls": [{"index": index, "function": {"arguments": p}}]} for p in pieces)]


def test_qwen3_thinks_then_calls_the_clients_tool() -> None:
    """A reasoning-model route: the think block is reasoning, the client's call passes as it came."""
    thought = "\nThe user wants the weather in Oslo. I'll call get_weather.\n"
    deltas = contents("<think>", thought, "</think>", "\n\n")
    deltas += tool_call_deltas(0, "chatcmpl-tool-1", "get_weather", '{"city": "Oslo", "unit": "celsius"}')
    chunks = vllm(*deltas, finish="tool_calls", model=QWEN3)
    for exposed in (False, True):
        answer = read_chat(chat_bytes([sse(chunks)], route("expose" if exposed else "hide")))
        assert_chat(answer, thought, exposed, "", '{"city": "Oslo", "unit": "celsius"}')
        assert answer.calls == [("chatcmpl-tool-1", "get_weather", {"city": "Oslo", "unit": "celsius"})]
        assert answer.finish == ["tool_calls"]


def test_qwen3_on_an_agent_route_thinks_before_and_between_its_calls() -> None:
    """Think, call the client's tool (its inner thoughts removed), think again, answer through send_message."""
    first, second = "\nThe user wants the weather. Call the tool first.\n", "\nAlso tell the user what I am doing.\n"
    deltas = contents("<think>", first, "</think>", "\n\n")
    deltas += tool_call_deltas(
        0, "call_w", "get_weather", json.dumps({"inner_thoughts": "Weather first.", "city": "Oslo"})
    )
    deltas += contents("<th", "ink>", second, "</think>\n\n")
    message = json.dumps({"inner_thoughts": "Say so.", "message": "Checking the weather in Oslo <think> now."})
    deltas += tool_call_deltas(1, "call_m", "send_message", message, size=4)
    chunks = vllm(*deltas, finish="tool_calls", model=QWEN3)
    reasoning = f"{first}\n\nWeather first.\n\n{second}\n\nSay so."
    for exposed in (False, True):
        answer = read_chat(chat_bytes([sse(chunks)], agent_route("expose" if exposed else "hide")))
        assert_chat(answer, reasoning, exposed, "Checking the weather in Oslo <think> now.", '{"city": "Oslo"}')
        assert answer.calls == [("call_w", "get_weather", {"city": "Oslo"})]
        assert answer.finish == ["tool_calls"]
        if not exposed:
            assert b"Weather first" not in answer.body and b"Say so" not in answer.body


def test_a_template_opened_block_is_closed_by_the_stream() -> None:
    """DeepSeek-R1-0528 and Qwen3 thinking models: the chat template writes ``<think>``, the stream only
    ``</think>``."""
    pieces = ["Okay", ", the user", " greets me.", "\n", "</", "think", ">", "\n\n", "Hello", "!"]
    chunks = vllm(*contents(*pieces))
    steps = released(chunks, route("expose", think_open=True))
    assert [v for v, _ in steps] == ["", "", "", "", "", "", "", "", "", "Hello", "!", "", "", ""]
    assert "".join(r for _, r in steps) == "Okay, the user greets me.\n"
    for exposed in (False, True):
        answer = read_chat(chat_bytes([sse(chunks)], route("expose" if exposed else "hide", think_open=True)))
        assert_chat(answer, "Okay, the user greets me.\n", exposed, "Hello!")
    # Without think_open the lone closing tag is text, and so is everything around it: the route must say so.
    assert read_chat(chat_bytes([sse(chunks)], route("hide"))).content == "".join(pieces)


KIMI = ("◁think▷", "◁/think▷")


@pytest.mark.parametrize("tags", [(KIMI,), (("<think>", "</think>"), KIMI)], ids=["kimi", "both pairs"])
def test_kimi_style_tags(tags: tuple[tuple[str, str], ...]) -> None:
    pieces = [
        "◁",
        "think▷",
        "The user asks",
        " for a haiku.",
        "◁/",
        "think",
        "▷",
        "\n",
        "Autumn moon",
        "light—\n",
        "a ◁think▷ pause",
    ]
    chunks = vllm(*contents(*pieces), model="moonshotai/Kimi-VL-A3B-Thinking")
    for exposed in (False, True):
        answer = read_chat(chat_bytes([sse(chunks)], route("expose" if exposed else "hide", think_tags=tags)))
        assert_chat(answer, "The user asks for a haiku.", exposed, "Autumn moonlight—\na ◁think▷ pause")
    # The default pair alone does not know these tags: all of it is the answer.
    assert read_chat(chat_bytes([sse(chunks)], route("hide"))).content == "".join(pieces)


@pytest.mark.parametrize("finish", ["length", "stop"])
def test_a_stream_that_ends_inside_a_think_block_has_emitted_only_reasoning(finish: str) -> None:
    """Cut by max_tokens (or never closed): the block's text, a closing tag cut short included, is reasoning."""
    chunks = vllm(*contents("<think>", "\n", "Let me", " count the r's", " in straw", "berry.</th"), finish=finish)
    thought = "\nLet me count the r's in strawberry.</th"
    for exposed in (False, True):
        options = route("expose" if exposed else "hide")
        client, events = translate([sse(chunks)], options, ChatStreamEncoder())
        answer = read_chat(client)
        assert_chat(answer, thought, exposed, "")
        assert answer.finish == [finish] and isinstance(events[-1], Done)
        messages, _ = translate(
            [sse(chunks)], options, anthropic_dialect.encoder(MESSAGES_REQUEST, created=0, shortcuts=Shortcuts.CHECK)
        )
        stream = anthropic_helpers.read(messages)
        assert [(b.type, b.text) for b in stream.blocks] == ([("thinking", thought)] if exposed else [])
        assert stream.delta is not None
        assert stream.delta["delta"]["stop_reason"] == ("max_tokens" if finish == "length" else "end_turn")
        responses, _, _ = responses_helpers.run([sse(chunks)], RESPONSES_REQUEST, options)
        final = responses_helpers.check_protocol(responses)
        assert responses_helpers.reasoning_of(final) == (thought if exposed else "")
        assert final["status"] == ("incomplete" if finish == "length" else "completed")
        assert not any(item["type"] == "message" for item in final["output"])


OPENROUTER = "openrouter-chat-claude-reasoning.sse"


def test_openrouters_details_alone_carry_the_reasoning() -> None:
    """The recording with its ``reasoning`` strings taken out: the ``reasoning_details`` text is the same reasoning."""
    expected = recorded(OPENROUTER)
    chunks = sse_payloads(expected.body)
    for payload in chunks:
        for item in payload["choices"]:
            item["delta"].pop("reasoning", None)
    assert b'"reasoning":' not in sse(chunks)
    for exposed in (False, True):
        answer = read_chat(chat_bytes([sse(chunks)], route("expose" if exposed else "hide")))
        assert_chat(answer, expected.reasoning, exposed, expected.answer)
        assert answer.finish == ["stop"]


def test_a_block_left_open_at_a_tool_call_stays_open_after_it() -> None:
    """The README: the text after the call is reasoning until the closing tag, never the answer."""
    deltas = contents("<think>", "Call the tool, then ")
    deltas += tool_call_deltas(0, "call_1", "get_weather", '{"city": "Oslo"}')
    deltas += contents("read its result.</th", "ink>\n\nIt is sunny.")
    chunks = vllm(*deltas, finish="tool_calls", model=QWEN3)
    answer = read_chat(chat_bytes([sse(chunks)], route("expose")))
    assert answer.content == "It is sunny." and answer.reasoning == "Call the tool, then read its result."
    assert answer.calls == [("call_1", "get_weather", {"city": "Oslo"})]
