"""Routing: from a requested model to a route, and from a route to the deployment to try next."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

from gateway.config import Config, ModelRoute
from gateway.core.errors import ErrorKind, GatewayError
from gateway.server.health import DeploymentHealth
from gateway.upstream.provider import Provider

__all__ = ["Router"]


class Router:
    """The config's routes over this process's providers."""

    def __init__(self, config: Config, providers: dict[str, Provider], health: DeploymentHealth) -> None:
        self.config = config
        self.providers = providers
        # Which deployments are cooling down; ``health.refresh(route.providers)`` before ``pick`` keeps it current.
        self.health = health
        self._turn = itertools.count()

    def route(self, model: str) -> ModelRoute:
        route = self.config.route(model)
        if route is None:
            message = f"The model {model!r} does not exist or you do not have access to it."
            raise GatewayError(ErrorKind.NOT_FOUND, message, param="model", code="model_not_found")
        return route

    def chain(self, route: ModelRoute) -> Iterator[ModelRoute]:
        """The route, then its fallbacks in order."""
        yield route
        for name in route.fallbacks:
            yield self.config.route_named(name)

    def pick(self, route: ModelRoute, tried: set[str]) -> Provider:
        """The deployment to try: not cooling down, not yet tried, fewest requests in flight; ties rotate."""
        names = route.providers
        start = next(self._turn) % len(names)
        candidates = [self.providers[name] for name in names[start:] + names[:start]]
        cooling_down = self.health.cooling_down
        return min(candidates, key=lambda p: (cooling_down(p.name), p.name in tried, p.in_flight))
