"""The Responses answer: neutral events in, the Responses event stream (or one ``response`` object) out.

Output items follow each other as OpenAI sends them: an item is closed
(``output_item.done``) when the next one starts. The one exception is a client
tool call whose arguments are not yet a whole JSON value when the next item
starts (an upstream that interleaves parallel calls): it stays open until
the core ends it, and the events of both items interleave, told apart by
``output_index`` as the SDKs expect.

A call comes back in the shape of the client's tool it calls: a
``function_call`` (with its ``namespace`` for a namespaced function), a
``custom_tool_call`` whose ``input`` is the function's one argument, or a
``local_shell_call`` whose ``action`` is the command line. The input of the
last two is whole only once their arguments are, so they stream no deltas
before that.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from enum import Enum
from typing import Any, Final

import orjson

from gateway.core import json_body
from gateway.core.answer import (
    Answer,
    AnswerDone,
    AnswerEvent,
    AnswerFailed,
    Item,
    ItemDelta,
    ItemDone,
    ItemKind,
    ItemStarted,
)
from gateway.core.errors import GatewayError
from gateway.core.events import Comment, Done, Error, Event
from gateway.core.passthrough import ItemBytes, Shortcuts
from gateway.core.sse import encode_comment, encode_event
from gateway.core.usage import TokenUsage
from gateway.dialects.responses.request import ClientTool, ResponsesRequest, ToolKind

__all__ = ["ResponsesStreamEncoder", "build", "encoder", "response_object"]

# finish_reason values that end a response as incomplete, with the reason Responses gives.
_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}
_ID_PREFIX: Final = {ItemKind.TEXT: "msg_", ItemKind.REASONING: "rs_", ItemKind.TOOL_CALL: "fc_"}
_CALL_ID_PREFIX: Final = {ToolKind.FUNCTION: "fc_", ToolKind.CUSTOM: "ctc_", ToolKind.LOCAL_SHELL: "lsh_"}


class _Phase(Enum):
    NEW = "nothing sent"
    STREAMING = "response created"
    ENDED = "completed, incomplete or failed"


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _summary_part(text: str) -> dict[str, Any]:
    return {"type": "summary_text", "text": text}


class _Response:
    """The response being built from the answer's items; each step returns the Responses events it makes.

    Exposed reasoning is a ``reasoning`` item whose ``summary`` holds it, streamed as
    ``reasoning_summary_text`` deltas: what Codex, the Agents SDK and the SDKs' helpers read.
    """

    def __init__(self, request: ResponsesRequest, created: int) -> None:
        self.id = "resp_" + secrets.token_hex(24)
        self.phase = _Phase.NEW
        self.answer = Answer()
        self._request = request
        self._created = created
        self._ids: dict[Item, str] = {}
        self._status: dict[Item, str] = {}
        self._sealed: dict[Item, str] = {}
        self.sequence = 0  # the next event's sequence_number
        # The response object of the last event, once the answer has ended.
        self.final: dict[str, Any] | None = None

    def start(self) -> list[dict[str, Any]]:
        self.phase = _Phase.STREAMING
        response = self.response("in_progress")
        return [
            self._event("response.created", response=response),
            self._event("response.in_progress", response=response),
        ]

    def feed(self, events: Iterable[Event]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in self.answer.feed(events):
            self._answer_event(event, out)
        return out

    def _answer_event(self, event: AnswerEvent, out: list[dict[str, Any]]) -> None:
        if type(event) is ItemDelta:
            self._delta(event.item, event.text, out)
        elif type(event) is ItemStarted:
            self._started(event.item, out)
        elif type(event) is ItemDone:
            self._done(event.item, out)
        elif type(event) is AnswerDone:
            reason = _INCOMPLETE.get(event.finish) if isinstance(event.finish, str) else None
            if reason is None:
                self._end("response.completed", self.response("completed"), out)
            else:
                details = {"reason": reason}
                self._end("response.incomplete", self.response("incomplete", incomplete_details=details), out)
        elif type(event) is AnswerFailed:
            for item in self.answer.items:
                if not item.done:
                    self._status[item] = "incomplete"
            failure = {"code": _failure_code(event.error), "message": event.error.message}
            self._end("response.failed", self.response("failed", error=failure), out)

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
            "output": [self._body(item) for item in self.answer.items] if status != "in_progress" else [],
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
            "usage": _usage(self.answer.usage) if status != "in_progress" else None,
            **request.echo,
        }
        response.update(fields)
        return response

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return event

    def _id(self, item: Item) -> str:
        found = self._ids.get(item)
        if found is None:
            prefix = _ID_PREFIX[item.kind]
            if item.kind is ItemKind.TOOL_CALL:
                prefix = _CALL_ID_PREFIX[self._request.client_tool(item.name).kind]
            found = self._ids[item] = prefix + secrets.token_hex(24)
        return found

    def _body(self, item: Item, *, added: bool = False) -> dict[str, Any]:
        """The item as ``output_item.done`` and the ``response`` object carry it (``added``: as it starts)."""
        status = self._status.get(item, "in_progress" if added else "completed")
        text = "" if added else item.text
        if item.kind is ItemKind.TEXT:
            content = [] if added else [_text_part(text)]
            return {"id": self._id(item), "type": "message", "status": status, "content": content, "role": "assistant"}
        if item.kind is ItemKind.REASONING:
            summary = [] if added or item.redacted is not None else [_summary_part(text)]
            reasoning = {"id": self._id(item), "type": "reasoning", "summary": summary}
            if self._request.seal is not None and not added:
                # What a stateless client sends back for the gateway to open (asked for with ``include``).
                if item not in self._sealed:  # once, as it is done: the item and the response carry the same
                    self._sealed[item] = self._request.seal(text)
                reasoning["encrypted_content"] = self._sealed[item]
            return reasoning
        tool = self._request.client_tool(item.name)
        call: dict[str, Any] = {"id": self._id(item), "status": status, "call_id": item.call_id}
        if tool.kind is ToolKind.LOCAL_SHELL:
            return {**call, "type": "local_shell_call", "action": _shell_action(text)}
        if tool.kind is ToolKind.CUSTOM:
            call.update(type="custom_tool_call", name=tool.name, input=_custom_input(text) if not added else "")
        else:
            call.update(type="function_call", arguments=text, name=tool.name)
        if tool.namespace is not None:
            call["namespace"] = tool.namespace
        return call

    def _started(self, item: Item, out: list[dict[str, Any]]) -> None:
        where = {"item_id": self._id(item), "output_index": item.index}
        out.append(
            self._event("response.output_item.added", output_index=item.index, item=self._body(item, added=True))
        )
        if item.kind is ItemKind.TEXT:
            out.append(self._event("response.content_part.added", **where, content_index=0, part=_text_part("")))
        elif item.kind is ItemKind.REASONING and item.redacted is None:
            out.append(
                self._event("response.reasoning_summary_part.added", **where, summary_index=0, part=_summary_part(""))
            )

    def _delta(self, item: Item, text: str, out: list[dict[str, Any]]) -> None:
        event = self.delta_event(item, text, self.sequence)
        if event is not None:
            self.sequence += 1
            out.append(event)

    def delta_event(self, item: Item, text: str, number: int | str) -> dict[str, Any] | None:
        """The event of ``text`` added to ``item``, numbered ``number``; None for a call that streams no deltas."""
        if item.kind is ItemKind.TEXT:
            kind, place = "response.output_text.delta", {"content_index": 0}
        elif item.kind is ItemKind.REASONING:
            kind, place = "response.reasoning_summary_text.delta", {"summary_index": 0}
        elif self._request.client_tool(item.name).kind is ToolKind.FUNCTION:
            kind, place = "response.function_call_arguments.delta", {}
        else:
            return None
        where = {"item_id": self._id(item), "output_index": item.index}
        event: dict[str, Any] = {"type": kind, "sequence_number": number, **where, **place, "delta": text}
        if item.kind is ItemKind.TEXT:
            event["logprobs"] = []
        return event

    def _done(self, item: Item, out: list[dict[str, Any]]) -> None:
        finish = self.answer.finish
        if item not in self._status:
            self._status[item] = "incomplete" if isinstance(finish, str) and finish in _INCOMPLETE else "completed"
        where = {"item_id": self._id(item), "output_index": item.index}
        text = item.text
        if item.kind is ItemKind.TEXT:
            out.append(self._event("response.output_text.done", **where, content_index=0, text=text, logprobs=[]))
            out.append(self._event("response.content_part.done", **where, content_index=0, part=_text_part(text)))
        elif item.kind is ItemKind.REASONING:
            if item.redacted is None:  # a block the provider sent encrypted has no summary, as OpenAI's
                out.append(self._event("response.reasoning_summary_text.done", **where, summary_index=0, text=text))
                part = _summary_part(text)
                out.append(self._event("response.reasoning_summary_part.done", **where, summary_index=0, part=part))
        else:
            self._call_done(item, self._request.client_tool(item.name), where, out)
        out.append(self._event("response.output_item.done", output_index=item.index, item=self._body(item)))

    def _call_done(self, item: Item, tool: ClientTool, where: dict[str, Any], out: list[dict[str, Any]]) -> None:
        if tool.kind is ToolKind.FUNCTION:
            out.append(
                self._event("response.function_call_arguments.done", **where, name=tool.name, arguments=item.text)
            )
        elif tool.kind is ToolKind.CUSTOM:
            text = _custom_input(item.text)
            if text:
                out.append(self._event("response.custom_tool_call_input.delta", **where, delta=text))
            out.append(self._event("response.custom_tool_call_input.done", **where, input=text))


def _arguments(text: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _custom_input(arguments: str) -> str:
    """A freeform tool's input: the function's ``input`` argument; arguments that are not such an object (a model
    that wrote the input itself) are the input as they are."""
    value = _arguments(arguments)
    text = value.get("input") if value is not None else None
    return text if isinstance(text, str) else arguments


def _shell_action(arguments: str) -> dict[str, Any]:
    """The ``action`` of a ``local_shell_call``: the ``local_shell`` function's arguments (a command given as one
    string is run by the shell)."""
    value = _arguments(arguments) or {}
    command = value.get("command")
    if isinstance(command, str):
        command = ["bash", "-lc", command]
    elif not (isinstance(command, list) and all(isinstance(part, str) for part in command)):
        command = []
    workdir, timeout = value.get("workdir"), value.get("timeout_ms")
    return {
        "type": "exec",
        "command": command,
        "timeout_ms": timeout if isinstance(timeout, int) else None,
        "working_directory": workdir if isinstance(workdir, str) else None,
        "env": {},
        "user": None,
    }


def _usage(usage: TokenUsage | None) -> dict[str, Any] | None:
    """The usage in Responses terms, with every detail the SDKs' types (and Codex) require."""
    if usage is None:
        return None
    return {
        "input_tokens": usage.prompt,
        "input_tokens_details": {"cached_tokens": usage.cached, "cache_write_tokens": usage.cache_write},
        "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.tokens,
    }


def _failure_code(error: GatewayError) -> str:
    """The ``response.error.code``: the Responses API knows a fixed set, of which these two fit a gateway's faults."""
    return "rate_limit_exceeded" if error.status == 429 else "server_error"


class ResponsesStreamEncoder:
    """Encodes neutral events as the Responses event stream (``event:`` and ``data:`` lines, no ``[DONE]``).

    The first ``encode`` starts with ``response.created`` and
    ``response.in_progress``; the stream ends with exactly one of
    ``response.completed``, ``response.incomplete`` or ``response.failed``.
    In between, a chunk that only adds to the open item's text is that
    item's delta event from a template (``gateway.core.passthrough``): ``shortcuts``.
    """

    __slots__ = ("_response", "_items")

    raw_chunks = False

    def __init__(self, request: ResponsesRequest, *, created: int, shortcuts: Shortcuts = Shortcuts.ON) -> None:
        self._response = response = _Response(request, created)
        self._items = ItemBytes(response.answer, self._delta, self._encode, response, shortcuts)

    @property
    def final(self) -> dict[str, Any] | None:
        """The ``response`` object the stream ended with (completed, incomplete or failed), once it has."""
        return self._response.final

    def encode(self, events: Iterable[Event]) -> bytes:
        return self._items.encode(events)

    def _encode(self, events: Iterable[Event]) -> bytes:
        response = self._response
        out: list[bytes] = []
        if response.phase is _Phase.NEW:
            out += map(_sse, response.start())
        for event in events:
            if response.phase is _Phase.ENDED:
                break
            if type(event) is Comment:
                out.append(encode_comment(event.text))
            else:
                out += map(_sse, response.feed((event,)))
        return b"".join(out)

    def _delta(self, item: Item, text: str, number: int | str) -> bytes:
        event = self._response.delta_event(item, text, number)
        return _sse(event) if event is not None else b""


def _sse(event: dict[str, Any]) -> bytes:
    return encode_event(json_body.encode(event), event=event["type"].encode())


def encoder(request: ResponsesRequest, *, created: int, shortcuts: Shortcuts = Shortcuts.ON) -> ResponsesStreamEncoder:
    return ResponsesStreamEncoder(request, created=created, shortcuts=shortcuts)


def build(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> bytes:
    """The non-streaming body: the ``response`` object (see ``response_object``)."""
    return json_body.encode(response_object(request, events, created=created))


def response_object(request: ResponsesRequest, events: Iterable[Event], *, created: int) -> dict[str, Any]:
    """The non-streaming ``response`` object, from the events of the replayed completion.

    The object is the one ``response.completed`` (or ``.incomplete``) would
    carry. An ``Error`` among the events is raised: a non-streaming failure is
    an HTTP error, not a body.
    """
    response = _Response(request, created)
    response.start()
    for event in events:
        if type(event) is Error:
            raise event.error
        response.feed((event,))
    response.feed((Done(),))
    assert response.final is not None
    return response.final
