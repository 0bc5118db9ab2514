"""Building and reading chat-completion streams in tests."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import strategies as st

from gateway.core.events import Event
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.passthrough import Shortcuts
from gateway.core.rewriter import RewriteStats, replay_completion
from gateway.core.translator import StreamTranslator
from gateway.core.wires import WIRES
from gateway.dialects import StreamEncoder
from gateway.dialects.chat import fold_completion
from tests.helpers.paths import FIXTURES


def options_of(**options: Any) -> RewriteOptions:
    """Rewrite options as the config spells them (``inner_thoughts="content"``, ``reasoning="expose"``)."""
    if "inner_thoughts" in options:
        options["inner_thoughts"] = Thoughts(options["inner_thoughts"])
    if "reasoning" in options:
        options["reasoning"] = Reasoning(options["reasoning"])
    return RewriteOptions(**options)


def rewrite_completion(
    completion: dict[str, Any], options: RewriteOptions | None = None, stats: RewriteStats | None = None
) -> dict[str, Any]:
    """A non-streaming answer as a chat client gets it: replayed through the rewrite, folded back."""
    return fold_completion(completion, replay_completion(completion, options, stats))


def recorded_files(folder: str = "") -> list[Path]:
    """The recorded chat-completions streams (or those of ``folder``: ``reasoning``, ``responses``, ...)."""
    return sorted(p for p in (FIXTURES / folder).iterdir() if p.suffix in (".sse", ".jsonl"))


def recorded_body(path: Path) -> bytes:
    """A recorded stream as the raw SSE body the provider sent."""
    raw = path.read_bytes()
    if path.suffix == ".sse":
        return raw
    lines = [line for line in raw.splitlines() if line.strip()]
    return b"".join(b"data: " + line + b"\n\n" for line in lines) + b"data: [DONE]\n\n"


def recorded_chunks(path: Path) -> list[dict[str, Any]]:
    return sse_payloads(recorded_body(path))


def sse_payloads(body: bytes) -> list[Any]:
    """The decoded ``data:`` payloads of an SSE body, without ``[DONE]``."""
    out = []
    for event in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = b"\n".join(line[5:].lstrip(b" ") for line in event.split(b"\n") if line.startswith(b"data:"))
        if data and data != b"[DONE]":
            out.append(orjson.loads(data))
    return out


def chunk(*choices: dict[str, Any], **top: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"id": "chatcmpl-test", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    base.update(top)
    base["choices"] = list(choices)
    return base


def choice(index: int = 0, finish: str | None = None, **delta: Any) -> dict[str, Any]:
    return {"index": index, "delta": delta, "finish_reason": finish}


def call(
    index: int | None, arguments: str | None = None, *, id: str | None = None, name: str | None = None
) -> dict[str, Any]:
    """One tool-call delta; only the given fields are present."""
    out: dict[str, Any] = {}
    if index is not None:
        out["index"] = index
    if id is not None:
        out["id"] = id
        out["type"] = "function"
    function: dict[str, Any] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    out["function"] = function
    return out


def agent_stream(
    arguments: list[str], *, name: str = "send_message", call_id: str = "call_1", finish: str = "tool_calls"
) -> list[dict[str, Any]]:
    """An agent-style stream: one message-tool call whose arguments arrive in the given pieces."""
    chunks = [chunk(choice(role="assistant", content=None, tool_calls=[call(0, "", id=call_id, name=name)]))]
    chunks += [chunk(choice(tool_calls=[call(0, piece)])) for piece in arguments]
    chunks.append(chunk(choice(finish=finish)))
    return chunks


def agent_answer(
    thoughts: str, message: str, *, size: int = 5, usage: dict[str, int] | None = None
) -> list[dict[str, Any]]:
    """An agent's answer as it streams: ``send_message(inner_thoughts, message)`` in pieces of ``size``
    characters, then a chunk with ``usage`` when given."""
    chunks = agent_stream(split_evenly(json.dumps({"inner_thoughts": thoughts, "message": message}), size))
    if usage is not None:
        chunks.append(chunk(usage=usage))
    return chunks


def split_evenly(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def translate(
    reads: list[bytes],
    options: RewriteOptions,
    encoder: StreamEncoder,
    *,
    raw_chunks: bool = True,
    wire: str | None = None,
) -> tuple[bytes, list[Event]]:
    """What a client of ``encoder``'s front door receives for these upstream reads, and the events behind it.

    The translator takes the encoder's ``raw_chunks`` as the gateway does; ``raw_chunks=False`` has it make
    every event whatever the encoder. Its shortcuts are checked against the general path, chunk by chunk.
    ``wire`` names the upstream's API when it is not chat completions (``anthropic``, ``responses``).
    """
    raw_chunks = raw_chunks and encoder.raw_chunks
    reader = WIRES[wire].reader("up", 1) if wire is not None else None
    translator = StreamTranslator(options, "up", raw_chunks=raw_chunks, shortcuts=Shortcuts.CHECK, wire=reader)
    events: list[Event] = []
    out = []
    for read in [*reads, None]:
        produced = translator.feed(read) if read is not None else translator.end()
        events += produced
        out.append(encoder.encode(produced))
    assert translator.ended
    return b"".join(out), events


def typed_events(events: list[dict[str, Any]]) -> list[bytes]:
    """An SSE body as the Responses and Messages APIs send it: an ``event:`` line before each ``data:`` line,
    one event a piece."""
    return [b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events]


def sse(chunks: list[dict[str, Any]], done: bool = True) -> bytes:
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + b"data: [DONE]\n\n" if done else body


@st.composite
def partitions(draw: st.DrawFn, body: bytes) -> list[bytes]:
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(body) - 1, 1)), max_size=40)))
    bounds = [0, *[c for c in cuts if c < len(body)], len(body)]
    return [body[a:b] for a, b in itertools.pairwise(bounds) if b > a]


@st.composite
def splits(draw: st.DrawFn, text: str) -> list[str]:
    """A random partition of ``text`` into fragments."""
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(len(text) - 1, 1)), max_size=len(text))))
    bounds = [0, *[c for c in cuts if c < len(text)], len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]
