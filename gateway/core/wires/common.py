"""What every upstream wire shares: its failure, the chat-completion chunks its readers make, chat content read.

A wire reader turns another API's events into ``chat.completion.chunk``
objects, so that the one rewrite (``StreamRewriter``) and every front door's
encoder read them as they read a chat upstream's; a request builder reads the
chat-completions request the gateway prepared, so the agent transform is
written once too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Final, NamedTuple

import orjson

from gateway.core.errors import ErrorKind, GatewayError

__all__ = [
    "ChunkMaker",
    "Fragment",
    "WireFailure",
    "as_list",
    "chat_messages",
    "chat_usage",
    "count",
    "function_tools",
    "invalid",
    "max_tokens_of",
    "openai_error",
    "stops_of",
    "text_of",
]

# The chat-completions fields every wire reads or decides itself; any other field a client sent is not sent on.
_STOP_FIELDS: Final = ("stop",)


class WireFailure(Exception):
    """The upstream said, in its own wire, that the answer failed: an error event, a failed response.

    ``error`` is what the client is told; ``retryable`` whether another attempt may succeed (an
    overload, a server error), which the translator honours only while nothing has been sent.
    """

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def openai_error(
    provider: str, message: str, kind: str, *, code: str | None = None, status: int = 502, retryable: bool = False
) -> GatewayError:
    """An upstream failure with its words kept in OpenAI's error shape, which the OpenAI doors relay as they are."""
    upstream = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    said = f"The upstream provider {provider!r} reported an error: {message}"
    return GatewayError(ErrorKind.UPSTREAM_ERROR, said, status=status, retryable=retryable, upstream=upstream)


class Fragment(NamedTuple):
    """A chunk that only carries the next piece of a started tool call's arguments.

    The translator hands it to ``StreamRewriter.feed_fragment``, which gives what ``feed`` of the chunk
    would, without reading the chunk again: the most frequent chunk of an agent's stream. ``like`` is a
    chunk of the same call (its first fragment's, made once), which is all ``feed_fragment`` reads of it;
    ``chunk`` is this one, made for the general path.
    """

    like: dict[str, Any]
    arguments: str
    # The chunk's bytes around its delta, so that a chat client's chunk is them around the new delta.
    frame: tuple[bytes, bytes]

    @property
    def chunk(self) -> dict[str, Any]:
        choice = self.like["choices"][0]
        call = choice["delta"]["tool_calls"][0]
        delta = {**choice["delta"], "tool_calls": [{**call, "function": {"arguments": self.arguments}}]}
        return {**self.like, "choices": [{**choice, "delta": delta}]}


class ChunkMaker:
    """``chat.completion.chunk`` objects of one answer, with its id, model and creation time."""

    __slots__ = ("id", "model", "created", "_role_sent", "_fragment")

    def __init__(self, created: int) -> None:
        self.id = ""
        self.model = ""
        self.created = created
        self._role_sent = False
        # The last fragment's chunk and frame, for its id, model and call.
        self._fragment: tuple[str, str, int, dict[str, Any], tuple[bytes, bytes]] | None = None

    def chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        if not self._role_sent:
            self._role_sent = True
            delta = {"role": "assistant", **delta}
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }

    def fragment(self, call: int, arguments: str) -> Fragment:
        """The next piece of the arguments of the tool call numbered ``call``, whose header went out before.

        Its ``like`` is made once per call, id and model, as the chat wire's shortcut reuses the first
        fragment's chunk: ``feed_fragment`` reads the arguments it is given, not the chunk's.
        """
        cached = self._fragment
        if cached is None or cached[0] != self.id or cached[1] != self.model or cached[2] != call:
            chunk = self.chunk({"tool_calls": [{"index": call, "function": {"arguments": arguments}}]})
            # The key is found unescaped only where it is a key: in a string every quote is escaped.
            data = orjson.dumps({**chunk, "choices": [{"index": 0, "delta": 0, "finish_reason": None}]})
            at = data.index(b'"delta":0,') + len(b'"delta":')
            cached = self._fragment = (self.id, self.model, call, chunk, (data[:at], data[at + 1 :]))
        return Fragment(cached[3], arguments, cached[4])

    def usage(self, usage: dict[str, Any]) -> dict[str, Any]:
        """The chunk that carries an answer's usage, after its finish, as a chat upstream sends it."""
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }


def chat_usage(
    prompt: int, completion: int, *, cached: int = 0, cache_write: int = 0, reasoning: int = 0
) -> dict[str, Any]:
    """Token counts in chat completions' shape (``prompt`` includes the cached and written tokens)."""
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
        "completion_tokens_details": {"reasoning_tokens": reasoning},
    }
    if cache_write:
        usage["prompt_tokens_details"]["cache_write_tokens"] = cache_write
    return usage


def count(value: object) -> int:
    return value if type(value) is int and value >= 0 else 0


def as_list(value: Any) -> list[Any]:
    """A field that should be a list, as one: anything else is read as empty (the upstream judges what is sent)."""
    return value if isinstance(value, list) else []


def function_tools(payload: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A chat request's function tools' ``function`` objects, the only tools either wire is sent."""
    tools: list[Mapping[str, Any]] = []
    for tool in as_list(payload.get("tools")):
        function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        if isinstance(function, dict):
            tools.append(function)
    return tools


def chat_messages(payload: Mapping[str, Any], wire: str) -> Iterator[tuple[int, Any, Mapping[str, Any]]]:
    """A chat request's messages as ``(position, role, message)``, for a ``wire`` provider (named in errors);
    the legacy functions API, and a message that is not an object, are refused."""
    if "functions" in payload:
        raise invalid(f"The legacy functions API cannot reach {wire} provider: send tools instead.", "functions")
    for position, message in enumerate(as_list(payload.get("messages"))):
        if not isinstance(message, dict):
            raise invalid("A message is not an object.", f"messages[{position}]")
        yield position, message.get("role"), message


def text_of(content: Any) -> str:
    """The text of a chat message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part, str):
            texts.append(part)
    return "".join(texts)


def max_tokens_of(payload: Mapping[str, Any]) -> int | None:
    """The output-token limit a chat request sets, in either of its two fields."""
    for key in ("max_completion_tokens", "max_tokens"):
        value = payload.get(key)
        if type(value) is int and value > 0:
            return value
    return None


def stops_of(payload: Mapping[str, Any]) -> list[str]:
    value = payload.get(_STOP_FIELDS[0])
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [stop for stop in value if isinstance(stop, str)]
    return []


def invalid(message: str, param: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code="unsupported_value")
