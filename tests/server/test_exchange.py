"""Writing a reply: a streamed answer stops, and its body is closed, however the request ends."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.server.exchange import Reply, write
from gateway.server.metrics import RequestRecord
from gateway.server.streaming import until_disconnected

SSE = {"content-type": "text/event-stream"}


def written(reply: Reply, receive: Any, send: Any) -> Any:
    """Write ``reply`` as an endpoint does, for a fresh request."""
    return write(reply, RequestRecord("req_test", 0.0), receive, send)


class Body:
    """A body that yields a few events and then waits, like a stream between upstream events."""

    def __init__(self) -> None:
        self.closed = False

    async def events(self) -> AsyncIterator[bytes]:
        try:
            for n in range(3):
                yield b"data: %d\n\n" % n
            await asyncio.Event().wait()
        finally:
            self.closed = True


def test_the_whole_body_is_sent_then_the_end() -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"
        yield b"data: [DONE]\n\n"

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    asyncio.run(written(Reply(200, SSE, stream=body()), receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 200
    assert [m["body"] for m in sent[1:]] == [b"data: 1\n\n", b"data: [DONE]\n\n", b""]
    assert [m["more_body"] for m in sent[1:]] == [True, True, False]


@pytest.mark.parametrize("blocked_in", ["the body", "a send"])
def test_a_client_disconnect_closes_the_body(blocked_in: str) -> None:
    """Waiting on the upstream or on a slow client's socket, the body is closed when the client leaves."""
    body = Body()
    done = False

    async def finish() -> None:
        nonlocal done
        done = True

    async def send(message: dict[str, Any]) -> None:
        if blocked_in == "a send" and message.get("body"):
            await asyncio.Event().wait()  # the client stopped reading

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    async def main() -> None:
        await asyncio.wait_for(written(Reply(200, SSE, stream=body.events(), done=finish), receive, send), 2)
        assert body.closed and done

    asyncio.run(main())


@pytest.mark.parametrize("blocked_in", ["the body", "a send"])
def test_a_server_cancellation_propagates_and_still_closes_the_body(blocked_in: str) -> None:
    body = Body()

    async def send(message: dict[str, Any]) -> None:
        if blocked_in == "a send" and message.get("body"):
            await asyncio.Event().wait()

    async def receive() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def main() -> None:
        task = asyncio.ensure_future(written(Reply(200, SSE, stream=body.events()), receive, send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert body.closed, "closed by the response, not later by the event loop's shutdown"

    asyncio.run(main())


def test_until_disconnected_returns_the_result_or_says_the_client_left() -> None:
    async def answer() -> str:
        return "answer"

    async def never() -> str:
        await asyncio.Event().wait()
        return "never"

    async def stays() -> dict[str, Any]:
        await asyncio.Event().wait()
        return {}

    async def leaves() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    assert asyncio.run(until_disconnected(stays, answer())) == (False, "answer")
    assert asyncio.run(until_disconnected(leaves, never())) == (True, None)
