"""The incremental arguments parser, checked against ``json.loads`` over every split."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.core.arguments import ArgumentsParser, Captured, Filtered, extract_strings, strip_member
from tests.helpers.streams import splits

# Text that stresses the decoder: quotes, backslashes, slashes, control
# characters, astral characters (surrogate pairs when escaped), non-ASCII.
tricky_text = st.text(
    alphabet=st.one_of(
        st.sampled_from('"\\/\b\f\n\r\t\x00\x1f é€😀𝄞{}[]:,'),
        st.characters(exclude_categories=("Cs",)),
    ),
    max_size=40,
)
keys = st.one_of(st.sampled_from(["message", "inner_thoughts", "a", "mess", ""]), tricky_text)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    tricky_text,
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(keys, st.just("message")), inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    """A JSON object as a model might write it: any key order, any escaping, any spacing."""
    obj = draw(st.dictionaries(keys, values, max_size=6))
    if draw(st.booleans()):
        obj["message"] = draw(tricky_text)
    if draw(st.booleans()):
        obj["inner_thoughts"] = draw(tricky_text)
    items = list(obj.items())
    order = draw(st.permutations(range(len(items))))
    obj = dict(items[i] for i in order)
    text = json.dumps(
        obj,
        ensure_ascii=draw(st.booleans()),
        indent=draw(st.sampled_from([None, 0, 2])),
        separators=draw(st.sampled_from([None, (",", ":"), (" , ", " : ")])),
    )
    if draw(st.booleans()):
        text = text.replace("/", "\\/")  # '/' only ever appears inside strings
    return text


def run(fragments: list[str], **kwargs: object) -> tuple[ArgumentsParser, dict[object, str]]:
    """Feed fragments, checking after every feed the invariants that must always hold.

    The result maps each captured key to its text, and ``Filtered`` to the filtered object.
    """
    parser = ArgumentsParser(**kwargs)  # type: ignore[arg-type]
    emitted: dict[object, list[str]] = {}
    for fragment in fragments:
        for piece in parser.feed(fragment):
            key, text = (piece.key, piece.text) if type(piece) is Captured else (Filtered, piece.text)
            assert text, "no empty events"
            text.encode("utf-8")  # every fragment is valid UTF-8 (no lone surrogates)
            emitted.setdefault(key, []).append(text)
        assert len(parser._pending) <= 11, "only an incomplete escape is ever held back"
    parser.close()
    return parser, {key: "".join(parts) for key, parts in emitted.items()}


def expected_strings(doc: str, keys: tuple[str, ...]) -> dict[str, str]:
    obj = json.loads(doc)
    return {k: obj[k] for k in keys if isinstance(obj.get(k), str) and obj[k]}


@settings(max_examples=300)
@given(st.data())
def test_captured_strings_equal_json_loads_under_random_splits(data: st.DataObject) -> None:
    doc = data.draw(documents())
    fragments = data.draw(splits(doc))
    parser, emitted = run(fragments)
    assert parser.error is None, "closed, the whole object was read"
    assert emitted == expected_strings(doc, ("message", "inner_thoughts"))


@settings(max_examples=60)
@given(documents())
def test_every_single_split_point_and_one_char_at_a_time(doc: str) -> None:
    want = expected_strings(doc, ("message", "inner_thoughts"))
    for cut in range(len(doc) + 1):
        assert run([doc[:cut], doc[cut:]])[1] == want
    assert run(list(doc))[1] == want


@settings(max_examples=200)
@given(st.data())
def test_emitted_text_is_always_a_prefix_of_the_final_value(data: st.DataObject) -> None:
    doc = data.draw(documents())
    final = expected_strings(doc, ("message",)).get("message", "")
    parser = ArgumentsParser(capture=["message"])
    so_far = ""
    for fragment in data.draw(splits(doc)):
        so_far += "".join(text for _, text in parser.feed(fragment))
        assert final.startswith(so_far)
    assert so_far == final


@settings(max_examples=300)
@given(st.data())
def test_filtered_object_is_the_original_minus_the_key(data: st.DataObject) -> None:
    doc = data.draw(documents())
    fragments = data.draw(splits(doc))
    _, emitted = run(fragments, capture=(), drop="inner_thoughts")
    original = json.loads(doc)
    removed = original.pop("inner_thoughts", None)
    filtered = emitted.get(Filtered, "")
    assert json.loads(filtered) == original
    assert list(json.loads(filtered)) == list(original), "key order is kept"
    assert emitted.get("inner_thoughts") == (removed or None if isinstance(removed, str) else None)


@settings(max_examples=200)
@given(st.data())
def test_truncated_documents_yield_a_prefix_and_no_exception(data: st.DataObject) -> None:
    doc = data.draw(documents())
    cut = data.draw(st.integers(min_value=0, max_value=len(doc)))
    final = expected_strings(doc, ("message", "inner_thoughts"))
    parser, emitted = run(data.draw(splits(doc[:cut])) if cut else [])
    for key, text in emitted.items():
        assert final[key].startswith(text)
    assert (parser.error is None) == (cut == len(doc))


@settings(max_examples=200)
@given(st.data())
def test_garbage_stops_emission_without_raising(data: st.DataObject) -> None:
    """``"\\q`` is invalid wherever it lands: in a string, after a backslash, mid-escape, in a number."""
    doc = data.draw(documents())
    cut = data.draw(st.integers(min_value=0, max_value=len(doc) - 1))
    bad = doc[:cut] + '"\\q' + doc[cut:]
    parser, emitted = run(data.draw(splits(bad)), drop="inner_thoughts")
    assert parser.error is not None
    whole, at_once = run([bad], drop="inner_thoughts")
    assert emitted == at_once and parser.error == whole.error


@pytest.mark.parametrize(
    "doc",
    [r'{"a": {""\q"": null}, "message": null}', '{"a": [1, x], "message": "m"}', '{"a": {"k": nul\\l}}'],
)
def test_stray_characters_in_a_nested_value_are_an_error(doc: str) -> None:
    parser, _ = run([doc], drop="inner_thoughts")
    assert parser.error is not None and "nested" in parser.error


def test_every_escape_kind_cut_at_every_position() -> None:
    doc = r'{"message": "q\" b\\ s\/ \b\f\n\r\t \u00e9 \ud83d\ude00 \uD834\uDD1E end"}'
    want = json.loads(doc)["message"]
    for cut in range(len(doc) + 1):
        for second in range(cut, len(doc) + 1):
            assert run([doc[:cut], doc[cut:second], doc[second:]])[1]["message"] == want


@pytest.mark.parametrize(
    ("escaped", "decoded"),
    [
        (r"\ud83d", "\ufffd"),  # lone high surrogate at the end of the string
        (r"\ud83dx", "\ufffdx"),  # high surrogate followed by a plain character
        (r"\ud83d\n", "\ufffd\n"),  # followed by another escape
        (r"\ud83d\u0041", "\ufffdA"),  # followed by a non-surrogate \u escape
        (r"\ude00", "\ufffd"),  # lone low surrogate
        (r"\ud83d\ud83d\ude00", "\ufffd😀"),  # two highs, then a low
    ],
)
def test_lone_surrogates_become_replacement_characters(escaped: str, decoded: str) -> None:
    doc = '{"message": "' + escaped + '"}'
    for cut in range(len(doc) + 1):
        assert run([doc[:cut], doc[cut:]])[1]["message"] == decoded
    assert run(list(doc))[1]["message"] == decoded


def test_only_top_level_keys_count() -> None:
    doc = '{"a": {"message": "nested"}, "b": ["message", "x"], "c": "message", "message": "top"}'
    assert extract_strings(doc, ["message"]) == {"message": "top"}


def test_keys_are_compared_decoded() -> None:
    assert extract_strings(r'{"mess\u0061ge": "hi"}', ["message"]) == {"message": "hi"}


def test_first_occurrence_of_a_key_wins() -> None:
    assert extract_strings('{"message": "one", "message": "two"}', ["message"]) == {"message": "one"}
    assert extract_strings('{"message": 1, "message": "two"}', ["message"]) == {}


def test_dropped_key_is_removed_everywhere_and_reported_once() -> None:
    filtered, removed, error = strip_member('{"t": "x", "a": 1, "t": "y"}', "t")
    assert (json.loads(filtered), removed, error) == ({"a": 1}, "x", None)


def test_raw_control_characters_are_accepted_as_themselves() -> None:
    doc = '{"message": "line one\nline\ttwo"}'
    assert extract_strings(doc, ["message"]) == {"message": "line one\nline\ttwo"}
    filtered, _, error = strip_member('{"a": "x\ny", "b": ["p\tq"]}', "z")
    assert error is None and json.loads(filtered) == {"a": "x\ny", "b": ["p\tq"]}


@pytest.mark.parametrize("value", ["true", "false", "null", "-1.5e+3", "0", "[]", "{}", '[1, {"x": [true]}]'])
def test_partial_scalars_and_nested_values_at_every_boundary(value: str) -> None:
    doc = '{"a": ' + value + ', "message": "ok", "b": ' + value + "}"
    for cut in range(len(doc) + 1):
        parser, emitted = run([doc[:cut], doc[cut:]], drop="inner_thoughts")
        assert emitted["message"] == "ok" and parser.error is None
        assert json.loads(emitted[Filtered]) == json.loads(doc)


@pytest.mark.parametrize(
    "doc",
    ['{"a": tru}', '{"a": 1.}', '{"a": -}', '{"a": 1e}', '{"a": 01}', '["message"]', '"x"', '{"a" 1}', '{"a": [}'],
)
def test_invalid_documents_report_an_error(doc: str) -> None:
    parser, _ = run([doc])
    assert parser.error is not None


def test_message_emitted_before_invalid_tail_is_kept() -> None:
    parser, emitted = run(['{"message": "hello"', " oops"])
    assert emitted == {"message": "hello"}
    assert parser.error is not None


def test_truncated_document_yields_what_was_decoded() -> None:
    assert extract_strings('{"inner_thoughts": "plan", "message": "Hel', ["message", "inner_thoughts"]) == {
        "inner_thoughts": "plan",
        "message": "Hel",
    }
    _, _, error = strip_member('{"a": "b', "x")
    assert error is not None and "truncated" in error


@example(n=10_000)
@given(st.integers(min_value=1, max_value=2_000))
def test_long_runs_arrive_as_few_events(n: int) -> None:
    """Bulk consumption: one feed of a long plain run is one event, not one per character."""
    parser = ArgumentsParser(capture=["message"])
    assert parser.feed('{"message": "') == []
    assert parser.feed("x" * n) == [("message", "x" * n)]
