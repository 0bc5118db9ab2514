"""The operators' console: a page at ``/``, its script, and the JSON it reads, under ``server.admin_keys``.

The page and its script are static files of the package (``static/``), served
as they are: no build step. Everything they show comes from the JSON
endpoints below, each asking for an admin key (401 without one, 403 for a
client key): the routes, the client keys with their limits and what they used,
the deployments and their cool-downs, the recent requests (``Recent``, a ring
fed as each request is reported, with no content), and the playground, which
streams a route's answer through a chosen front door with its reasoning
shown (``Config.exposing_reasoning``): what the rewrite hides from clients.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

import orjson
from starlette.routing import Route

from gateway.config import ModelRoute
from gateway.core.errors import ErrorKind, GatewayError
from gateway.dialects import FRONT_DOORS, FrontDoor
from gateway.keys import KeyRegistry
from gateway.server.exchange import Endpoint, Incoming, Reply, json_reply
from gateway.server.offload import off_loop
from gateway.server.recent import CONSOLE_API, DOOR_NAMES, PLAYGROUND
from gateway.server.service import Service
from gateway.state.base import Observed

__all__ = ["Console", "console_routes", "page"]

# The front doors by the name the playground's <select> gives them.
_DOORS: Final[Mapping[str, FrontDoor[Any]]] = {
    name: next(door for door in FRONT_DOORS if door.path == path) for name, path in DOOR_NAMES.items()
}
_PLAYGROUND_MAX_TOKENS: Final = 1024


def _static(name: str) -> bytes:
    return resources.files("gateway.server").joinpath("static", name).read_bytes()


def page() -> Reply:
    """The console's page (HTML; its script is ``/console/console.js``)."""
    return Reply(200, {"content-type": "text/html; charset=utf-8", "cache-control": "no-cache"}, _static("index.html"))


async def script(incoming: Incoming) -> Reply:
    headers = {"content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache"}
    return Reply(200, headers, _static("console.js"))


def console_routes(service: Service) -> list[Route]:
    """The console's script and JSON endpoints (its page is ``/``'s, for a browser)."""
    console = Console(service)
    api = {
        "routes": console.routes,
        "keys": console.keys,
        "deployments": console.deployments,
        "requests": console.requests,
    }
    return [
        Route("/console/console.js", Endpoint(service, script), methods=["GET"]),
        *(Route(f"{CONSOLE_API}/{name}", Endpoint(service, handler), methods=["GET"]) for name, handler in api.items()),
        Route(PLAYGROUND, Endpoint(service, console.playground), methods=["POST"]),
    ]


class Console:
    """The console's JSON endpoints over one service."""

    def __init__(self, service: Service) -> None:
        self._service = service
        config = service.config
        self._admin = tuple(key.encode() for key in config.server.admin_keys)
        self._clients = KeyRegistry.from_config(config)

    def check(self, incoming: Incoming) -> None:
        """401 without an admin key (or with a key nobody knows), 403 for a client's key."""
        scheme, _, token = incoming.headers.get("authorization", "").partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        admin = False
        for key in self._admin:
            admin |= hmac.compare_digest(presented, key)
        if admin:
            return
        if presented and self._clients.resolve(presented.decode()) is not None:
            raise GatewayError(ErrorKind.FORBIDDEN, "This is a client key; the console takes an admin key.")
        hint = "" if self._admin else " This gateway has none: set server.admin_keys."
        raise GatewayError(ErrorKind.UNAUTHORIZED, f"Send an admin key as 'Authorization: Bearer <key>'.{hint}")

    async def routes(self, incoming: Incoming) -> Reply:
        self.check(incoming)
        config = self._service.config
        rows = [_route_row(route, config.providers) for route in config.models]
        return json_reply(orjson.dumps({"routes": rows}))

    async def keys(self, incoming: Incoming) -> Reply:
        self.check(incoming)
        clients = self._clients.clients
        seen = await self._service.store.observe({client.name: client.limits for client in clients})
        totals = _key_totals(self._service)
        rows = []
        for client in clients:
            limits = client.limits
            rows.append(
                {
                    "name": client.name,
                    "models": list(client.models),
                    "rpm": limits.rpm,
                    "tpm": limits.tpm,
                    "max_concurrency": limits.max_concurrency,
                    "budget": None if limits.budget is None else f"{limits.budget.tokens} per {limits.budget.period}",
                    **_used(seen.get(client.name)),
                    **totals.get(client.name, {"requests": 0, "tokens": 0}),
                }
            )
        return json_reply(orjson.dumps({"keys": rows}))

    async def deployments(self, incoming: Incoming) -> Reply:
        self.check(incoming)
        service = self._service
        names = list(service.providers)
        cooling = await service.store.cooling_down(names)
        rows = []
        for name, provider in service.providers.items():
            config = provider.config
            rows.append(
                {
                    "name": name,
                    "base_url": config.base_url if config.api != "demo" else "demo (in process)",
                    "in_flight": provider.in_flight,
                    "max_concurrency": config.max_concurrency,
                    "max_failures": config.max_failures,
                    "cooldown": config.cooldown,
                    "cooling_down_s": round(cooling[name], 1) if name in cooling else None,
                }
            )
        return json_reply(orjson.dumps({"deployments": rows}))

    async def requests(self, incoming: Incoming) -> Reply:
        self.check(incoming)
        seen = incoming.query.partition("since=")[2].partition("&")[0]
        rows = self._service.recent.since(int(seen) if seen.isdigit() else 0)
        return json_reply(orjson.dumps({"requests": rows}))

    async def playground(self, incoming: Incoming) -> Reply:
        """The answer of a route through a door, streamed as that door's clients get it, reasoning shown."""
        self.check(incoming)
        service, record = self._service, incoming.record
        asked = _playground_request(await incoming.body(service.config.server.max_body_bytes))
        door_name, route_name, prompt = asked
        door = _DOORS[door_name]
        route = service.router.route(route_name)
        body = orjson.dumps(_door_body(door_name, route_name, prompt))
        parsed = await off_loop(len(body), door.dialect.parse_request, body)
        record.model, record.route = route_name, route.name
        ticket = await service.limits.admit(None, record)  # the operator's: no client key's limits
        answer = await service.playground.answer(door.dialect, parsed, len(body), route, record, ticket)
        headers = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        if answer.relay is None:
            await ticket.settle()
            return json_reply(answer.body)
        return Reply(
            200, {**headers, "x-gateway-route": record.route}, stream=answer.relay.body(), done=answer.relay.close
        )


# A provider's ``api`` as the console names it.
_WIRES: Final = {"chat": "chat completions", "responses": "Responses", "anthropic": "Messages", "demo": "demo"}


def _route_row(route: ModelRoute, providers: Mapping[str, Any]) -> dict[str, Any]:
    rewrite = route.rewrite
    wires = {
        _WIRES[providers[name].api] + (" (Responses native)" if providers[name].responses == "native" else "")
        for name in route.providers
    }
    return {
        "name": route.name,
        "providers": list(route.providers),
        "model": route.model or "(as asked)",
        "wire": ", ".join(sorted(wires)),
        "rewrite": "none (pass-through)"
        if rewrite is None
        else "agent"
        if rewrite.inject_tools
        else "agent (no tools)",
        "inner_thoughts": None if rewrite is None else rewrite.inner_thoughts,
        "reasoning": "shown" if rewrite is None else ("shown" if rewrite.reasoning == "expose" else "hidden"),
        "think_tags": [] if rewrite is None else [f"{opening}…{closing}" for opening, closing in rewrite.think_tags],
        "fallbacks": list(route.fallbacks),
        "max_retries": route.max_retries,
    }


def _used(seen: Observed | None) -> dict[str, int | None]:
    """What a key has used of each limit it has, read from the shared state now (None: no such limit, or the
    state cannot be read)."""
    if seen is None:
        seen = Observed(0.0)
    return {
        "requests_this_minute": None if seen.requests is None else seen.requests.used,
        "tokens_this_minute": None if seen.tokens is None else seen.tokens.used,
        "budget_used": seen.budget_spent,
        "in_flight": seen.slots_held,
    }


def _key_totals(service: Service) -> dict[str, dict[str, int]]:
    """Requests and tokens of each key since this process started, from its metrics."""
    totals: dict[str, dict[str, int]] = {}
    for metric, field in ((service.metrics.key_requests, "requests"), (service.metrics.key_tokens, "tokens")):
        for family in metric.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    row = totals.setdefault(sample.labels["key"], {"requests": 0, "tokens": 0})
                    row[field] += int(sample.value)
    return totals


def _playground_request(body: bytes) -> tuple[str, str, str]:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        data = None
    if not isinstance(data, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "Expected a JSON object with door, route and prompt.")
    door, route, prompt = data.get("door"), data.get("route"), data.get("prompt")
    if not isinstance(door, str) or door not in _DOORS:
        message = f"door: expected one of {', '.join(_DOORS)}."
        raise GatewayError(ErrorKind.INVALID_REQUEST, message, param="door")
    if not isinstance(route, str) or not route:
        raise GatewayError(ErrorKind.INVALID_REQUEST, "route: expected a route's name.", param="route")
    if not isinstance(prompt, str) or not prompt.strip():
        raise GatewayError(ErrorKind.INVALID_REQUEST, "prompt: expected some text.", param="prompt")
    return door, route, prompt


def _door_body(door: str, model: str, prompt: str) -> dict[str, Any]:
    """The streaming request a stock client of ``door`` would send with one user message."""
    if door == "responses":
        return {"model": model, "input": prompt, "stream": True}
    message = {"role": "user", "content": prompt}
    if door == "messages":
        return {"model": model, "max_tokens": _PLAYGROUND_MAX_TOKENS, "messages": [message], "stream": True}
    return {"model": model, "messages": [message], "stream": True}
