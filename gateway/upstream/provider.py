"""Upstream providers: one connection pool each, the one path every upstream request takes, and what crosses back.

Every request to a provider, a completion on any front door or a forwarded
``/v1/*`` request, goes through ``Provider.call``: it takes a slot (so
``max_concurrency``, the in-flight count that balancing reads, and the
queue apply to all of them), attaches the provider's key and headers, and
hands back an ``UpstreamResponse`` whose closing gives the slot back.
"""

from __future__ import annotations

import asyncio
import email.utils
import functools
import time
import urllib.request
from collections.abc import AsyncIterator, Mapping

import httpx
import orjson

from gateway import __version__
from gateway.config import ProviderConfig, Timeouts
from gateway.core.errors import ErrorKind, GatewayError
from gateway.server.tracing import Attempt, Tracing
from gateway.upstream.transport import Http1Transport

__all__ = [
    "ANTHROPIC_VERSION",
    "FAILURES",
    "RETRYABLE_STATUS",
    "Provider",
    "UpstreamResponse",
    "client_headers",
    "failure",
    "retry_after",
]

# 529: Anthropic's overloaded_error.
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504, 529})

# The Messages API version an ``api: anthropic`` provider is called with, unless its ``headers`` say another.
ANTHROPIC_VERSION = "2023-06-01"

FAILURES = (TimeoutError, httpx.TransportError)
"""What reaching a provider can raise: a deadline passed, or the connection failed (``failure`` says which)."""


def failure(provider: str, error: BaseException) -> GatewayError:
    """A timeout or a broken connection to ``provider``, as the gateway reports it: retryable either way."""
    if isinstance(error, (TimeoutError, httpx.TimeoutException)):
        return GatewayError(ErrorKind.TIMEOUT, f"The upstream provider {provider!r} timed out.", retryable=True)
    message = f"The upstream provider {provider!r} could not be reached."
    return GatewayError(ErrorKind.UNREACHABLE, message, retryable=True)


# Idle keep-alive connections kept per provider, and how long each is kept, whichever transport holds them.
_MAX_IDLE = 256
_KEEPALIVE_EXPIRY = 60.0

# Upstream response headers a client uses: request ids, timing and rate limits.
_RELAYED = frozenset({"x-request-id", "openai-processing-ms", "openai-version", "retry-after", "retry-after-ms"})


def client_headers(upstream: httpx.Headers) -> dict[str, str]:
    """Upstream response headers for a completion's client: the ones clients use.

    The provider's request id comes back as ``x-upstream-request-id`` and its rate-limit headers as
    ``x-upstream-ratelimit-*``: ``x-request-id`` and ``x-ratelimit-*`` are the gateway's own.
    """
    headers = {}
    for name, value in upstream.items():
        if name in _RELAYED:
            headers[name] = value
        elif name.startswith("x-ratelimit-"):
            headers["x-upstream-" + name[2:]] = value
    upstream_id = headers.pop("x-request-id", None)
    if upstream_id is not None:
        headers["x-upstream-request-id"] = upstream_id
    return headers


class UpstreamResponse:
    """An upstream answer with its body still to read; closing it gives the provider's slot back, once."""

    __slots__ = ("_provider", "_response", "_closed", "_attempt")

    def __init__(self, response: httpx.Response, provider: Provider, attempt: Attempt | None = None) -> None:
        self._response = response
        self._provider = provider
        self._closed = False
        self._attempt = attempt  # its client span ends with it

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> httpx.Headers:
        return self._response.headers

    def reads(self) -> AsyncIterator[bytes]:
        """The body as it arrives. The gateway asks for no encoding, so reads are taken as they come, from the
        transport's own stream (``aiter_raw``'s re-chunking and bookkeeping cost once per read, for nothing
        here); an upstream that compresses anyway is decompressed."""
        response = self._response
        if "content-encoding" in response.headers:
            return response.aiter_bytes()
        stream = response.stream
        return aiter(stream) if isinstance(stream, httpx.AsyncByteStream) else response.aiter_raw()

    def raw_reads(self) -> AsyncIterator[bytes]:
        """The body exactly as it came, encoding and all (for forwarded requests)."""
        return self._response.aiter_raw()

    async def read(self) -> bytes:
        return await self._response.aread()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._response.aclose()
        finally:
            self._provider.release()
            if self._attempt is not None:
                self._attempt.end()

    async def error(self) -> GatewayError:
        """The error an upstream error status becomes: its status kept, and its body when it is an OpenAI error."""
        try:
            body = await self.read()
        except httpx.HTTPError:
            body = b""
        finally:
            await self.aclose()
        status = self.status
        headers = client_headers(self.headers)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        retryable = status in RETRYABLE_STATUS
        name = self._provider.name
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            message = data["error"].get("message")
            message = message if isinstance(message, str) else f"The upstream provider {name!r} answered {status}."
            return GatewayError(
                ErrorKind.UPSTREAM_STATUS,
                message,
                status=status,
                headers=headers,
                retryable=retryable,
                upstream=data,
                upstream_bytes=body,
            )
        detail = body.decode("utf-8", "replace").strip()[:500] or self._response.reason_phrase
        message = f"The upstream provider {name!r} answered {status}: {detail}"
        return GatewayError(ErrorKind.UPSTREAM_STATUS, message, status=status, headers=headers, retryable=retryable)


class Provider:
    """An upstream deployment; its key is attached here and nowhere else (as Anthropic's ``x-api-key`` header on an
    ``api: anthropic`` provider, else as a bearer token).

    It also keeps what request routing needs of this process: requests in
    flight and an optional cap on them. Failures and cool-downs are shared by
    every worker (``gateway.server.health``).
    """

    def __init__(
        self,
        name: str,
        config: ProviderConfig,
        transport: httpx.AsyncBaseTransport | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.name = name
        self.config = config
        self._base_url = config.base_url.rstrip("/")
        self._below_base = httpx.URL(self._base_url).raw_path.rstrip(b"/") + b"/"
        self._headers = {"user-agent": f"agent-gateway/{__version__}"}
        if config.api == "anthropic":
            self._headers["anthropic-version"] = ANTHROPIC_VERSION
        self._headers.update((key.lower(), value) for key, value in config.headers.items())
        if config.api_key is not None:
            secret = config.api_key.get_secret_value()
            if config.api == "anthropic":
                self._headers["x-api-key"] = secret
            else:
                self._headers["authorization"] = f"Bearer {secret}"
        self._transport = transport or network_transport(config)
        self._tracing = tracing
        self._traced_base = httpx.URL(self._base_url).copy_with(username=None, password=None, query=None)
        self.in_flight = 0
        self._slots = asyncio.Semaphore(config.max_concurrency) if config.max_concurrency else None

    async def call(
        self,
        method: str,
        path: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        query: str = "",
        timeouts: Timeouts | None = None,
    ) -> UpstreamResponse:
        """Send one request in a slot of this provider; the answer's body is still to read.

        ``path`` and ``query`` are appended to the base URL as they are, percent-encoding kept; a
        URL that would not stay below the base URL is refused. The provider's own headers win over
        ``headers``. Traced, the request is a client span and carries its ``traceparent``.
        """
        await self._acquire()
        attempt = None
        if self._tracing is not None:
            attempt = self._tracing.attempt(self.name, method, self._traced_base, path)
            headers = {**(headers or {}), "traceparent": attempt.traceparent}
        try:
            response = await self._send(method, path, content, headers, query, timeouts or self.config.timeout)
        except BaseException as error:
            self.release()
            if attempt is not None:
                attempt.failed(error)
            raise
        if attempt is not None:
            attempt.answered(response.status_code)
        return UpstreamResponse(response, self, attempt)

    async def _acquire(self) -> None:
        """Take a slot, waiting up to the queue timeout when the provider is at its cap."""
        if self._slots is not None:
            try:
                async with asyncio.timeout(self.config.queue_timeout):
                    await self._slots.acquire()
            except TimeoutError:
                retry = str(max(1, round(self.config.queue_timeout)))
                message = f"The upstream provider {self.name!r} is at its concurrency limit."
                raise GatewayError(ErrorKind.BUSY, message, headers={"retry-after": retry}, retryable=True) from None
        self.in_flight += 1

    def release(self) -> None:
        self.in_flight -= 1
        if self._slots is not None:
            self._slots.release()

    async def _send(
        self,
        method: str,
        path: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        query: str,
        timeouts: Timeouts,
    ) -> httpx.Response:
        # httpx's client layer (cookies, redirects, auth hooks) is skipped: a proxy needs none of
        # it, and a cookie jar shared by every client of the gateway would be a leak.
        url = _url(f"{self._base_url}/{path.lstrip('/')}{'?' + query if query else ''}")
        if not url.raw_path.startswith(self._below_base):
            message = "The path cannot be forwarded: it leaves the provider's base URL."
            raise GatewayError(ErrorKind.INVALID_REQUEST, message, code="invalid_path")
        # `read` also bounds how long the upstream may take none of the request's bytes; `pool` is how long a
        # request waits for a connection when the provider is at max_connections, like a slot's queue_timeout.
        pool = self.config.queue_timeout
        timeout = {"connect": timeouts.connect, "read": timeouts.read, "write": timeouts.read, "pool": pool}
        request = httpx.Request(
            method, url, headers={**(headers or {}), **self._headers}, content=content, extensions={"timeout": timeout}
        )
        first_byte = min(timeouts.first_byte, timeouts.total or timeouts.first_byte)
        try:
            async with asyncio.timeout(first_byte):
                response = await self._transport.handle_async_request(request)
        except httpx.PoolTimeout:
            # The gateway's own cap, not the provider's failure: nothing was sent, so another attempt (another
            # deployment, or this one a moment later) may well succeed. Like a full max_concurrency: 503, retry-after.
            retry = str(max(1, round(pool)))
            message = f"The upstream provider {self.name!r} is at its connection limit (max_connections)."
            raise GatewayError(ErrorKind.BUSY, message, headers={"retry-after": retry}, retryable=True) from None
        except FAILURES as exc:
            raise failure(self.name, exc) from None
        response.request = request
        return response

    async def aclose(self) -> None:
        await self._transport.aclose()


def retry_after(headers: Mapping[str, str]) -> float | None:
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


@functools.lru_cache(maxsize=1024)
def _url(text: str) -> httpx.URL:
    """Parsed once per distinct URL: httpx's parsing costs more than the rest of a request's setup."""
    return httpx.URL(text)


def network_transport(config: ProviderConfig) -> httpx.AsyncBaseTransport:
    """The gateway's own transport, or httpx's when the config asks for it or the environment routes this
    URL through a proxy; both with the same connection cap and keep-alive."""
    url = httpx.URL(config.base_url)
    proxies = urllib.request.getproxies()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if proxy and urllib.request.proxy_bypass(url.host):
        proxy = None
    if config.transport == "httpx" or proxy:
        limits = httpx.Limits(
            max_connections=config.max_connections,
            max_keepalive_connections=min(_MAX_IDLE, config.max_connections),
            keepalive_expiry=_KEEPALIVE_EXPIRY,
        )
        return httpx.AsyncHTTPTransport(proxy=proxy, limits=limits)
    return Http1Transport(
        max_connections=config.max_connections, max_idle=_MAX_IDLE, keepalive_expiry=_KEEPALIVE_EXPIRY
    )
