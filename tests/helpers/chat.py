"""Reading chat-completion streams as a chat client does: the text, the reasoning, the calls, every delta's keys."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from gateway.core.options import RewriteOptions
from gateway.dialects.chat import ChatStreamEncoder
from tests.helpers.streams import (
    sse_payloads,
    translate,
)


def chat_bytes(reads: list[bytes], options: RewriteOptions) -> bytes:
    return translate(reads, options, ChatStreamEncoder())[0]


@dataclass
class ChatAnswer:
    """What a chat client read: choice 0's text, exposed reasoning, tool calls, finish reasons, and every delta key."""

    body: bytes
    content: str = ""
    reasoning: str = ""
    calls: list[tuple[str, str, Any]] = field(default_factory=list)
    finish: list[Any] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    # The visible text released by each client chunk, in order (for release-timing checks).
    released: list[str] = field(default_factory=list)


def read_chat(body: bytes) -> ChatAnswer:
    assert body.endswith(b"data: [DONE]\n\n"), body[-300:]
    answer = ChatAnswer(body)
    calls: dict[int, list[str]] = {}
    for payload in sse_payloads(body):
        for item in payload.get("choices") or ():
            if item.get("index", 0) != 0:
                continue
            delta = item.get("delta") or {}
            answer.keys |= set(delta)
            answer.content += delta.get("content") or ""
            answer.released.append(delta.get("content") or "")
            answer.reasoning += delta.get("reasoning_content") or ""
            for position, tool_call in enumerate(delta.get("tool_calls") or ()):
                slot = calls.setdefault(tool_call.get("index", position), ["", "", ""])
                slot[0] = slot[0] or tool_call.get("id") or ""
                slot[1] += (tool_call.get("function") or {}).get("name") or ""
                slot[2] += (tool_call.get("function") or {}).get("arguments") or ""
            if item.get("finish_reason") is not None:
                answer.finish.append(item["finish_reason"])
    answer.calls = [(i, n, json.loads(a) if a else None) for i, n, a in (calls[k] for k in sorted(calls))]
    return answer
