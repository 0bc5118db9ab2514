"""The ASGI application: the edge, where requests come in and HTTP responses are built.

Each front door is a dialect (``gateway.dialects``) behind one handler: the
key is checked, the body read and parsed, the model routed and the answer
obtained, and any failure becomes an error in that front door's own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, Generic, cast

import httpx
import orjson
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from gateway.config import Config, ModelRoute, default_config, load_config
from gateway.core import forwarding
from gateway.core.agent import prepare
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.options import RewriteOptions
from gateway.core.usage import estimate_prompt
from gateway.dialects import (
    COUNT_TOKENS,
    FRONT_DOORS,
    STORED,
    CountTokens,
    Dialect,
    FrontDoor,
    Lookup,
    Parsed,
    dialect_of,
)
from gateway.server import console
from gateway.server.exchange import Endpoint, Handler, Incoming, Reply, error_reply, internal_error, json_reply
from gateway.server.forwarder import Forwarded, Outbound
from gateway.server.hotpath import HotPath
from gateway.server.limits import Ticket
from gateway.server.logs import log_python_reports
from gateway.server.metrics import multiprocess_mode
from gateway.server.native import Native
from gateway.server.offload import off_loop
from gateway.server.pipeline import admit, admitted, client_of, only_post
from gateway.server.protocol import CLIENT_LIMITS, ClientLimits
from gateway.server.retrieval import retrieval_handlers
from gateway.server.service import Service
from gateway.server.stored import owner_of
from gateway.server.streaming import until_disconnected

__all__ = ["app_from_env", "create_app"]

logger = logging.getLogger("gateway")
_SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


@dataclass(frozen=True, slots=True)
class _Asked(Generic[Parsed]):
    """A front door's target: its parsed request, or what to pass through (``native``), or (a door whose answers
    are stored) what its request refers to, for the store to resolve once admitted."""

    route: ModelRoute
    model: str | None
    parsed: Parsed | None = None
    native: Native | None = None
    lookup: Lookup | None = None


def front_door(door: FrontDoor[Parsed]) -> Handler:
    """The handler of one front door."""
    dialect = door.dialect

    async def target_of(service: Service, body: bytes) -> _Asked[Parsed]:
        if door.native is not None and (native := service.native.target(door.native, body)) is not None:
            return _Asked(native.route, native.model, native=native)
        if door.stored:
            found = await off_loop(len(body), STORED.lookup, body)
            return _Asked(service.router.route(found.model), found.model, lookup=found)
        parsed = await off_loop(len(body), dialect.parse_request, body)
        return _Asked(service.router.route(parsed.model), parsed.model, parsed=parsed)

    async def answer(incoming: Incoming) -> Reply:
        asked = await admit(incoming, target_of, x_api_key=door.x_api_key)
        service, record, ticket = asked.service, asked.record, asked.ticket
        target = asked.target
        if target.native is not None:
            forwarded = await admitted(service.native.send(target.native, incoming.header_items(), record), ticket)
            return _forwarded(forwarded, ticket, {"x-gateway-route": record.route or target.route.name})
        parsed, stored = target.parsed, service.stored
        continued = stream_end = None
        owner = owner_of(ticket.client)
        if target.lookup is not None:
            # The stored conversation and items it refers to, fetched now that the key is admitted.
            continued = await admitted(stored.continued(owner, target.lookup, asked.size), ticket)
            parsed = cast(Parsed, continued.request)  # the stored door is the Responses door
            stream_end = functools.partial(stored.keep_stream, owner, continued)
        assert parsed is not None
        answering = service.completions.answer(
            dialect, parsed, asked.size, target.route, record, ticket, stream_end=stream_end
        )
        gone, answer = await admitted(until_disconnected(incoming.receive, answering), ticket)
        if gone or answer is None:
            await ticket.settle()
            record.disconnected = True
            return Reply(499, {})  # nobody is listening; the status is for the access log
        served_by = record.route or target.route.name  # a fallback renames the route
        headers = {**answer.headers, **ticket.headers, "x-gateway-route": served_by}
        if answer.relay is not None:
            # Its close also covers a reply cancelled before its body was ever read.
            return Reply(200, {**headers, **_SSE_HEADERS}, stream=answer.relay.body(), done=answer.relay.close)
        await ticket.settle()  # a whole answer was charged as it was read: this only makes sure
        if continued is not None:
            await stored.keep_body(owner, continued, answer.body)
        return json_reply(answer.body, headers)

    return only_post(answer)


def _retrieval_routes(service: Service) -> list[Route]:
    """Where stored answers are read back (``GET``, ``DELETE`` ``{door}/{id}``, ``GET {door}/{id}/input_items``);
    another method there is forwarded, as before (a provider's own ``POST /v1/responses/{id}/cancel``)."""
    routes = []
    for door in FRONT_DOORS:
        if door.stored:
            response, input_items = retrieval_handlers(forward)
            path = door.path + "/{response_id}"
            routes.append(Route(path, Endpoint(service, response, door.dialect), methods=["GET", "DELETE"]))
            routes.append(Route(path + "/input_items", Endpoint(service, input_items, door.dialect), methods=["GET"]))
    return routes


def count_tokens(door: CountTokens[Parsed]) -> Handler:
    """Anthropic's ``count_tokens``: an estimate over the chat request the route would send (``estimate_prompt``).

    It asks no provider, but it is a request of its key like any other: admitted under its limits (counted in its
    ``rpm``, holding a slot while it runs), charged no tokens.
    """

    async def target_of(service: Service, body: bytes) -> _Asked[Parsed]:
        parsed = await off_loop(len(body), door.parse_request, body)
        return _Asked(service.router.route(parsed.model), parsed.model, parsed=parsed)

    async def count(incoming: Incoming) -> Reply:
        asked = await admit(incoming, target_of, x_api_key=True)
        target, ticket = asked.target, asked.ticket
        options = asked.service.config.options(target.route)
        assert target.parsed is not None  # this door forwards nothing
        try:
            counted = await off_loop(asked.size, _estimate, door.dialect, target.parsed, options)
        finally:
            await ticket.settle()
        return json_reply(orjson.dumps({"input_tokens": counted}), ticket.headers)

    return only_post(count)


def _estimate(dialect: Dialect[Parsed], parsed: Parsed, options: RewriteOptions) -> int:
    """The prompt tokens of the chat request a route would send, injection included."""
    payload = dialect.to_chat(parsed, reasoning=options.reasoning, reasoning_effort=False)
    if not options.passthrough:
        payload, _ = prepare(payload, options)
    return estimate_prompt(payload)


async def list_models(incoming: Incoming) -> Reply:
    service = incoming.service
    client = client_of(incoming)
    # A glob route serves many names but is not one: only concrete route names are listed, those the key may use.
    routes = [route for route in service.limits.visible(client, service.config.models) if not route.is_glob]
    data = [{"id": r.name, "object": "model", "created": 0, "owned_by": ", ".join(r.providers)} for r in routes]
    return json_reply(orjson.dumps({"object": "list", "data": data}))


@dataclass(frozen=True, slots=True)
class _Forwarding:
    """A forwarded request's target: its checked path, and where its body sends it."""

    path: str
    outbound: Outbound

    @property
    def route(self) -> ModelRoute | None:
        return self.outbound.route

    @property
    def model(self) -> str | None:
        return self.outbound.model


async def forward(incoming: Incoming) -> Reply:
    """Any other ``/v1/`` endpoint a provider forwards, sent to the provider of the route its body names."""
    scope = incoming.scope

    async def target_of(service: Service, body: bytes) -> _Forwarding:
        # Checked once the client is: a caller without a valid key learns nothing about paths.
        path = forwarding.checked_path(scope.get("raw_path") or scope["path"].encode())
        outbound = await service.forwarder.prepare(path, incoming.headers.get("content-type", ""), body)
        return _Forwarding(path, outbound)

    asked = await admit(incoming, target_of)
    target = asked.target
    headers = incoming.header_items()
    sending = asked.service.forwarder.send(
        target.outbound, incoming.method, target.path, incoming.query, headers, asked.record
    )
    return _forwarded(await admitted(sending, asked.ticket), asked.ticket)


def _forwarded(forwarded: Forwarded, ticket: Ticket, extra: Mapping[str, str] | None = None) -> Reply:
    """The upstream's answer as it came, with the key's rate-limit headers; its end settles the ticket."""
    headers = {**forwarded.headers, **ticket.headers, **(extra or {})}
    body = forwarded.client_body(ticket.forwarded(forwarded.status, forwarded.headers, forwarded.body, forwarded.sent))
    return Reply(forwarded.status, headers, stream=body, done=ticket.settle)


async def metrics(request: Request) -> Response:
    body, content_type = request.app.state.service.metrics.render()
    return Response(body, headers={"content-type": content_type})


async def root(request: Request) -> Response:
    """``GET /`` and ``HEAD /``: what clients probe before they start (Claude Code sends ``HEAD /``), and for a
    browser the operators' console (``console``). 200 either way."""
    if "text/html" in request.headers.get("accept", ""):
        reply = console.page()
        return Response(reply.body, reply.status, dict(reply.headers))
    return Response(b'{"service":"agent-gateway","api":"/v1"}', media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    if request.app.state.service.ready:
        return Response(b'{"status":"ready"}', media_type="application/json")
    return Response(b'{"status":"not ready"}', 503, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed), in the shape the path's clients read."""
    assert isinstance(exc, HTTPException)
    kind = ErrorKind.METHOD_NOT_ALLOWED if exc.status_code == 405 else ErrorKind.NOT_FOUND
    message = f"{exc.detail}: {request.method} {request.url.path}"
    error = GatewayError(kind, message, status=exc.status_code, headers=exc.headers)
    reply = error_reply(dialect_of(request.url.path), error)
    return Response(reply.body, reply.status, dict(reply.headers))


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    """A failure outside every endpoint (those answer their own): a 500 in the path's shape, closing the connection."""
    logger.exception("unhandled error")
    reply = error_reply(dialect_of(request.url.path), internal_error())
    return Response(reply.body, reply.status, dict(reply.headers))


def _drain_on_signals(service: Service) -> Callable[[], None]:
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
    delay = service.config.server.drain_delay
    delaying = False

    def hand_over(signum: int, frame: FrameType | None) -> None:
        handler = previous[signal.Signals(signum)]
        if callable(handler):
            handler(signum, frame)

    def handle(signum: int, frame: FrameType | None) -> None:
        nonlocal delaying
        if signum == signal.SIGTERM and delay > 0 and not delaying:
            delaying = True
            loop.call_soon_threadsafe(service.drain, delay)
            loop.call_soon_threadsafe(loop.call_later, delay, hand_over, signum, None)
            return
        loop.call_soon_threadsafe(service.drain)
        hand_over(signum, frame)

    def restore() -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    for sig in previous:
        signal.signal(sig, handle)
    return restore


def create_app(
    config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None, *, hot_path: bool = True
) -> HotPath:
    """The ASGI app; ``transports`` replace the network for named providers (the demo, tests).

    ``hot_path=False`` sends the front doors through Starlette too, the way every other request goes: for the
    tests that compare the two ways.
    """
    service = Service(config, transports)
    server = config.server
    limits = ClientLimits(server.header_timeout, server.body_timeout, server.max_connections)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        await service.start()
        restore = _drain_on_signals(service)
        try:
            yield {CLIENT_LIMITS: limits}  # the lifespan state, where the server's protocol finds them
        finally:
            restore()
            await service.stop()
            if multiprocess_mode():
                prometheus_multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]

    doors: dict[str, ASGIApp] = {door.path: Endpoint(service, front_door(door), door.dialect) for door in FRONT_DOORS}
    doors[COUNT_TOKENS.path] = Endpoint(service, count_tokens(COUNT_TOKENS), COUNT_TOKENS.dialect)
    app = Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            *(Route(path, endpoint) for path, endpoint in doors.items()),
            *_retrieval_routes(service),
            Route("/v1/models", Endpoint(service, list_models), methods=["GET"]),
            Route("/v1/{path:path}", Endpoint(service, forward), methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *console.console_routes(service),
        ],
        exception_handlers={HTTPException: _http_error, Exception: _unexpected_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect built from the client's Host header helps no API client
    app.state.service = service
    return HotPath(service, app, doors if hot_path else {})


def app_from_env() -> HotPath:
    """The factory uvicorn's workers call: the config named by ``GATEWAY_CONFIG``, else the default."""
    log_python_reports()
    path = os.environ.get("GATEWAY_CONFIG")
    return create_app(load_config(path) if path else default_config())
