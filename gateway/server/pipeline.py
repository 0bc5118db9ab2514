"""One request pipeline: the prologue every request that reaches a provider goes through, once.

The client's key is checked, a draining gateway refuses, the body is read
(413 past the limit), the request's target is found (its route and the model
the client named), the key is permitted that route and admitted under its
limits. Each handler says only how it finds its target and what it does once
admitted; ``in_dialect`` answers any ``GatewayError`` on its way in the
shape of the handler's front door.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from gateway.config import ModelRoute
from gateway.core.errors import ErrorKind, GatewayError
from gateway.dialects import ErrorShape, dialect_of
from gateway.keys import ClientKey
from gateway.server.access import record_of
from gateway.server.limits import Ticket
from gateway.server.metrics import RequestRecord
from gateway.server.service import Service

__all__ = [
    "Admitted",
    "Handler",
    "Target",
    "admit",
    "admitted",
    "client_of",
    "error_response",
    "in_dialect",
    "only_post",
    "service_of",
]

logger = logging.getLogger("gateway")

T = TypeVar("T")
Handler = Callable[[Request], Awaitable[Response]]


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


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


def client_of(
    service: Service, request: Request, record: RequestRecord, *, x_api_key: bool = False
) -> ClientKey | None:
    """The request's client key (401 without a valid one, when the config names keys), noted in its record."""
    client = service.auth.check(request.headers, x_api_key=x_api_key)
    record.key = client.name if client is not None else None
    return client


async def admit(
    request: Request, target_of: Callable[[Service, bytes], Awaitable[TargetT]], *, x_api_key: bool = False
) -> Admitted[TargetT]:
    """The prologue, in its one order; ``target_of`` reads the body into the request's target."""
    service = service_of(request)
    record = record_of(request.scope)
    client = client_of(service, request, record, x_api_key=x_api_key)
    service.refuse_when_draining()
    body = await read_body(request, service.config.server.max_body_bytes)
    target = await target_of(service, body)
    if target.route is not None:
        record.route = target.route.name
    service.limits.permit(client, target.route, target.model)
    if service.config.server.log_content and logger.isEnabledFor(logging.DEBUG):
        # The operator's explicit choice (server.log_content); never the default.
        fields = {"request_id": record.request_id, "body": body.decode("utf-8", "replace")}
        logger.debug("request content", extra={"fields": fields})
    ticket = await service.limits.admit(client, record)
    return Admitted(service, record, target, ticket, len(body))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds the limit."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        raise _too_large(limit)
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
    return b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(ErrorKind.TOO_LARGE, f"The request body exceeds the limit of {limit} bytes.")


async def admitted(work: Awaitable[T], ticket: Ticket) -> T:
    """An admitted request's work; when it fails, its ticket is settled and the error carries its rate-limit headers."""
    try:
        return await work
    except BaseException as exc:
        await ticket.settle()
        if isinstance(exc, GatewayError):
            exc.headers.update(ticket.headers)
        raise


def in_dialect(handler: Handler, dialect: ErrorShape | None = None) -> Handler:
    """``handler``, with every ``GatewayError`` it meets answered in ``dialect``'s shape (by default, the shape
    the request path's clients read: ``dialect_of``)."""

    async def handle(request: Request) -> Response:
        try:
            return await handler(request)
        except GatewayError as error:
            return error_response(dialect or dialect_of(request.url.path), error)

    return handle


def error_response(dialect: ErrorShape, error: GatewayError) -> Response:
    status, body = dialect.error_status_and_body(error)
    return Response(body, status, error.headers, media_type="application/json")


def only_post(handler: Handler) -> Handler:
    """A door the gateway owns, asked with another method: 405, with ``Allow``, in that door's own shape."""

    async def handle(request: Request) -> Response:
        if request.method != "POST":
            message = f"{request.url.path} takes POST, not {request.method}."
            raise GatewayError(ErrorKind.METHOD_NOT_ALLOWED, message, headers={"allow": "POST"})
        return await handler(request)

    return handle
