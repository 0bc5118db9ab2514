"""The Responses answer: neutral events in, the Responses event stream (or one ``response`` object) out.

Output items follow each other as OpenAI sends them: an item is closed
(``output_item.done``) when the next one starts. The one exception is a client
tool call whose arguments are not yet a whole JSON value when the next item
starts (an upstream that interleaves parallel calls): it stays open until
the core ends it, and the events of both items interleave, told apart by
``output_index`` as the SDKs expect.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable, Mapping
from enum import Enum
from typing import Any, Final

import orjson

from gateway.core import json_body
from gateway.core.errors import GatewayError
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
from gateway.core.sse import encode_comment, encode_event
from gateway.dialects.responses.request import ResponsesRequest

__all__ = ["ResponsesStreamEncoder", "build", "encoder", "response_object"]

logger = logging.getLogger("gateway.dialects.responses")

# finish_reason values that end a response as incomplete, with the reason Responses gives.
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


# The answer.


class _Kind(Enum):
    MESSAGE = "message"
    REASONING = "reasoning"
    FUNCTION_CALL = "function_call"


class _Stage(Enum):
    """Where an output item is; a function call stays PENDING until its arguments say more than ``{``."""

    PENDING = "not announced"
    OPEN = "announced"
    DONE = "done"


class _Phase(Enum):
    NEW = "nothing sent"
    STREAMING = "response created"
    ENDED = "completed, incomplete or failed"


# What carries the upstream's chunk fields for the chat encoder, and keep-alives: nothing for a Responses client.
_UNSEEN: Final = frozenset((ChunkStart, ChoiceStart, Comment))
_ID_PREFIX: Final = {_Kind.MESSAGE: "msg_", _Kind.REASONING: "rs_", _Kind.FUNCTION_CALL: "fc_"}


class _Item:
    """One output item: a message, exposed reasoning, or a client function call."""

    __slots__ = ("call_id", "id", "index", "kind", "name", "pieces", "stage", "status")

    def __init__(self, kind: _Kind, call_id: str = "", name: str = "") -> None:
        self.kind = kind
        self.id = _ID_PREFIX[kind] + secrets.token_hex(24)
        self.index = -1  # output_index, once announced
        self.stage = _Stage.PENDING
        self.pieces: list[str] = []  # text, reasoning or arguments so far
        self.status = "in_progress"
        self.call_id = call_id
        self.name = name

    def text(self) -> str:
        if len(self.pieces) > 1:
            self.pieces = ["".join(self.pieces)]
        return self.pieces[0] if self.pieces else ""

    def body(self) -> dict[str, Any]:
        """The item as ``output_item.done`` and the ``response`` object carry it."""
        if self.kind is _Kind.MESSAGE:
            content = [_text_part(self.text())]
            return {"id": self.id, "type": "message", "status": self.status, "content": content, "role": "assistant"}
        if self.kind is _Kind.REASONING:
            return {
                "id": self.id,
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": self.text()}],
            }
        return {
            "id": self.id,
            "type": "function_call",
            "status": self.status,
            "arguments": self.text(),
            "call_id": self.call_id,
            "name": self.name,
        }


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _whole_json(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


class _Answer:
    """The response being built from neutral events; each step returns the Responses events it makes.

    Only choice 0 is read: a translated request asks for one choice.
    """

    def __init__(self, request: ResponsesRequest, created: int) -> None:
        self.id = "resp_" + secrets.token_hex(24)
        self.phase = _Phase.NEW
        self._request = request
        self._created = created
        self._items: list[_Item] = []  # announced, in output order
        self._current: _Item | None = None  # the item the last event went to
        self._calls: dict[int, _Item] = {}
        self._usage: Mapping[str, Any] | None = None
        self._finish: Any = None
        self._sequence = 0
        # The response object of the last event, once the answer has ended.
        self.final: dict[str, Any] | None = None

    def start(self) -> list[dict[str, Any]]:
        self.phase = _Phase.STREAMING
        response = self.response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, event: Event) -> list[dict[str, Any]]:
        """The events for one neutral event (none for what the client does not see)."""
        out: list[dict[str, Any]] = []
        if self.phase is _Phase.ENDED or type(event) in _UNSEEN:
            return out
        match event:
            case TextDelta(choice=0, text=text) if text:
                self._delta(self._focus(_Kind.MESSAGE, out), text, out)
            case ReasoningDelta(choice=0, text=text) if text:
                self._delta(self._focus(_Kind.REASONING, out), text, out)
            case ToolCallStart(choice=0):
                call = self._calls[event.call] = _Item(_Kind.FUNCTION_CALL, event.id, event.name)
                self._switch(call, out)
            case ToolCallDelta(choice=0):
                self._call_delta(event, out)
            case ToolCallEnd(choice=0, call=number):
                self._close(self._calls[number], "completed", out)
            case Finish(choice=0, reason=reason):
                self._finish = reason
                status = "incomplete" if _incomplete_reason(reason) else "completed"
                for item in [*self._items, *self._calls.values()]:
                    self._close(item, status, out)
                self._current = None
            case Usage(usage=usage):
                self._usage = usage
            case Done():
                for item in [*self._items, *self._calls.values()]:
                    self._close(item, "completed", out)
                reason = _incomplete_reason(self._finish)
                if reason is None:
                    self._end("response.completed", self.response("completed"), out)
                else:
                    self._end(
                        "response.incomplete", self.response("incomplete", incomplete_details={"reason": reason}), out
                    )
            case Error(error=error):
                for item in self._items:
                    if item.stage is _Stage.OPEN:
                        item.status = "incomplete"
                failure = {"code": _failure_code(error), "message": error.message}
                self._end("response.failed", self.response("failed", error=failure), out)
        return out

    def _end(self, kind: str, response: dict[str, Any], out: list[dict[str, Any]]) -> None:
        self.phase = _Phase.ENDED
        self.final = response
        out.append(self._event(kind, response=response))

    def response(self, status: str, **fields: Any) -> dict[str, Any]:
        """The ``response`` object as it stands."""
        request = self._request
        response = {
            "id": self.id,
            "object": "response",
            "created_at": self._created,
            "status": status,
            "background": False,
            "error": None,
            "incomplete_details": None,
            "model": request.model,
            "output": [item.body() for item in self._items] if status != "in_progress" else [],
            "previous_response_id": None,
            "store": False,
            "truncation": "disabled",
            # Settings the gateway does not apply, as OpenAI reports settings that are not set.
            "max_tool_calls": None,
            "prompt_cache_key": None,
            "prompt_cache_retention": None,
            "safety_identifier": None,
            "service_tier": None,
            "top_logprobs": None,
            "usage": _usage(self._usage) if status != "in_progress" else None,
            **request.echo,
        }
        response.update(fields)
        return response

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        return event

    def _focus(self, kind: _Kind, out: list[dict[str, Any]]) -> _Item:
        """The open item of this kind that the last event went to, or a new one."""
        current = self._current
        if current is not None and current.kind is kind and current.stage is _Stage.OPEN:
            return current
        item = _Item(kind)
        self._switch(item, out)
        self._open(item, out)
        return item

    def _switch(self, item: _Item, out: list[dict[str, Any]]) -> None:
        """Events now go to ``item``: the item before it is done, unless it is a call still taking arguments."""
        current = self._current
        if current is item:
            return
        if (
            current is not None
            and current.stage is _Stage.OPEN
            and (current.kind is not _Kind.FUNCTION_CALL or _whole_json(current.text()))
        ):
            self._close(current, "completed", out)
        self._current = item

    def _open(self, item: _Item, out: list[dict[str, Any]]) -> None:
        item.stage = _Stage.OPEN
        item.index = len(self._items)
        self._items.append(item)
        added = item.body()
        if item.kind is _Kind.MESSAGE:
            added["content"] = []
        elif item.kind is _Kind.REASONING:
            del added["content"]
        else:
            added["arguments"] = ""
        out.append(self._event("response.output_item.added", output_index=item.index, item=added))
        if item.kind is _Kind.FUNCTION_CALL:
            return
        part = _text_part("") if item.kind is _Kind.MESSAGE else {"type": "reasoning_text", "text": ""}
        out.append(
            self._event(
                "response.content_part.added", item_id=item.id, output_index=item.index, content_index=0, part=part
            )
        )

    def _delta(self, item: _Item, text: str, out: list[dict[str, Any]]) -> None:
        item.pieces.append(text)
        self._send_delta(item, text, out)

    def _send_delta(self, item: _Item, text: str, out: list[dict[str, Any]]) -> None:
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind is _Kind.MESSAGE:
            out.append(self._event("response.output_text.delta", **where, content_index=0, delta=text, logprobs=[]))
        elif item.kind is _Kind.REASONING:
            out.append(self._event("response.reasoning_text.delta", **where, content_index=0, delta=text))
        else:
            out.append(self._event("response.function_call_arguments.delta", **where, delta=text))

    def _call_delta(self, event: ToolCallDelta, out: list[dict[str, Any]]) -> None:
        call = self._calls[event.call]
        if event.name:
            call.name += event.name
        if not event.arguments:
            return
        if call.stage is _Stage.DONE:
            # Closed because its arguments were a whole JSON value: what follows can only spoil them.
            logger.debug("responses answer: arguments after a call's complete JSON value were not sent")
            return
        if call.stage is _Stage.OPEN:
            self._switch(call, out)
            self._delta(call, event.arguments, out)
            return
        call.pieces.append(event.arguments)
        # Until its arguments say more than "{", the call is not announced: the reasoning an
        # agent-style model gives as its first argument then comes out before the call, as on OpenAI.
        if call.text().strip() not in ("", "{"):
            self._switch(call, out)
            self._announce(call, out)

    def _announce(self, call: _Item, out: list[dict[str, Any]]) -> None:
        """A pending call is announced, with the arguments it held back."""
        self._open(call, out)
        if held := call.text():
            self._send_delta(call, held, out)

    def _close(self, item: _Item, status: str, out: list[dict[str, Any]]) -> None:
        if item.stage is _Stage.DONE:
            return
        if item.stage is _Stage.PENDING:
            self._announce(item, out)
        item.stage = _Stage.DONE
        item.status = status
        if self._current is item:
            self._current = None
        where = {"item_id": item.id, "output_index": item.index}
        text = item.text()
        if item.kind is _Kind.MESSAGE:
            out.append(self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            out.append(self._event("response.content_part.done", **where, content_index=0, part=_text_part(text)))
        elif item.kind is _Kind.REASONING:
            out.append(self._event("response.reasoning_text.done", **where, content_index=0, text=text))
            part = {"type": "reasoning_text", "text": text}
            out.append(self._event("response.content_part.done", **where, content_index=0, part=part))
        else:
            out.append(self._event("response.function_call_arguments.done", **where, name=item.name, arguments=text))
        out.append(self._event("response.output_item.done", output_index=item.index, item=item.body()))


def _incomplete_reason(finish: Any) -> str | None:
    return _INCOMPLETE.get(finish) if isinstance(finish, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _usage(usage: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The upstream's chat ``usage`` in Responses terms, with every detail the SDKs' types require."""
    if usage is None:
        return None
    prompt = usage.get("prompt_tokens_details")
    prompt = prompt if isinstance(prompt, dict) else {}
    completion = usage.get("completion_tokens_details")
    completion = completion if isinstance(completion, dict) else {}
    input_tokens = _count(usage.get("prompt_tokens"))
    output_tokens = _count(usage.get("completion_tokens"))
    total = usage.get("total_tokens")
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {
            # DeepSeek reports cache hits at the top level.
            "cached_tokens": _count(prompt.get("cached_tokens", usage.get("prompt_cache_hit_tokens"))),
            "cache_write_tokens": _count(prompt.get("cache_write_tokens")),
        },
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": _count(completion.get("reasoning_tokens"))},
        "total_tokens": _count(total) if total is not None else input_tokens + output_tokens,
    }


def _failure_code(error: GatewayError) -> str:
    """The ``response.error.code``: the Responses API knows a fixed set, of which these two fit a gateway's faults."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class ResponsesStreamEncoder:
    """Encodes neutral events as the Responses event stream (``event:`` and ``data:`` lines, no ``[DONE]``).

    The first ``encode`` starts with ``response.created`` and
    ``response.in_progress``; the stream ends with exactly one of
    ``response.completed``, ``response.incomplete`` or ``response.failed``.
    """

    __slots__ = ("_answer",)

    raw_chunks = False

    def __init__(self, request: ResponsesRequest, *, created: int) -> None:
        self._answer = _Answer(request, created)

    def encode(self, events: Iterable[Event]) -> bytes:
        answer = self._answer
        out: list[bytes] = []
        if answer.phase is _Phase.NEW:
            out += map(_sse, answer.start())
        for event in events:
            if answer.phase is _Phase.ENDED:
                break
            if type(event) is Comment:
                out.append(encode_comment(event.text))
                continue
            out += map(_sse, answer.feed(event))
        return b"".join(out)


def _sse(event: dict[str, Any]) -> bytes:
    return encode_event(json_body.encode(event), event=event["type"].encode())


def encoder(request: ResponsesRequest, *, created: int) -> ResponsesStreamEncoder:
    return ResponsesStreamEncoder(request, created=created)


def build(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> bytes:
    """The non-streaming body: the ``response`` object (see ``response_object``)."""
    return json_body.encode(response_object(request, events, created=created))


def response_object(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> dict[str, Any]:
    """The non-streaming ``response`` object, from the events of the replayed completion.

    The object is the one ``response.completed`` (or ``.incomplete``) would
    carry. An ``Error`` among the events is raised: a non-streaming failure is
    an HTTP error, not a body.
    """
    answer = _Answer(request, created)
    answer.start()
    for event in events:
        if type(event) is Error:
            raise event.error
        answer.feed(event)
    answer.feed(Done())
    assert answer.final is not None
    return answer.final
