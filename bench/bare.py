"""The bare pass-through: the gateway's stack with nothing of the gateway in it.

The same stack as the gateway (uvicorn with uvloop and httptools, Starlette,
one ``httpx.AsyncClient`` on the gateway's ``Http1Transport``) but no
validation, no SSE parsing and no rewrite: the request body goes upstream as it
came, and a stream's bytes come back as they were read (``aiter_raw``). A proxy
on this stack can't be faster; the gap between this and the gateway is the
price of what the gateway does. ``--transport httpcore`` puts httpx's default
transport underneath instead, to compare the two transports side by side.

Run: ``python bench/bare.py --port 9200 --upstream http://127.0.0.1:9100/v1``
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import AsyncIterator

import httpx
from common import serve_pass_through
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.upstream.transport import Http1Transport


def create_app(upstream: str, transport: str) -> Starlette:
    client = httpx.AsyncClient(
        base_url=upstream,
        timeout=httpx.Timeout(connect=10, read=600, write=600, pool=10),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60),
        transport=Http1Transport() if transport == "gateway" else None,
    )

    async def chat_completions(request: Request) -> Response:
        body = await request.body()
        upstream_request = client.build_request(
            "POST", "chat/completions", content=body, headers={"content-type": "application/json"}
        )
        response = await client.send(upstream_request, stream=True)
        content_type = response.headers.get("content-type", "application/json")
        if content_type.startswith("text/event-stream"):
            return StreamingResponse(_relay(response), response.status_code, media_type=content_type)
        try:
            data = await response.aread()
        finally:
            await response.aclose()
        return Response(data, response.status_code, media_type=content_type)

    async def healthz(request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with client:
            yield

    return Starlette(
        routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]), Route("/healthz", healthz)],
        lifespan=lifespan,
    )


async def _relay(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for part in response.aiter_raw():
            yield part
    finally:
        await response.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", default="http://127.0.0.1:9100/v1", help="the upstream's base URL")
    parser.add_argument(
        "--transport",
        choices=("gateway", "httpcore"),
        default="gateway",
        help="the gateway's Http1Transport (default) or httpx's default transport",
    )
    options = parser.parse_args()
    serve_pass_through(create_app(options.upstream, options.transport), options.host, options.port)


if __name__ == "__main__":
    main()
