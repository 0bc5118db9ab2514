"""The client dialects: each front door is a request translator and an encoder over the neutral events.

A dialect module (``chat``, ...) satisfies ``Dialect``: it parses and
validates the client's request, translates it into a chat-completions request
for the route, encodes the neutral events of the answer as a stream or as one
body, and shapes errors the way its clients expect. Every dialect is pure and
synchronous; the server shell does the I/O around it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from gateway.core.errors import GatewayError
from gateway.core.events import Event
from gateway.core.options import Reasoning

__all__ = ["ClientRequest", "Dialect", "StreamEncoder"]


class ClientRequest(Protocol):
    """What the shell needs of a parsed request, whatever its dialect."""

    @property
    def model(self) -> str: ...

    @property
    def stream(self) -> bool: ...


class StreamEncoder(Protocol):
    """A front door's encoder: neutral events in, the client's bytes out.

    ``raw_chunks`` says that it sends a chunk the route left unchanged as the upstream's bytes
    (``ChunkStart.raw``) and reads none of that chunk's other events: then the translator of a route
    without a rewrite need not make them.
    """

    raw_chunks: bool

    def encode(self, events: Iterable[Event]) -> bytes: ...


class Dialect(Protocol):
    def parse_request(self, body: bytes) -> ClientRequest:
        """The client's body, validated; a 400 ``GatewayError`` naming the field otherwise."""

    def to_chat(self, request: Any, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
        """The chat-completions request for a route; its ``model`` is set by the shell.

        ``reasoning`` is the route's; ``reasoning_effort`` says whether the provider takes that field.
        """

    def encoder(self, request: Any, *, created: int) -> StreamEncoder:
        """The encoder of one streamed answer."""

    def build(self, request: Any, events: list[Event], *, created: int) -> bytes:
        """The body of a non-streaming answer, from the events of its replay."""

    def error_status_and_body(self, error: GatewayError) -> tuple[int, bytes]:
        """An error as this front door's clients expect it."""
