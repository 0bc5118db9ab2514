"""The chat pass-through: its shortcuts give what the general path gives, and its checking mode says when not."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.core.events import Event
from gateway.core.options import RewriteOptions
from gateway.core.passthrough import ChatPassThrough, ModelName, ShortcutMismatch, Shortcuts
from gateway.core.passthrough.fragments import FragmentTemplate, Frame
from gateway.core.translator import StreamTranslator
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.streams import agent_stream, recorded_body, recorded_files, split_evenly

RECORDED = recorded_files()
AGENT = agent_stream(split_evenly(json.dumps({"inner_thoughts": "quiet", "message": "Hello there, friend"}), 3))


def body_of(chunks: list[dict[str, object]]) -> bytes:
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


def client_bytes(body: bytes, options: RewriteOptions, shortcuts: Shortcuts, *, model: str | None = None) -> bytes:
    translator = StreamTranslator(options, "up", raw_chunks=True, shortcuts=shortcuts)
    encoder = ChatStreamEncoder(model=model, shortcuts=shortcuts)
    return encoder.encode(translator.feed(body) + translator.end())


def decoded(client: bytes) -> list[object]:
    return [orjson.loads(line[6:]) if line.startswith(b"data: {") else line for line in client.split(b"\n\n")]


@pytest.mark.parametrize("path", RECORDED, ids=[p.name for p in RECORDED])
@pytest.mark.parametrize("route", ["agent", "plain"])
def test_recorded_streams_read_the_same_with_and_without_shortcuts(path: Path, route: str) -> None:
    options = RewriteOptions() if route == "agent" else RewriteOptions.plain()
    body = recorded_body(path)
    for model in (None, "the-route"):
        checked = client_bytes(body, options, Shortcuts.CHECK, model=model)
        assert decoded(checked) == decoded(client_bytes(body, options, Shortcuts.OFF, model=model))


def test_a_plain_route_relays_its_chunks_as_their_bytes_only_with_shortcuts() -> None:
    body = body_of(AGENT)
    relayed = client_bytes(body, RewriteOptions.plain(), Shortcuts.ON)
    assert relayed == body, "every chunk went out as the upstream wrote it"
    general = client_bytes(body, RewriteOptions.plain(), Shortcuts.OFF)
    assert decoded(general) == decoded(body)


def test_the_check_catches_a_frame_that_does_not_hold_its_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    frame = FragmentTemplate.frame

    def shifted(template: FragmentTemplate, nonce: bytes = b"") -> Frame:
        head, tail = frame(template, nonce)
        return head.replace(b'"index":0', b'"index":1', 1), tail

    monkeypatch.setattr(FragmentTemplate, "frame", shifted)
    body = body_of(AGENT)
    assert decoded(client_bytes(body, RewriteOptions(), Shortcuts.ON)) != decoded(
        client_bytes(body, RewriteOptions(), Shortcuts.OFF)
    ), "the broken shortcut reaches the client"
    with pytest.raises(ShortcutMismatch, match="frame"):
        client_bytes(body, RewriteOptions(), Shortcuts.CHECK)


def test_the_check_catches_a_model_name_left_in_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ModelName, "in_bytes", lambda self, data, fields: data)
    body = body_of([{**c, "model": "upstream-model"} for c in AGENT])
    with pytest.raises(ShortcutMismatch, match="general path"):
        client_bytes(body, RewriteOptions.plain(), Shortcuts.CHECK, model="the-route")


def test_the_check_catches_a_relay_that_misses_a_finish(monkeypatch: pytest.MonkeyPatch) -> None:
    relayed = ChatPassThrough._relay_events

    def forgetful(self: ChatPassThrough, chunk: dict[str, Any], payload: bytes) -> list[Event]:
        events = relayed(self, chunk, payload)
        self._finished = dict.fromkeys(self._finished, False)
        return events

    monkeypatch.setattr(ChatPassThrough, "_relay_events", forgetful)
    with pytest.raises(ShortcutMismatch, match="finished"):
        client_bytes(body_of(AGENT), RewriteOptions.plain(), Shortcuts.CHECK)


def test_a_choice_without_a_delta_is_relayed_with_an_empty_one() -> None:
    chunks = [*AGENT[:-1], {**AGENT[-1], "choices": [{"index": 0, "finish_reason": "stop", "x_filter": {"ok": True}}]}]
    for shortcuts in (Shortcuts.CHECK, Shortcuts.OFF):
        sent = decoded(client_bytes(body_of(chunks), RewriteOptions.plain(), shortcuts))
        last = sent[-3]
        assert isinstance(last, dict)
        assert last["choices"] == [{"index": 0, "finish_reason": "stop", "x_filter": {"ok": True}, "delta": {}}]
