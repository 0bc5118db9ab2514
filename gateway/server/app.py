"""The ASGI application: the edge, where requests come in and HTTP responses are built.

Each front door is a dialect (``gateway.dialects``) behind one handler: the
key is checked, the body read and parsed, the model routed and the answer
obtained, and any failure becomes an error in that front door's own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from types import FrameType
from typing import Any, TypeVar

import httpx
import orjson
from prometheus_client import multiprocess as prometheus_multiprocess
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway.config import Config, ModelRoute, default_config, load_config
from gateway.core import forwarding, json_body
from gateway.core.agent import prepare
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.options import RewriteOptions
from gateway.core.usage import estimate_prompt
from gateway.dialects import Dialect, anthropic, chat, responses
from gateway.keys import ClientKey
from gateway.server.access import AccessLog, record_of
from gateway.server.forwarder import Forwarded
from gateway.server.limits import Ticket
from gateway.server.metrics import RequestRecord, multiprocess_mode
from gateway.server.offload import off_loop
from gateway.server.protocol import CLIENT_LIMITS, ClientLimits
from gateway.server.service import Service
from gateway.server.streaming import EventStreamResponse, until_disconnected

__all__ = ["app_from_env", "create_app"]

logger = logging.getLogger("gateway")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
_EVERY_METHOD = ["GET", "POST", "PUT", "PATCH", "DELETE"]

Handler = Callable[[Request], Awaitable[Response]]
T = TypeVar("T")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds the limit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(ErrorKind.TOO_LARGE, f"The request body exceeds the limit of {limit} bytes.")


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def client_of(
    service: Service, request: Request, record: RequestRecord, *, x_api_key: bool = False
) -> ClientKey | None:
    """The request's client key (401 without a valid one, when the config names keys), noted in its record."""
    client = service.auth.check(request.headers, x_api_key=x_api_key)
    record.key = client.name if client is not None else None
    return client


async def admitted(work: Awaitable[T], ticket: Ticket) -> T:
    """An admitted request's work; when it fails, its ticket is settled and the error carries its rate-limit headers."""
    try:
        return await work
    except BaseException as exc:
        await ticket.settle()
        if isinstance(exc, GatewayError):
            exc.headers.update(ticket.headers)
        raise


def front_door(dialect: Dialect, *, x_api_key: bool = False, native: str | None = None) -> Handler:
    """The handler of one front door; every error it meets is answered in the dialect's shape.

    ``native`` is the upstream path of the same API, for plain routes whose providers serve it
    themselves (``providers.*.responses: native``): there the request is forwarded unchanged.
    """

    async def handle(request: Request) -> Response:
        try:
            if request.method != "POST":
                raise _only_post(request)
            return await _answer(request, dialect, x_api_key, native)
        except GatewayError as error:
            status, body = dialect.error_status_and_body(error)
            return Response(body, status, error.headers, media_type="application/json")

    return handle


def _only_post(request: Request) -> GatewayError:
    """A door the gateway owns, asked with another method: 405, with ``Allow``, in that door's own shape."""
    message = f"{request.url.path} takes POST, not {request.method}."
    return GatewayError(ErrorKind.METHOD_NOT_ALLOWED, message, headers={"allow": "POST"})


async def _answer(request: Request, dialect: Dialect, x_api_key: bool, native: str | None) -> Response:
    service = service_of(request)
    record = record_of(request.scope)
    client = client_of(service, request, record, x_api_key=x_api_key)
    service.refuse_when_draining()
    body = await read_body(request, service.config.server.max_body_bytes)
    if native is not None and (route := _native_route(service, body)) is not None:
        record.route = route.name
        outbound = await service.forwarder.prepare_native(route, body)
        service.limits.permit(client, route, outbound.model)
        ticket = await service.limits.admit(client, record)
        sending = service.forwarder.send(outbound, "POST", native, "", request.headers.items(), record)
        return _forwarded(await admitted(sending, ticket), ticket, {"x-gateway-route": route.name})
    parsed = await off_loop(len(body), dialect.parse_request, body)
    route = service.router.route(parsed.model)
    record.route = route.name
    service.limits.permit(client, route, parsed.model)
    if service.config.server.log_content and logger.isEnabledFor(logging.DEBUG):
        # The operator's explicit choice (server.log_content); never the default.
        fields = {"request_id": record.request_id, "body": body.decode("utf-8", "replace")}
        logger.debug("request content", extra={"fields": fields})
    ticket = await service.limits.admit(client, record)
    answering = service.completions.answer(dialect, parsed, len(body), route, record, ticket)
    gone, answer = await admitted(until_disconnected(request.receive, answering), ticket)
    if gone or answer is None:
        await ticket.settle()
        record.disconnected = True
        return Response(status_code=499)  # nobody is listening; the status is for the access log
    headers = {**answer.headers, **ticket.headers, "x-gateway-route": record.route}
    if answer.relay is not None:
        relay = answer.relay
        # The background close also covers a response cancelled before its body was ever read.
        return EventStreamResponse(
            relay.body(),
            headers={**headers, **_SSE_HEADERS},
            media_type="text/event-stream",
            background=BackgroundTask(relay.close),
        )
    await ticket.settle()  # a whole answer was charged as it was read: this only makes sure
    return Response(answer.body, headers=headers, media_type="application/json")


def _native_route(service: Service, body: bytes) -> ModelRoute | None:
    """The route a body's ``model`` names, if it is plain and every provider behind it serves the API itself."""
    if not service.native_responses:
        return None
    payload = json_body.loads(body)
    model = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(model, str):
        return None
    route = service.router.route(model)
    if route.rewrite is None and service.native_responses.issuperset(route.providers):
        return route
    return None


async def count_tokens(request: Request) -> Response:
    """Anthropic's ``count_tokens``: an estimate over the chat request the route would send (``estimate_prompt``).

    It asks no provider, but it is a request of its key like any other: admitted under its limits (counted in its
    ``rpm``, holding a slot while it runs), charged no tokens.
    """
    try:
        if request.method != "POST":
            raise _only_post(request)
        service = service_of(request)
        record = record_of(request.scope)
        client = client_of(service, request, record, x_api_key=True)
        service.refuse_when_draining()
        body = await read_body(request, service.config.server.max_body_bytes)
        parsed = await off_loop(len(body), anthropic.parse_count_tokens_request, body)
        route = service.router.route(parsed.model)
        record.route = route.name
        service.limits.permit(client, route, parsed.model)
        ticket = await service.limits.admit(client, record)
        try:
            counted = await off_loop(len(body), _estimate, parsed, service.config.options(route))
        finally:
            await ticket.settle()
    except GatewayError as error:
        status, body = anthropic.error_status_and_body(error)
        return Response(body, status, error.headers, media_type="application/json")
    return Response(orjson.dumps({"input_tokens": counted}), headers=ticket.headers, media_type="application/json")


def _estimate(parsed: anthropic.MessagesRequest, options: RewriteOptions) -> int:
    """The prompt tokens of the chat request a route would send for a Messages request, injection included."""
    payload = anthropic.to_chat(parsed, reasoning=options.reasoning, reasoning_effort=False)
    if not options.passthrough:
        payload, _ = prepare(payload, options)
    return estimate_prompt(payload)


async def list_models(request: Request) -> Response:
    service = service_of(request)
    try:
        client = client_of(service, request, record_of(request.scope))
    except GatewayError as error:
        return _openai_error(error)
    # A glob route serves many names but is not one: only concrete route names are listed, those the key may use.
    routes = [route for route in service.limits.visible(client, service.config.models) if not route.is_glob]
    data = [{"id": r.name, "object": "model", "created": 0, "owned_by": ", ".join(r.providers)} for r in routes]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def forward(request: Request) -> Response:
    """Any other ``/v1/`` endpoint a provider forwards, sent to the provider of the route its body names."""
    service = service_of(request)
    record = record_of(request.scope)
    try:
        client = client_of(service, request, record)
        path = forwarding.checked_path(request.scope.get("raw_path") or request.scope["path"].encode())
        service.refuse_when_draining()
        body = await read_body(request, service.config.server.max_body_bytes)
        outbound = await service.forwarder.prepare(path, request.headers.get("content-type", ""), body)
        if outbound.route is not None:
            record.route = outbound.route.name
        service.limits.permit(client, outbound.route, outbound.model)
        ticket = await service.limits.admit(client, record)
        query = request.scope["query_string"].decode("latin-1")
        sending = service.forwarder.send(outbound, request.method, path, query, request.headers.items(), record)
        forwarded = await admitted(sending, ticket)
    except GatewayError as error:
        return _openai_error(error)
    return _forwarded(forwarded, ticket)


def _forwarded(forwarded: Forwarded, ticket: Ticket, extra: Mapping[str, str] | None = None) -> Response:
    """The upstream's answer as it came, with the key's rate-limit headers; its end settles the ticket."""
    headers = {**forwarded.headers, **ticket.headers, **(extra or {})}
    body = forwarded.client_body(ticket.forwarded(forwarded.status, forwarded.headers, forwarded.body, forwarded.sent))
    return StreamingResponse(body, forwarded.status, headers, background=BackgroundTask(ticket.settle))


def _openai_error(error: GatewayError) -> Response:
    return Response(chat.error_body(error), error.status, error.headers, media_type="application/json")


async def metrics(request: Request) -> Response:
    body, content_type = service_of(request).metrics.render()
    return Response(body, headers={"content-type": content_type})


async def root(request: Request) -> Response:
    """``GET /`` and ``HEAD /``: what clients probe before they start (Claude Code sends ``HEAD /``)."""
    return Response(b'{"service":"agent-gateway","api":"/v1"}', media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


async def readyz(request: Request) -> Response:
    if service_of(request).ready:
        return Response(b'{"status":"ready"}', media_type="application/json")
    return Response(b'{"status":"not ready"}', 503, media_type="application/json")


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own refusals (no such route, method not allowed), in OpenAI's shape like every other error."""
    assert isinstance(exc, HTTPException)
    kind = ErrorKind.METHOD_NOT_ALLOWED if exc.status_code == 405 else ErrorKind.NOT_FOUND
    message = f"{exc.detail}: {request.method} {request.url.path}"
    return _openai_error(GatewayError(kind, message, status=exc.status_code, headers=exc.headers))


async def _client_gone(request: Request, exc: Exception) -> Response:
    """The client left (or was cut off as too slow) while its body was being read: nobody to answer."""
    record_of(request.scope).disconnected = True
    return Response(status_code=499)  # the status is for the access log


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"fields": {"request_id": record_of(request.scope).request_id}})
    message = "The gateway failed to handle the request."
    error = GatewayError(ErrorKind.INTERNAL, message, headers={"connection": "close"})
    return _openai_error(error)


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


def create_app(config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> AccessLog:
    """The ASGI app; ``transports`` replace the network for named providers (the demo, tests)."""
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

    app = Starlette(
        routes=[
            Route("/", root, methods=["GET"]),
            Route("/v1/chat/completions", front_door(chat), methods=_EVERY_METHOD),
            Route("/v1/responses", front_door(responses, native="/responses"), methods=_EVERY_METHOD),
            Route("/v1/messages", front_door(anthropic, x_api_key=True), methods=_EVERY_METHOD),
            Route("/v1/messages/count_tokens", count_tokens, methods=_EVERY_METHOD),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/{path:path}", forward, methods=_EVERY_METHOD),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, ClientDisconnect: _client_gone, Exception: _unexpected_error},
        lifespan=lifespan,
    )
    app.router.redirect_slashes = False  # a redirect built from the client's Host header helps no API client
    app.state.service = service
    return AccessLog(app, service.metrics)


def app_from_env() -> AccessLog:
    """The factory uvicorn's workers call: the config named by ``GATEWAY_CONFIG``, else the default."""
    path = os.environ.get("GATEWAY_CONFIG")
    return create_app(load_config(path) if path else default_config())
