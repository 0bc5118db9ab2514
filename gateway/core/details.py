"""OpenRouter's ``reasoning_details``: reasoning in chat completions as blocks, each with its seal.

A chat message or delta has ``reasoning_content`` for reasoning's text, and
nothing for what Anthropic signs a thinking block with or the blocks it sends
only encrypted. OpenRouter's ``reasoning_details`` items carry both, and the
gateway uses them wherever reasoning crosses its chat-completions middle
between two Anthropic ends: the Anthropic wire's reader writes them, the
rewrite reads them, a request sends them back and the Anthropic wire's
request builder turns them into thinking blocks again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NamedTuple

__all__ = ["Seal", "encrypted", "seal_of", "signed", "text_of"]

# The items that carry readable text, and the key holding it.
_TEXT_KEYS: Final = {"reasoning.text": "text", "reasoning.summary": "summary"}
# The format OpenRouter names Anthropic's reasoning with.
_ANTHROPIC: Final = "anthropic-claude-v1"


class Seal(NamedTuple):
    """What seals a block: its ``signature``, or the whole block ``encrypted``."""

    signature: str | None = None
    encrypted: str | None = None


def signed(text: str, signature: str | None) -> dict[str, Any]:
    """A block of reasoning's text with its signature, if it has one."""
    detail: dict[str, Any] = {"type": "reasoning.text", "text": text, "format": _ANTHROPIC}
    if signature is not None:
        detail["signature"] = signature
    return detail


def encrypted(data: str) -> dict[str, Any]:
    """A block the provider sent only encrypted (Anthropic's ``redacted_thinking``)."""
    return {"type": "reasoning.encrypted", "data": data, "format": _ANTHROPIC}


def text_of(detail: Mapping[str, Any]) -> str:
    """An item's readable text (a ``reasoning.text`` item's ``text``, a ``reasoning.summary`` item's
    ``summary``); an encrypted item, or one of another type, has none."""
    kind = detail.get("type")
    key = _TEXT_KEYS.get(kind) if isinstance(kind, str) else None
    text = detail.get(key) if key is not None else None
    return text if isinstance(text, str) else ""


def seal_of(detail: Mapping[str, Any]) -> Seal | None:
    """The seal of an item, if it has one (a non-empty signature or encrypted data)."""
    kind = detail.get("type")
    if kind == "reasoning.text" and isinstance(signature := detail.get("signature"), str) and signature:
        return Seal(signature=signature)
    if kind == "reasoning.encrypted" and isinstance(data := detail.get("data"), str) and data:
        return Seal(encrypted=data)
    return None
