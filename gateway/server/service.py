"""The running gateway: its parts, built once per process, and its lifecycle (start, drain, stop)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping

import httpx

from gateway.config import Config
from gateway.core.errors import ErrorKind, GatewayError
from gateway.sealing import Sealer, process_secret, secrets_of
from gateway.server.auth import Auth
from gateway.server.completions import Completions
from gateway.server.forwarder import Forwarder
from gateway.server.health import DeploymentHealth
from gateway.server.limits import Limiter
from gateway.server.metrics import Metrics
from gateway.server.native import NativeApis
from gateway.server.recent import Recent
from gateway.server.retries import RetryPolicy
from gateway.server.routing import Router
from gateway.server.stored import StoredResponses
from gateway.server.tracing import tracing_of
from gateway.state import create_store
from gateway.upstream.demo import DEMO_DELAY, DemoTransport
from gateway.upstream.provider import Provider

__all__ = ["Service"]


class Service:
    """One process's config, providers, state store and in-flight streams.

    ``transports`` replace the network for named providers (the demo, tests).
    """

    def __init__(self, config: Config, transports: Mapping[str, httpx.AsyncBaseTransport] | None = None) -> None:
        self.config = config
        self.metrics = Metrics()
        self.auth = Auth(config)
        server = config.server
        # Limits, leases and deployment health; a Redis store connects on first use, not here.
        self.store = create_store(
            server.state,
            server.state_failure,
            server.state_timeout,
            on_failure=lambda operation: self.metrics.state_failures.labels(operation).inc(),
            lease_seconds=server.slot_lease,
            pool_size=server.state_pool_size,
            queue_timeout=server.state_queue_timeout,
            password=server.state_password.get_secret_value() if server.state_password else None,
        )
        self.limits = Limiter(config, self.store, self.metrics)
        # Without a secret, sealed reasoning opens only in this process (gateway serve warns when that matters).
        sealer = Sealer(secrets_of(server, os.environ) or [process_secret()], config.responses.store_ttl)
        self.stored = StoredResponses(config, self.store, sealer)
        self.tracing = tracing_of(server)  # None: no collector named, nothing traced
        transports = {**_demo_transports(config), **(transports or {})}
        self.providers = {
            name: Provider(name, provider, transports.get(name), self.tracing)
            for name, provider in config.providers.items()
        }
        self.router = Router(config, self.providers, DeploymentHealth(self.store, config.providers))
        policy = RetryPolicy(config.server, self.router, self.metrics)
        self.native = NativeApis(config, self.router, policy)
        self.completions = Completions(config, policy, self.metrics)
        # The console's: its playground's answers (every route's reasoning shown), and the latest requests.
        self.playground = Completions(config.exposing_reasoning(), policy, self.metrics)
        self.recent = Recent()
        self.forwarder = Forwarder(self.router, policy, config.server.max_event_bytes)
        self.ready = False
        self.draining = False

    async def start(self) -> None:
        await self.store.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for provider in self.providers.values():
            await provider.aclose()
        await self.store.aclose()
        if self.tracing is not None:
            await asyncio.to_thread(self.tracing.shutdown)

    def drain(self, delay: float = 0.0) -> None:
        """Stop taking requests; streams still running ``delay`` plus the grace period later are ended
        with an error event (``delay``: how long until the server closes its listener)."""
        if self.draining:
            return
        self.draining = True
        self.ready = False
        loop = asyncio.get_running_loop()
        for completions in (self.completions, self.playground):
            loop.call_later(delay + self.config.server.shutdown_grace, completions.abort_streams, _CUT)

    def refuse_when_draining(self) -> None:
        """A 503 that sends the client elsewhere: retry later, and not on this connection."""
        if self.draining:
            message = "The gateway is shutting down."
            headers = {"retry-after": "1", "connection": "close"}
            raise GatewayError(ErrorKind.UNAVAILABLE, message, code="gateway_shutdown", headers=headers)


_CUT = "The gateway is shutting down; the answer was cut."


def _demo_transports(config: Config) -> dict[str, httpx.AsyncBaseTransport]:
    """The built-in demo model for each provider that says ``api: demo``: in process, nothing sent."""
    return {name: DemoTransport(DEMO_DELAY) for name, provider in config.providers.items() if provider.api == "demo"}
