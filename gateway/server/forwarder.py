"""Forwarded requests: ``/v1/*`` endpoints other than the front doors, sent to a provider as they came.

What may cross, either way, is ``gateway.upstream.forwarding``'s to decide.
They take the same upstream-call path as completions (a slot of the
provider, its failure count and cool-down), once, without retries: many of
them (uploads, batch creation) are not safe to repeat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

from gateway.config import ModelRoute
from gateway.core import json_body
from gateway.server.metrics import RequestRecord
from gateway.server.retries import RetryPolicy
from gateway.server.routing import Router
from gateway.upstream import forwarding
from gateway.upstream.provider import RETRYABLE_STATUS, Provider, UpstreamResponse

__all__ = ["Forwarded", "Forwarder"]


@dataclass(frozen=True, slots=True)
class Forwarded:
    """The upstream's answer for the client: its status, its headers, its body as it comes."""

    status: int
    headers: dict[str, str]
    body: AsyncIterator[bytes]


class Forwarder:
    def __init__(self, router: Router, policy: RetryPolicy) -> None:
        self._router = router
        self._policy = policy

    async def forward(
        self,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        content_type: str,
        body: bytes,
        record: RequestRecord,
    ) -> Forwarded:
        """Forward to the provider of the route the JSON body's ``model`` names (alias replaced), else the first.

        ``path`` is the part after ``/v1``, already checked by ``forwarding.checked_path``.
        """
        payload = _json_object(body) if body and "json" in content_type else None
        model = payload.get("model") if payload is not None else None
        if isinstance(model, str) and payload is not None:
            route = self._router.route(model)
            record.route = route.name
            forwarding.refuse_rewrite_route(path, route.name, route.rewrite is not None)
            provider = self._router.pick(route, set())
            body = json_body.dumps({**payload, "model": route.upstream_model(model)})
        else:
            provider = next(iter(self._router.providers.values()))
        if not forwarding.allowed_path(path, provider.config.forward):
            raise forwarding.not_forwarded(path)
        return await self._send(provider, method, path, query, headers, body, record)


    async def forward_to(
        self, route: ModelRoute, path: str, headers: Iterable[tuple[str, str]], body: bytes, record: RequestRecord
    ) -> Forwarded:
        """A front door's request, as the client sent it (the model replaced), to a provider that serves that API."""
        payload = json_body.loads(body)
        body = json_body.dumps({**payload, "model": route.upstream_model(payload["model"])})
        provider = self._router.pick(route, set())
        return await self._send(provider, "POST", path, "", headers, body, record)

    async def _send(
        self,
        provider: Provider,
        method: str,
        path: str,
        query: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        record: RequestRecord,
    ) -> Forwarded:
        sent = forwarding.request_headers(headers, provider.config.forward_headers)
        sent["x-request-id"] = record.request_id

        async def attempt(provider: Provider) -> UpstreamResponse:
            return await provider.call(method, path, content=body, headers=sent, query=query)

        upstream = await self._policy.once(provider, attempt, record, _failed)
        return Forwarded(upstream.status, forwarding.response_headers(upstream.headers.items()), _raw_body(upstream))


def _failed(upstream: UpstreamResponse) -> bool:
    """An answer that counts against the provider, though the client gets it as it came."""
    return upstream.status in RETRYABLE_STATUS and upstream.status != 429


def _json_object(body: bytes) -> dict[str, Any] | None:
    """A JSON body's object; a body labelled JSON that is not valid JSON is refused, never sent on."""
    payload = json_body.loads(body)
    return payload if isinstance(payload, dict) else None


async def _raw_body(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The upstream body as it came. A break mid-body propagates, so the client's connection
    is cut too rather than ending a body that would look complete."""
    try:
        async for part in upstream.raw_reads():
            yield part
    finally:
        await upstream.aclose()
