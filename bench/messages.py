"""The Anthropic Messages front door as a benchmark target: the same workload as chat completions, through
``POST /v1/messages`` on the same route, so its row reads next to the chat path's.

The request carries what the chat request does (its system message as ``system``) plus the
``max_tokens`` and ``anthropic-version`` every Messages client sends; a right answer is the
upstream's message as ``text_delta``s (or one ``text`` block), ending in ``message_stop``.
"""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from common import HOST
from load import MESSAGES, sse_payloads

MAX_TOKENS = 4096


def messages_request(port: int, model: str, stream: bool, headers: Mapping[str, str] | None = None) -> bytes:
    """The raw bytes of one Messages request, built once and sent many times (``headers``: none are needed)."""
    system = [message["content"] for message in MESSAGES if message["role"] == "system"]
    turns = [message for message in MESSAGES if message["role"] != "system"]
    body = orjson.dumps(
        {"model": model, "max_tokens": MAX_TOKENS, "system": "\n\n".join(system), "messages": turns, "stream": stream}
    )
    accept = b"text/event-stream" if stream else b"application/json"
    head = (
        b"POST /v1/messages HTTP/1.1\r\nhost: %s:%d\r\ncontent-type: application/json\r\naccept: %s\r\n"
        b"anthropic-version: 2023-06-01\r\ncontent-length: %d\r\n\r\n"
    )
    return head % (HOST.encode(), port, accept, len(body)) + body


def messages_answer_text(stream: bool, body: bytes) -> tuple[str, str]:
    """The answer's text and its tool calls' arguments (``partial_json``, or ``input`` as JSON), each joined up."""
    if not stream:
        content = orjson.loads(body)["content"]
        text = "".join(block["text"] for block in content if block["type"] == "text")
        calls = "".join(orjson.dumps(block["input"]).decode() for block in content if block["type"] == "tool_use")
        return text, calls
    events = [orjson.loads(payload) for payload in sse_payloads(body)]
    if not events or events[-1]["type"] != "message_stop":
        raise ValueError(f"the stream does not end with message_stop: {events[-1:]}")
    deltas = [event["delta"] for event in events if event["type"] == "content_block_delta"]
    text = "".join(delta["text"] for delta in deltas if delta["type"] == "text_delta")
    calls = "".join(delta["partial_json"] for delta in deltas if delta["type"] == "input_json_delta")
    return text, calls
