"""uvicorn's httptools protocol, with a deadline on each request's head and body and a cap on connections.

uvicorn closes a keep-alive connection left idle between requests, but it
has no deadline for reading a request: a client that connects and sends
nothing, or drips its head or body a byte at a time, holds a connection (and
a file descriptor) for as long as it likes, and the head needs no key. Here:

- a request's head must be complete ``header_timeout`` seconds after the
  connection opened (for its first request) or after its first byte (later);
- its body must be complete ``body_timeout`` seconds after the head;
- a connection beyond ``max_connections`` open ones is answered 503 and closed.

A client that misses a deadline gets 408 and the connection is closed (only
closed, if a response is already under way). The limits come from the
gateway's config through the ASGI lifespan state (``CLIENT_LIMITS``), so each
worker process applies its own config; without them this is uvicorn's protocol.

It subclasses uvicorn's ``HttpToolsProtocol``, which is not a public API:
``pyproject.toml`` allows only the uvicorn releases it was tested with, and
``check_uvicorn`` (run when this module is imported, so before the server
starts) fails loudly, naming what is missing, rather than let a release that
renamed a hook serve without deadlines.
"""

from __future__ import annotations

import asyncio
import enum
import inspect
import re
from dataclasses import dataclass
from typing import Any, Final

import uvicorn
from uvicorn.config import Config
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.core.errors import ErrorKind, GatewayError
from gateway.dialects import dialect_of

__all__ = ["CLIENT_LIMITS", "ClientLimits", "GuardedHttpToolsProtocol", "UvicornChanged", "check_uvicorn"]

# The lifespan state key the app puts its limits under.
CLIENT_LIMITS: Final = "gateway.client_limits"

# What of uvicorn's private protocol this module relies on.
_HOOKS: Final = (
    "connection_made",
    "data_received",
    "on_message_begin",
    "on_headers_complete",
    "on_message_complete",
    "connection_lost",
)
_INIT_PARAMETERS: Final = ("config", "server_state", "app_state", "_loop")
_PROTOCOL_ATTRIBUTES: Final = ("connections", "cycle", "server_state", "loop", "transport")
_CYCLE_ATTRIBUTES: Final = ("response_started", "response_complete", "disconnected", "message_event")


class UvicornChanged(ImportError):
    """The installed uvicorn no longer has what the guarded protocol overrides or reads."""


def check_uvicorn() -> None:
    """Raise ``UvicornChanged`` naming every hook, parameter or attribute of uvicorn's that is gone."""
    missing = [f"HttpToolsProtocol.{hook}" for hook in _HOOKS if not callable(getattr(HttpToolsProtocol, hook, None))]
    parameters = list(inspect.signature(HttpToolsProtocol.__init__).parameters)[1:]
    if parameters[: len(_INIT_PARAMETERS)] != list(_INIT_PARAMETERS):
        missing.append(f"HttpToolsProtocol.__init__{tuple(_INIT_PARAMETERS)} (it takes {tuple(parameters)})")
    for owner, names in ((HttpToolsProtocol, _PROTOCOL_ATTRIBUTES), (RequestResponseCycle, _CYCLE_ATTRIBUTES)):
        assigned = _assigned(owner)
        missing += [f"{owner.__name__}.{name}" for name in names if name not in assigned]
    if not (isinstance(STATUS_LINE, dict) and {408, 503} <= set(STATUS_LINE)):
        missing.append("httptools_impl.STATUS_LINE")
    if missing:
        raise UvicornChanged(
            f"uvicorn {uvicorn.__version__} ({httptools_impl.__file__}) lacks what the gateway's HTTP protocol"
            f" relies on: {', '.join(missing)}. Install a uvicorn release pyproject.toml allows."
        )


def _assigned(owner: type) -> set[str]:
    """The attributes ``owner.__init__`` assigns (``self.name = ...``, ``self.name: T = ...``)."""
    source = inspect.getsource(owner.__init__)  # type: ignore[misc]
    return {word.split("self.", 1)[1] for word in re.findall(r"self\.\w+(?=\s*[:=])", source)}


check_uvicorn()


@dataclass(frozen=True)
class ClientLimits:
    header_timeout: float
    body_timeout: float
    max_connections: int


class _Reading(enum.Enum):
    """What the connection is waiting for from the client, and so which deadline runs."""

    HEAD = "head"  # a request's head: header_timeout
    BODY = "body"  # the rest of its body: body_timeout
    NOTHING = "nothing"  # the request is complete (or none has begun): no deadline of ours
    CLOSED = "closed"  # refused or timed out: whatever else arrives is ignored


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """One client connection, read under deadlines; see the module docstring."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        limits = app_state.get(CLIENT_LIMITS)
        self._limits: ClientLimits | None = limits if isinstance(limits, ClientLimits) else None
        self._reading = _Reading.NOTHING
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._limits is None:
            return
        if len(self.connections) > self._limits.max_connections:
            self._reading = _Reading.CLOSED
            message = "The gateway has too many open connections; retry later."
            error = GatewayError(ErrorKind.UNAVAILABLE, message, code="too_many_connections")
            self._answer_and_close(error, retry_after=True)
            return
        self._expect(_Reading.HEAD)

    def data_received(self, data: bytes) -> None:
        if self._reading is not _Reading.CLOSED:
            super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._reading is _Reading.NOTHING:  # a later request: its head's time starts with its first byte
            self._expect(_Reading.HEAD)

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._expect(_Reading.BODY)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._expect(_Reading.NOTHING)

    def connection_lost(self, exc: Exception | None) -> None:
        self._expect(_Reading.CLOSED)
        super().connection_lost(exc)

    def _expect(self, reading: _Reading) -> None:
        """Move to waiting for ``reading``, with its deadline (if any) replacing the previous one."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._reading is _Reading.CLOSED:
            return
        self._reading = reading
        if self._limits is None:
            return
        timeout = {_Reading.HEAD: self._limits.header_timeout, _Reading.BODY: self._limits.body_timeout}.get(reading)
        if timeout is not None:
            self._deadline = self.loop.call_later(timeout, self._missed, reading, timeout)

    def _missed(self, reading: _Reading, timeout: float) -> None:
        """The client was too slow: a 408 if nothing has been answered to this request yet, then close."""
        self._deadline = None
        self._reading = _Reading.CLOSED
        if self.transport.is_closing():
            return
        cycle = self.cycle  # while reading a head: the previous request's; while reading a body: this one's
        if reading is _Reading.HEAD and cycle is not None and not cycle.response_complete:
            self.transport.close()  # the previous answer is still to come: a 408 now would be taken for it
            return
        if reading is _Reading.BODY and cycle is not None:
            if cycle.response_started:
                self.transport.close()  # the app has answered already (a 401, a 413): nothing more to say
                return
            cycle.disconnected = True  # the app, still waiting for the body, hears that the client left
            cycle.message_event.set()
        what = "head" if reading is _Reading.HEAD else "body"
        message = f"The request {what} was not received within {timeout:g} seconds."
        path = cycle.scope["path"] if reading is _Reading.BODY and cycle is not None else ""
        self._answer_and_close(GatewayError(ErrorKind.REQUEST_TIMEOUT, message), path=path)

    def _answer_and_close(self, error: GatewayError, *, path: str = "", retry_after: bool = False) -> None:
        """An error before the app has a request, in the shape of the path's clients (OpenAI's without one)."""
        status, content = dialect_of(path).error_status_and_body(error)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"content-type: application/json\r\n")
        if retry_after:
            head.append(b"retry-after: 1\r\n")
        head += [b"content-length: ", str(len(content)).encode(), b"\r\nconnection: close\r\n\r\n", content]
        self.transport.write(b"".join(head))
        self.transport.close()
