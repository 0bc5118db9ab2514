"""Work a request costs in proportion to its size, kept off the event loop when the request is large."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

__all__ = ["OFF_LOOP_BYTES", "off_loop"]

P = ParamSpec("P")
T = TypeVar("T")

# Requests larger than this are read, translated and estimated in a worker thread, where the interpreter
# switches to the event loop every few milliseconds: a 10 MB body of 100,000 tiny messages costs its sender
# seconds of work, and never another client its answer.
OFF_LOOP_BYTES: Final = 64 * 1024


async def off_loop(size: int, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``work`` on the event loop for a small request, in a worker thread for one of ``size`` bytes beyond
    ``OFF_LOOP_BYTES``."""
    if size <= OFF_LOOP_BYTES:
        return work(*args, **kwargs)
    return await asyncio.to_thread(work, *args, **kwargs)
