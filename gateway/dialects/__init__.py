"""The client dialects: each front door is a request translator and an encoder over the neutral events.

A dialect module (``chat``, ``responses``, ``anthropic``) satisfies
``Dialect``: it parses and validates the client's request, translates it into
a chat-completions request for the route, encodes the neutral events of the
answer as a stream or as one body, and shapes errors the way its clients
expect. Every dialect is pure and synchronous; the server shell does the I/O
around it, and knows the dialects only through this registry (``FRONT_DOORS``,
``COUNT_TOKENS``, ``STORED``, ``dialect_of``): no server module imports a
dialect, no dialect imports another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Generic, Protocol, TypeVar

from gateway.core.errors import GatewayError
from gateway.core.events import Event
from gateway.core.options import Reasoning
from gateway.dialects import anthropic, chat, responses
from gateway.dialects.responses import stored as _stored
from gateway.dialects.responses.stored import Continued, Lookup, Record

__all__ = [
    "COUNT_TOKENS",
    "FRONT_DOORS",
    "STORED",
    "ClientRequest",
    "Continued",
    "CountTokens",
    "Dialect",
    "ErrorShape",
    "FrontDoor",
    "Lookup",
    "Parsed",
    "Record",
    "StreamEncoder",
    "dialect_of",
]


class ClientRequest(Protocol):
    """What the shell needs of a parsed request, whatever its dialect."""

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...

    @property
    def dropped_tools(self) -> tuple[str, ...]:
        """The client's hosted tools (by type) that chat completions cannot carry, left out of the upstream request;
        the route says whether that is allowed (``hosted_tools``)."""
        ...


class StreamEncoder(Protocol):
    """A front door's encoder: neutral events in, the client's bytes out.

    ``raw_chunks`` says that it sends a chunk the route left unchanged as the upstream's bytes
    (``ChunkStart.raw``) and reads none of that chunk's other events: then the translator of a route
    without a rewrite need not make them.
    """

    raw_chunks: bool

    def encode(self, events: list[Event]) -> bytes: ...


Parsed = TypeVar("Parsed", bound=ClientRequest)


class ErrorShape(Protocol):
    """How a dialect's clients read an error."""

    def error_status_and_body(self, error: GatewayError) -> tuple[int, bytes]:
        """An error as this front door's clients expect it."""


class Dialect(ErrorShape, Protocol[Parsed]):
    """One front door's wire: its parsed request type is ``Parsed``, which only this dialect reads."""

    def parse_request(self, body: bytes) -> Parsed:
        """The client's body, validated; a 400 ``GatewayError`` naming the field otherwise."""

    def to_chat(self, request: Parsed, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
        """The chat-completions request for a route; its ``model`` is set by the shell.

        ``reasoning`` is the route's; ``reasoning_effort`` says whether the provider takes that field.
        """

    def encoder(self, request: Parsed, *, created: int) -> StreamEncoder:
        """The encoder of one streamed answer."""

    def build(self, request: Parsed, events: list[Event], *, created: int) -> bytes:
        """The body of a non-streaming answer, from the events of its replay."""


@dataclass(frozen=True, slots=True)
class FrontDoor(Generic[Parsed]):
    """A path the gateway answers itself, in one dialect.

    ``x_api_key``: its clients may send the key as ``x-api-key`` (Anthropic's SDKs do).
    ``native``: the API its clients speak, as a provider's ``api`` names it: a plain route whose providers
    all speak it needs nothing translated, so the request is passed through (``gateway.server.native``).
    ``stored``: its answers are stored and may be continued (``STORED``), and ``{path}/{id}`` retrieves them.
    """

    path: str
    dialect: Dialect[Parsed]
    x_api_key: bool = False
    native: str | None = None
    stored: bool = False


@dataclass(frozen=True, slots=True)
class CountTokens(Generic[Parsed]):
    """Anthropic's ``count_tokens`` door: its request parser, and the dialect that builds and answers it."""

    path: str
    dialect: Dialect[Parsed]
    parse_request: Callable[[bytes], Parsed]


# Each door types its own requests; the shell iterates over doors of every request type.
FRONT_DOORS: Final[tuple[FrontDoor[Any], ...]] = (
    FrontDoor("/v1/chat/completions", chat),
    FrontDoor("/v1/responses", responses, native="responses", stored=True),
    FrontDoor("/v1/messages", anthropic, x_api_key=True, native="anthropic"),
)
COUNT_TOKENS: Final = CountTokens("/v1/messages/count_tokens", anthropic, anthropic.parse_count_tokens_request)
# The pure half of the stored door's state: reading what a request refers to, resolving it, the stored records.
STORED: Final = _stored


def dialect_of(path: str) -> ErrorShape:
    """The dialect a path's clients read errors in: Anthropic's under ``/v1/messages``, OpenAI's elsewhere.

    For what is answered before a front door is reached (no such path, an unexpected failure, a
    request too slow to arrive): a client of one API gets its errors in the shape its SDK raises from.
    """
    if path == COUNT_TOKENS.path:
        return COUNT_TOKENS.dialect
    for door in FRONT_DOORS:
        if path == door.path or path.startswith(door.path + "/"):
            return door.dialect
    return chat
