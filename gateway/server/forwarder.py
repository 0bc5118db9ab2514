"""Forwarded requests: ``/v1/*`` endpoints other than the front doors, sent to a provider as they came.

What may cross, either way, is ``gateway.core.forwarding``'s to decide.
A request is first prepared (where it goes: the route its body names and a
deployment of it), so that the edge can check the client's key against the
route before anything is sent. It takes the same upstream-call path as
completions (a slot of the provider, its failure count and cool-down), once,
without retries: many of them (uploads, batch creation) are not safe to repeat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import ModelRoute
from gateway.core import forwarding, json_body
from gateway.core.usage import UsageChunkFilter
from gateway.server.metrics import RequestRecord
from gateway.server.retries import RetryPolicy
from gateway.server.routing import Router
from gateway.upstream.provider import RETRYABLE_STATUS, Provider, UpstreamResponse

__all__ = ["Forwarded", "Forwarder", "Outbound", "raw_body"]

# Endpoints whose streams report usage when asked (stream_options.include_usage): the gateway always asks.
_STREAM_USAGE: Final = frozenset(("/completions",))


@dataclass(frozen=True, slots=True)
class Outbound:
    """Where a forwarded request goes: the route its body names (None when it names no model), the model as
    the client named it, the deployment, and the body to send (the route's upstream model in it).

    ``hides_usage``: the gateway asked the stream for its usage on a client's behalf that did not ask.
    """

    route: ModelRoute | None
    model: str | None
    provider: Provider
    body: bytes
    hides_usage: bool = False


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The upstream's answer for the client: its status, its headers, its body as it comes, and the size of the
    request that was sent (for an estimate, when the answer reports no usage)."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]
    sent: int
    hides_usage: bool = False
    max_event_bytes: int = 0

    async def client_body(self, body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """``body`` as the client gets it: without the usage chunk it did not ask for."""
        if not (self.hides_usage and self.status < 400 and "text/event-stream" in self.headers.get("content-type", "")):
            async for part in body:
                yield part
            return
        kept = UsageChunkFilter(self.max_event_bytes)
        async for part in body:
            if out := kept.feed(part):
                yield out
        if out := kept.close():
            yield out


class Forwarder:
    def __init__(self, router: Router, policy: RetryPolicy, max_event_bytes: int) -> None:
        self._router = router
        self._policy = policy
        self._max_event_bytes = max_event_bytes

    async def prepare(self, path: str, content_type: str, body: bytes) -> Outbound:
        """The provider of the route the JSON body's ``model`` names (alias replaced), else the first.

        ``path`` is the part after ``/v1``, already checked by ``forwarding.checked_path``.
        """
        payload = _json_object(body) if body and "json" in content_type else None
        model = payload.get("model") if payload is not None else None
        route = None
        hides_usage = False
        if isinstance(model, str) and payload is not None:
            route = self._router.route(model)
            forwarding.refuse_rewrite_route(path, route.name, route.rewrite is not None)
            provider = await self._pick(route)
            payload = {**payload, "model": route.upstream_model(model)}
            if path in _STREAM_USAGE and payload.get("stream") is True:
                # The key is charged from the usage the stream ends with: ask for it, whatever the client asked.
                asked = payload.get("stream_options")
                asked = asked if isinstance(asked, dict) else {}
                hides_usage = asked.get("include_usage") is not True
                payload["stream_options"] = {**asked, "include_usage": True}
            body = json_body.dumps(payload)
        else:
            model = None
            provider = next(iter(self._router.providers.values()))
        if not forwarding.allowed_path(path, provider.config.forward):
            raise forwarding.not_forwarded(path)
        return Outbound(route, model, provider, body, hides_usage)

    async def send(
        self,
        outbound: Outbound,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        record: RequestRecord,
    ) -> Forwarded:
        provider = outbound.provider
        sent = forwarding.request_headers(headers, provider.config.forward_headers)
        sent["x-request-id"] = record.request_id

        async def attempt(provider: Provider) -> UpstreamResponse:
            return await provider.call(method, path, content=outbound.body, headers=sent, query=query)

        upstream = await self._policy.once(provider, attempt, record, _failed)
        return Forwarded(
            upstream.status,
            forwarding.response_headers(upstream.headers.items()),
            raw_body(upstream),
            len(outbound.body),
            outbound.hides_usage,
            self._max_event_bytes,
        )

    async def _pick(self, route: ModelRoute) -> Provider:
        await self._router.health.refresh(route.providers)
        return self._router.pick(route, set())


def _failed(upstream: UpstreamResponse) -> bool:
    """An answer that counts against the provider, though the client gets it as it came."""
    return upstream.status in RETRYABLE_STATUS and upstream.status != 429


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A JSON body's object; a body labelled JSON that is not valid JSON is refused, never sent on."""
    payload = json_body.loads(body)
    return payload if isinstance(payload, dict) else None


async def raw_body(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The upstream body as it came. A break mid-body propagates, so the client's connection
    is cut too rather than ending a body that would look complete."""
    try:
        async for part in upstream.raw_reads():
            yield part
    finally:
        await upstream.aclose()
