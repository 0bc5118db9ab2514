"""The raw pass-through: the floor of the gateway's own server and transport.

A plain ASGI callable on the same uvicorn (uvloop, httptools) that sends the
request body upstream on the gateway's ``Http1Transport`` directly, with no
Starlette request, response or routing and no ``httpx.AsyncClient`` layer, and
relays a stream's bytes as they were read. Nothing is validated, parsed or
rewritten: no proxy on this server and transport can be faster, so the
gateway's figures are read as ratios of this one's (``bare.py`` adds Starlette
and ``AsyncClient`` on top, for comparison).

Run: ``python bench/raw.py --port 9300 --upstream http://127.0.0.1:9100/v1``
"""

from __future__ import annotations

import argparse
from typing import Any

import httpx
from common import serve_pass_through

from gateway.upstream.transport import Http1Transport

_TIMEOUT = {"connect": 10.0, "read": 600.0, "write": 600.0, "pool": 10.0}
_HEALTH = b'{"status":"ok"}'


class RawPassThrough:
    """``POST /v1/chat/completions`` to the upstream and back; ``GET /healthz``; 404 for anything else."""

    def __init__(self, upstream: str) -> None:
        self._url = httpx.URL(upstream.rstrip("/") + "/chat/completions")
        self._transport = Http1Transport()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope["path"]
        if path == "/healthz":
            await _answer(send, 200, b"application/json", _HEALTH)
            return
        if path != "/v1/chat/completions" or scope["method"] != "POST":
            await _answer(send, 404, b"text/plain", b"not found")
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        request = httpx.Request(
            "POST",
            self._url,
            headers={"content-type": "application/json"},
            content=b"".join(parts),
            extensions={"timeout": _TIMEOUT},
        )
        response = await self._transport.handle_async_request(request)
        content_type = response.headers.get("content-type", "application/json").encode("latin-1")
        try:
            if not content_type.startswith(b"text/event-stream"):
                await _answer(send, response.status_code, content_type, await response.aread())
                return
            headers = [(b"content-type", content_type)]
            await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
            async for part in response.aiter_raw():
                await send({"type": "http.response.body", "body": part, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._transport.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _answer(send: Any, status: int, content_type: bytes, body: bytes) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1", help="the upstream's base URL")
    options = parser.parse_args()
    serve_pass_through(RawPassThrough(options.upstream), options.host, options.port, lifespan="on")


if __name__ == "__main__":
    main()
