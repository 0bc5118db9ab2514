"""How one route rewrites: the single options type the request transform and the stream translator share.

The config builds one ``RewriteOptions`` per route, once; the request
transform then narrows it per request (``keep_arguments_of``: client tools
that declare the inner-thoughts argument themselves keep it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from gateway.core.think import DEFAULT_TAGS

__all__ = ["Reasoning", "RewriteOptions", "Thoughts"]

DEFAULT_MAX_EVENT_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_ARGUMENTS_CHARS = 4 * 1024 * 1024


class Thoughts(Enum):
    """Where an agent-style model puts its private reasoning."""

    KWARG = "kwarg"  # an extra argument of every tool call
    CONTENT = "content"  # the plain content next to the tool calls
    NONE = "none"  # nowhere: the model has no inner thoughts


class Reasoning(Enum):
    """What the client sees of the model's reasoning."""

    HIDE = "hide"
    EXPOSE = "expose"


@dataclass(frozen=True, slots=True)
class RewriteOptions:
    """One route's rewrite, request side and answer side, with the limits that bound a stream.

    ``passthrough`` is a route without a rewrite: chat clients get the
    upstream's chunks as they came, and the events only describe them, for
    front doors that speak another dialect (nothing is hidden there either).
    """

    message_tool: str = "send_message"
    message_arg: str = "message"
    inner_thoughts: Thoughts = Thoughts.KWARG
    inner_thoughts_arg: str = "inner_thoughts"
    reasoning: Reasoning = Reasoning.HIDE
    # Request side: inject the message tool and the inner-thoughts argument, force a tool call.
    inject_tools: bool = True
    # None: the built-in prompt; "": none.
    system_prompt: str | None = None
    message_tool_description: str | None = None
    message_arg_description: str | None = None
    inner_thoughts_description: str | None = None
    # Reasoning inside the visible text: the (opening, closing) tag pairs; () turns the filter off.
    # think_open: the text starts inside a block that the chat template opened.
    think_tags: tuple[tuple[str, str], ...] = DEFAULT_TAGS
    think_open: bool = False
    # Client tools that declare the inner-thoughts argument themselves keep it (set per request).
    keep_arguments_of: frozenset[str] = field(default_factory=frozenset)
    # Beyond these, the stream ends with an error event: one upstream event, one tool call's arguments.
    max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES
    max_arguments_chars: int = DEFAULT_MAX_ARGUMENTS_CHARS
    passthrough: bool = False

    @classmethod
    def plain(
        cls, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES, max_arguments_chars: int = DEFAULT_MAX_ARGUMENTS_CHARS
    ) -> RewriteOptions:
        """A route without a rewrite: everything the upstream says is the client's."""
        return cls(
            inner_thoughts=Thoughts.NONE,
            reasoning=Reasoning.EXPOSE,
            inject_tools=False,
            think_tags=(),
            max_event_bytes=max_event_bytes,
            max_arguments_chars=max_arguments_chars,
            passthrough=True,
        )
