"""Answering a completion request from any front door.

The front door's request is translated into a chat-completions request for
each route it may reach (the route, then its fallbacks), the agent transform
applied where the route rewrites, and each attempt sent through the one
upstream-call path. A streamed answer is committed once its first chunk has
arrived; a non-streaming one is replayed through the same rewrite. What comes
back is an ``Answer`` for the edge to send, never an HTTP response.

Streams ask the upstream for their usage (``stream_options.include_usage``),
and the request's ticket is charged from it as the answer ends (the chat
front door drops that usage chunk for a client that did not ask for it).

A provider of another API (``api: responses``, ``api: anthropic``) gets the
prepared chat-completions request in its own wire (``gateway.core.wires``),
and its answer is read back into chat-completion chunks before the rewrite,
so every route, door and rewrite works the same behind it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson

from gateway.config import Config, ModelRoute
from gateway.core import json_body
from gateway.core.agent import prepare
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import Event
from gateway.core.options import Reasoning, RewriteOptions
from gateway.core.rewriter import InvalidChunk, replay_completion
from gateway.core.translator import StreamTranslator
from gateway.core.usage import estimate_prompt, estimate_size, usage_of
from gateway.core.wires import WIRES, Wire
from gateway.dialects import Dialect, Parsed, StreamEncoder
from gateway.server.limits import Ticket
from gateway.server.metrics import Metrics, RequestRecord
from gateway.server.offload import off_loop
from gateway.server.relay import Relay
from gateway.server.retries import RetryPolicy
from gateway.upstream.provider import FAILURES, Provider, UpstreamResponse, client_headers, failure

__all__ = ["Answer", "Completions", "StreamEnd"]

# Told of a streamed answer's end (its encoder, having encoded the last event), before the last bytes go out.
StreamEnd = Callable[[StreamEncoder], Awaitable[None]]

logger = logging.getLogger("gateway.requests")


@dataclass(frozen=True, slots=True)
class Answer:
    """What the edge sends: a whole body, or a relay whose body is the stream."""

    headers: dict[str, str]
    body: bytes = b""
    relay: Relay | None = None


class Completions:
    """Completion requests from every front door, through routes, retries and fallbacks."""

    def __init__(self, config: Config, policy: RetryPolicy, metrics: Metrics) -> None:
        self._config = config
        self._policy = policy
        self._metrics = metrics
        self.streams: set[Relay] = set()
        self._dropping_routes: set[str] = set()  # the routes that have logged leaving hosted tools out

    async def answer(
        self,
        dialect: Dialect[Parsed],
        request: Parsed,
        size: int,
        route: ModelRoute,
        record: RequestRecord,
        ticket: Ticket,
        stream_end: StreamEnd | None = None,
    ) -> Answer:
        """The answer through ``route``, then its fallbacks; ``record.route`` says which one served. ``size`` is
        the request body's, which decides whether building an upstream request takes a worker thread.

        A whole answer settles ``ticket`` before it is returned, a stream as it ends (and then tells ``stream_end``);
        a failure leaves it to the caller.
        """
        record.stream = request.stream

        async def attempt(current: ModelRoute, provider: Provider) -> Answer:
            return await self._attempt(dialect, request, size, current, provider, record, ticket, stream_end)

        return await self._policy.run(route, attempt, record)

    def abort_streams(self, message: str) -> None:
        for relay in list(self.streams):
            relay.abort(message)

    async def _attempt(
        self,
        dialect: Dialect[Parsed],
        request: Parsed,
        size: int,
        route: ModelRoute,
        provider: Provider,
        record: RequestRecord,
        ticket: Ticket,
        stream_end: StreamEnd | None,
    ) -> Answer:
        record.upstream_model = route.upstream_model(request.model)
        dropped_tools = self._hosted_tools(request.dropped_tools, route)
        content, options, prompt_estimate = await off_loop(
            size, self._upstream_request, dialect, request, route, provider, ticket.charges_tokens
        )
        upstream = provider.config
        wire = WIRES.get(upstream.api)
        record.reasoning_exposed = options.reasoning is Reasoning.EXPOSE and not options.passthrough
        timeouts = route.timeout.apply(upstream.timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeouts.total if timeouts.total else None
        waiting = loop.time()
        try:
            answer = await provider.call(
                "POST",
                "/chat/completions" if wire is None else wire.path,
                content=content,
                headers={
                    "content-type": "application/json",
                    "accept": "text/event-stream" if request.stream else "application/json",
                    "x-request-id": record.request_id,
                },
                timeouts=timeouts,
            )
        finally:
            record.upstream_seconds += loop.time() - waiting
        if answer.status >= 400:
            error = await answer.error()
            raise error if wire is None else wire.error(provider.name, error)
        ticket.answering(lambda: prompt_estimate)
        headers = client_headers(answer.headers)
        if dropped_tools:
            headers["x-gateway-dropped-tools"] = dropped_tools
        created = int(time.time())
        if not request.stream:
            events = await self._complete(answer, provider, wire, options, deadline, record, ticket, created)
            return Answer(headers, body=dialect.build(request, events, created=created))
        encoder = dialect.encoder(request, created=created)

        async def ended(relay: Relay) -> None:
            await ticket.settle(relay.usage, completion_estimate=relay.chunks)
            if stream_end is not None:
                await stream_end(encoder)

        relay = Relay(
            answer,
            StreamTranslator(
                options,
                provider.name,
                record.rewrite,
                raw_chunks=encoder.raw_chunks,
                wire=None if wire is None else wire.reader(provider.name, created),
            ),
            encoder,
            idle=timeouts.idle,
            deadline=deadline,
            record=record,
            on_close=self._stream_closed,
            on_end=ended,
        )
        await relay.start()
        self.streams.add(relay)
        self._metrics.streams.inc()
        return Answer(headers, relay=relay)

    def _hosted_tools(self, dropped: tuple[str, ...], route: ModelRoute) -> str:
        """The hosted tools left out of a request, as the header names them; a 400 on a route that refuses them."""
        if not dropped:
            return ""
        names = ", ".join(dropped)
        if route.hosted_tools == "refuse":
            raise GatewayError(
                ErrorKind.INVALID_REQUEST,
                f"The hosted tools {names} are not supported on the route {route.name!r}: only the provider's own "
                "servers run them, and this route translates to chat completions (hosted_tools: refuse).",
                param="tools",
                code="unsupported_value",
            )
        if route.name not in self._dropping_routes:
            self._dropping_routes.add(route.name)
            logger.warning(
                "route %r leaves hosted tools out of translated requests (first seen: %s); they are named in "
                "x-gateway-dropped-tools, and hosted_tools: refuse refuses such requests",
                route.name,
                names,
            )
        return names

    def _upstream_request(
        self, dialect: Dialect[Parsed], request: Parsed, route: ModelRoute, provider: Provider, estimate: bool
    ) -> tuple[bytes, RewriteOptions, int]:
        """The request a route's provider gets (chat completions, or that request in the provider's wire), the
        options its answer is rewritten with, and (when ``estimate``) its prompt's estimated tokens."""
        options = self._config.options(route)
        upstream = provider.config
        payload = dialect.to_chat(request, reasoning=options.reasoning, reasoning_effort=upstream.reasoning_effort)
        payload["model"] = route.upstream_model(request.model)
        if upstream.token_limit == "max_tokens" and "max_completion_tokens" in payload:
            payload["max_tokens"] = payload.pop("max_completion_tokens")
        wire = WIRES.get(upstream.api)
        if request.stream and wire is None:
            asked = payload.get("stream_options")
            payload["stream_options"] = {**(asked if isinstance(asked, dict) else {}), "include_usage": True}
        if not options.passthrough:
            payload, options = prepare(payload, options)
        prompt = estimate_prompt(payload) if estimate else 0
        if wire is not None:
            # Reasoning summaries only from a provider that says it reasons: other models refuse the field.
            summaries = options.reasoning is Reasoning.EXPOSE and upstream.reasoning_effort
            payload = wire.request(payload, stream=request.stream, max_tokens=upstream.max_tokens, summaries=summaries)
        return json_body.dumps(payload), options, prompt

    def _stream_closed(self, relay: Relay) -> None:
        if relay in self.streams:
            self.streams.discard(relay)
            self._metrics.streams.dec()

    async def _complete(
        self,
        upstream: UpstreamResponse,
        provider: Provider,
        wire: Wire | None,
        options: RewriteOptions,
        deadline: float | None,
        record: RequestRecord,
        ticket: Ticket,
        created: int,
    ) -> list[Event]:
        """A non-streaming answer, read whole, charged to the ticket, and replayed through the rewrite."""
        loop = asyncio.get_running_loop()
        waiting = loop.time()
        try:
            async with asyncio.timeout_at(deadline):
                data = await upstream.read()
        except FAILURES as exc:
            raise failure(provider.name, exc) from None
        finally:
            await upstream.aclose()
            record.upstream_seconds += loop.time() - waiting
        try:
            completion = orjson.loads(data)
        except orjson.JSONDecodeError:
            completion = None
        if not isinstance(completion, dict):
            message = f"The upstream provider {provider.name!r} returned a body that is not a JSON object."
            raise GatewayError(ErrorKind.INVALID_RESPONSE, message, code="upstream_invalid_response")
        raw: bytes | None = data
        if wire is not None:
            try:
                completion = wire.completion(completion, provider.name, created)
            except InvalidChunk:
                message = f"The upstream provider {provider.name!r} returned a body that is not a {wire.name} answer."
                raise GatewayError(ErrorKind.INVALID_RESPONSE, message, code="upstream_invalid_response") from None
            raw = None  # its bytes are not a chat completion's: a chat client's answer is built from its events
        usage = usage_of(completion.get("usage"))
        record.usage(usage)
        await ticket.settle(usage, completion_estimate=estimate_size(len(data)))
        try:
            return replay_completion(completion, options, record.rewrite, raw)
        except InvalidChunk:
            if isinstance(completion.get("error"), dict):
                message = f"The upstream provider {provider.name!r} answered with an error."
                raise GatewayError(ErrorKind.UPSTREAM_ERROR, message, upstream=completion) from None
            message = f"The upstream provider {provider.name!r} returned a body that is not a chat completion."
            raise GatewayError(ErrorKind.INVALID_RESPONSE, message, code="upstream_invalid_response") from None
