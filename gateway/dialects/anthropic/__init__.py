"""The Anthropic Messages front door: ``POST /v1/messages`` answered by any chat-completions upstream.

The request is read into the neutral request (``request``), built into a
chat-completions request by the core's one builder, and the route's neutral
events become Anthropic's content blocks and stream events (``encoder``).
"""

from __future__ import annotations

from typing import Any

from gateway.core.options import Reasoning
from gateway.core.request import to_chat as _build
from gateway.dialects.anthropic.encoder import (
    AnthropicStreamEncoder,
    build,
    encoder,
    error_body,
    error_status_and_body,
    error_type,
    stop_reason_of,
)
from gateway.dialects.anthropic.request import (
    MessagesRequest,
    ThinkingMode,
    parse_count_tokens_request,
    parse_request,
)

__all__ = [
    "AnthropicStreamEncoder",
    "MessagesRequest",
    "ThinkingMode",
    "build",
    "encoder",
    "error_body",
    "error_status_and_body",
    "error_type",
    "parse_count_tokens_request",
    "parse_request",
    "stop_reason_of",
    "to_chat",
]


def to_chat(request: MessagesRequest, *, reasoning: Reasoning, reasoning_effort: bool) -> dict[str, Any]:
    """The chat-completions request for this Messages request (see ``gateway.core.request.to_chat``)."""
    return _build(request.request, reasoning=reasoning, reasoning_effort=reasoning_effort)
