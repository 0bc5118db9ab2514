"""The retry policy: attempts with backoff over a route's deployments, then its fallbacks.

An attempt is retried only while nothing has reached the client, and only
when its failure says another attempt may succeed (connect errors, timeouts
before the first event, 408/429/500/502/503/504). The attempt itself is the
caller's (a completion, a forwarded request); the policy only decides where
and when to try again, and reports each deployment's failures and successes
to its health (``gateway.server.health``, shared through the state store).
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.config import ModelRoute, ServerConfig
from gateway.core.errors import ErrorKind, GatewayError
from gateway.server.metrics import Metrics, RequestRecord
from gateway.server.routing import Router
from gateway.upstream.provider import Provider, retry_after

__all__ = ["Attempt", "RetryPolicy"]

T = TypeVar("T")
Attempt = Callable[[ModelRoute, Provider], Awaitable[T]]

# Upstream failure kinds, for metrics and logs; any other kind is "invalid".
_FAILURE_KINDS = {
    ErrorKind.UNREACHABLE: "connect",
    ErrorKind.DISCONNECTED: "connect",
    ErrorKind.TIMEOUT: "timeout",
    ErrorKind.BUSY: "busy",
    ErrorKind.UPSTREAM_STATUS: "status",
    ErrorKind.INCOMPLETE: "status",
}


class RetryPolicy:
    def __init__(self, server: ServerConfig, router: Router, metrics: Metrics) -> None:
        self._server = server
        self._router = router
        self._metrics = metrics

    def backoff(self, attempt: int, after: float | None) -> float:
        """Exponential from ``retry_backoff``, capped, with jitter; an upstream Retry-After is honoured up to a cap."""
        server = self._server
        delay: float = min(server.retry_backoff * 2 ** (attempt - 1), server.retry_backoff_max)
        delay *= random.uniform(0.5, 1.0)
        if after is not None:
            delay = max(delay, min(after, server.retry_after_max))
        return delay

    async def run(self, route: ModelRoute, attempt: Attempt[T], record: RequestRecord) -> T:
        """``attempt`` through ``route``'s deployments, then its fallbacks, until one succeeds.

        ``record.route`` and ``record.provider`` name the last one tried.
        """
        failed: GatewayError | None = None
        for position, current in enumerate(self._router.chain(route)):
            if position:
                record.fallbacks += 1
                self._metrics.fallbacks.labels(record.route, current.name).inc()
            record.route = current.name
            tried: set[str] = set()
            for number in range(current.max_retries + 1):
                if number:
                    record.retries += 1
                    self._metrics.retries.labels(current.name).inc()
                    pause = self.backoff(number, retry_after(failed.headers) if failed else None)
                    await asyncio.sleep(pause)
                    record.upstream_seconds += pause
                await self._router.health.refresh(current.providers)
                provider = self._router.pick(current, tried)
                tried.add(provider.name)
                try:
                    return await self.once(provider, functools.partial(attempt, current), record)
                except GatewayError as error:
                    if not error.retryable:
                        raise
                    failed = error
        assert failed is not None
        raise failed

    async def once(
        self,
        provider: Provider,
        attempt: Callable[[Provider], Awaitable[T]],
        record: RequestRecord,
        failed: Callable[[T], bool] | None = None,
    ) -> T:
        """One attempt on ``provider``, counted in its failures; ``failed`` says when an answer is one too."""
        record.provider = provider.name
        health = self._router.health
        try:
            result = await attempt(provider)
        except GatewayError as error:
            record.error_kind = _FAILURE_KINDS.get(error.kind, "invalid")
            self._metrics.upstream_errors.labels(provider.name, record.error_kind).inc()
            if error.retryable:
                await health.failed(provider.name)
            raise
        if failed is not None and failed(result):
            await health.failed(provider.name)
        else:
            await health.succeeded(provider.name)
            record.error_kind = None
        return result
