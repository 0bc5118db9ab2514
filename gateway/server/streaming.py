"""Noticing that the client went away, for request handling and for streamed answers.

Starlette's ``StreamingResponse`` listens for a disconnect with an anyio task
group per response; a plain task that cancels the waiting one does the same
job for a fraction of the cost, which counts once per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

__all__ = ["until_disconnected"]

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
