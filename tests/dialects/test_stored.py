"""Stored responses, the pure half: what a request refers to, the request it makes from the records found, the
records kept and the pages listed. The store and the sockets are in ``tests/state`` and
``tests/e2e/test_responses_stored.py``."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.options import Reasoning
from gateway.dialects.responses import parse_request, to_chat
from gateway.dialects.responses.stored import (
    Continued,
    Record,
    decode,
    input_items_page,
    lookup,
    record_of,
    resolve,
)

TOOL = {"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}


def body(**fields: Any) -> bytes:
    return orjson.dumps({"model": "assistant", "tools": [TOOL], **fields})


def no_unseal(blob: str) -> str:
    raise AssertionError("nothing here is sealed")


def continue_from(chain: list[Record], **fields: Any) -> Continued:
    return resolve(lookup(body(**fields)), chain, {}, unseal=no_unseal, seal=None)


def stored(continued: Continued, response_id: str, output: list[dict[str, Any]]) -> Record:
    """The record the shell keeps of an answer, read back as the next request finds it."""
    data, _ = record_of(continued, {"id": response_id, "object": "response", "output": output})
    return decode(data)


def upstream(request: Any, reasoning: Reasoning) -> dict[str, Any]:
    return to_chat(request, reasoning=reasoning, reasoning_effort=False)


# Output items as the encoder writes them.


def message(text: str, number: int) -> dict[str, Any]:
    part = {"type": "output_text", "annotations": [], "logprobs": [], "text": text}
    return {"id": f"msg_{number}", "type": "message", "status": "completed", "content": [part], "role": "assistant"}


def function_call(call_id: str, number: int) -> dict[str, Any]:
    return {
        "id": f"fc_{number}",
        "type": "function_call",
        "status": "completed",
        "arguments": '{"q": 1}',
        "call_id": call_id,
        "name": "lookup",
    }


def reasoning(text: str, number: int) -> dict[str, Any]:
    return {"id": f"rs_{number}", "type": "reasoning", "summary": [{"type": "summary_text", "text": text}]}


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)


@st.composite
def conversations(draw: st.DrawFn) -> list[tuple[list[Any] | str, list[dict[str, Any]]]]:
    """Turns of (the client's input, the answer's output): a tool call's output answers it in the next input."""
    turns: list[tuple[list[Any] | str, list[dict[str, Any]]]] = []
    pending: list[str] = []
    number = 0
    for turn in range(draw(st.integers(1, 4))):
        items: list[Any] = [
            {"type": "function_call_output", "call_id": call_id, "output": draw(text)} for call_id in pending
        ]
        said = draw(text)
        shape = draw(st.sampled_from(["string", "item", "parts", "none"] if pending else ["string", "item", "parts"]))
        if shape == "item":
            items.append({"role": "user", "content": said})
        elif shape == "parts":
            items.append({"type": "message", "role": "user", "content": [{"type": "input_text", "text": said}]})
        elif shape == "string" and not items and turn == 0:
            items = said  # type: ignore[assignment]
        elif shape == "string":
            items.append({"role": "developer", "content": said})
        output: list[dict[str, Any]] = []
        pending = []
        for kind in draw(st.lists(st.sampled_from(["message", "call", "reasoning"]), min_size=1, max_size=4)):
            number += 1
            if kind == "message":
                output.append(message(draw(text), number))
            elif kind == "reasoning":
                output.append(reasoning(draw(text), number))
            else:
                pending.append(f"call_{number}")
                output.append(function_call(pending[-1], number))
        turns.append((items, output))
    return turns


@given(conversations(), st.sampled_from(Reasoning))
def test_a_conversation_continued_by_id_reaches_the_upstream_as_the_same_conversation_sent_whole(
    turns: list[tuple[list[Any] | str, list[dict[str, Any]]]], policy: Reasoning
) -> None:
    chain: list[Record] = []
    whole: list[Any] = []
    for number, (items, output) in enumerate(turns):
        previous = {"previous_response_id": chain[-1].id} if chain else {}
        continued = continue_from(chain, input=items, instructions="Be brief.", **previous)
        whole += [{"role": "user", "content": items}] if isinstance(items, str) else items
        sent_whole = parse_request(body(input=whole, instructions="Be brief."))
        assert upstream(continued.request, policy) == upstream(sent_whole, policy)
        assert continued.ancestors == tuple(record.id for record in chain)
        chain.append(stored(continued, f"resp_{number}", output))
        whole += output


def test_an_item_reference_is_the_stored_item_itself() -> None:
    first = continue_from([], input="Look it up.")
    record = stored(first, "resp_1", [message("Checking.", 1), function_call("call_1", 2)])
    result = {"type": "function_call_output", "call_id": "call_1", "output": "42"}
    by_reference = resolve(
        lookup(body(input=[{"type": "item_reference", "id": "fc_2"}, result])),
        [],
        {"fc_2": record.item("fc_2") or {}},
        unseal=no_unseal,
        seal=None,
    )
    whole = parse_request(body(input=[function_call("call_1", 2), result]))
    assert upstream(by_reference.request, Reasoning.HIDE) == upstream(whole, Reasoning.HIDE)
    # What is stored of this request is the item referred to, not the reference.
    assert by_reference.input[0] == function_call("call_1", 2)


def test_a_bare_id_is_an_item_reference_too() -> None:
    found = lookup(body(input=[{"id": "msg_1"}, {"role": "user", "content": "Hi", "id": "msg_2"}]))
    assert found.references == ((0, "msg_1"),)


def test_an_item_referred_to_that_previous_response_id_already_holds_is_a_duplicate() -> None:
    first = continue_from([], input="Hi")
    record = stored(first, "resp_1", [message("Hello.", 1)])
    found = lookup(body(previous_response_id="resp_1", input=[{"type": "item_reference", "id": "msg_1"}]))
    with pytest.raises(GatewayError) as caught:
        resolve(found, [record], {"msg_1": message("Hello.", 1)}, unseal=no_unseal, seal=None)
    assert caught.value.param == "input[0]" and "Duplicate item" in caught.value.message


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"previous_response_id": 5}, "previous_response_id"),
        ({"previous_response_id": ""}, "previous_response_id"),
        ({"input": [{"type": "item_reference"}]}, "input[0].id"),
        ({"input": [{"type": "item_reference", "id": 7}]}, "input[0].id"),
        ({"input": [{"type": "reasoning", "summary": [], "encrypted_content": 1}]}, "input[0].encrypted_content"),
        ({"include": "reasoning.encrypted_content"}, "include"),
        ({"store": "yes"}, "store"),
        ({"model": None}, "model"),
    ],
)
def test_what_a_request_refers_to_is_checked_field_by_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(GatewayError) as caught:
        lookup(body(**{"input": "Hi", **fields}))
    assert caught.value.kind is ErrorKind.INVALID_REQUEST and caught.value.param == param


def test_sealed_reasoning_is_opened_and_goes_back_where_the_route_sends_reasoning_back() -> None:
    sealed = {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "edited"}]}
    items = ["Hi", {**sealed, "encrypted_content": "blob"}, message("Hello.", 2), "And?"]
    items = [{"role": "user", "content": item} if isinstance(item, str) else item for item in items]

    def unseal(blob: str) -> str:
        assert blob == "blob"
        return "what the model thought"

    continued = resolve(lookup(body(input=items, store=False)), [], {}, unseal=unseal, seal=None)
    exposed = upstream(continued.request, Reasoning.EXPOSE)["messages"]
    assert exposed[1] == {"role": "assistant", "content": "Hello.", "reasoning_content": "what the model thought"}
    assert "reasoning_content" not in upstream(continued.request, Reasoning.HIDE)["messages"][1]
    assert continued.store is False


def test_a_blob_that_does_not_open_is_a_400_naming_the_item() -> None:
    items = [{"role": "user", "content": "Hi"}, {"type": "reasoning", "summary": [], "encrypted_content": "x"}]

    def unseal(blob: str) -> str:
        raise ValueError("it was altered, or issued to another API key")

    with pytest.raises(GatewayError) as caught:
        resolve(lookup(body(input=items)), [], {}, unseal=unseal, seal=None)
    error = caught.value
    assert (error.status, error.param, error.code) == (400, "input[1].encrypted_content", "invalid_encrypted_content")
    assert "input[1]" in error.message and "altered" in error.message


def test_the_stored_input_has_ids_and_the_shapes_input_items_lists() -> None:
    continued = continue_from(
        [],
        input=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "input_text", "text": "Hello."}]},
            {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}", "id": "fc_mine"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    )
    user, assistant, call, output = continued.input
    assert user["id"].startswith("msg_") and user["content"] == [{"type": "input_text", "text": "Hi"}]
    assert assistant["content"] == [{"type": "output_text", "text": "Hello.", "annotations": []}]
    assert call["id"] == "fc_mine" and output["id"].startswith("fco_")
    assert all(item["status"] == "completed" for item in continued.input)
    data, items = record_of(continued, {"id": "resp_1", "output": [message("Done.", 9), {"id": "bad id"}]})
    assert items == (user["id"], assistant["id"], "fc_mine", output["id"], "msg_9")
    assert decode(data).input == continued.input


def test_input_items_are_listed_newest_first_in_pages() -> None:
    items = [{"id": f"msg_{n}"} for n in range(5)]

    def ids(page: dict[str, Any]) -> list[str]:
        return [item["id"] for item in page["data"]]

    first = input_items_page(items, {"limit": "2"})
    assert ids(first) == ["msg_4", "msg_3"] and first["has_more"] is True
    assert (first["first_id"], first["last_id"], first["object"]) == ("msg_4", "msg_3", "list")
    last = input_items_page(items, {"limit": "2", "after": "msg_1"})
    assert ids(last) == ["msg_0"] and last["has_more"] is False
    assert ids(input_items_page(items, {"order": "asc", "after": "msg_2"})) == ["msg_3", "msg_4"]
    empty = input_items_page([], {})
    assert empty["data"] == [] and empty["first_id"] is None and empty["has_more"] is False
    for query, param in [({"limit": "0"}, "limit"), ({"limit": "101"}, "limit"), ({"order": "up"}, "order")]:
        with pytest.raises(GatewayError) as caught:
            input_items_page(items, query)
        assert caught.value.param == param
    with pytest.raises(GatewayError):
        input_items_page(items, {"after": "msg_9"})
