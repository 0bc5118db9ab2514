"""Fragment chunks recognised by their bytes give a client exactly what decoding them would.

The translator skips decoding a chunk that ``Fragments`` recognises and hands
its arguments to ``StreamRewriter.feed_fragment``; the chat encoder then puts
the new delta between the upstream's own bytes. These tests hold that shortcut
to the decoding path: over random agent streams, encodings, paddings and
options, both give a client the same chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gateway.core.events import ChunkStart
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.core.passthrough.fragments import Fragments, FragmentTemplate
from gateway.core.translator import StreamTranslator
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.streams import (
    agent_stream,
    call,
    choice,
    chunk,
    options_of,
    recorded_body,
    recorded_files,
    split_evenly,
)

Chunks = list[dict[str, Any]]
Encode = Callable[[Any], bytes]
RECORDED = recorded_files()


def _reversed_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _reversed_keys(value[key]) for key in reversed(value)}
    if isinstance(value, list):
        return [_reversed_keys(item) for item in value]
    return value


ENCODINGS: dict[str, Encode] = {
    "orjson": orjson.dumps,
    "ascii": lambda value: json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode(),
    "spaced": lambda value: json.dumps(value, ensure_ascii=False).encode(),
    "escaped slashes": lambda value: json.dumps(value, ensure_ascii=False).replace("/", "\\/").encode(),
    "keys reversed": lambda value: orjson.dumps(_reversed_keys(value)),
}


def sse(payloads: list[bytes]) -> bytes:
    return b"".join(b"data: " + payload + b"\n\n" for payload in payloads) + b"data: [DONE]\n\n"


def client_chunks(body: bytes, options: RewriteOptions, *, shortcut: bool) -> tuple[Chunks, int]:
    """The data a chat client decodes from this upstream body (chunks, then an error if any), and how many
    fragments were recognised."""
    # Taken, the shortcuts are also checked against the general path, chunk by chunk; the reference takes none.
    shortcuts = Shortcuts.CHECK if shortcut else Shortcuts.OFF
    translator = StreamTranslator(options, "up", raw_chunks=True, shortcuts=shortcuts)
    encoder = ChatStreamEncoder(shortcuts=shortcuts)
    events = translator.feed(body) + translator.end()
    assert translator.ended
    out = encoder.encode(events)
    sent = [orjson.loads(line[6:]) for line in out.split(b"\n\n") if line.startswith(b"data: {")]
    recognised = sum(1 for e in events if isinstance(e, ChunkStart) and e.frame is not None)
    return sent, recognised


def same_as_decoding(payloads: list[bytes], options: RewriteOptions) -> int:
    """Assert the shortcut changes nothing a client sees; how many chunks it recognised."""
    body = sse(payloads)
    sent, recognised = client_chunks(body, options, shortcut=True)
    assert sent == client_chunks(body, options, shortcut=False)[0]
    return recognised


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
# Envelope fields with strings that look like the keys a template looks for.
envelope_extras = st.dictionaries(
    st.sampled_from(["system_fingerprint", "x_extra", "service_tier"]),
    st.one_of(
        st.none(),
        st.sampled_from(['"delta":{', '\\"arguments\\":"', "fp_1"]),
        st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
    ),
    max_size=2,
)
option_sets = st.builds(
    options_of,
    inner_thoughts=st.sampled_from(["kwarg", "content", "none"]),
    reasoning=st.sampled_from(["hide", "expose"]),
    max_arguments_chars=st.sampled_from([1 << 20, 1 << 20, 40]),
)


def cut(data: st.DataObject, document: str) -> list[str]:
    """``document`` in random non-empty pieces."""
    points = sorted(data.draw(st.sets(st.integers(1, max(1, len(document) - 1)), max_size=12)))
    return [document[a:b] for a, b in zip([0, *points], [*points, len(document)], strict=False) if document[a:b]]


def _only_arguments(decoded: dict[str, Any]) -> bool:
    calls = decoded["choices"][0]["delta"].get("tool_calls") or [{}]
    return calls[0].keys() == {"index", "function"} and calls[0]["function"].keys() == {"arguments"}


@settings(max_examples=300, deadline=None)
@given(st.data(), option_sets, st.sampled_from(sorted(ENCODINGS)))
def test_recognised_fragments_rewrite_exactly_as_decoded_ones(
    data: st.DataObject, options: RewriteOptions, encoding: str
) -> None:
    extras = data.draw(envelope_extras)
    message = {"inner_thoughts": data.draw(text), "message": data.draw(text)}
    client = {"inner_thoughts": data.draw(text), "city": data.draw(text)}
    calls = {0: ("send_message", cut(data, json.dumps(message))), 1: ("get_weather", cut(data, json.dumps(client)))}
    used = data.draw(st.sampled_from([[0], [1], [0, 1]]))
    # Fragments of the used calls, interleaved at random, sometimes with content or reasoning between them.
    queue = [(slot, piece) for slot in used for piece in calls[slot][1]]
    order = data.draw(st.permutations(range(len(queue)))) if len(used) > 1 else range(len(queue))
    heads = [call(slot, "", id=f"call_{slot}", name=calls[slot][0]) for slot in used]
    chunks = [chunk(choice(role="assistant", content=None, tool_calls=heads), **extras)]
    for position in order:
        slot, piece = queue[position]
        if data.draw(st.integers(0, 9)) == 0:
            aside = {data.draw(st.sampled_from(["content", "reasoning_content"])): "aside"}
            chunks.append(chunk(choice(**aside), **extras, x_aside=True))
        # Now and then a fragment repeats its call's id or name, brings an empty or a new id, or is empty.
        variant = data.draw(
            st.sampled_from(["plain"] * 5 + ["empty id", "same id", "new id", "new named", "named", "empty"])
        )
        call_id = {"empty id": "", "same id": f"call_{slot}", "new id": "call_new", "new named": "call_new"}.get(
            variant
        )
        name = calls[slot][0] if variant in ("named", "new named") else None
        if variant == "empty":
            chunks.append(
                chunk(choice(tool_calls=[call(slot, "", name=data.draw(st.sampled_from([None, "get"])))]), **extras)
            )
        chunks.append(chunk(choice(tool_calls=[call(slot, piece, id=call_id, name=name)]), **extras))
    chunks.append(chunk(choice(finish="tool_calls"), **extras))
    nonces = data.draw(st.sampled_from(["none", "strings", "null"]))
    if nonces != "none":  # OpenAI's obfuscation: a string that differs in every chunk (or a constant null)
        for position, c in enumerate(chunks):
            c["obfuscation"] = None if nonces == "null" else data.draw(text) if position % 3 else ""
    payloads = [ENCODINGS[encoding](c) for c in chunks]

    recognised = same_as_decoding(payloads, options)
    event("fragments recognised" if recognised else "none recognised")
    nonce_first = encoding == "keys reversed" and nonces == "strings"
    if used != [0, 1] and not nonce_first:
        plain = [c for c in chunks[1:] if _only_arguments(c)]
        assert recognised >= len(plain) - 3 * (len(chunks) - len(plain)), (
            "each other chunk costs a few fragments at most"
        )


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
def test_recorded_streams_rewrite_exactly_as_decoded(path: Any) -> None:
    payloads = [line[6:] for line in recorded_body(path).split(b"\n") if line.startswith(b"data: {")]
    for options in (options_of(), options_of(message_tool="get_weather", reasoning="expose")):
        same_as_decoding(payloads, options)


def test_recorded_openai_fragments_are_recognised_from_their_original_bytes() -> None:
    [path] = [p for p in RECORDED if p.name == "openai-gpt4o-tool-call-a.sse"]
    payloads = [line[6:] for line in recorded_body(path).split(b"\n") if line.startswith(b"data: {")]
    fragments = sum(1 for payload in payloads if b'"arguments":"' in payload and b'"name"' not in payload)
    assert fragments > 3
    assert same_as_decoding(payloads, options_of()) == fragments - 1, "all but the one learned from"


@pytest.mark.parametrize("padding", ["varies", "null"])
def test_openai_obfuscation_is_relayed_as_it_came_and_fragments_are_recognised(padding: str) -> None:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "Hello there"}), 2))
    pads = ["x" * (i % 7) if padding == "varies" else None for i in range(len(chunks))]
    payloads = [orjson.dumps({**c, "usage": None, "obfuscation": pad}) for c, pad in zip(chunks, pads, strict=True)]
    assert same_as_decoding(payloads, options_of()) == len(chunks) - 3
    sent, _ = client_chunks(sse(payloads), options_of(), shortcut=True)
    if padding == "varies":
        assert len({c["obfuscation"] for c in sent}) > 1, "each chunk keeps its own padding"


def test_chunks_that_all_differ_are_decoded_and_learning_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "Hello there"}), 2))
    payloads = [orjson.dumps({**c, "x_sequence": i}) for i, c in enumerate(chunks)]
    learned: list[bytes] = []
    learn = FragmentTemplate.learn
    monkeypatch.setattr(FragmentTemplate, "learn", lambda payload, c: learned.append(payload) or learn(payload, c))
    assert same_as_decoding(payloads, options_of()) == 0
    assert len(learned) == 3


@pytest.mark.parametrize("raw_chunks", [True, False])
def test_a_plain_route_learns_nothing(monkeypatch: pytest.MonkeyPatch, raw_chunks: bool) -> None:
    learned: list[bytes] = []
    monkeypatch.setattr(FragmentTemplate, "learn", lambda payload, c: learned.append(payload))
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "Hello there"}), 2))
    translator = StreamTranslator(RewriteOptions.plain(), "up", raw_chunks=raw_chunks, shortcuts=Shortcuts.CHECK)
    translator.feed(sse([orjson.dumps(c) for c in chunks]))
    assert translator.ended
    assert learned == []


# The template itself.

HEAD = chunk(choice(tool_calls=[call(0, '{"mess')]), system_fingerprint="fp_1")


def learned(encode: Encode = orjson.dumps) -> FragmentTemplate:
    template = FragmentTemplate.learn(encode(HEAD), HEAD)
    assert template is not None
    return template


def with_arguments(arguments: str, **top: Any) -> dict[str, Any]:
    return chunk(choice(tool_calls=[call(0, arguments)]), **{"system_fingerprint": "fp_1", **top})


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("arguments", ["", 'age": "Hi', "\\u00e9\\n", "😀 /\\\\", '"}'])
def test_arguments_are_decoded_from_any_encoding(encoding: str, arguments: str) -> None:
    encode = ENCODINGS[encoding]
    payload = encode(with_arguments(arguments))
    assert learned(encode).match(payload) == (arguments, HEAD, b"")


@pytest.mark.parametrize(
    "payload",
    [
        orjson.dumps(with_arguments("x", system_fingerprint="fp_2")),  # another envelope
        orjson.dumps(chunk(choice(finish="stop", tool_calls=[call(0, "x")]), system_fingerprint="fp_1")),
        orjson.dumps(with_arguments("x", usage={"total_tokens": 1})),
        orjson.dumps(with_arguments("x")).replace(b'"x"', b"null"),
        orjson.dumps(with_arguments("x")).replace(b'"x"', b'"a","name":"b"'),
        orjson.dumps(with_arguments("x")).replace(b'"x"', b'"a"}}],"x":[{"a":"b"'),
        orjson.dumps(with_arguments("x")).replace(b'"x"', b'"unterminated'),
        b"",
    ],
)
def test_anything_but_another_arguments_string_is_not_recognised(payload: bytes) -> None:
    assert learned().match(payload) is None


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_the_frame_puts_a_new_delta_in_the_upstreams_own_bytes(encoding: str) -> None:
    delta = {"content": 'say "hi"', "reasoning_content": "é"}
    head, tail = learned(ENCODINGS[encoding]).frame()
    assert orjson.loads(head + orjson.dumps(delta) + tail) == {
        **HEAD,
        "choices": [{**HEAD["choices"][0], "delta": delta}],
    }


@pytest.mark.parametrize(
    "decoded",
    [
        chunk(choice(content="Hi")),  # no tool call
        chunk(choice(tool_calls=[call(0)])),  # no arguments
        chunk(choice(tool_calls=[{"index": 0, "function": {"arguments": 1}}])),  # arguments not a string
    ],
)
def test_a_chunk_without_an_arguments_string_has_no_template(decoded: dict[str, Any]) -> None:
    assert FragmentTemplate.learn(orjson.dumps(decoded), decoded) is None


def test_a_payload_that_is_not_the_decoded_chunk_has_no_template() -> None:
    assert FragmentTemplate.learn(orjson.dumps(with_arguments("x", system_fingerprint="fp_2")), HEAD) is None


def test_a_key_spelled_with_an_escape_is_found_by_the_soundness_check() -> None:
    # The bytes hold "arguments": only inside another key; the real key is spelled with an escape.
    decoded = {
        "choices": [{"delta": {"tool_calls": [{"index": 0, "function": {'x"arguments': "", "arguments": "a"}}]}}]
    }
    payload = (
        b'{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"x\\"arguments":"","\\u0061rguments":"a"}}]}}]}'
    )
    assert orjson.loads(payload) == decoded
    assert FragmentTemplate.learn(payload, decoded) is None


# The cases where recognising a fragment would go wrong, were the rewriter less careful.


def test_a_fragment_with_an_id_is_never_a_template() -> None:
    # Once another call took the slot, a repeat of the first call's id starts a new call again.
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="call_a", name="get_weather")])),
        chunk(choice(tool_calls=[call(0, '{"a', id="call_a")])),
        chunk(choice(tool_calls=[call(0, '{"b', id="call_b", name="lookup")])),
        chunk(choice(tool_calls=[call(0, '": 1}', id="call_a")])),
        chunk(choice(finish="tool_calls")),
    ]
    assert same_as_decoding([orjson.dumps(c) for c in chunks], options_of()) == 0


def test_a_fragment_with_a_name_is_never_a_template() -> None:
    # Before its first argument, a call's name still grows with each piece.
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="call_a", name="send_message")])),
        chunk(choice(tool_calls=[call(0, "", name="_x")])),
        chunk(choice(tool_calls=[call(0, "", name="_x")])),
        chunk(choice(tool_calls=[call(0, "{}")])),
        chunk(choice(finish="tool_calls")),
    ]
    assert same_as_decoding([orjson.dumps(c) for c in chunks], options_of()) == 0


@pytest.mark.parametrize("nonce", [False, True])
def test_what_the_end_settles_goes_out_in_the_last_chunks_envelope(nonce: bool) -> None:
    # The stream breaks off after a recognised fragment; what the end settles goes out in that chunk's
    # envelope, before the error that says the answer is cut.
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="call_a", name="send_message")])),
        chunk(choice(tool_calls=[call(0, '{"message": "H')])),
        chunk(choice(tool_calls=[call(1, "", id="call_b", name="send")]), x_groq={"id": "req_1"}),
        chunk(choice(tool_calls=[call(0, 'i"}')])),
    ]
    if nonce:
        for position, c in enumerate(chunks):
            c["obfuscation"] = f"pad{position}"
    payloads = [orjson.dumps(c) for c in chunks]
    assert same_as_decoding(payloads, options_of()) == 1
    sent, _ = client_chunks(sse(payloads), options_of(), shortcut=True)
    *answer, error = sent
    assert error["error"]["code"] == "upstream_incomplete"
    assert answer[-1]["choices"][0]["delta"]["tool_calls"][0]["id"] == "call_b"
    assert "x_groq" not in answer[-1]
    assert answer[-1].get("obfuscation") == ("pad3" if nonce else None)


def _made(nonce: bool, fragment: str, padding: str) -> dict[str, Any]:
    return {**with_arguments(fragment), "obfuscation": padding} if nonce else with_arguments(fragment)


@st.composite
def near_misses(draw: st.DrawFn, encoding: str, nonce: bool) -> bytes:
    """A valid fragment's bytes, edited where a template is most easily fooled: at and around its holes.

    Half the edits put bytes a string may hold just inside a string hole (mostly still a fragment, unless
    they split an escape); the others put breaking bytes around any hole or the end.
    """
    payload = ENCODINGS[encoding](_made(nonce, draw(text), draw(text)))
    for _ in range(draw(st.integers(1, 3))):
        keys = [key for key in (b'"arguments":', b'"delta":', b'"obfuscation":') if key in payload]
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        if key != b'"delta":' and draw(st.booleans()):
            opening = payload.find(b'"', payload.find(key) + len(key)) + 1
            at = min(len(payload), opening + draw(st.integers(0, 12)))
            inserted = draw(st.sampled_from([b"a", b"\xc3\xa9", b"\\n", b"\\u00e9", b'\\"', b"\\\\", b"}", b"]"]))
            payload = payload[:at] + inserted + payload[at:]
            continue
        anchor = draw(st.sampled_from([payload.find(key), len(payload) - 1]))
        at = max(0, min(len(payload), anchor + draw(st.integers(-4, 24))))
        inserted = draw(
            st.sampled_from([b"", b'"', b"\\", b'\\"', b"}", b"]", b",", b'","x":"', b'"}}],"y":[{"a":"', b"null"])
        )
        payload = payload[:at] + inserted + payload[at + draw(st.integers(0, 2)) :]
    return payload


@settings(max_examples=800, deadline=None)
@given(st.data(), st.sampled_from(sorted(ENCODINGS)), st.booleans())
def test_whatever_a_template_recognises_decodes_to_what_it_says(
    data: st.DataObject, encoding: str, nonce: bool
) -> None:
    # Edited payloads, most near the holes: a match must be exactly the learned chunk with its holes filled.
    encode = ENCODINGS[encoding]
    template = FragmentTemplate.learn(encode(_made(nonce, "x", "abc")), _made(nonce, "x", "abc"))
    if nonce and encoding == "keys reversed":
        assert template is None, "a nonce before the choices is no template"
        return
    assert template is not None
    payload = data.draw(near_misses(encoding, nonce))
    matched = template.match(payload)
    event("recognised" if matched is not None else "refused")
    if matched is not None:
        found, decoded, _ = matched
        padding = decoded.get("obfuscation", "")
        assert decoded == _made(nonce, "x", padding)
        assert orjson.loads(payload) == _made(nonce, found, padding)


def test_near_misses_often_still_match_so_the_soundness_oracle_is_exercised() -> None:
    # The property above is only worth something if edited payloads do get recognised: many edits keep a
    # valid fragment (an escape added inside the string, a changed character), and those must match.
    template = FragmentTemplate.learn(orjson.dumps(_made(True, "x", "abc")), _made(True, "x", "abc"))
    assert template is not None
    recognised = 0

    @settings(max_examples=300, deadline=None, database=None)
    @given(near_misses("orjson", True))
    def count(payload: bytes) -> None:
        nonlocal recognised
        recognised += template.match(payload) is not None

    count()
    assert recognised >= 10, "about one in ten are recognised; far fewer would make the property above hollow"


@pytest.mark.parametrize(
    "edit",
    [
        lambda payload: payload[:-1] + b"]",  # the end
        lambda payload: payload.replace(b'"obfuscation":"pad"', b'"obfuscation":"pad","x":1'),  # more after it
        lambda payload: payload.replace(b'"obfuscation":"pad"', b'"obfuscation":7'),  # not a string
        lambda payload: payload.replace(b"finish_reason", b"finish_reasons"),  # the bytes between
    ],
)
def test_a_padded_template_recognises_nothing_but_its_own_shape(edit: Callable[[bytes], bytes]) -> None:
    padded = {**with_arguments("x"), "obfuscation": "abc"}
    template = FragmentTemplate.learn(orjson.dumps(padded), padded)
    assert template is not None
    payload = orjson.dumps({**with_arguments("y"), "obfuscation": "pad"})
    assert template.match(payload) == ("y", {**padded, "obfuscation": "pad"}, b'"pad"')
    assert template.match(edit(payload)) is None


def test_fragments_hand_back_the_frame_of_the_chunk_they_recognised() -> None:
    fragments = Fragments()
    padded = {**with_arguments("x"), "obfuscation": "abc"}
    fragments.learn(orjson.dumps(padded), padded)
    matched = fragments.match(orjson.dumps({**with_arguments("y"), "obfuscation": "pad"}))
    assert matched is not None
    arguments, decoded, (head, tail) = matched
    assert (arguments, decoded["obfuscation"]) == ("y", "pad")
    assert orjson.loads(head + b"{}" + tail) == {
        **padded,
        "choices": [{**padded["choices"][0], "delta": {}}],
        "obfuscation": "pad",
    }
