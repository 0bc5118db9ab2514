"""Waiting for what happens a moment after the client has seen its answer."""

from __future__ import annotations

import time
from collections.abc import Callable


def eventually(condition: Callable[[], object], seconds: float = 5, every: float = 0.01) -> bool:
    """Poll ``condition`` until it holds or ``seconds`` pass: the server settles a request, and an upstream's
    thread notices a closed connection, a moment after the client has seen the end."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(every)
    return bool(condition())
