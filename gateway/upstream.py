"""Upstream providers: one pooled HTTP client each, and the headers that may cross."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping

import httpx

from gateway.config import ProviderConfig, Timeouts
from gateway.errors import GatewayError

__all__ = ["HOP_BY_HOP", "Provider", "client_headers"]

# Never forwarded in either direction (RFC 9110 §7.6.1), plus what the gateway sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# Upstream response headers a client uses: request ids, timing and rate limits.
_RELAYED = frozenset({"x-request-id", "openai-processing-ms", "openai-version", "retry-after", "retry-after-ms"})


def client_headers(upstream: httpx.Headers, every: bool = False) -> dict[str, str]:
    """Upstream response headers for the client: the ones clients use (``every``: all but hop-by-hop).

    The provider's request id comes back as ``x-upstream-request-id``: ``x-request-id`` is the gateway's own.
    """
    if every:
        headers = {name: value for name, value in upstream.items() if name not in HOP_BY_HOP}
    else:
        headers = {name: value for name, value in upstream.items() if name in _RELAYED or name.startswith("x-ratelimit-")}
    upstream_id = headers.pop("x-request-id", None)
    if upstream_id is not None:
        headers["x-upstream-request-id"] = upstream_id
    return headers


class Provider:
    """An OpenAI-compatible upstream deployment; its key is attached here and nowhere else.

    It also keeps what request routing needs: requests in flight, an optional
    cap on them, and a cool-down after repeated failures.
    """

    def __init__(self, name: str, config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        self.config = config
        headers = dict(config.headers)
        if config.api_key is not None:
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self.client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=http_timeout(config.timeout),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60),
            transport=transport,
            follow_redirects=False,
        )
        self.in_flight = 0
        self.cooldown_until = 0.0
        self._failures = 0
        self._slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

    @property
    def cooling_down(self) -> bool:
        return time.monotonic() < self.cooldown_until

    async def acquire(self) -> None:
        """Take a slot for one upstream request, waiting up to the queue timeout when the provider is at its cap."""
        if self._slots is not None:
            try:
                async with asyncio.timeout(self.config.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                retry_after = str(max(1, round(self.config.queue_timeout)))
                raise GatewayError(
                    503, f"The upstream provider {self.name!r} is at its concurrency limit.", "api_error",
                    "provider_busy", headers={"retry-after": retry_after},
                ) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    def succeeded(self) -> None:
        self._failures = 0

    def failed(self) -> None:
        self._failures += 1
        if self._failures >= self.config.max_failures:
            self._failures = 0
            self.cooldown_until = time.monotonic() + self.config.cooldown

    async def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: str | bytes | None = None,
        timeouts: Timeouts | None = None,
    ) -> httpx.Response:
        """Send a request and return the response with its body still unread."""
        timeouts = timeouts or self.config.timeout
        request = self.client.build_request(
            method, path.lstrip("/"), content=content, headers=headers, params=params, timeout=http_timeout(timeouts)
        )
        first_byte = min(timeouts.first_byte, timeouts.total or timeouts.first_byte)
        try:
            async with asyncio.timeout(first_byte):
                return await self.client.send(request, stream=True)
        except (TimeoutError, httpx.TimeoutException):
            raise GatewayError.upstream_timeout(self.name) from None
        except httpx.TransportError:
            raise GatewayError.upstream_unreachable(self.name) from None

    async def aclose(self) -> None:
        await self.client.aclose()


def http_timeout(timeouts: Timeouts) -> httpx.Timeout:
    return httpx.Timeout(connect=timeouts.connect, read=timeouts.read, write=timeouts.read, pool=timeouts.connect)
