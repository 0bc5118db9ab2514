"""Relaying an upstream event stream to the client, through the rewrite core.

What arrives in one upstream read leaves in one write. Chunks the rewriter
leaves untouched are forwarded as their original bytes. A stream that breaks,
times out or ends before every choice has finished ends with an OpenAI error
event, never with a clean-looking ``[DONE]``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import orjson

from gateway.core.rewriter import StreamRewriter
from gateway.errors import error_body
from gateway.sse import COMMENT, DONE, SSEDecoder, SSEError, encode_comment, encode_data

__all__ = ["relay_stream"]


class _FinishTracker:
    """Which choices of a pass-through stream have finished (the rewriter tracks its own)."""

    __slots__ = ("open", "seen")

    def __init__(self) -> None:
        self.open: set[Any] = set()
        self.seen = False

    def feed(self, chunk: Any) -> list[Any]:
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if isinstance(choices, list):
            for position, choice in enumerate(choices):
                if isinstance(choice, dict):
                    index = choice.get("index", position)
                    self.seen = True
                    if choice.get("finish_reason") is None:
                        self.open.add(index)
                    else:
                        self.open.discard(index)
        return [chunk]

    def finish(self) -> list[Any]:
        return []

    @property
    def finished(self) -> bool:
        return self.seen and not self.open


def _error_event(message: str, code: str) -> bytes:
    return encode_data(orjson.dumps(error_body(message, "api_error", code)))


class _Relay:
    """Turns decoded upstream events into client bytes, remembering how the stream stands."""

    __slots__ = ("rewrite", "done", "upstream_error")

    def __init__(self, rewriter: StreamRewriter | None) -> None:
        self.rewrite: StreamRewriter | _FinishTracker = rewriter if rewriter is not None else _FinishTracker()
        self.done = False
        self.upstream_error = False

    def events(self, events: list[tuple[int, bytes]], out: list[bytes]) -> None:
        for kind, payload in events:
            if kind == COMMENT:
                out.append(encode_comment(payload))
                continue
            if payload == b"[DONE]":
                self.done = True
                return
            chunk = orjson.loads(payload)
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                self.upstream_error = True
            for sent in self.rewrite.feed(chunk):
                out.append(encode_data(payload) if sent is chunk else encode_data(orjson.dumps(sent)))

    def end(self, provider: str) -> bytes:
        """The last bytes: what the rewriter settled, then ``[DONE]`` or an error event."""
        out = [encode_data(orjson.dumps(sent)) for sent in self.rewrite.finish()]
        if self.upstream_error:  # the provider's own error event is the last word
            return b"".join(out)
        if self.rewrite.finished:
            out.append(DONE)
        else:
            message = f"The upstream provider {provider!r} ended the stream before the answer was finished."
            out.append(_error_event(message, "upstream_incomplete"))
        return b"".join(out)


async def relay_stream(
    response: httpx.Response,
    rewriter: StreamRewriter | None,
    provider: str,
    decoder: SSEDecoder | None = None,
) -> AsyncIterator[bytes]:
    """Yield the client's SSE body for an upstream streaming response, closing it on every exit."""
    decoder = decoder or SSEDecoder()
    relay = _Relay(rewriter)
    try:
        try:
            async for raw in response.aiter_bytes():
                out: list[bytes] = []
                relay.events(decoder.feed(raw), out)
                if out:
                    yield b"".join(out)
                if relay.done:
                    break
            else:
                out = []
                relay.events(decoder.close(), out)
                if out:
                    yield b"".join(out)
        except (orjson.JSONDecodeError, SSEError):
            message = f"The upstream provider {provider!r} sent an invalid event stream."
            yield _error_event(message, "upstream_invalid_event")
            return
        except httpx.TimeoutException:
            yield _error_event(f"The upstream provider {provider!r} timed out mid-stream.", "upstream_timeout")
            return
        except httpx.TransportError:
            message = f"The connection to the upstream provider {provider!r} broke mid-stream."
            yield _error_event(message, "upstream_disconnected")
            return
        yield relay.end(provider)
    finally:
        with anyio.CancelScope(shield=True):
            await response.aclose()
