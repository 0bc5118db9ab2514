"""The ASGI application: validation, routing, and answers relayed through the rewrite core."""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictStr, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import agent
from gateway.access import AccessLog, request_id_of
from gateway.config import Config, ModelRoute, default_config, load_config
from gateway.core.rewriter import StreamRewriter, rewrite_completion
from gateway.errors import GatewayError, error_body
from gateway.relay import relay_stream
from gateway.upstream import HOP_BY_HOP, Provider, relayed_headers

__all__ = ["Gateway", "app_from_env", "create_app"]

logger = logging.getLogger("gateway")

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}
# Client request headers never forwarded on pass-through paths: the gateway key and hop-by-hop fields.
_NOT_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "x-request-id"}


class ChatRequest(BaseModel):
    """The fields the gateway relies on; every other field is forwarded untouched."""

    model_config = ConfigDict(extra="allow")

    model: StrictStr = Field(min_length=1)
    messages: list[dict[str, Any]]
    stream: StrictBool | None = None
    tools: list[dict[str, Any]] | None = None


class Gateway:
    """One process's config and provider clients."""

    def __init__(self, config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> None:
        self.config = config
        self.providers: dict[str, Provider] = {}
        self.ready = False
        self._transports = dict(transports or {})
        self._api_keys = [key.encode() for key in config.server.api_keys]

    async def start(self) -> None:
        for name, provider in self.config.providers.items():
            self.providers[name] = Provider(name, provider, self._transports.get(name))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for provider in self.providers.values():
            await provider.aclose()

    def authorize(self, request: Request) -> None:
        if not self._api_keys:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode()
        # Compare against every key, so the time taken says nothing about which one nearly matched.
        matched = False
        for key in self._api_keys:
            matched |= hmac.compare_digest(presented, key)
        if scheme.lower() != "bearer" or not matched:
            raise GatewayError(401, "Invalid or missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key")

    def route(self, model: str) -> ModelRoute:
        route = self.config.route(model)
        if route is None:
            raise GatewayError(404, f"The model {model!r} does not exist or you do not have access to it.", param="model", code="model_not_found")
        return route


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
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise GatewayError.bad_request("The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise GatewayError.bad_request("The request body must be a JSON object.")
    try:
        ChatRequest.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        param = ".".join(str(part) for part in first["loc"])
        raise GatewayError.bad_request(f"Invalid value for '{param}': {first['msg']}.", param=param) from None
    return payload


async def upstream_error(response: httpx.Response, provider: str, headers: dict[str, str]) -> Response:
    """Keep the upstream status; keep its body when it is an OpenAI error, wrap it otherwise."""
    try:
        body = await response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    with contextlib.suppress(orjson.JSONDecodeError):
        data = orjson.loads(body)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            return Response(body, response.status_code, headers, media_type="application/json")
    detail = body.decode("utf-8", "replace").strip()[:500] or response.reason_phrase
    kind = "api_error" if response.status_code >= 500 else "invalid_request_error"
    wrapped = error_body(f"The upstream provider {provider!r} answered {response.status_code}: {detail}", kind, "upstream_error")
    return Response(orjson.dumps(wrapped), response.status_code, headers, media_type="application/json")


async def chat_completions(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request)
    payload = parse_chat_request(await read_body(request, gateway.config.server.max_body_bytes))
    requested = payload["model"]
    route = gateway.route(requested)
    request.state.route = route.name
    provider = gateway.providers[route.provider]
    payload["model"] = route.upstream_model(requested)
    rewriter_options = None
    if route.rewrite is not None:
        payload, rewriter_options = agent.prepare(payload, route.rewrite)
    stream = payload.get("stream") is True
    upstream = await provider.send(
        "POST",
        "/chat/completions",
        content=orjson.dumps(payload),
        headers={
            "content-type": "application/json",
            "accept": "text/event-stream" if stream else "application/json",
            "x-request-id": request_id_of(request.scope),
        },
    )
    headers = _client_headers(upstream.headers)
    if upstream.status_code >= 400:
        return await upstream_error(upstream, provider.name, headers)
    if stream:
        rewriter = StreamRewriter(rewriter_options) if rewriter_options is not None else None
        body = relay_stream(upstream, rewriter, provider.name)
        return StreamingResponse(body, headers={**headers, **_SSE_HEADERS}, media_type="text/event-stream")
    try:
        data = await upstream.aread()
    except httpx.TimeoutException:
        raise GatewayError.upstream_timeout(provider.name) from None
    except httpx.TransportError:
        raise GatewayError.upstream_unreachable(provider.name) from None
    finally:
        await upstream.aclose()
    if rewriter_options is None:
        return Response(data, headers=headers, media_type="application/json")
    try:
        completion = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise GatewayError(502, f"The upstream provider {provider.name!r} returned a body that is not JSON.", "api_error", "upstream_invalid_response") from None
    return Response(orjson.dumps(rewrite_completion(completion, rewriter_options)), headers=headers, media_type="application/json")


def _client_headers(upstream: httpx.Headers) -> dict[str, str]:
    headers = relayed_headers(upstream)
    upstream_id = headers.pop("x-request-id", None)
    if upstream_id is not None:
        headers["x-upstream-request-id"] = upstream_id
    return headers


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request)
    data = [{"id": route.name, "object": "model", "created": 0, "owned_by": route.provider} for route in gateway.config.models]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


async def passthrough(request: Request) -> Response:
    """Any other ``/v1/`` endpoint, forwarded verbatim to the provider of the route its body names."""
    gateway: Gateway = request.app.state.gateway
    gateway.authorize(request)
    body = await read_body(request, gateway.config.server.max_body_bytes)
    provider = next(iter(gateway.providers.values()))
    model = _json_model(body) if "json" in request.headers.get("content-type", "") else None
    if model is not None:
        route = gateway.route(model)
        request.state.route = route.name
        provider = gateway.providers[route.provider]
        payload = orjson.loads(body)
        payload["model"] = route.upstream_model(model)
        body = orjson.dumps(payload)
    headers = {name: value for name, value in request.headers.items() if name not in _NOT_FORWARDED}
    headers["x-request-id"] = request_id_of(request.scope)
    upstream = await provider.send(
        request.method, request.url.path.removeprefix("/v1"), content=body, headers=headers, params=request.url.query
    )
    response_headers = {name: value for name, value in upstream.headers.items() if name not in HOP_BY_HOP}
    response_headers.pop("x-request-id", None)
    return StreamingResponse(_raw_body(upstream), upstream.status_code, response_headers)


def _json_model(body: bytes) -> str | None:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    model = payload.get("model") if isinstance(payload, dict) else None
    return model if isinstance(model, str) else None


async def _raw_body(response: httpx.Response) -> AsyncIterator[bytes]:
    try:
        async for part in response.aiter_raw():
            yield part
    except httpx.TransportError:
        return
    finally:
        await response.aclose()


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


async def _unexpected_error(request: Request, exc: Exception) -> Response:
    logger.exception("unhandled error", extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return GatewayError(500, "The gateway failed to handle the request.", "server_error").response()


def create_app(config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> AccessLog:
    """The ASGI app; ``transports`` replace the network for named providers (the demo, tests)."""
    gateway = Gateway(config, transports)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = Starlette(
        routes=[
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/{path:path}", passthrough, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        exception_handlers={GatewayError: _gateway_error, Exception: _unexpected_error},
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return AccessLog(app)


def app_from_env() -> AccessLog:
    """The factory uvicorn's workers call: the config named by ``GATEWAY_CONFIG``, else the default."""
    path = os.environ.get("GATEWAY_CONFIG")
    config = load_config(path) if path else default_config()
    transports: dict[str, httpx.AsyncBaseTransport] = {}
    if config.is_demo:
        from gateway.demo import DemoTransport

        transports["demo"] = DemoTransport(delay=0.02)
    return create_app(config, transports)
