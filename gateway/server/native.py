"""Pass-through: a front door's request where nothing needs translating, relayed to providers of the door's API.

That is a plain route (no rewrite: nothing in the answer to hide or change) whose deployments, its
fallbacks' included, all speak the door's own API: a Messages client on ``api: anthropic`` providers, a
Responses client on ``api: responses`` providers or on chat providers that say ``responses: native``.
The request goes as the client sent it but for the model name (each route's upstream model), and the
provider's answer comes back byte for byte. Limits, metrics and the access log apply as to every
request: the key is charged the usage the answer reports (``Ticket.forwarded``). A failure another
attempt may mend (408, 429, 5xx, 529, a connection or deadline that fails) is retried and failed over as
a translated request's is, since nothing has reached the client yet; the last one's status and body reach
the client as the provider sent them, in the client's API already.

An ``api: responses`` provider keeps no state (translated requests reach it with ``store: false``), so only
a request that needs none of the gateway's is passed to it: ``store: false``, no ``previous_response_id``,
no ``conversation``, no ``item_reference``; any other is translated and stored by the gateway. A
``responses: native`` provider keeps its own state, so every request is passed to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from gateway.config import Config, ModelRoute
from gateway.core import forwarding, json_body
from gateway.core.errors import GatewayError
from gateway.core.wires import WIRES
from gateway.server.forwarder import Forwarded, raw_body
from gateway.server.metrics import RequestRecord
from gateway.server.retries import RetryPolicy
from gateway.server.routing import Router
from gateway.upstream.provider import RETRYABLE_STATUS, Provider, UpstreamResponse

__all__ = ["Native", "NativeApis"]

_JSON: Final = {"content-type": "application/json"}


@dataclass(frozen=True, slots=True)
class Native:
    """A request to pass through: its route, the model the client named, its body, and the path of its API."""

    route: ModelRoute
    model: str
    payload: Mapping[str, Any]
    path: str


def _needs_state(payload: Mapping[str, Any]) -> bool:
    """Whether a Responses request asks for stored state: its own kept, or earlier turns looked up."""
    if payload.get("store") is not False or payload.get("previous_response_id") or payload.get("conversation"):
        return True
    items = payload.get("input")
    return isinstance(items, list) and any(
        isinstance(item, Mapping) and item.get("type") == "item_reference" for item in items
    )


class NativeApis:
    """Which requests are passed through, and their sending."""

    def __init__(self, config: Config, router: Router, policy: RetryPolicy) -> None:
        providers = config.providers.items()
        stateful = frozenset(name for name, p in providers if p.responses == "native")
        self._speakers = {
            "responses": stateful | {name for name, p in providers if p.api == "responses"},
            "anthropic": frozenset(name for name, p in providers if p.api == "anthropic"),
        }
        self.stateful_responses = stateful
        """Providers that keep the Responses API's state themselves: an id the gateway does not hold may be theirs."""
        self._router = router
        self._policy = policy

    def target(self, api: str, body: bytes) -> Native | None:
        """The request to pass through, if ``body`` (to a door of ``api``) needs nothing translated."""
        speakers = self._speakers.get(api)
        if not speakers:
            return None
        payload = json_body.loads(body)
        model = payload.get("model") if isinstance(payload, dict) else None
        if not isinstance(model, str):
            return None
        route = self._router.route(model)
        chain = list(self._router.chain(route))
        if any(r.rewrite is not None or not speakers.issuperset(r.providers) for r in chain):
            return None
        assert isinstance(payload, dict)
        stateless = not (api == "responses" and _needs_state(payload))
        if not stateless and not all(self.stateful_responses.issuperset(r.providers) for r in chain):
            return None
        return Native(route, model, payload, WIRES[api].path)

    async def send(self, native: Native, client: Iterable[tuple[str, str]], record: RequestRecord) -> Forwarded:
        """The first answer that is not a failure to retry, or the last failure as the provider sent it."""
        sent = 0
        client = list(client)

        async def attempt(route: ModelRoute, provider: Provider) -> UpstreamResponse:
            nonlocal sent
            record.upstream_model = route.upstream_model(native.model)
            body = json_body.dumps({**native.payload, "model": record.upstream_model})
            sent = len(body)
            outgoing = forwarding.request_headers(client, provider.config.forward_headers)
            outgoing["x-request-id"] = record.request_id
            upstream = await provider.call("POST", native.path, content=body, headers=outgoing)
            if upstream.status in RETRYABLE_STATUS:
                raise await upstream.error()
            return upstream

        try:
            upstream = await self._policy.run(native.route, attempt, record)
        except GatewayError as error:
            if error.upstream_bytes is None:
                raise  # not the provider's words (a deadline, a refused connection): the door's error
            return Forwarded(error.status, {**error.headers, **_JSON}, _once(error.upstream_bytes), sent)
        headers = forwarding.response_headers(upstream.headers.items())
        return Forwarded(upstream.status, headers, raw_body(upstream), sent)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
