"""The ASGI application: validation, routing, and answers relayed through the rewrite core."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from types import FrameType
from typing import Any

import httpx
import orjson
from prometheus_client import multiprocess as prometheus_multiprocess
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import body as json_body
from gateway import forwarding
from gateway.asgi import until_disconnected
from gateway.config import Config, default_config, load_config
from gateway.dispatch import Gateway
from gateway.errors import GatewayError
from gateway.metrics import multiprocess_mode
from gateway.observe import Observe, record_of
from gateway.server_protocol import CLIENT_LIMITS, ClientLimits

__all__ = ["app_from_env", "create_app"]

logger = logging.getLogger("gateway")


class ChatRequest(BaseModel):
    """The fields the gateway relies on; every other field is forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    messages: list[dict[str, Any]]
    stream: StrictBool | None = None
    tools: list[dict[str, Any]] | None = None


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds the limit."""
    too_large = GatewayError(413, f"The request body exceeds the limit of {limit} bytes.", code="request_too_large")
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise too_large
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return b"".join(parts)


def parse_chat_request(body: bytes) -> dict[str, Any]:
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise GatewayError.bad_request("The request body must be a JSON object.")
    try:
        ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"])
        raise GatewayError.bad_request(f"Invalid value for '{param}': {first['msg']}.", param=param) from None
    return payload


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request.headers.get("authorization", ""))
    gateway.refuse_when_draining()
    payload = parse_chat_request(await read_body(request, gateway.config.server.max_body_bytes))
    route = gateway.route(payload["model"])
    record = record_of(request.scope)
    record.route = route.name
    if gateway.config.server.log_content:
        logger.debug("request content", extra={"fields": {"request_id": record.request_id, "messages": payload["messages"]}})
    _, response = await until_disconnected(request.receive, gateway.chat(payload, route, record))
    if response is None:
        record.disconnected = True
        return Response(status_code=499)  # nobody is listening; the status is for the access log
    response.headers["x-gateway-route"] = record.route
    return response


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request.headers.get("authorization", ""))
    # A glob route serves many names but is not one: only concrete route names are listed.
    routes = [route for route in gateway.config.models if not route.is_glob]
    data = [{"id": r.name, "object": "model", "created": 0, "owned_by": ", ".join(r.providers)} for r in routes]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def passthrough(request: Request) -> Response:
    """Any other ``/v1/`` endpoint the provider forwards, sent to the provider of the route its body names.

    What may be forwarded (paths, headers either way) is ``gateway.forwarding``'s to decide.
    """
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request.headers.get("authorization", ""))
    path = forwarding.checked_path(request.scope.get("raw_path") or request.scope["path"].encode())
    gateway.refuse_when_draining()
    body = await read_body(request, gateway.config.server.max_body_bytes)
    provider = next(iter(gateway.providers.values()))
    payload = _json_object(body) if body and "json" in request.headers.get("content-type", "") else None
    record = record_of(request.scope)
    if payload is not None and isinstance(model := payload.get("model"), str):
        route = gateway.route(model)
        record.route = route.name
        forwarding.refuse_rewrite_route(path, route.name, route.rewrite is not None)
        provider = gateway.pick(route, set())
        body = json_body.dumps({**payload, "model": route.upstream_model(model)})
    if not forwarding.allowed_path(path, provider.config.forward):
        raise forwarding.not_forwarded(path)
    headers = forwarding.request_headers(request.headers.items(), provider.config.forward_headers)
    headers["x-request-id"] = record.request_id
    query = request.scope["query_string"].decode("latin-1")
    upstream = await provider.send(request.method, path, content=body, headers=headers, query=query)
    return StreamingResponse(_raw_body(upstream), upstream.status_code, forwarding.response_headers(upstream.headers.items()))


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A JSON body's object; a body labelled JSON that is not valid JSON is refused, never sent on."""
    payload = json_body.loads(body)
    return payload if isinstance(payload, dict) else None


async def _raw_body(response: httpx.Response) -> AsyncIterator[bytes]:
    """The upstream body as it came. A break mid-body propagates, so the client's connection
    is cut too rather than ending a body that would look complete."""
    try:
        async for part in response.aiter_raw():
            yield part
    finally:
        await response.aclose()


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    body, content_type = gateway.metrics.render()
    return Response(body, headers={"content-type": content_type})


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    if gateway.ready:
        return Response(b'{"status":"ready"}', media_type="application/json")
    return Response(b'{"status":"not ready"}', 503, media_type="application/json")


async def _gateway_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, GatewayError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed), in OpenAI's shape like every other error."""
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return GatewayError(exc.status_code, message, code=code, headers=exc.headers).response()


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left (or was cut off as too slow) while its body was being read: nobody to answer."""
    record_of(request.scope).disconnected = True
    return Response(status_code=499)  # the status is for the access log


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"fields": {"request_id": record_of(request.scope).request_id}})
    return GatewayError(500, "The gateway failed to handle the request.", "server_error").response()


def _drain_on_signals(gateway: Gateway) -> Callable[[], None]:
    """Start draining on SIGTERM/SIGINT, then let the server's own handler begin its shutdown.

    On a first SIGTERM (what orchestrators send) the server's handler runs only after
    ``server.drain_delay`` seconds: meanwhile /readyz answers 503, so a load balancer
    stops sending, and requests still arriving get 503 with ``retry-after``; then the
    server closes its listener. SIGINT, or a second signal, hands over at once.

    Installed from the lifespan, so it wraps whatever handler the server (or
    each uvicorn worker process) set up. Returns what puts the old ones back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    delay = gateway.config.server.drain_delay
    delaying = False

    def hand_over(signum: int, frame: FrameType | None) -> None:
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal delaying
        if signum == signal.SIGTERM and delay > 0 and not delaying:
            delaying = True
            loop.call_soon_threadsafe(gateway.drain, delay)
            loop.call_soon_threadsafe(loop.call_later, delay, hand_over, signum, None)
            return
        loop.call_soon_threadsafe(gateway.drain)
        hand_over(signum, frame)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, handle)
    return restore


def create_app(config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> Observe:
    """The ASGI app; ``transports`` replace the network for named providers (the demo, tests)."""
    gateway = Gateway(config, transports)

    server = config.server
    limits = ClientLimits(server.header_timeout, server.body_timeout, server.max_connections)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await gateway.start()
        restore = _drain_on_signals(gateway)
        try:
            yield {CLIENT_LIMITS: limits}  # the lifespan state, where the server's protocol finds them
        finally:
            restore()
            await gateway.stop()
            if multiprocess_mode():
                prometheus_multiprocess.mark_process_dead(os.getpid())

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/{path:path}", passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={
            GatewayError: _gateway_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _unexpected_error,
        },
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect built from the client's Host header helps no API client
    app.state.gateway = gateway
    return Observe(app, gateway.metrics)


def app_from_env() -> Observe:
    """The factory uvicorn's workers call: the config named by ``GATEWAY_CONFIG``, else the default."""
    path = os.environ.get("GATEWAY_CONFIG")
    config = load_config(path) if path else default_config()
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    if config.is_demo:
        from gateway.demo import DemoTransport

        transports["demo"] = DemoTransport(delay=0.02)
    return create_app(config, transports)
