"""One request in, one reply out, on plain ASGI: what every gateway endpoint is written against.

A handler takes an ``Incoming`` (the ASGI scope and receive, with the
headers decoded once) and returns a ``Reply``, whole or streamed; it never
builds an HTTP response. An ``Endpoint`` runs a handler and writes its
reply straight to the server, and answers every failure in the shape its
clients read: a ``GatewayError`` in the endpoint's dialect, a client that
left as 499 (for the access log), anything else as a 500 that closes the
connection. Endpoints are ASGI callables, so the hot path (``hotpath``)
calls them directly and Starlette routes to the rest of them alike.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass

from starlette.types import Receive, Scope, Send

from gateway.core.errors import ErrorKind, GatewayError
from gateway.dialects import ErrorShape, dialect_of
from gateway.server.access import record_of, send_noted
from gateway.server.metrics import RequestRecord
from gateway.server.service import Service
from gateway.server.streaming import until_disconnected

__all__ = [
    "ClientGone",
    "Endpoint",
    "Handler",
    "Incoming",
    "Reply",
    "error_reply",
    "internal_error",
    "json_reply",
    "write",
]

logger = logging.getLogger("gateway")

_JSON = "application/json"


class ClientGone(Exception):
    """The client left (or was cut off as too slow) before its request body was read: nobody to answer."""


class Incoming:
    """A request as handlers read it: its scope, its headers (the first value of each name), its body."""

    __slots__ = ("scope", "receive", "service", "record", "headers")

    def __init__(self, scope: Scope, receive: Receive, service: Service, record: RequestRecord) -> None:
        self.scope = scope
        self.receive = receive
        self.service = service
        self.record = record
        headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            key = name.decode("latin-1")
            if key not in headers:
                headers[key] = value.decode("latin-1")
        self.headers: Mapping[str, str] = headers

    @property
    def method(self) -> str:
        method: str = self.scope["method"]
        return method

    @property
    def path(self) -> str:
        path: str = self.scope["path"]
        return path

    @property
    def query(self) -> str:
        query: bytes = self.scope["query_string"]
        return query.decode("latin-1")

    def header_items(self) -> list[tuple[str, str]]:
        """Every header as sent, repeated names included (what forwarding filters)."""
        return [(name.decode("latin-1"), value.decode("latin-1")) for name, value in self.scope["headers"]]

    async def body(self, limit: int) -> bytes:
        """The request body, refused with 413 as soon as it exceeds ``limit``."""
        length = self.headers.get("content-length", "")
        if length.isdigit() and int(length) > limit:
            raise _too_large(limit)
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientGone
            part: bytes = message.get("body", b"")
            size += len(part)
            if size > limit:
                raise _too_large(limit)
            parts.append(part)
            if not message.get("more_body", False):
                return b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(ErrorKind.TOO_LARGE, f"The request body exceeds the limit of {limit} bytes.")


@dataclass(slots=True)
class Reply:
    """What a handler answers: a status, headers (``content-type`` among them) and a whole body or a stream.

    ``done`` runs once the reply is over, sent or abandoned (a stream's close, a ticket's settling).
    """

    status: int
    headers: Mapping[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    done: Callable[[], Awaitable[None]] | None = None


Handler = Callable[[Incoming], Awaitable[Reply]]


def json_reply(body: bytes, headers: Mapping[str, str] | None = None, status: int = 200) -> Reply:
    return Reply(status, {**(headers or {}), "content-type": _JSON}, body)


def internal_error() -> GatewayError:
    """What a failure the gateway did not foresee is answered with; the connection is not kept."""
    return GatewayError(
        ErrorKind.INTERNAL, "The gateway failed to handle the request.", headers={"connection": "close"}
    )


def error_reply(dialect: ErrorShape, error: GatewayError) -> Reply:
    status, body = dialect.error_status_and_body(error)
    return json_reply(body, error.headers, status)


class Endpoint:
    """A handler as an ASGI app: every failure answered in ``dialect``'s shape (by default, the shape the
    request path's clients read: ``dialect_of``)."""

    __slots__ = ("_service", "_handler", "_dialect")

    def __init__(self, service: Service, handler: Handler, dialect: ErrorShape | None = None) -> None:
        self._service = service
        self._handler = handler
        self._dialect = dialect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        record = record_of(scope)
        try:
            reply = await self._handler(Incoming(scope, receive, self._service, record))
        except GatewayError as error:
            reply = error_reply(self._dialect or dialect_of(scope["path"]), error)
        except ClientGone:
            record.disconnected = True
            reply = Reply(499, {})  # nobody is listening; the status is for the access log
        except Exception:
            logger.exception("unhandled error", extra={"fields": {"request_id": record.request_id}})
            reply = error_reply(self._dialect or dialect_of(scope["path"]), internal_error())
        await write(reply, record, receive, send)


async def write(reply: Reply, record: RequestRecord, receive: Receive, send: Send) -> None:
    """Send ``reply``; a stream stops (and is closed) as soon as the client disconnects."""
    headers = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in reply.headers.items()]
    stream = reply.stream
    try:
        if stream is None:
            headers.append((b"content-length", str(len(reply.body)).encode("latin-1")))
            await _start(send, record, reply.status, headers)
            await _send_body(send, record, reply.body, more=False)
        else:
            await until_disconnected(receive, _stream(send, record, reply.status, headers, stream))
    finally:
        if stream is not None:
            # Cancelled in a send, between two of its steps, the body would otherwise stay open.
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
        if reply.done is not None:
            await reply.done()


async def _stream(
    send: Send, record: RequestRecord, status: int, headers: list[tuple[bytes, bytes]], stream: AsyncIterator[bytes]
) -> None:
    await _start(send, record, status, headers)
    async for chunk in stream:
        await _send_body(send, record, chunk, more=True)
    await _send_body(send, record, b"", more=False)


async def _start(send: Send, record: RequestRecord, status: int, headers: list[tuple[bytes, bytes]]) -> None:
    await send_noted(send, record, {"type": "http.response.start", "status": status, "headers": headers})


async def _send_body(send: Send, record: RequestRecord, body: bytes, *, more: bool) -> None:
    await send_noted(send, record, {"type": "http.response.body", "body": body, "more_body": more})
