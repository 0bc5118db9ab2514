"""A fast scripted OpenAI-compatible upstream: agent-style streams over raw asyncio.

``POST /v1/chat/completions`` answers with a ``send_message`` tool call whose
JSON arguments (``{"inner_thoughts": ..., "message": ...}``) arrive in N
fragments, as ``chat.completion.chunk`` events in HTTP/1.1 chunked transfer
encoding, ending with ``data: [DONE]``; ``"stream": false`` gets the matching
``chat.completion``. The model name sets the pace: ``agent@10ms`` sends one
event every 10 ms, as a real model would; a name without ``@`` sends the whole
stream at once; a ``+ttfb20ms`` suffix (``agent+ttfb20ms``, ``agent@10ms+ttfb20ms``)
holds the answer's first byte back for 20 ms, like a model's time to first
token. A stream that asks for ``stream_options.include_usage`` gets what
OpenAI sends then: ``"usage": null`` in every chunk and a last chunk with the
usage and no choices, written with the finish (a provider knows its usage once
it has finished: it is not one more token's wait). Connections are kept alive.

Each answer is encoded once per model name and replayed, so that the upstream
costs the machine as little as possible: it shares two cores with what it
measures.

Run: ``python bench/upstream.py --port 9100 [--fragments 50] [--padded]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import Any, cast

import orjson
import uvloop

HOST = "127.0.0.1"
CREATED = 1_763_700_000
THOUGHTS = "The user asks how the gateway streams. Answer briefly, then offer an example."
SENTENCE = 'The gateway turns the "send_message" call into plain content, café by café.\n'
FRAGMENT_CHARS = 6
"""About one token and a half: the arguments are cut into N fragments of roughly this size."""


def model_name(route: str, interval_ms: float = 0, first_byte_ms: float = 0) -> str:
    """The model name that asks the upstream for one event every ``interval_ms`` (0: all at once),
    the first one ``first_byte_ms`` after the request."""
    name = f"{route}@{interval_ms:g}ms" if interval_ms else route
    return f"{name}+ttfb{first_byte_ms:g}ms" if first_byte_ms else name


def _milliseconds(text: str) -> float:
    if text.endswith("ms"):
        with contextlib.suppress(ValueError):
            return max(0.0, float(text[:-2]) / 1000)
    return 0.0


def pace_of(model: str) -> tuple[float, float]:
    """Seconds between events and before the first byte, for a model name made by ``model_name``."""
    name, _, first_byte = model.partition("+ttfb")
    _, at, interval = name.rpartition("@")
    return (_milliseconds(interval) if at else 0.0), _milliseconds(first_byte)


def _frame(data: bytes) -> bytes:
    """One chunk of chunked transfer encoding."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(chunk: dict[str, Any]) -> bytes:
    return _frame(b"data: " + orjson.dumps(chunk) + b"\n\n")


def _padding(position: int) -> str:
    """OpenAI-style obfuscation: a different string, of a different length, in every chunk."""
    return "pad0123456789abcdef"[: 1 + (position * 7) % 19]


class Script:
    """The encoded answers for one model name; ``padded`` adds OpenAI's per-chunk ``obfuscation`` field."""

    def __init__(self, model: str, fragments: int, padded: bool = False) -> None:
        self.interval, self.first_byte = pace_of(model)
        repeats = max(1, (fragments * FRAGMENT_CHARS - len(THOUGHTS)) // len(SENTENCE))
        self.message = (SENTENCE * repeats).rstrip("\n")
        self.arguments = orjson.dumps({"inner_thoughts": THOUGHTS, "message": self.message}).decode()
        size = len(self.arguments) / fragments
        self.fragment_ends = [round((i + 1) * size) for i in range(fragments)]
        """Where each fragment ends in ``arguments``: fragment ``i`` is event ``i + 1`` of the stream."""
        pieces = [self.arguments[round(i * size) : end] for i, end in enumerate(self.fragment_ends)]
        head = {
            "id": "chatcmpl-bench0123456789abcdef",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_bench",
        }
        call = {
            "index": 0,
            "id": "call_bench0123456789abcdef",
            "type": "function",
            "function": {"name": "send_message", "arguments": ""},
        }
        chunks = [
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": None, "tool_calls": [call]},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ],
            }
        ]
        for piece in pieces:
            delta = {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
            chunks.append({**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}]})
        chunks.append({**head, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "tool_calls"}]})
        if padded:
            chunks = [{**chunk, "obfuscation": _padding(position)} for position, chunk in enumerate(chunks)]
        usage = {"prompt_tokens": 42, "completion_tokens": fragments, "total_tokens": 42 + fragments}
        with_usage = [{**chunk, "usage": None} for chunk in chunks] + [{**head, "choices": [], "usage": usage}]
        self.streams = {False: _encoded(chunks), True: _encoded(with_usage, last_together=2)}
        """The events of a stream, and their bytes all at once, by whether it asked for its usage."""
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call, "function": {"name": "send_message", "arguments": self.arguments}}],
        }
        self.completion = orjson.dumps(
            {
                **head,
                "object": "chat.completion",
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "tool_calls"}],
                "usage": usage,
            }
        )


def _encoded(chunks: list[dict[str, Any]], last_together: int = 1) -> tuple[list[bytes], bytes]:
    """A stream's writes, the last with its last ``last_together`` events, ``[DONE]`` and the end of the body;
    and all of them at once."""
    events = [_event(chunk) for chunk in chunks]
    events[-last_together:] = [b"".join(events[-last_together:])]
    events[-1] += _frame(b"data: [DONE]\n\n") + b"0\r\n\r\n"
    return events, b"".join(events)


def _response_head(status: bytes, counter: int, extra: bytes) -> bytes:
    return b"HTTP/1.1 %s\r\nx-request-id: req_bench_%d\r\n%s\r\n" % (status, counter, extra)


class _Connection(asyncio.Protocol):
    """One client connection: requests answered one at a time, in order."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.busy = False
        self.close_after = False
        self.timer: asyncio.TimerHandle | None = None
        self.pending: list[bytes] = []
        self.started = 0.0
        self.interval = 0.0
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            lowered = head.lower()
            length = _content_length(lowered)
            if length is None:
                self._write(_response_head(b"411 Length Required", 0, b"content-length: 0\r\nconnection: close\r\n"))
                self.transport.close()
                return
            if len(self.buffer) < end + 4 + length:
                return
            body = bytes(self.buffer[end + 4 : end + 4 + length])
            del self.buffer[: end + 4 + length]
            self.close_after = b"\r\nconnection: close" in lowered
            method, _, rest = head.partition(b" ")
            self._answer(method, rest.partition(b" ")[0], body)

    def _answer(self, method: bytes, path: bytes, body: bytes) -> None:
        counter = self.upstream.count()
        if method == b"POST" and path == b"/v1/chat/completions":
            try:
                payload = orjson.loads(body)
                model, stream = str(payload["model"]), payload.get("stream") is True
                usage = stream and (payload.get("stream_options") or {}).get("include_usage") is True
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
                self._json(
                    b"400 Bad Request",
                    counter,
                    b'{"error":{"message":"expected a chat request","type":"invalid_request_error"}}',
                )
                return
            script = self.upstream.script(model)
            if script.first_byte:
                self.busy = True
                self.timer = asyncio.get_running_loop().call_later(
                    script.first_byte, self._answer_late, counter, script, stream, usage
                )
            else:
                self._respond(counter, script, stream, usage)
        elif method == b"GET" and path == b"/healthz":
            self._json(b"200 OK", counter, b'{"status":"ok"}')
        else:
            self._json(b"404 Not Found", counter, b'{"error":{"message":"not found","type":"invalid_request_error"}}')

    def _answer_late(self, counter: int, script: Script, stream: bool, usage: bool) -> None:
        """The answer, once its time to first byte is over; then any request that came meanwhile."""
        self.timer = None
        if self.transport is None:
            return
        self.busy = False
        self._respond(counter, script, stream, usage)
        self._serve()

    def _respond(self, counter: int, script: Script, stream: bool, usage: bool) -> None:
        if not stream:
            self._json(b"200 OK", counter, script.completion)
            return
        head = _response_head(b"200 OK", counter, b"content-type: text/event-stream\r\ntransfer-encoding: chunked\r\n")
        events, burst = script.streams[usage]
        if not script.interval:
            self._write(head + burst)
            self._done()
            return
        self.busy = True
        self.pending = events[:0:-1]  # the remaining events, last first, to pop from the end
        self.interval = script.interval
        self.started = asyncio.get_running_loop().time()
        self.sent = 1
        self._write(head + events[0])
        self._schedule()

    def _schedule(self) -> None:
        """The next event on a fixed grid from the first one, so timer lag does not add up."""
        due = self.started + self.interval * self.sent
        self.timer = asyncio.get_running_loop().call_at(due, self._tick)

    def _tick(self) -> None:
        self.timer = None
        if self.transport is None:
            return
        self._write(self.pending.pop())
        self.sent += 1
        if self.pending:
            self._schedule()
        else:
            self.busy = False
            self._done()
            self._serve()

    def _json(self, status: bytes, counter: int, body: bytes) -> None:
        extra = b"content-type: application/json\r\ncontent-length: %d\r\n" % len(body)
        self._write(_response_head(status, counter, extra) + body)
        self._done()

    def _write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    def _done(self) -> None:
        if self.close_after and self.transport is not None:
            self.transport.close()


def _content_length(lowered_head: bytes) -> int | None:
    """The request body's length: 0 without a body, None for a chunked request (not supported)."""
    if b"\r\ntransfer-encoding:" in lowered_head:
        return None
    start = lowered_head.find(b"\r\ncontent-length:")
    if start < 0:
        return 0
    value = lowered_head[start + 17 :].split(b"\r\n", 1)[0].strip()
    return int(value) if value.isdigit() else None


class Upstream:
    """The server: one script per model name, built on first use."""

    def __init__(self, fragments: int, padded: bool = False) -> None:
        self.fragments = fragments
        self.padded = padded
        self.scripts: dict[str, Script] = {}
        self.requests = 0

    def count(self) -> int:
        self.requests += 1
        return self.requests

    def script(self, model: str) -> Script:
        script = self.scripts.get(model)
        if script is None:
            script = self.scripts[model] = Script(model, self.fragments, self.padded)
        return script

    async def serve(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: _Connection(self), host, port, backlog=4096, reuse_address=True)
        async with server:
            await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--fragments", type=int, default=50, help="argument fragments per answer (default 50)")
    parser.add_argument("--padded", action="store_true", help="an OpenAI-style obfuscation string in every chunk")
    options = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(Upstream(options.fragments, options.padded).serve(options.host, options.port))


if __name__ == "__main__":
    main()
