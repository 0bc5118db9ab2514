"""Getting an answer from upstream: deployment choice, retries with backoff, fallbacks, draining.

Retries happen only before any byte has reached the client: on connect
errors, timeouts before the first event, and 408/429/500/502/503/504. A
streamed answer is committed to the client once its first event has
arrived, so a stream that dies before that is retried like any other
failure.
"""

from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import itertools
import random
import time
from collections.abc import Mapping
from typing import Any

import httpx
import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response

from gateway import agent
from gateway import body as json_body
from gateway.asgi import EventStreamResponse
from gateway.config import Config, ModelRoute
from gateway.core.rewriter import RewriteOptions, StreamRewriter, rewrite_completion
from gateway.errors import GatewayError, error_body
from gateway.keys import ClientKey, KeyRegistry
from gateway.metrics import Metrics, RequestRecord
from gateway.relay import StreamRelay
from gateway.upstream import Provider, client_headers

__all__ = ["RETRYABLE_STATUS", "Gateway"]

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


# Upstream failure kinds, for metrics and logs, by the error code the client sees.
_KINDS = {
    "upstream_unreachable": "connect",
    "upstream_timeout": "timeout",
    "provider_busy": "busy",
    "upstream_disconnected": "connect",
    "upstream_incomplete": "status",
}


class _Failed(Exception):
    """One attempt failed before the client saw anything; ``response`` is what it gets if none succeeds."""

    def __init__(self, response: Response, retryable: bool, kind: str, retry_after: float | None = None) -> None:
        self.response = response
        self.retryable = retryable
        self.kind = kind
        self.retry_after = retry_after

    @classmethod
    def of(cls, error: GatewayError) -> _Failed:
        kind = _KINDS.get(error.code or "", "invalid")
        return cls(error.response(), error.retryable, kind, _retry_after(error.headers))


class Gateway:
    """One process's config, provider clients and in-flight streams."""

    def __init__(self, config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.providers: dict[str, Provider] = {}
        self.streams: set[StreamRelay] = set()
        self.ready = False
        self.draining = False
        self._transports = dict(transports or {})
        self.keys = KeyRegistry.from_config(config)
        self._turn = itertools.count()

    async def start(self) -> None:
        for name, provider in self.config.providers.items():
            self.providers[name] = Provider(name, provider, self._transports.get(name))
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for provider in self.providers.values():
            await provider.aclose()

    def drain(self) -> None:
        """Stop taking requests; streams still running after the grace period are ended with an error event."""
        if self.draining:
            return
        self.draining = True
        self.ready = False
        asyncio.get_running_loop().call_later(self.config.server.shutdown_grace, self._abort_streams)

    def _abort_streams(self) -> None:
        for relay in list(self.streams):
            relay.abort("The gateway is shutting down; the answer was cut.")

    def authorize(self, authorization: str) -> ClientKey | None:
        """The client key a request presents (compared in constant time); None when the config names no keys."""
        if not self.keys.required:
            return None
        scheme, _, token = authorization.partition(" ")
        client = self.keys.resolve(token.strip())
        if scheme.lower() != "bearer" or client is None:
            raise GatewayError(401, "Invalid or missing API key: send 'Authorization: Bearer <key>'.", code="invalid_api_key")
        return client

    def refuse_when_draining(self) -> None:
        if self.draining:
            raise GatewayError(503, "The gateway is shutting down.", "api_error", "gateway_shutdown", headers={"retry-after": "1"})

    def route(self, model: str) -> ModelRoute:
        route = self.config.route(model)
        if route is None:
            raise GatewayError(404, f"The model {model!r} does not exist or you do not have access to it.", param="model", code="model_not_found")
        return route

    def pick(self, route: ModelRoute, tried: set[str]) -> Provider:
        """The deployment to try: not cooling down, not yet tried, fewest requests in flight; ties rotate."""
        names = route.providers
        start = next(self._turn) % len(names)
        candidates = [self.providers[name] for name in names[start:] + names[:start]]
        return min(candidates, key=lambda p: (p.cooling_down, p.name in tried, p.in_flight))

    def backoff(self, attempt: int, retry_after: float | None) -> float:
        server = self.config.server
        delay = min(server.retry_backoff * 2 ** (attempt - 1), server.retry_backoff_max) * random.uniform(0.5, 1.0)
        if retry_after is not None:
            delay = max(delay, min(retry_after, server.retry_after_max))
        return delay

    async def chat(self, payload: dict[str, Any], route: ModelRoute, record: RequestRecord) -> Response:
        """Answer a chat request through its route, then its fallbacks; ``record.route`` says which one served."""
        requested = payload["model"]
        record.stream = payload.get("stream") is True
        failed: _Failed | None = None
        for position, current in enumerate((route, *(self.config.route_named(name) for name in route.fallbacks))):
            if position:
                record.fallbacks += 1
                self.metrics.fallbacks.labels(record.route, current.name).inc()
            record.route = current.name
            record.upstream_model = current.upstream_model(requested)
            upstream_payload = {**payload, "model": record.upstream_model}
            options = None
            if current.rewrite is not None:
                upstream_payload, options = agent.prepare(upstream_payload, current.rewrite)
                options = dataclasses.replace(options, max_arguments_chars=self.config.server.max_arguments_chars)
            record.reasoning_exposed = options is not None and options.reasoning == "expose"
            body = json_body.dumps(upstream_payload)
            tried: set[str] = set()
            for attempt in range(current.max_retries + 1):
                if attempt:
                    record.retries += 1
                    self.metrics.retries.labels(current.name).inc()
                    pause = self.backoff(attempt, failed.retry_after if failed else None)
                    await asyncio.sleep(pause)
                    record.upstream_seconds += pause
                provider = self.pick(current, tried)
                tried.add(provider.name)
                record.provider = provider.name
                try:
                    response = await self._attempt(provider, current, body, record.stream, options, record)
                except _Failed as failure:
                    failed = failure
                    record.error_kind = failure.kind
                    self.metrics.upstream_errors.labels(provider.name, failure.kind).inc()
                    if not failure.retryable:
                        return failure.response
                    provider.failed()
                    continue
                provider.succeeded()
                record.error_kind = None
                return response
        assert failed is not None
        return failed.response

    async def _attempt(
        self,
        provider: Provider,
        route: ModelRoute,
        body: bytes,
        stream: bool,
        options: RewriteOptions | None,
        record: RequestRecord,
    ) -> Response:
        timeouts = route.timeout.apply(provider.config.timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total if timeouts.total else None
        try:
            await provider.acquire()
        except GatewayError as error:
            raise _Failed.of(error) from None
        handed_over = False
        waiting = loop.time()
        try:
            try:
                upstream = await provider.send(
                    "POST",
                    "/chat/completions",
                    content=body,
                    headers={
                        "content-type": "application/json",
                        "accept": "text/event-stream" if stream else "application/json",
                        "x-request-id": record.request_id,
                    },
                    timeouts=timeouts,
                )
            except GatewayError as error:
                raise _Failed.of(error) from None
            finally:
                record.upstream_seconds += loop.time() - waiting
            headers = client_headers(upstream.headers)
            if upstream.status_code >= 400:
                response = await upstream_error(upstream, provider.name, headers)
                retryable = upstream.status_code in RETRYABLE_STATUS
                raise _Failed(response, retryable, "status", _retry_after(upstream.headers))
            if stream:
                relay = StreamRelay(
                    upstream,
                    StreamRewriter(options, record.rewrite) if options is not None else None,
                    provider.name,
                    idle=timeouts.idle,
                    deadline=deadline,
                    max_event_bytes=self.config.server.max_event_bytes,
                    record=record,
                    on_close=lambda closed: self._stream_closed(closed, provider),
                )
                handed_over = True
                try:
                    await relay.start()
                except GatewayError as error:
                    raise _Failed.of(error) from None
                self.streams.add(relay)
                self.metrics.streams.inc()
                # The background close also covers a response cancelled before its body was ever read.
                return EventStreamResponse(
                    relay.body(), headers={**headers, **_SSE_HEADERS}, media_type="text/event-stream",
                    background=BackgroundTask(relay.close),
                )
            return await self._complete(upstream, provider.name, headers, options, deadline, record)
        finally:
            if not handed_over:
                provider.release()

    def _stream_closed(self, relay: StreamRelay, provider: Provider) -> None:
        if relay in self.streams:
            self.streams.discard(relay)
            self.metrics.streams.dec()
        provider.release()

    async def _complete(
        self,
        upstream: httpx.Response,
        provider: str,
        headers: dict[str, str],
        options: RewriteOptions | None,
        deadline: float | None,
        record: RequestRecord,
    ) -> Response:
        loop = asyncio.get_running_loop()
        waiting = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                data = await upstream.aread()
        except (TimeoutError, httpx.TimeoutException):
            raise _Failed.of(GatewayError.upstream_timeout(provider)) from None
        except httpx.TransportError:
            raise _Failed.of(GatewayError.upstream_unreachable(provider)) from None
        finally:
            await upstream.aclose()
            record.upstream_seconds += loop.time() - waiting
        try:
            completion = orjson.loads(data)
        except orjson.JSONDecodeError:
            completion = None
        if isinstance(completion, dict):
            record.usage(completion.get("usage"))
        if options is None:
            return Response(data, headers=headers, media_type="application/json")
        if not isinstance(completion, dict):
            message = f"The upstream provider {provider!r} returned a body that is not a JSON object."
            raise _Failed(GatewayError(502, message, "api_error", "upstream_invalid_response").response(), False, "invalid")
        rewritten = rewrite_completion(completion, options, record.rewrite)
        return Response(orjson.dumps(rewritten), headers=headers, media_type="application/json")


async def upstream_error(response: httpx.Response, provider: str, headers: dict[str, str]) -> Response:
    """Keep the upstream status; keep its body when it is an OpenAI error, wrap it otherwise."""
    try:
        body = await response.aread()
    except httpx.HTTPError:
        body = b""
    finally:
        await response.aclose()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return Response(body, response.status_code, headers, media_type="application/json")
    detail = body.decode("utf-8", "replace").strip()[:500] or response.reason_phrase
    kind = "api_error" if response.status_code >= 500 else "invalid_request_error"
    wrapped = error_body(f"The upstream provider {provider!r} answered {response.status_code}: {detail}", kind, "upstream_error")
    return Response(orjson.dumps(wrapped), response.status_code, headers, media_type="application/json")


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date)."""
    if (milliseconds := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
