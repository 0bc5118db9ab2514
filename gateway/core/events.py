"""Neutral client events: what the client should see of an answer, in no dialect in particular.

The stream translator turns upstream bytes into these, and each front door's
encoder turns them into its own wire format (chat-completion chunks,
Responses events, Anthropic Messages events). Non-streaming answers are
replayed through the same rewrite, so they produce the same events.

Events come in the order the client should see them. ``ChunkStart`` and
``ChoiceStart`` carry what the upstream sent around the rewritten parts, so
the chat encoder can give a chat client back every field it did not rewrite;
other encoders only read the events after them. ``choice`` is the index the
upstream gave the choice (most answers have one choice, index 0).

Events are values: nothing changes one once it is made. They are plain slotted
dataclasses rather than frozen ones because a stream makes several per chunk,
and a frozen dataclass costs three times as much to make.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.core.errors import GatewayError
from gateway.core.usage import TokenUsage

__all__ = [
    "ChoiceStart",
    "ChunkStart",
    "Comment",
    "Done",
    "Error",
    "Event",
    "Finish",
    "FinishReason",
    "ReasoningDelta",
    "ReasoningRedacted",
    "ReasoningSigned",
    "TextDelta",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
]


@dataclass(slots=True)
class ChunkStart:
    """The events up to the next ``ChunkStart`` come from one upstream chunk.

    ``fields`` is that chunk as decoded (its id, model, created, usage and any
    field the gateway does not know), or, for what the rewrite settles at the
    end of a stream, the last chunk's. ``raw`` is set when nothing in the
    chunk needed rewriting: its bytes, as a chat client should get them.
    """

    fields: Mapping[str, Any]
    raw: bytes | None = None
    # The chunk's bytes before and after its one choice's delta, when the rewrite changes nothing else
    # in it (an argument fragment recognised by its bytes): a chat client's chunk is them around the new delta.
    frame: tuple[bytes, bytes] | None = None


@dataclass(slots=True)
class ChoiceStart:
    """A choice of the current chunk; ``fields`` is the upstream's choice object, None for one settled at the end.

    ``first`` marks the choice's first appearance in the stream.
    """

    choice: Hashable
    fields: Mapping[str, Any] | None
    first: bool = False


@dataclass(slots=True)
class TextDelta:
    """Visible text: the message tool's argument, or plain content, decoded."""

    choice: Hashable
    text: str


@dataclass(slots=True)
class ReasoningDelta:
    """Reasoning the route exposes (inner thoughts, provider reasoning fields, think blocks)."""

    choice: Hashable
    text: str


@dataclass(slots=True)
class ReasoningSigned:
    """The exposed reasoning since the last signature is one signed block (Anthropic's thinking ``signature``).

    The provider checks the signature against the block's text when a client sends the block back, so the
    block ends here, and its text is exactly what came before.
    """

    choice: Hashable
    signature: str


@dataclass(slots=True)
class ReasoningRedacted:
    """A block of exposed reasoning the provider sends only encrypted (Anthropic's ``redacted_thinking``),
    for a client to send back as it came."""

    choice: Hashable
    data: str


@dataclass(slots=True)
class ToolCallStart:
    """A client tool call begins; ``call`` numbers the client's calls of this choice from 0.

    ``legacy`` marks the old ``function_call`` API; ``extra`` holds fields of
    the upstream's tool-call object the gateway does not know.
    """

    choice: Hashable
    call: int
    id: str
    name: str
    type: str = "function"
    legacy: bool = False
    extra: Mapping[str, Any] | None = None


@dataclass(slots=True)
class ToolCallDelta:
    """More of a client tool call: the next piece of its arguments (JSON text), rarely of its name."""

    choice: Hashable
    call: int
    arguments: str = ""
    name: str = ""


@dataclass(slots=True)
class ToolCallEnd:
    """A client tool call is complete: no more of its arguments follow."""

    choice: Hashable
    call: int


# A finish reason as an upstream may send it: a string for every provider the gateway knows, but any JSON
# value other than null ends a choice, and a chat client gets it as it came.
FinishReason = str | int | float | bool | list[Any] | dict[str, Any]


@dataclass(slots=True)
class Finish:
    """A choice is over; ``reason`` is what the client is told (``stop``, ``tool_calls``, ``length``, ...)."""

    choice: Hashable
    reason: FinishReason


@dataclass(slots=True)
class Usage:
    """Token counts the upstream reported, read from whatever shape it reported them in."""

    usage: TokenUsage


@dataclass(slots=True)
class Comment:
    """An SSE comment from the upstream (a keep-alive); chat clients get it as it came."""

    text: bytes


@dataclass(slots=True)
class Done:
    """The answer is complete: every choice finished and the upstream ended its stream."""


@dataclass(slots=True)
class Error:
    """The answer cannot go on; this is the stream's last event."""

    error: GatewayError


Event = (
    ChunkStart
    | ChoiceStart
    | TextDelta
    | ReasoningDelta
    | ReasoningSigned
    | ReasoningRedacted
    | ToolCallStart
    | ToolCallDelta
    | ToolCallEnd
    | Finish
    | Usage
    | Comment
    | Done
    | Error
)
