"""The upstream wires other than chat completions: each a request builder, a stream reader and a body reader.

A provider's ``api`` names its wire. Chat completions is the gateway's own
(no entry here: its chunks go to the rewrite as they come). Every other wire
is read into chat-completion chunks, so the rewrite, the think filter and the
three front doors' encoders are the same behind every wire, and builds its
request from the chat-completions request the gateway prepared, so the agent
transform is too. Wires are not dialects: no wire imports a front door, and
no front door a wire.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from gateway.core.errors import GatewayError
from gateway.core.wires.anthropic import AnthropicReader, anthropic_completion, anthropic_error, anthropic_request
from gateway.core.wires.common import Fragment, WireFailure
from gateway.core.wires.responses import ResponsesReader, responses_completion, responses_request

__all__ = ["WIRES", "Fragment", "Wire", "WireFailure", "WireReader"]


class WireReader(Protocol):
    """One answer's stream: each decoded event in, the chat-completion chunks it stands for out.

    A chunk that only continues a tool call's arguments comes as a ``Fragment``. ``read`` raises
    ``WireFailure`` for the upstream's own error event and ``InvalidChunk`` for an event the wire
    cannot contain; ``ended`` says the wire's last event came.
    """

    ended: bool

    def read(self, event: Mapping[str, Any]) -> Sequence[dict[str, Any] | Fragment]: ...


class RequestBuilder(Protocol):
    def __call__(
        self, payload: Mapping[str, Any], *, stream: bool, max_tokens: int, summaries: bool
    ) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Wire:
    """An upstream API: where requests go below the base URL, and how each side is translated.

    ``request`` builds the upstream request of a prepared chat-completions request: ``max_tokens`` is
    the provider's limit for a request that sets none (for a wire that needs one), ``summaries`` says
    the route exposes reasoning (for a wire that must ask for it). ``reader`` makes a stream's reader
    for a provider name and a creation time.
    """

    name: str
    path: str
    request: RequestBuilder
    reader: Callable[[str, int], WireReader]
    _completion: Callable[[Mapping[str, Any], str, int], dict[str, Any]]
    _error: Callable[[str, Any, int], GatewayError | None] | None = None

    def completion(self, body: Mapping[str, Any], provider: str, created: int) -> dict[str, Any]:
        """A whole answer of this wire as a ``chat.completion``; raises ``GatewayError`` for an error body,
        ``InvalidChunk`` for a body the wire cannot send."""
        return self._completion(body, provider, created)

    def error(self, provider: str, error: GatewayError) -> GatewayError:
        """An upstream error status as every door reads it: the wire's error body in OpenAI's shape, with the
        status, headers and retry kept."""
        if self._error is None or error.upstream is None:
            return error
        said = self._error(provider, error.upstream, error.status)
        if said is None:
            return error
        return GatewayError(
            error.kind,
            said.upstream["error"]["message"] if said.upstream else error.message,
            status=error.status,
            headers=error.headers,
            retryable=error.retryable,
            upstream=said.upstream,
        )


WIRES: Final[Mapping[str, Wire]] = {
    "anthropic": Wire(
        "anthropic", "/messages", anthropic_request, AnthropicReader, anthropic_completion, anthropic_error
    ),
    "responses": Wire("responses", "/responses", responses_request, ResponsesReader, responses_completion),
}
"""The wires by the name a provider's ``api`` gives them."""
