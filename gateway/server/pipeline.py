"""One request pipeline: the prologue every request that reaches a provider goes through, once.

The client's key is checked, a draining gateway refuses, the body is read
(413 past the limit), the request's target is found (its route and the model
the client named), the key is permitted that route and admitted under its
limits. Each handler says only how it finds its target and what it does once
admitted; its ``Endpoint`` (``exchange``) answers any ``GatewayError`` on its
way in the shape of the handler's front door.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from gateway.config import ModelRoute
from gateway.core.errors import ErrorKind, GatewayError
from gateway.keys import ClientKey
from gateway.server.exchange import Handler, Incoming, Reply
from gateway.server.limits import Ticket
from gateway.server.metrics import RequestRecord
from gateway.server.service import Service

__all__ = ["Admitted", "Target", "admit", "admitted", "client_of", "only_post"]

logger = logging.getLogger("gateway")

T = TypeVar("T")


class Target(Protocol):
    """Where a request goes: its route (None for a forwarded request that names none) and the model it named."""

    @property
    def route(self) -> ModelRoute | None: ...

    @property
    def model(self) -> str | None: ...


TargetT = TypeVar("TargetT", bound=Target)


@dataclass(frozen=True, slots=True)
class Admitted(Generic[TargetT]):
    """A request past the prologue: its target, the ticket its limits hold, and its body's size."""

    service: Service
    record: RequestRecord
    target: TargetT
    ticket: Ticket
    size: int


def client_of(incoming: Incoming, *, x_api_key: bool = False) -> ClientKey | None:
    """The request's client key (401 without a valid one, when the config names keys), noted in its record."""
    client = incoming.service.auth.check(incoming.headers, x_api_key=x_api_key)
    incoming.record.key = client.name if client is not None else None
    return client


async def admit(
    incoming: Incoming, target_of: Callable[[Service, bytes], Awaitable[TargetT]], *, x_api_key: bool = False
) -> Admitted[TargetT]:
    """The prologue, in its one order; ``target_of`` reads the body into the request's target."""
    service, record = incoming.service, incoming.record
    client = client_of(incoming, x_api_key=x_api_key)
    service.refuse_when_draining()
    body = await incoming.body(service.config.server.max_body_bytes)
    target = await target_of(service, body)
    record.model = target.model
    if target.route is not None:
        record.route = target.route.name
    service.limits.permit(client, target.route, target.model)
    if service.config.server.log_content and logger.isEnabledFor(logging.DEBUG):
        # The operator's explicit choice (server.log_content); never the default.
        fields = {"request_id": record.request_id, "body": body.decode("utf-8", "replace")}
        logger.debug("request content", extra={"fields": fields})
    ticket = await service.limits.admit(client, record)
    return Admitted(service, record, target, ticket, len(body))


async def admitted(work: Awaitable[T], ticket: Ticket) -> T:
    """An admitted request's work; when it fails, its ticket is settled and the error carries its rate-limit headers."""
    try:
        return await work
    except BaseException as exc:
        await ticket.settle()
        if isinstance(exc, GatewayError):
            exc.headers.update(ticket.headers)
        raise


def only_post(handler: Handler) -> Handler:
    """A door the gateway owns, asked with another method: 405, with ``Allow``, in that door's own shape."""

    async def handle(incoming: Incoming) -> Reply:
        if incoming.method != "POST":
            message = f"{incoming.path} takes POST, not {incoming.method}."
            raise GatewayError(ErrorKind.METHOD_NOT_ALLOWED, message, headers={"allow": "POST"})
        return await handler(incoming)

    return handle
