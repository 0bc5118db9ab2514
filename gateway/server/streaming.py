"""Noticing that the client went away, for request handling and for streamed answers.

Starlette's ``StreamingResponse`` listens for a disconnect with an anyio task
group per response; a plain task that cancels the streaming one does the same
job for a fraction of the cost, which counts once per stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable
from typing import TypeVar

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["EventStreamResponse", "until_disconnected"]

T = TypeVar("T")


async def until_disconnected(receive: Receive, work: Awaitable[T]) -> tuple[bool, T | None]:
    """Await ``work`` here, cancelling it if the client goes away first: (client gone, result)."""
    task = asyncio.current_task()
    assert task is not None
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return False, await work
    except asyncio.CancelledError:
        if not gone:
            raise
        task.uncancel()  # the watcher's cancellation: the client left, nothing else is wrong
        return True, None
    finally:
        watcher.cancel()


class EventStreamResponse(StreamingResponse):
    """A streamed answer whose body stops (and is closed) as soon as the client disconnects."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await until_disconnected(receive, self._stream(send))
        finally:
            # Cancelled in a send, between two of its steps, the body would otherwise stay open.
            if isinstance(self.body_iterator, AsyncGenerator):
                await self.body_iterator.aclose()
        if self.background is not None:
            await self.background()

    async def _stream(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.body_iterator:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
