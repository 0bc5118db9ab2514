"""The sans-I/O core: everything about the protocol, and nothing about sockets, time or config files.

Pure, synchronous state machines, tested without sockets:

- ``StreamTranslator``: upstream chat-completions SSE bytes in (split anyhow), neutral client
  ``events`` out, ending in exactly one ``Done`` or ``Error``; ``replay_completion`` does the same
  for a non-streaming answer.
- ``StreamRewriter`` (inside the translator): the agent rewrite of each chunk, with the incremental
  ``ArgumentsParser`` for tool-call arguments and the ``ThinkFilter`` for reasoning between tags.
- ``prepare``: the request side of agent mode (inject the message tool and inner thoughts).
- ``RewriteOptions``: one route's rewrite, shared by both sides; ``GatewayError`` with its
  ``ErrorKind``: the one failure type, from here to the edge.

The client dialects (``gateway.dialects``) encode the events for each front door; the I/O shell
(``gateway.server``, ``gateway.upstream``) reads, feeds and writes.
"""

from gateway.core.agent import prepare
from gateway.core.arguments import ArgumentsParser, Captured, Filtered
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.events import (
    ChoiceStart,
    ChunkStart,
    Comment,
    Done,
    Error,
    Event,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.rewriter import ArgumentsTooLong, InvalidChunk, RewriteStats, StreamRewriter, replay_completion
from gateway.core.think import ThinkFilter, Thought, Visible
from gateway.core.translator import StreamPhase, StreamTranslator

__all__ = [
    "ArgumentsParser",
    "ArgumentsTooLong",
    "Captured",
    "ChoiceStart",
    "ChunkStart",
    "Comment",
    "Done",
    "Error",
    "ErrorKind",
    "Event",
    "Filtered",
    "Finish",
    "GatewayError",
    "InvalidChunk",
    "Reasoning",
    "ReasoningDelta",
    "RewriteOptions",
    "RewriteStats",
    "StreamPhase",
    "StreamRewriter",
    "StreamTranslator",
    "TextDelta",
    "ThinkFilter",
    "Thought",
    "Thoughts",
    "ToolCallDelta",
    "ToolCallEnd",
    "ToolCallStart",
    "Usage",
    "Visible",
    "prepare",
    "replay_completion",
]
