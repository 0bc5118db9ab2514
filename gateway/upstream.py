"""Upstream providers: one pooled HTTP client each, and the headers that may cross."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from gateway.config import ProviderConfig
from gateway.errors import GatewayError

__all__ = ["HOP_BY_HOP", "Provider", "relayed_headers"]

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


def relayed_headers(headers: httpx.Headers) -> dict[str, str]:
    """The upstream response headers worth passing to the client of a rewritten answer."""
    return {
        name: value
        for name, value in headers.items()
        if name in _RELAYED or name.startswith("x-ratelimit-")
    }


class Provider:
    """An OpenAI-compatible upstream; its key is attached here and nowhere else."""

    def __init__(self, name: str, config: ProviderConfig, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.name = name
        headers = dict(config.headers)
        if config.api_key is not None:
            headers["authorization"] = f"Bearer {config.api_key.get_secret_value()}"
        timeout = config.timeout
        self.client = httpx.AsyncClient(
            base_url=config.base_url,
            headers=headers,
            timeout=httpx.Timeout(connect=timeout.connect, read=timeout.read, write=timeout.read, pool=timeout.connect),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=256, keepalive_expiry=60),
            transport=transport,
            follow_redirects=False,
        )

    async def send(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: str | bytes | None = None,
    ) -> httpx.Response:
        """Send a request and return the response with its body still unread."""
        request = self.client.build_request(method, path.lstrip("/"), content=content, headers=headers, params=params)
        try:
            return await self.client.send(request, stream=True)
        except httpx.TimeoutException:
            raise GatewayError.upstream_timeout(self.name) from None
        except httpx.TransportError:
            raise GatewayError.upstream_unreachable(self.name) from None

    async def aclose(self) -> None:
        await self.client.aclose()
