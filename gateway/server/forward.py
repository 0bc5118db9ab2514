"""Forwarded requests: ``/v1/*`` endpoints other than the front doors, sent to a provider as they came.

They take the same upstream-call path as completions (a slot of the
provider, its failure count and cool-down), once, without retries: many of
them (uploads, batch creation) are not safe to repeat.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core import json_body
from gateway.server.metrics import RequestRecord
from gateway.server.retries import RetryPolicy
from gateway.server.routing import Router
from gateway.upstream.provider import HOP_BY_HOP, RETRYABLE_STATUS, Provider, UpstreamResponse, client_headers

__all__ = ["Forwarded", "Forwarder"]

# Client request headers never forwarded: the gateway key and hop-by-hop fields.
_NOT_FORWARDED = HOP_BY_HOP | {"authorization", "cookie", "x-request-id"}


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
        raw_path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        record: RequestRecord,
    ) -> Forwarded:
        """Forward to the provider of the route the JSON body's ``model`` names (alias replaced), else the first."""
        payload = _json_object(body) if "json" in headers.get("content-type", "") else None
        model = payload.get("model") if payload is not None else None
        if isinstance(model, str) and payload is not None:
            route = self._router.route(model)
            record.route = route.name
            body = json_body.dumps({**payload, "model": route.upstream_model(model)})
            provider = self._router.pick(route, set())
        else:
            provider = next(iter(self._router.providers.values()))
        # Headers the client's Connection header names are hop-by-hop too (RFC 9110 7.6.1).
        nominated = {token.strip().lower() for token in headers.get("connection", "").split(",")}
        sent = {name: value for name, value in headers.items() if name not in _NOT_FORWARDED and name not in nominated}
        sent["x-request-id"] = record.request_id
        path = raw_path.removeprefix("/v1")

        async def attempt(provider: Provider) -> UpstreamResponse:
            return await provider.call(method, path, content=body, headers=sent, query=query)

        upstream = await self._policy.once(provider, attempt, record, _failed)
        return Forwarded(upstream.status, client_headers(upstream.headers, every=True), _raw_body(upstream))


def _failed(upstream: UpstreamResponse) -> bool:
    """An answer that counts against the provider, though the client gets it as it came."""
    return upstream.status in RETRYABLE_STATUS and upstream.status != 429


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        payload = json_body.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


async def _raw_body(upstream: UpstreamResponse) -> AsyncIterator[bytes]:
    """The upstream body as it came. A break mid-body propagates, so the client's connection
    is cut too rather than ending a body that would look complete."""
    try:
        async for part in upstream.raw_reads():
            yield part
    finally:
        await upstream.aclose()

