"""Fragment chunks recognised by their bytes rewrite exactly as decoded ones.

The relay skips decoding a chunk that ``FragmentTemplate`` recognises and
hands its arguments to ``StreamRewriter.feed_fragment``. These tests hold that
shortcut to the decoding path: over random agent streams, encodings and
options, both give the same chunks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.core.fragments import FragmentRecogniser, FragmentTemplate
from gateway.core.rewriter import RewriteOptions, StreamRewriter
from tests.streams import (
    FIXTURES,
    agent_stream,
    call,
    choice,
    chunk,
    needs_recordings,
    recorded_chunks,
    recorded_files,
    split_evenly,
)

Chunks = list[dict[str, Any]]
Encode = Callable[[Any], bytes]


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


def decoding_only(payloads: list[bytes], options: RewriteOptions) -> Chunks:
    rewriter = StreamRewriter(options)
    out = [sent for payload in payloads for sent in rewriter.feed(orjson.loads(payload))]
    return orjson.loads(orjson.dumps(out + rewriter.finish()))


def with_templates(payloads: list[bytes], options: RewriteOptions, learns: int | None = None) -> tuple[Chunks, int]:
    """The relay's way (learning as often as it takes, by default); and how many chunks were recognised."""
    rewriter = StreamRewriter(options)
    fragments = FragmentRecogniser(rewriter, len(payloads) if learns is None else learns)
    out: list[bytes] = []
    recognised = 0
    for payload in payloads:
        sent = fragments.recognise(payload)
        if sent is None:
            decoded = orjson.loads(payload)
            sent = [orjson.dumps(chunk) for chunk in rewriter.feed(decoded)]
            fragments.learn(payload, decoded)
        else:
            recognised += 1
        out += sent
    out += [orjson.dumps(chunk) for chunk in rewriter.finish()]
    return [orjson.loads(payload) for payload in out], recognised


def _only_arguments(decoded: dict[str, Any]) -> bool:
    calls = decoded["choices"][0]["delta"].get("tool_calls") or [{}]
    return calls[0].keys() == {"index", "function"} and calls[0]["function"].keys() == {"arguments"}


text = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
# Envelope fields with strings that look like the keys the template looks for.
envelope_extras = st.dictionaries(
    st.sampled_from(["system_fingerprint", "x_extra", "service_tier"]),
    st.one_of(st.none(), st.sampled_from(['"delta":{', '\\"arguments\\":"', "fp_1"]), st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2)),
    max_size=2,
)
options = st.builds(
    RewriteOptions,
    inner_thoughts=st.sampled_from(["kwarg", "content", "none"]),
    reasoning=st.sampled_from(["hide", "expose"]),
    keep_arguments_of=st.sampled_from([frozenset(), frozenset({"get_weather"})]),
    max_arguments_chars=st.sampled_from([None, None, 40]),
)


def cut(data: st.DataObject, document: str) -> list[str]:
    """``document`` in random non-empty pieces."""
    points = sorted(data.draw(st.sets(st.integers(1, max(1, len(document) - 1)), max_size=12)))
    return [document[a:b] for a, b in zip([0, *points], [*points, len(document)]) if document[a:b]]


@settings(max_examples=300, deadline=None)
@given(st.data(), options, st.sampled_from(sorted(ENCODINGS)))
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
        variant = data.draw(st.sampled_from(["plain"] * 5 + ["empty id", "same id", "new id", "new named", "named", "empty"]))
        call_id = {"empty id": "", "same id": f"call_{slot}", "new id": "call_new", "new named": "call_new"}.get(variant)
        name = calls[slot][0] if variant in ("named", "new named") else None
        if variant == "empty":
            chunks.append(chunk(choice(tool_calls=[call(slot, "", name=data.draw(st.sampled_from([None, "get"])))]), **extras))
        chunks.append(chunk(choice(tool_calls=[call(slot, piece, id=call_id, name=name)]), **extras))
    if data.draw(st.booleans()):
        chunks.append(chunk(choice(finish="tool_calls"), **extras))
    nonces = data.draw(st.sampled_from(["none", "strings", "null"]))
    if nonces != "none":  # OpenAI's obfuscation: a string that differs in every chunk (or a constant null)
        for position, c in enumerate(chunks):
            c["obfuscation"] = None if nonces == "null" else data.draw(text) if position % 3 else ""
    payloads = [ENCODINGS[encoding](c) for c in chunks]

    out, recognised = with_templates(payloads, options)
    assert out == decoding_only(payloads, options)
    nonce_first = encoding == "keys reversed" and nonces == "strings"
    if used != [0, 1] and not nonce_first:
        plain = [c for c in chunks[1:] if _only_arguments(c)]
        assert recognised >= 2 * len(plain) - len(chunks), "each other chunk costs one fragment at most"


@needs_recordings()
@pytest.mark.parametrize("path", recorded_files(), ids=lambda path: path.name)
def test_recorded_streams_rewrite_exactly_as_decoded(path: Any) -> None:
    payloads = [orjson.dumps(c) for c in recorded_chunks(path)]
    for options in (RewriteOptions(), RewriteOptions(message_tool="get_weather", reasoning="expose")):
        out, _ = with_templates(payloads, options)
        assert out == decoding_only(payloads, options)


@needs_recordings("openai-gpt4o-tool-call-a.sse")
def test_recorded_openai_fragments_are_recognised_from_their_original_bytes() -> None:
    body = (FIXTURES / "openai-gpt4o-tool-call-a.sse").read_bytes()
    payloads = [line[6:] for line in body.split(b"\n") if line.startswith(b"data: {")]
    fragments = sum(1 for payload in payloads if b'"arguments":"' in payload and b'"name"' not in payload)
    _, recognised = with_templates(payloads, RewriteOptions(), learns=3)
    assert fragments > 3 and recognised == fragments - 1


@pytest.mark.parametrize("padding", ["varies", "null"])
def test_openai_obfuscation_is_relayed_as_it_came_and_fragments_are_recognised(padding: str) -> None:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "Hello there"}), 2))
    pads = ["x" * (i % 7) if padding == "varies" else None for i in range(len(chunks))]
    payloads = [orjson.dumps({**c, "usage": None, "obfuscation": pad}) for c, pad in zip(chunks, pads)]
    out, recognised = with_templates(payloads, RewriteOptions(), learns=3)
    assert out == decoding_only(payloads, RewriteOptions())
    assert recognised == len(chunks) - 3
    if padding == "varies":
        assert len({c["obfuscation"] for c in out}) > 1, "each chunk keeps its own padding"


def test_chunks_that_all_differ_are_decoded_and_learning_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "Hello there"}), 2))
    payloads = [orjson.dumps({**c, "x_sequence": i}) for i, c in enumerate(chunks)]
    learned = []
    learn = FragmentTemplate.learn
    monkeypatch.setattr(FragmentTemplate, "learn", lambda payload, c: learned.append(payload) or learn(payload, c))
    out, recognised = with_templates(payloads, RewriteOptions(), learns=3)
    assert out == decoding_only(payloads, RewriteOptions())
    assert recognised == 0 and len(learned) == 3


# The template itself.

HEAD = chunk(choice(tool_calls=[call(0, '{"mess')]), system_fingerprint="fp_1")


def learned(encode: Encode = orjson.dumps) -> FragmentTemplate:
    template = FragmentTemplate.learn(encode(HEAD), HEAD)
    assert template is not None
    return template


def with_arguments(arguments: str, **top: Any) -> dict[str, Any]:
    return chunk(choice(tool_calls=[call(0, arguments)]), **{"system_fingerprint": "fp_1", **top})


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("arguments", ["", "age\": \"Hi", "\\u00e9\\n", "😀 /\\\\", "\"}"])
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
def test_render_puts_the_delta_in_the_learned_envelope(encoding: str) -> None:
    delta = {"content": 'say "hi"', "reasoning_content": "é"}
    rendered = orjson.loads(learned(ENCODINGS[encoding]).render(delta))
    assert rendered == {**HEAD, "choices": [{**HEAD["choices"][0], "delta": delta}]}


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
    decoded = {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {'x"arguments': "", "arguments": "a"}}]}}]}
    payload = b'{"choices":[{"delta":{"tool_calls":[{"index":0,"function":{"x\\"arguments":"","\\u0061rguments":"a"}}]}}]}'
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
    payloads = [orjson.dumps(c) for c in chunks]
    assert with_templates(payloads, RewriteOptions())[0] == decoding_only(payloads, RewriteOptions())


def test_a_fragment_with_a_name_is_never_a_template() -> None:
    # Before its first argument, a call's name still grows with each piece.
    chunks = [
        chunk(choice(role="assistant", tool_calls=[call(0, "", id="call_a", name="send_message")])),
        chunk(choice(tool_calls=[call(0, "", name="_x")])),
        chunk(choice(tool_calls=[call(0, "", name="_x")])),
        chunk(choice(tool_calls=[call(0, "{}")])),
        chunk(choice(finish="tool_calls")),
    ]
    payloads = [orjson.dumps(c) for c in chunks]
    out, _ = with_templates(payloads, RewriteOptions())
    assert out == decoding_only(payloads, RewriteOptions())


@pytest.mark.parametrize("nonce", [False, True])
def test_what_finish_settles_goes_out_in_the_last_chunks_envelope(nonce: bool) -> None:
    # The stream ends on a recognised fragment; the call finish() settles is sent in that chunk's envelope.
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
    out, recognised = with_templates(payloads, RewriteOptions())
    assert recognised == 1 and out == decoding_only(payloads, RewriteOptions())
    assert "x_groq" not in out[-1]
    assert out[-1].get("obfuscation") == ("pad3" if nonce else None)


@settings(max_examples=500, deadline=None)
@given(
    st.sampled_from(sorted(ENCODINGS)),
    st.booleans(),
    text,
    st.lists(st.tuples(st.integers(0, 400), st.integers(0, 3), st.binary(max_size=4)), min_size=1, max_size=3),
)
def test_whatever_a_template_recognises_decodes_to_what_it_says(
    encoding: str, nonce: bool, arguments: str, edits: list[tuple[int, int, bytes]]
) -> None:
    # Any payload, a valid one edited at random: a match must be exactly the learned chunk with its holes filled.
    def made(fragment: str, padding: str) -> dict[str, Any]:
        return {**with_arguments(fragment), "obfuscation": padding} if nonce else with_arguments(fragment)

    encode = ENCODINGS[encoding]
    template = FragmentTemplate.learn(encode(made("x", "abc")), made("x", "abc"))
    assert template is not None or (nonce and encoding == "keys reversed"), "a nonce first is no template"
    payload = encode(made(arguments, "other"))
    for at, cut, inserted in edits:
        at %= len(payload) + 1
        payload = payload[:at] + inserted + payload[at + cut :]
    matched = template.match(payload) if template is not None else None
    if matched is not None:
        found, chunk, _ = matched
        padding = chunk.get("obfuscation", "")
        assert chunk == made("x", padding)
        assert orjson.loads(payload) == made(found, padding)


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
