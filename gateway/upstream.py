"""Upstream providers: one connection pool each, and the headers that may cross."""

from __future__ import annotations

import asyncio
import functools
import time
import urllib.request
from collections.abc import Mapping

import httpx

from gateway import __version__
from gateway.config import ProviderConfig, Timeouts
from gateway.errors import GatewayError
from gateway.transport import Http1Transport

__all__ = ["Provider", "client_headers"]

# Upstream response headers a client uses: request ids, timing and rate limits.
_RELAYED = frozenset({"x-request-id", "openai-processing-ms", "openai-version", "retry-after", "retry-after-ms"})


def client_headers(upstream: httpx.Headers) -> dict[str, str]:
    """Upstream response headers for a chat completion's client: the ones clients use.

    The provider's request id comes back as ``x-upstream-request-id``: ``x-request-id`` is the gateway's own.
    """
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
        self._base_url = config.base_url.rstrip("/")
        self._below_base = httpx.URL(self._base_url).raw_path.rstrip(b"/") + b"/"
        self._headers = {"user-agent": f"agent-gateway/{__version__}"}
        self._headers.update((key.lower(), value) for key, value in config.headers.items())
        if config.api_key is not None:
            self._headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        self._transport = transport or network_transport(self._base_url)
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
        query: str = "",
        timeouts: Timeouts | None = None,
    ) -> httpx.Response:
        """Send a request and return the response with its body still unread.

        ``path`` and ``query`` are appended to the base URL as they are, percent-encoding kept; a
        URL that would not stay below the base URL is refused. The provider's own headers win over
        ``headers``. httpx's client layer (cookies, redirects, auth hooks) is skipped: a proxy needs
        none of it, and a cookie jar shared by every client of the gateway would be a leak.
        """
        timeouts = timeouts or self.config.timeout
        url = _url(f"{self._base_url}/{path.lstrip('/')}{'?' + query if query else ''}")
        if not url.raw_path.startswith(self._below_base):
            raise GatewayError(400, "The path cannot be forwarded: it leaves the provider's base URL.", code="invalid_path")
        extensions = {"timeout": {"connect": timeouts.connect, "read": timeouts.read, "write": timeouts.read, "pool": timeouts.connect}}
        request = httpx.Request(method, url, headers={**(headers or {}), **self._headers}, content=content, extensions=extensions)
        first_byte = min(timeouts.first_byte, timeouts.total or timeouts.first_byte)
        try:
            async with asyncio.timeout(first_byte):
                response = await self._transport.handle_async_request(request)
        except (TimeoutError, httpx.TimeoutException):
            raise GatewayError.upstream_timeout(self.name) from None
        except httpx.TransportError:
            raise GatewayError.upstream_unreachable(self.name) from None
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """Parsed once per distinct URL: httpx's parsing costs more than the rest of a request's setup."""
    return httpx.URL(text)


def network_transport(base_url: str) -> httpx.AsyncBaseTransport:
    """The gateway's own transport, or httpx's when the environment routes this URL through a proxy."""
    url = httpx.URL(base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and not urllib.request.proxy_bypass(url.host):
        return httpx.AsyncHTTPTransport(proxy=proxy)
    return Http1Transport()
