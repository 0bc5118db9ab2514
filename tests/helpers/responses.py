"""Responses requests and answers in the tests: every event and body parsed with the openai SDK's own types, and
the protocol's order checked."""

from __future__ import annotations

import json
from typing import Any, get_args

import orjson
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.core.events import Event
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import Shortcuts
from gateway.dialects.responses import (
    ResponsesRequest,
    ResponsesStreamEncoder,
    parse_request,
)
from tests.helpers.paths import FIXTURES
from tests.helpers.streams import (
    translate,
)

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
# The union's members by their ``type``, to name the one rule an event breaks rather than fifty-nine.
EVENT_TYPES: dict[str, type[BaseModel]] = {
    get_args(member.model_fields["type"].annotation)[0]: member for member in get_args(get_args(ResponseStreamEvent)[0])
}
TERMINAL = ("response.completed", "response.incomplete", "response.failed")
HIDDEN = "αβγδεζηθλμ"  # the alphabet of generated reasoning: none of it may reach a client that hides reasoning
USAGE = {
    "prompt_tokens": 11,
    "completion_tokens": 7,
    "total_tokens": 18,
    "prompt_tokens_details": {"cached_tokens": 3},
    "completion_tokens_details": {"reasoning_tokens": 2},
}


def request_of(**body: Any) -> ResponsesRequest:
    return parse_request(orjson.dumps({"model": "assistant", "input": "Hi", **body}))


def parse_sse(body: bytes) -> list[dict[str, Any]]:
    """The events of a Responses stream; each ``event:`` line must name its data's type."""
    out = []
    for block in body.split(b"\n\n"):
        if not block or block.startswith(b":"):
            continue
        name, data = block.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: "), block
        event = orjson.loads(data[6:])
        assert name[7:].decode() == event["type"]
        out.append(event)
    return out


def sdk_checked(event: dict[str, Any]) -> dict[str, Any]:
    """The event as the SDK's own union type parses it: a shape the SDK would reject fails here."""
    EVENT_TYPES[event["type"]].model_validate(event)
    parsed = EVENTS.validate_python(event)
    assert type(parsed) is EVENT_TYPES[event["type"]]
    if "response" in event:
        Response.model_validate(event["response"])
    return event


def run(
    reads: list[bytes], request: ResponsesRequest | None = None, options: RewriteOptions | None = None
) -> tuple[list[dict[str, Any]], list[Event], bytes]:
    """What a Responses client receives for these upstream reads (SDK-checked), the core's events, the bytes."""
    encoder = ResponsesStreamEncoder(request or request_of(stream=True), created=1700000000, shortcuts=Shortcuts.CHECK)
    body, events = translate(reads, options or RewriteOptions(), encoder)
    return [sdk_checked(e) for e in parse_sse(body)], events, body


def check_protocol(events: list[dict[str, Any]]) -> dict[str, Any]:
    """Every rule a stream client relies on; returns the final response object.

    Lifecycle first and last, one terminal event, consecutive sequence numbers,
    one response id; every delta goes to an announced item that is still open;
    each ``.done`` repeats exactly what its deltas said; the final object's
    output is the items as their ``output_item.done`` left them.
    """
    assert [e["type"] for e in events[:2]] == ["response.created", "response.in_progress"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert [e["type"] for e in events if e["type"] in TERMINAL] == [events[-1]["type"]]
    response_id = events[0]["response"]["id"]
    assert all(e["response"]["id"] == response_id for e in events if "response" in e)
    items: dict[int, dict[str, Any]] = {}
    for event in events[2:-1]:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] == len(items)
            items[event["output_index"]] = {"added": event["item"], "text": "", "done": None, "part": False}
            assert event["item"].get("arguments", "") == "" and event["item"].get("content", []) == []
            continue
        item = items[event["output_index"]]
        assert item["done"] is None, f"{kind} after the item was done"
        if "item_id" in event:
            assert event["item_id"] == item["added"]["id"]
        if "content_index" in event:
            assert event["content_index"] == 0
        if "summary_index" in event:
            assert event["summary_index"] == 0
        if kind in ("response.content_part.added", "response.reasoning_summary_part.added"):
            assert not item["part"], "a second part"
            item["part"] = True
        elif kind in ("response.output_text.delta", "response.reasoning_summary_text.delta"):
            assert item["part"], "a text delta before its part"
            item["text"] += event["delta"]
        elif kind in ("response.function_call_arguments.delta", "response.custom_tool_call_input.delta"):
            item["text"] += event["delta"]
        elif kind == "response.custom_tool_call_input.done":
            assert event["input"] == item["text"]
        elif kind in ("response.output_text.done", "response.reasoning_summary_text.done"):
            assert event["text"] == item["text"]
        elif kind in ("response.content_part.done", "response.reasoning_summary_part.done"):
            assert event["part"]["text"] == item["text"]
        elif kind == "response.function_call_arguments.done":
            assert event["arguments"] == item["text"]
        elif kind == "response.output_item.done":
            done = event["item"]
            assert (done["id"], done["type"]) == (item["added"]["id"], item["added"]["type"])
            assert item_text(done) == item["text"]
            item["done"] = done
        else:
            raise AssertionError(f"unexpected event {kind}")
    final: dict[str, Any] = events[-1]["response"]
    if final["status"] == "failed":
        assert final["error"]["message"]
        assert len(final["output"]) == len(items)
        for index, item in items.items():
            if item["done"] is not None:
                assert final["output"][index] == item["done"]
            else:  # what had arrived when the stream failed
                assert final["output"][index]["status"] == "incomplete"
                assert item_text(final["output"][index]) == item["text"]
    else:
        assert all(item["done"] is not None for item in items.values()), "the response ended with an open item"
        assert final["output"] == [items[i]["done"] for i in sorted(items)]
    return final


def item_text(item: dict[str, Any]) -> str:
    """What an item's deltas say: a function call's arguments, a custom call's input (a shell call has none)."""
    if item["type"] == "function_call":
        return str(item["arguments"])
    if item["type"] == "custom_tool_call":
        return str(item["input"])
    if item["type"] == "local_shell_call":
        return ""
    if item["type"] == "reasoning":
        return "".join(part["text"] for part in item["summary"])
    return "".join(part["text"] for part in item["content"])


def deltas(events: list[dict[str, Any]], kind: str = "response.output_text.delta") -> str:
    return "".join(e["delta"] for e in events if e["type"] == kind)


def calls_of(final: dict[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (i["call_id"], i["name"], json.loads(i["arguments"])) for i in final["output"] if i["type"] == "function_call"
    ]


def reasoning_of(final: dict[str, Any]) -> str:
    return "".join(item_text(i) for i in final["output"] if i["type"] == "reasoning")


def strip_ids(value: Any) -> Any:
    """An event without the ids the encoder generates, to compare two runs."""
    if isinstance(value, dict):
        return {k: strip_ids(v) for k, v in value.items() if k not in ("id", "item_id")}
    if isinstance(value, list):
        return [strip_ids(v) for v in value]
    return value


def completion_of(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """The non-streaming completion an upstream would have sent for this stream (choice 0)."""
    message: dict[str, Any] = {"role": "assistant", "content": None}
    calls: dict[int, dict[str, Any]] = {}
    finish = None
    usage = None
    for c in chunks:
        usage = c.get("usage") or usage
        for ch in c.get("choices") or ():
            delta = ch.get("delta") or {}
            if delta.get("content"):
                message["content"] = (message["content"] or "") + delta["content"]
            if delta.get("reasoning_content"):
                message["reasoning_content"] = message.get("reasoning_content", "") + delta["reasoning_content"]
            for tc in delta.get("tool_calls") or ():
                slot = calls.setdefault(
                    tc["index"], {"id": tc.get("id"), "type": "function", "function": {"name": "", "arguments": ""}}
                )
                slot["function"]["name"] += tc.get("function", {}).get("name") or ""
                slot["function"]["arguments"] += tc.get("function", {}).get("arguments") or ""
            finish = ch.get("finish_reason") or finish
    if calls:
        message["tool_calls"] = [calls[i] for i in sorted(calls)]
    completion = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "m"}
    return {**completion, "choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": usage}


# Real Responses streams, recorded (PROVENANCE.md in tests/fixtures/recorded/ says where from).
RESPONSES = FIXTURES / "responses"
