"""The Responses front door (``POST /v1/responses``): a Responses request in, a chat-completions request upstream.

The request is read into the neutral request (``request``) and built into a
chat-completions request by the core's one builder; the rewritten answer, as
neutral events, is encoded back as the Responses event stream the SDKs' stream
helpers read, or as one ``response`` object (``encoder``). Errors have OpenAI's
shape.
"""

from __future__ import annotations

from typing import Any

from gateway.core.errors import GatewayError
from gateway.core.options import Reasoning
from gateway.core.request import to_chat as _build
from gateway.dialects.openai_errors import error_body
from gateway.dialects.responses.encoder import ResponsesStreamEncoder, build, encoder, response_object
from gateway.dialects.responses.request import ResponsesRequest, parse_request

__all__ = [
    "ResponsesRequest",
    "ResponsesStreamEncoder",
    "build",
    "encoder",
    "error_status_and_body",
    "parse_request",
    "response_object",
    "to_chat",
]


def to_chat(request: ResponsesRequest, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
    """The chat-completions request for this Responses request (see ``gateway.core.request.to_chat``)."""
    return _build(request.request, reasoning=reasoning, reasoning_effort=reasoning_effort)


def error_status_and_body(error: GatewayError) -> tuple[int, bytes]:
    """An error before the stream started (or of a non-streaming request): OpenAI's shape, as on chat completions."""
    return error.status, error_body(error)
