"""Anthropic Messages requests and answers in the tests: every event validated with the anthropic SDK's typed
models and Anthropic's event order, and read back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson
from anthropic.types import RawMessageStreamEvent
from pydantic import BaseModel, TypeAdapter

from gateway.dialects.anthropic import (
    MessagesRequest,
    parse_request,
)

EVENT = TypeAdapter(RawMessageStreamEvent)
ERROR_TYPES = frozenset(
    (
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    )
)


def body_of(**fields: Any) -> bytes:
    request: dict[str, Any] = {
        "model": "claude-test",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Hi"}],
    }
    request.update(fields)
    return orjson.dumps({key: value for key, value in request.items() if value is not None})


def request_of(**fields: Any) -> MessagesRequest:
    return parse_request(body_of(**fields))


STREAMING = request_of(stream=True)


# Reading what the encoder sends, as a client would.


def parse_sse(body: bytes) -> list[tuple[str | None, Any]]:
    """``(event name, decoded data)`` per event: CRLF or LF, blank lines before the first event,
    JSON padded with spaces, and a last event without its closing blank line are all accepted."""
    events: list[tuple[str | None, Any]] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name = None
        data = []
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" "))
        if data:
            events.append((name, orjson.loads(b"\n".join(data))))
    return events


def unknown_fields(value: Any, path: str = "") -> list[str]:
    """Fields the SDK's models do not declare, anywhere in a validated event: a misspelled field fails here."""
    if isinstance(value, BaseModel):
        found = [f"{path}.{key}" for key in value.model_extra or ()]
        for name in type(value).model_fields:
            found += unknown_fields(getattr(value, name), f"{path}.{name}")
        return found
    if isinstance(value, list):
        return [f for i, item in enumerate(value) for f in unknown_fields(item, f"{path}[{i}]")]
    return []


def validated(events: list[tuple[str | None, Any]], *, strict: bool = True) -> list[tuple[str | None, Any]]:
    """Every event as the SDK would read it: the name is the data's type, and the SDK's typed model accepts it."""
    for name, data in events:
        assert name == data["type"], (name, data)
        if name == "ping":
            assert data == {"type": "ping"}
        elif name == "error":
            error = data["error"]
            assert set(data) == {"type", "error"} and set(error) == {"type", "message"}
            assert error["type"] in ERROR_TYPES and isinstance(error["message"], str) and error["message"]
        else:
            model = EVENT.validate_python(data)
            if strict:
                assert not unknown_fields(model), unknown_fields(model)
    return events


@dataclass
class Block:
    type: str
    start: dict[str, Any]
    deltas: list[str] = field(default_factory=list)
    text: str = ""  # text, thinking or partial_json, joined
    signature: str | None = None  # a thinking block's, from its signature_delta


@dataclass
class Stream:
    start: dict[str, Any]
    blocks: list[Block]
    delta: dict[str, Any] | None
    stopped: bool
    error: dict[str, Any] | None

    def joined(self, kind: str) -> str:
        return "".join(block.text for block in self.blocks if block.type == kind)


DELTAS_OF = {
    "text": ("text_delta", "citations_delta"),
    "thinking": ("thinking_delta", "signature_delta"),
    "tool_use": ("input_json_delta",),
    "redacted_thinking": (),
}


def structure(events: list[tuple[str | None, Any]]) -> Stream:
    """Checks Anthropic's event order and returns what the stream said.

    ``message_start`` first; blocks one at a time, numbered from 0, each
    ``content_block_start``, deltas of its own kind, ``content_block_stop``;
    then ``message_delta`` and ``message_stop``, the last event; or an
    ``error`` as the last event and no ``message_stop``. ``ping`` anywhere
    after ``message_start``.
    """
    assert events and events[0][0] == "message_start", "the stream must open with message_start"
    stream = Stream(events[0][1]["message"], [], None, False, None)
    open_block: Block | None = None
    for position, (name, data) in enumerate(events[1:], 1):
        assert not stream.stopped and stream.error is None, f"{name} after the end of the stream"
        if name == "ping":
            continue
        if name == "error":
            stream.error = data["error"]
            assert position == len(events) - 1
        elif name == "content_block_start":
            assert open_block is None and stream.delta is None, "a block starts while another is open"
            assert data["index"] == len(stream.blocks)
            open_block = Block(data["content_block"]["type"], data["content_block"])
            stream.blocks.append(open_block)
        elif name == "content_block_delta":
            assert open_block is not None and data["index"] == len(stream.blocks) - 1, "a delta outside its block"
            delta = data["delta"]
            assert delta["type"] in DELTAS_OF[open_block.type], (open_block.type, delta["type"])
            assert open_block.signature is None, "a signature is a thinking block's last delta"
            open_block.deltas.append(delta["type"])
            open_block.text += delta.get("text") or delta.get("thinking") or delta.get("partial_json") or ""
            if delta["type"] == "signature_delta":
                open_block.signature = delta["signature"]
        elif name == "content_block_stop":
            assert open_block is not None and data["index"] == len(stream.blocks) - 1
            open_block = None
        elif name == "message_delta":
            assert open_block is None and stream.delta is None
            stream.delta = data
        elif name == "message_stop":
            assert stream.delta is not None and position == len(events) - 1
            stream.stopped = True
        else:
            raise AssertionError(f"unexpected event {name}")
    assert stream.stopped or stream.error is not None, "the stream neither stopped nor failed"
    return stream


def read(client_bytes: bytes) -> Stream:
    return structure(validated(parse_sse(client_bytes)))
