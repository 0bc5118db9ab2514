"""The chunk rewriter: each numbered behaviour of the rewrite, provider quirks, recorded streams."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.events import ChunkStart
from gateway.core.rewriter import ArgumentsTooLong, InvalidChunk, StreamRewriter
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.streams import (
    agent_stream,
    call,
    choice,
    chunk,
    options_of,
    recorded_chunks,
    recorded_files,
    rewrite_completion,
    split_evenly,
)

Chunks = list[dict[str, Any]]


def rewrite(chunks: Chunks, **options: Any) -> tuple[Chunks, StreamRewriter]:
    """The chunks a chat client gets for these upstream chunks: the rewriter's events through the chat encoder."""
    rewriter = StreamRewriter(options_of(**options))
    events = [event for c in chunks for event in rewriter.feed(c, orjson.dumps(c))]
    return ChatStreamEncoder().chunks(events + rewriter.finish()), rewriter


def deltas(out: Chunks, index: int = 0) -> list[dict[str, Any]]:
    return [c.get("delta") or {} for o in out for c in o.get("choices", []) if c.get("index") == index]


def text(out: Chunks, field: str = "content", index: int = 0) -> str:
    return "".join(d.get(field) or "" for d in deltas(out, index))


def finish_reasons(out: Chunks, index: int = 0) -> list[str]:
    return [
        c["finish_reason"]
        for o in out
        for c in o.get("choices", [])
        if c.get("index") == index and c.get("finish_reason")
    ]


def client_calls(out: Chunks, index: int = 0) -> list[dict[str, Any]]:
    """Accumulate tool-call deltas the way the OpenAI SDK does."""
    calls: dict[int, dict[str, Any]] = {}
    for d in deltas(out, index):
        for tc in d.get("tool_calls") or ():
            slot = calls.setdefault(tc["index"], {"id": None, "type": None, "name": "", "arguments": ""})
            slot["id"] = slot["id"] or tc.get("id")
            slot["type"] = slot["type"] or tc.get("type")
            slot["name"] += tc.get("function", {}).get("name", "")
            slot["arguments"] += tc.get("function", {}).get("arguments", "")
    return [calls[i] for i in sorted(calls)]


def args(inner: str, message: str, **extra: Any) -> str:
    return json.dumps({"inner_thoughts": inner, "message": message, **extra})


# 1. The message tool becomes content; its inner thoughts are reasoning.

reasoning_text = st.text(alphabet='αβγδεζηθλμ "\\\n', min_size=1, max_size=30)
message_text = st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="αβγδεζηθλμ"), max_size=60)


@settings(max_examples=200)
@given(st.data())
def test_message_streams_as_content_and_reasoning_never_leaks(data: st.DataObject) -> None:
    inner, message = data.draw(reasoning_text), data.draw(message_text)
    document = json.dumps({"inner_thoughts": inner, "message": message}, ensure_ascii=data.draw(st.booleans()))
    size = data.draw(st.integers(min_value=1, max_value=8))
    out, rewriter = rewrite(agent_stream(split_evenly(document, size)))
    assert text(out) == message
    assert finish_reasons(out) == ["stop"]
    wire = orjson.dumps(out).decode()
    assert not any(ch in wire for ch in "αβγδεζηθλμ"), "hidden reasoning reached the client"
    assert "send_message" not in wire and "tool_calls" not in wire.replace('"finish_reason":"tool_calls"', "")
    assert rewriter.stats.reasoning_chars == len(inner)


def test_message_is_emitted_as_soon_as_each_character_is_certain() -> None:
    out, _ = rewrite(agent_stream(['{"inner_thoughts": "x", "message": "Hel', "lo", r"\n", '"}']))
    assert [d.get("content") for d in deltas(out)][1:-1] == ["Hel", "lo", "\n"]


def test_reasoning_is_exposed_as_reasoning_content() -> None:
    out, _ = rewrite(agent_stream(split_evenly(args("plan it", "Done"), 3)), reasoning="expose")
    assert text(out, "reasoning_content") == "plan it"
    assert text(out) == "Done"


# 2. Client tool calls pass through without the inner-thoughts argument.


@settings(max_examples=150)
@given(st.data())
def test_client_tool_arguments_lose_only_inner_thoughts(data: st.DataObject) -> None:
    payload = data.draw(
        st.dictionaries(
            st.text(alphabet=st.characters(exclude_categories=("Cs",), exclude_characters="αβγδεζηθλμ"), max_size=5),
            st.one_of(st.integers(), message_text, st.lists(st.booleans())),
            max_size=4,
        )
    )
    inner = data.draw(reasoning_text)
    full = dict(payload)
    full["inner_thoughts"] = inner
    keys = list(full)
    order = data.draw(st.permutations(keys))
    document = json.dumps({k: full[k] for k in order})
    chunks = agent_stream(split_evenly(document, data.draw(st.integers(1, 6))), name="get_weather", call_id="call_w")
    out, _ = rewrite(chunks)
    [sent] = client_calls(out)
    assert (sent["id"], sent["type"], sent["name"]) == ("call_w", "function", "get_weather")
    assert json.loads(sent["arguments"]) == payload
    assert list(json.loads(sent["arguments"])) == [k for k in order if k != "inner_thoughts"]
    assert not any(ch in orjson.dumps(out).decode() for ch in "αβγδεζηθλμ")
    assert finish_reasons(out) == ["tool_calls"]


def test_client_calls_are_renumbered_in_order_of_appearance() -> None:
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="m", name="send_message")])),
        chunk(choice(tool_calls=[call(0, args("t", "Looking it up."))])),
        chunk(choice(tool_calls=[call(1, "", id="a", name="lookup")])),
        chunk(choice(tool_calls=[call(1, '{"inner_thoughts": "q", "q": 1}')])),
        chunk(choice(tool_calls=[call(2, '{"q": 2}', id="b", name="lookup")])),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    sent_indexes = [tc["index"] for d in deltas(out) for tc in d.get("tool_calls") or () if "id" in tc]
    assert sent_indexes == [0, 1]
    assert [(c["id"], json.loads(c["arguments"])) for c in client_calls(out)] == [("a", {"q": 1}), ("b", {"q": 2})]
    assert text(out) == "Looking it up."


def test_tool_that_declares_inner_thoughts_itself_keeps_it() -> None:
    document = '{"inner_thoughts": "mine", "x": 1}'
    out, _ = rewrite(agent_stream([document], name="diary"), keep_arguments_of=frozenset({"diary"}))
    assert json.loads(client_calls(out)[0]["arguments"]) == {"inner_thoughts": "mine", "x": 1}


# 3-5. Content and upstream reasoning fields.


def test_content_mode_treats_plain_content_as_reasoning() -> None:
    chunks = [chunk(choice(role="assistant", content="I should greet.")), *agent_stream(['{"message": "Hi"}'])]
    out, _ = rewrite(chunks, inner_thoughts="content")
    assert text(out) == "Hi" and "greet" not in orjson.dumps(out).decode()
    out, _ = rewrite(chunks, inner_thoughts="content", reasoning="expose")
    assert text(out, "reasoning_content") == "I should greet."


def test_kwarg_and_none_modes_pass_content_through() -> None:
    chunks = [chunk(choice(role="assistant", content="Plain answer.")), chunk(choice(finish="stop"))]
    for mode in ("kwarg", "none"):
        out, _ = rewrite(chunks, inner_thoughts=mode)
        assert text(out) == "Plain answer."


def test_none_mode_keeps_an_inner_thoughts_argument_in_client_calls() -> None:
    out, _ = rewrite(agent_stream(['{"inner_thoughts": "x", "a": 1}'], name="f"), inner_thoughts="none")
    assert json.loads(client_calls(out)[0]["arguments"]) == {"inner_thoughts": "x", "a": 1}


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_provider_reasoning_fields_are_hidden_or_exposed(field: str) -> None:
    chunks = [
        chunk(choice(role="assistant", **{field: "secret"})),
        chunk(choice(content="ok")),
        chunk(choice(finish="stop")),
    ]
    out, _ = rewrite(chunks)
    assert "secret" not in orjson.dumps(out).decode()
    assert text(out) == "ok"
    out, _ = rewrite(chunks, reasoning="expose")
    assert text(out, "reasoning_content") == "secret" and "reasoning" not in deltas(out)[0]


# 6. Visible segments are joined by a blank line.


def test_visible_segments_are_joined_with_a_blank_line() -> None:
    chunks = [
        chunk(choice(role="assistant", content="Intro.")),
        chunk(choice(tool_calls=[call(0, '{"message": "First."}', id="a", name="send_message")])),
        chunk(choice(tool_calls=[call(1, '{"message": "Second."}', id="b", name="send_message")])),
        chunk(choice(content="Outro.")),
        chunk(choice(finish="stop")),
    ]
    out, _ = rewrite(chunks)
    assert text(out) == "Intro.\n\nFirst.\n\nSecond.\n\nOutro."


# 7. finish_reason.


@pytest.mark.parametrize(
    ("upstream", "with_client_call", "expected"),
    [
        ("tool_calls", False, "stop"),
        ("tool_calls", True, "tool_calls"),
        ("stop", True, "tool_calls"),  # Gemini says "stop" after tool calls
        ("stop", False, "stop"),
        ("length", True, "length"),
        ("content_filter", False, "content_filter"),
    ],
)
def test_finish_reason(upstream: str, with_client_call: bool, expected: str) -> None:
    name = "lookup" if with_client_call else "send_message"
    out, _ = rewrite(agent_stream(['{"message": "x"}'], name=name, finish=upstream))
    assert finish_reasons(out) == [expected]


# 8. The legacy functions API.


def test_legacy_function_call_message_tool_becomes_content() -> None:
    chunks = [
        chunk(choice(role="assistant", content=None, function_call={"name": "send_message", "arguments": ""})),
        chunk(choice(function_call={"arguments": '{"inner_thoughts": "hm", "mess'})),
        chunk(choice(function_call={"arguments": 'age": "Hello"}'})),
        chunk(choice(finish="function_call")),
    ]
    out, _ = rewrite(chunks)
    assert text(out) == "Hello" and finish_reasons(out) == ["stop"]
    assert "function_call" not in orjson.dumps(out).decode().replace("finish_reason", "")


def test_legacy_client_function_call_passes_without_inner_thoughts() -> None:
    chunks = [
        chunk(choice(role="assistant", function_call={"name": "lookup", "arguments": ""})),
        chunk(choice(function_call={"arguments": '{"inner_thoughts": "hm", "q": 3}'})),
        chunk(choice(finish="function_call")),
    ]
    out, _ = rewrite(chunks)
    sent = [d["function_call"] for d in deltas(out) if "function_call" in d]
    assert sent[0]["name"] == "lookup"
    assert json.loads("".join(f.get("arguments", "") for f in sent)) == {"q": 3}
    assert finish_reasons(out) == ["function_call"]


# 9. Provider quirks.


def test_name_in_pieces_is_held_until_decided() -> None:
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, id="c1", name="send_")])),
        chunk(choice(tool_calls=[call(0, name="message")])),
        chunk(choice(tool_calls=[call(0, '{"message": "hi"}')])),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    assert text(out) == "hi" and client_calls(out) == []


def test_name_that_only_starts_like_the_message_tool_is_a_client_call() -> None:
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="c1", name="send_message")])),
        chunk(choice(tool_calls=[call(0, name="_v2")])),
        chunk(choice(tool_calls=[call(0, '{"message": "x"}')])),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    assert [(c["name"], c["arguments"]) for c in client_calls(out)] == [("send_message_v2", '{"message":"x"}')]
    assert text(out) == ""


def test_client_call_whose_name_is_decided_early_is_sent_at_once() -> None:
    out, _ = rewrite([chunk(choice(role="assistant", tool_calls=[call(0, id="c1", name="get_weather")]))])
    assert client_calls(out)[0]["name"] == "get_weather"


def test_calls_without_index_are_placed_by_position() -> None:
    chunks = [
        chunk(
            choice(
                role="assistant",
                tool_calls=[
                    {"id": "a", "function": {"name": "send_message", "arguments": '{"message": "Hi"}'}},
                    {"id": "b", "function": {"name": "lookup", "arguments": '{"inner_thoughts": "t", "q": 1}'}},
                ],
            ),
            finish_reason=None,
        ),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    assert text(out) == "Hi"
    assert [(c["id"], c["type"], c["arguments"]) for c in client_calls(out)] == [("b", "function", '{"q":1}')]


@pytest.mark.parametrize("index", [[0], {"i": 0}])
def test_choice_index_that_cannot_key_a_choice_is_an_invalid_chunk(index: Any) -> None:
    rewriter = StreamRewriter()
    with pytest.raises(InvalidChunk):
        rewriter.feed({"choices": [{"index": index, "delta": {"content": "x"}}]})


def test_second_call_reusing_an_index_with_a_new_id() -> None:
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="a", name="lookup")])),
        chunk(choice(tool_calls=[call(0, '{"q": 1}')])),
        chunk(choice(tool_calls=[call(0, "", id="b", name="lookup")])),
        chunk(choice(tool_calls=[call(0, '{"q": 2}')])),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    assert [(c["id"], c["arguments"]) for c in client_calls(out)] == [("a", '{"q":1}'), ("b", '{"q":2}')]


def test_continuation_deltas_never_rename_or_reidentify() -> None:
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="real", name="lookup")])),
        chunk(
            choice(
                tool_calls=[{"index": 0, "id": "", "type": "function", "function": {"name": "", "arguments": '{"q"'}}]
            )
        ),
        chunk(
            choice(tool_calls=[{"index": 0, "type": "function", "function": {"name": "lookup", "arguments": ": 1}"}}])
        ),
        chunk(choice(tool_calls=[{"index": 0, "id": "", "function": {"arguments": ""}}])),
        chunk(choice(finish="tool_calls")),
    ]
    out, _ = rewrite(chunks)
    assert client_calls(out) == [{"id": "real", "type": "function", "name": "lookup", "arguments": '{"q":1}'}]


def test_header_without_arguments_and_whole_call_in_one_chunk() -> None:
    headers = [
        chunk(
            choice(
                role="assistant",
                tool_calls=[{"index": 0, "id": "a", "type": "function", "function": {"name": "send_message"}}],
            )
        ),
        chunk(choice(tool_calls=[call(0, '{"message": "one"}')])),
        chunk(choice(tool_calls=[call(1, '{"message": "two"}', id="b", name="send_message")], finish="tool_calls")),
    ]
    out, _ = rewrite(headers)
    assert text(out) == "one\n\ntwo" and finish_reasons(out) == ["stop"]


def test_choice_without_delta_gets_an_empty_one_and_keeps_its_fields() -> None:
    """Azure sends content-filter results after a finish in a choice without a delta; clients read choice.delta."""
    tail = {
        "index": 0,
        "content_filter_offsets": {"check_offset": 0},
        "content_filter_results": {"hate": {"filtered": False}},
    }
    chunks = [
        chunk(choice(role="assistant", content="Hi")),
        chunk({"index": 0, "finish_reason": "stop"}),
        chunk(tail),
        chunk({"index": 1, "content_filter_offsets": {"check_offset": 0}}),
    ]
    out, _ = rewrite(chunks)
    assert [o["choices"] for o in out[1:]] == [
        [{"index": 0, "finish_reason": "stop", "delta": {}}],
        [{**tail, "delta": {}}],
        [{"index": 1, "content_filter_offsets": {"check_offset": 0}, "delta": {}}],
    ]
    assert out[1:] == [{**c, "choices": o["choices"]} for c, o in zip(chunks[1:], out[1:], strict=True)]


# 10. Everything else is preserved.


def test_unchanged_chunks_go_out_as_their_original_bytes() -> None:
    chunks = [chunk(choice(role="assistant", content="")), chunk(choice(content="Hello")), chunk(choice(finish="stop"))]
    rewriter = StreamRewriter()
    for c in chunks:
        raw = orjson.dumps(c) + b" "  # the upstream's own bytes, however it spaced them
        events = rewriter.feed(c, raw)
        assert events[0] == ChunkStart(c, raw)
        assert ChatStreamEncoder().encode(events) == b"data: " + raw + b"\n\n"


def test_top_level_fields_usage_and_choiceless_chunks_pass() -> None:
    extra = {"system_fingerprint": "fp", "service_tier": "default", "x_vendor": {"a": 1}}
    chunks = agent_stream(['{"message": "Hi"}'])
    chunks = [{**c, **extra} for c in chunks]
    chunks[-1]["usage"] = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    filtered = {"choices": [], "prompt_filter_results": [{"prompt_index": 0}], "id": "", "model": ""}
    out, _ = rewrite([filtered, *chunks])
    assert out[0] == filtered
    for sent in out[1:]:
        assert {k: sent[k] for k in extra} == extra and sent["id"] == "chatcmpl-test"
    assert out[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


def test_chunks_with_nothing_left_to_say_are_dropped_except_the_first() -> None:
    chunks = agent_stream(['{"inner_thoughts": "long', " thought", '", "message": "Hi"}'])
    out, _ = rewrite(chunks)
    assert list(deltas(out)) == [{"role": "assistant", "content": None}, {"content": "Hi"}, {}]


def test_dropped_chunk_with_usage_is_kept_without_choices() -> None:
    chunks = agent_stream(['{"inner_thoughts": "x"'])
    chunks[1]["usage"] = {"total_tokens": 5}
    out, _ = rewrite(chunks)
    assert out[1] == {**chunks[1], "choices": []}


def test_several_choices_interleaved() -> None:
    chunks = [
        chunk(
            choice(0, role="assistant", tool_calls=[call(0, "", id="a", name="send_message")]),
            choice(1, role="assistant", tool_calls=[call(0, "", id="b", name="lookup")]),
        ),
        chunk(
            choice(1, tool_calls=[call(0, '{"inner_thoughts": "x", ')]),
            choice(0, tool_calls=[call(0, '{"message": "zero')]),
        ),
        chunk(choice(0, tool_calls=[call(0, '"}')]), choice(1, tool_calls=[call(0, '"q": 1}')])),
        chunk(choice(0, finish="tool_calls"), choice(1, finish="tool_calls")),
    ]
    out, rewriter = rewrite(chunks)
    assert text(out, index=0) == "zero" and client_calls(out, 0) == []
    assert text(out, index=1) == "" and json.loads(client_calls(out, 1)[0]["arguments"]) == {"q": 1}
    assert (finish_reasons(out, 0), finish_reasons(out, 1)) == (["stop"], ["tool_calls"])
    assert rewriter.finished


def test_finished_is_false_until_every_choice_has_finished() -> None:
    rewriter = StreamRewriter()
    rewriter.feed(chunk(choice(0, content="a"), choice(1, content="b")))
    rewriter.feed(chunk(choice(0, finish="stop")))
    assert not rewriter.finished
    rewriter.feed(chunk(choice(1, finish="stop")))
    assert rewriter.finished


# Truncated and invalid arguments.


def test_truncated_stream_keeps_what_was_decoded() -> None:
    chunks = agent_stream(['{"inner_thoughts": "x", "message": "Hello wor'], finish="length")
    out, rewriter = rewrite(chunks)
    assert text(out) == "Hello wor" and finish_reasons(out) == ["length"]
    assert rewriter.stats.invalid_arguments == 1


def test_invalid_arguments_stop_emission_without_raising() -> None:
    chunks = agent_stream(['{"message": "ok"', " nonsense", ', "message": "more"}'])
    out, rewriter = rewrite(chunks)
    assert text(out) == "ok" and rewriter.stats.invalid_arguments == 1


def test_stream_ending_with_an_undecided_call_settles_it() -> None:
    out, _ = rewrite([chunk(choice(role="assistant", tool_calls=[call(0, id="x", name="send")]))])
    assert [c["name"] for c in client_calls(out)] == ["send"]


# 11. Non-streaming responses.


def completion(message: dict[str, Any], finish: str = "tool_calls") -> dict[str, Any]:
    return {
        "id": "c",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": {"total_tokens": 9},
    }


def test_completion_message_tool_becomes_content() -> None:
    message = {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [
            {"id": "a", "type": "function", "function": {"name": "send_message", "arguments": args("think", "Hello")}},
        ],
    }
    result = rewrite_completion(completion(message))
    assert result["choices"][0] == {
        "index": 0,
        "message": {"role": "assistant", "content": "Hello", "refusal": None},
        "finish_reason": "stop",
    }
    assert result["usage"] == {"total_tokens": 9}
    exposed = rewrite_completion(completion(message), options_of(reasoning="expose"))
    assert exposed["choices"][0]["message"]["reasoning_content"] == "think"


def test_completion_client_tool_arguments_are_compact_in_original_order() -> None:
    arguments = '{ "z": 1, "inner_thoughts": "t", "a": {"k": [1, 2]} }'
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "m",
                "type": "function",
                "function": {"name": "send_message", "arguments": '{"message": "Checking."}'},
            },
            {"id": "a", "type": "function", "function": {"name": "lookup", "arguments": arguments}},
        ],
    }
    result = rewrite_completion(completion(message))["choices"][0]
    assert result["message"]["content"] == "Checking."
    assert result["message"]["tool_calls"] == [
        {"id": "a", "type": "function", "function": {"name": "lookup", "arguments": '{"z":1,"a":{"k":[1,2]}}'}}
    ]
    assert result["finish_reason"] == "tool_calls"


def test_completion_plain_content_and_no_choices() -> None:
    plain = completion({"role": "assistant", "content": "Hi"}, finish="stop")
    assert rewrite_completion(plain) == plain
    for invalid in ({"error": {"message": "x"}}, {"choices": [{"index": 0}]}, {"choices": ["x"]}):
        with pytest.raises(InvalidChunk):
            rewrite_completion(invalid)


# Golden tests over the recorded provider streams.

RECORDED = recorded_files()


def recorded_calls(chunks: Chunks) -> list[dict[str, Any]]:
    """The tool calls the provider made, accumulated independently of the rewriter."""
    calls: dict[int, dict[str, Any]] = {}
    for c in chunks:
        for ch in c.get("choices") or ():
            for position, tc in enumerate((ch.get("delta") or {}).get("tool_calls") or ()):
                slot = calls.setdefault(tc.get("index", position), {"id": "", "name": "", "arguments": ""})
                slot["id"] = slot["id"] or tc.get("id") or ""
                slot["name"] = slot["name"] or tc.get("function", {}).get("name") or ""
                slot["arguments"] += tc.get("function", {}).get("arguments") or ""
    return [calls[i] for i in sorted(calls)]


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_tool_as_message_tool(path: Path) -> None:
    chunks = recorded_chunks(path)
    calls = recorded_calls(chunks)
    if not calls:
        out, _ = rewrite(chunks)
        expected = "".join(
            (ch.get("delta") or {}).get("content") or "" for c in chunks for ch in c.get("choices") or ()
        )
        assert text(out) == expected and finish_reasons(out) == ["stop"]
        return
    first = calls[0]
    arg = next(iter(json.loads(first["arguments"]))) if json.loads(first["arguments"]) else "message"
    out, rewriter = rewrite(chunks, message_tool=first["name"], message_arg=arg)
    assert text(out).startswith(json.loads(first["arguments"]).get(arg, ""))
    sent = client_calls(out)
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in sent] == [
        (c["id"], c["name"], json.loads(c["arguments"])) for c in calls if c["name"] != first["name"]
    ]
    assert finish_reasons(out) == (["tool_calls"] if sent else ["stop"])
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert [c["usage"] for c in out if c.get("usage")] == usage
    assert rewriter.finished and rewriter.stats.invalid_arguments == 0


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_tool_as_client_tool(path: Path) -> None:
    chunks = recorded_chunks(path)
    out, _ = rewrite(chunks, reasoning="expose")
    assert [(c["id"], c["name"], json.loads(c["arguments"])) for c in client_calls(out)] == [
        (c["id"], c["name"], json.loads(c["arguments"])) for c in recorded_calls(chunks)
    ]
    reasoning = "".join(
        (ch.get("delta") or {}).get("reasoning_content") or "" for c in chunks for ch in c.get("choices") or ()
    )
    assert text(out, "reasoning_content") == reasoning
    hidden, _ = rewrite(chunks)
    if reasoning:
        assert "reasoning_content" not in orjson.dumps(hidden).decode()
    top = {k for c in chunks for k in c if k != "choices"}
    assert top <= {k for c in out for k in c}, "every top-level field survives"


def test_arguments_beyond_the_limit_stop_the_rewrite() -> None:
    rewriter = StreamRewriter(options_of(max_arguments_chars=70))
    encoder = ChatStreamEncoder()
    chunks = agent_stream(['{"inner_thoughts": "x", ', '"message": "' + "y" * 30, "z" * 10])
    sent = encoder.chunks([event for c in chunks[:3] for event in rewriter.feed(c)])
    assert text(sent) == "y" * 30
    with pytest.raises(ArgumentsTooLong, match="70 characters"):
        rewriter.feed(chunks[3])


@pytest.mark.parametrize("value", [[1, 2], None, "text", 42])
def test_choices_that_are_not_objects_are_invalid_chunks(value: Any) -> None:
    with pytest.raises(InvalidChunk):
        StreamRewriter().feed({"choices": [value]})
