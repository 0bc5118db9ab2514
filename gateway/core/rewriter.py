"""Rewrites an agent-style model's answer into neutral client events, chunk by chunk.

The message tool's ``message`` argument becomes visible text, the model's
private reasoning is hidden (or exposed as reasoning), and the client's own
tool calls pass through without the injected inner-thoughts argument. A route
without a rewrite (``RewriteOptions.passthrough``) goes through the same
bookkeeping, so every front door can describe its answers, while chat clients
get its chunks as they came. Pure and synchronous: decoded chunks in, events
out.
"""

from __future__ import annotations

import secrets
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

import orjson

from gateway.core.arguments import ArgumentsParser, Captured
from gateway.core.details import seal_of, text_of
from gateway.core.events import (
    ChoiceStart,
    ChunkStart,
    Event,
    Finish,
    ReasoningDelta,
    ReasoningRedacted,
    ReasoningSigned,
    TextDelta,
    ToolCallDelta,
    ToolCallEnd,
    ToolCallStart,
    Usage,
)
from gateway.core.options import Reasoning, RewriteOptions, Thoughts
from gateway.core.think import Piece, ThinkFilter, Visible
from gateway.core.usage import usage_of

__all__ = [
    "REWRITTEN_DELTA_KEYS",
    "ArgumentsTooLong",
    "InvalidChunk",
    "RewriteStats",
    "StreamRewriter",
    "choice_index",
    "finish_label",
    "replay_completion",
]

Chunk = dict[str, Any]

# Delta keys the rewrite owns; every other key passes through untouched.
REWRITTEN_DELTA_KEYS: Final = frozenset(
    ("content", "reasoning_content", "reasoning", "reasoning_details", "tool_calls", "function_call")
)
_TOOL_CALL_KEYS: Final = frozenset(("index", "id", "type", "function"))
_TOOL_FINISHES: Final = frozenset(("tool_calls", "function_call", "stop"))
# The provider reasoning fields that carry text, in the order they are read; the first non-empty one counts.
_REASONING_FIELDS: Final = ("reasoning_content", "reasoning")
# Events that leave a chunk as the upstream sent it, so its bytes can go to a chat client as they are.
_KEEPS_CHUNK: Final = frozenset((Finish, ToolCallEnd))


class InvalidChunk(ValueError):
    """A decoded chunk that no chat completion stream can contain."""


class ArgumentsTooLong(ValueError):
    """One tool call's arguments exceed the route's limit; the answer cannot go on."""


def choice_index(choice: Mapping[str, Any], position: int) -> Hashable:
    """The index a choice says it has (else its position), which keys its state across chunks."""
    index = choice.get("index", position)
    if isinstance(index, (dict, list)):
        raise InvalidChunk("a choice's index is an object or an array")
    return index  # type: ignore[no-any-return]


def finish_label(reason: Any) -> str:
    """A finish reason as a short label: a string as it is, any other JSON value in its JSON text (capped)."""
    return (reason if isinstance(reason, str) else orjson.dumps(reason).decode())[:64]


def _sealed(details: list[Any]) -> bool:
    """Whether ``reasoning_details`` hold a signed or an encrypted block."""
    return any(isinstance(detail, dict) and seal_of(detail) is not None for detail in details)


def _upstream_reasoning(delta: Mapping[str, Any]) -> str:
    """The reasoning text a delta (or a non-streaming message) carries in the provider reasoning fields.

    The first non-empty string of ``reasoning_content`` (DeepSeek, older vLLM) and ``reasoning`` (newer
    vLLM, OpenRouter, Ollama, Groq); failing both, the text of OpenRouter's ``reasoning_details`` items
    (``reasoning.text`` and ``reasoning.summary``; encrypted items have none). A server that fills
    several of them repeats one text in each (vLLM during its rename, OpenRouter always), so it counts once.
    """
    for key in _REASONING_FIELDS:
        value = delta.get(key)
        if isinstance(value, str) and value:
            return value
    details = delta.get("reasoning_details")
    if not isinstance(details, list):
        return ""
    return "".join(text_of(item) for item in details if isinstance(item, dict))


@dataclass(slots=True)
class RewriteStats:
    """What the rewrite did, for metrics; never any text."""

    message_calls: int = 0
    client_calls: int = 0
    reasoning_chars: int = 0
    invalid_arguments: int = 0
    # Each choice's finish reason as the client is told it (for traces: gen_ai.response.finish_reasons).
    finish_reasons: list[str] = field(default_factory=list)


class _Segment(Enum):
    """Where a run of text came from, when not from a tool call: segments are set off by a blank line."""

    CONTENT = "content"
    # Content mode: the content is reasoning. It still goes through the think filter, whose state it
    # carries into the message (a block the template opened closes here); its blocks' text is this
    # segment, the rest of it CONTENT, so that exposed they are set off from each other.
    THOUGHT_CONTENT = "content that is reasoning"
    UPSTREAM_REASONING = "upstream reasoning"


_CONTENT, _THOUGHT_CONTENT = _Segment.CONTENT, _Segment.THOUGHT_CONTENT


class _Role(Enum):
    """What an upstream tool call turned out to be; a call is UNDECIDED while its name may still grow."""

    UNDECIDED = "undecided"
    MESSAGE = "message"
    CLIENT = "client"


# The members as globals: looking one up on the Enum class costs several times more, per chunk.
_UNDECIDED, _MESSAGE, _CLIENT = _Role.UNDECIDED, _Role.MESSAGE, _Role.CLIENT


class _Call:
    """One upstream tool call."""

    __slots__ = ("id", "type", "name", "legacy", "role", "settled", "fed", "size", "parser", "index", "extra")

    def __init__(self, call_id: str | None, call_type: str | None, legacy: bool, extra: Mapping[str, Any]) -> None:
        self.id = call_id
        self.type = call_type
        self.name = ""
        self.legacy = legacy
        self.role: _Role = _UNDECIDED
        self.settled = False
        self.fed = False  # arguments have started, so the name is complete
        self.size = 0
        self.parser: ArgumentsParser | None = None
        self.index = -1  # the client-visible index, once a client call
        self.extra = extra


# Where a run of text came from: a segment of the chunks' own fields, or the tool call whose argument it is.
_Source = _Segment | _Call


class _Choice:
    """What one choice has said so far."""

    __slots__ = ("calls", "finished", "client_calls", "legacy", "visible", "reasoning", "think", "fed")

    def __init__(self, think: ThinkFilter | None) -> None:
        self.calls: dict[Hashable, _Call] = {}
        self.finished = False
        self.client_calls = 0
        self.legacy = False  # a client call came through the legacy function_call API
        # The segment the last visible (or reasoning) text came from: a new one starts after a blank line.
        self.visible: _Source | None = None
        self.reasoning: _Source | None = None
        # Reasoning between think tags in the visible text; ``fed`` is the segment the filter is reading,
        # None once a tool call has ended it (a block may open again where the text resumes).
        self.think = think
        self.fed: _Source | None = None


class StreamRewriter:
    """Rewrites one streamed response, chunk by chunk.

    ``feed`` takes a decoded ``chat.completion.chunk`` (and its bytes) and
    returns its events: a ``ChunkStart`` (with the bytes, when nothing in the
    chunk was rewritten), then each choice's. It raises ``InvalidChunk`` for a
    chunk no stream can contain, and ``ArgumentsTooLong`` when a tool call
    exceeds the route's limit. ``finish`` settles what the stream left open.
    """

    def __init__(self, options: RewriteOptions | None = None, stats: RewriteStats | None = None) -> None:
        self.options = options = options or RewriteOptions()
        self.stats = stats if stats is not None else RewriteStats()
        self._choices: dict[Hashable, _Choice] = {}
        self._template: Mapping[str, Any] = {}
        self._passthrough = options.passthrough
        self._kwarg = options.inner_thoughts is Thoughts.KWARG and not options.passthrough
        self._content_is_reasoning = options.inner_thoughts is Thoughts.CONTENT and not options.passthrough
        self._expose = options.reasoning is Reasoning.EXPOSE
        self._message_keys = (
            (options.message_arg, options.inner_thoughts_arg) if self._kwarg else (options.message_arg,)
        )
        self._think_tags = () if options.passthrough else options.think_tags

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has received its ``finish_reason``."""
        return bool(self._choices) and all(state.finished for state in self._choices.values())

    def feed(self, chunk: Chunk, raw: bytes | None = None) -> list[Event]:
        choices = chunk.get("choices")
        usage = chunk.get("usage")
        if not isinstance(choices, list) and not self._passthrough:
            # Not a chunk the rewrite can read, so nothing in it can be shown: its fields may be private text.
            raise InvalidChunk("a chunk's choices are missing or not an array")
        if not isinstance(choices, list) or not choices:
            events: list[Event] = [ChunkStart(chunk, raw)]
            if usage is not None and (counted := usage_of(usage)) is not None:
                events.append(Usage(counted))
            return events
        self._template = chunk
        events = [ChunkStart(chunk)]
        changed = False
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                raise InvalidChunk("a choice is not an object")
            changed = self._choice(choice, position, events) or changed
        if usage is not None and (counted := usage_of(usage)) is not None:
            events.append(Usage(counted))
        if not changed:
            events[0] = ChunkStart(chunk, raw)
        return events

    @staticmethod
    def continues(chunk: Chunk) -> bool:
        """Whether ``chunk``, once fed, only carried an argument fragment of the call in its slot.

        Then ``feed_fragment`` of a copy of ``chunk`` with other ``arguments`` gives what ``feed``
        would, so a caller that recognises such copies by their bytes need not decode them.
        """
        if chunk.get("usage") is not None:
            return False
        choices = chunk.get("choices")
        if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
            return False
        choice = choices[0]
        delta = choice.get("delta")
        if choice.get("finish_reason") is not None or choice.get("usage") is not None:
            return False
        if not isinstance(delta, dict) or delta.keys() != {"tool_calls"}:
            return False
        tool_calls = delta["tool_calls"]
        if not isinstance(tool_calls, list) or len(tool_calls) != 1 or not isinstance(tool_calls[0], dict):
            return False
        tool_call = tool_calls[0]
        function = tool_call.get("function")
        # No id and no name: the fragment can neither start a new call nor rename this one.
        return (
            type(tool_call.get("index")) is int
            and not tool_call.get("id")
            and isinstance(function, dict)
            and isinstance(function.get("arguments"), str)
            and not function.get("name")
        )

    def feed_fragment(self, chunk: Chunk, arguments: str, frame: tuple[bytes, bytes] | None = None) -> list[Event]:
        """``feed`` of ``chunk`` (one that ``continues``, of a call already fed) with ``arguments`` as its fragment.

        ``frame`` is the chunk's bytes around its delta: the one thing the rewrite changes in it
        (None for a chunk that never had bytes, one an upstream wire's reader made).
        """
        self._template = chunk
        choice = chunk["choices"][0]
        index = choice_index(choice, 0)
        state = self._choices[index]
        events: list[Event] = [ChunkStart(chunk, None, frame), ChoiceStart(index, choice)]
        call = state.calls[choice["delta"]["tool_calls"][0]["index"]]
        self._call_delta(index, state, call, None, arguments, events)
        return events

    def finish(self) -> list[Event]:
        """Settle every choice: calls left undecided, arguments cut short, text held back."""
        events: list[Event] = []
        for index, state in self._choices.items():
            settled: list[Event] = []
            self._settle_all(index, state, settled)
            if settled:
                events.append(ChoiceStart(index, None))
                events += settled
        if not events:
            return []
        fields = {key: value for key, value in self._template.items() if key not in ("choices", "usage")}
        return [ChunkStart(fields), *events]

    def _choice(self, choice: Chunk, position: int, events: list[Event]) -> bool:
        """Append one choice's events; return whether a chat client must get it rewritten."""
        index = choice_index(choice, position)
        state = self._choices.get(index)
        first = state is None
        if state is None:
            think = ThinkFilter(self._think_tags, start_inside=self.options.think_open) if self._think_tags else None
            state = self._choices[index] = _Choice(think)
        events.append(ChoiceStart(index, choice, first))
        start = len(events)

        upstream_delta = choice.get("delta")
        # A choice without a delta is sent with an empty one: stock clients read choice.delta.
        changed = not isinstance(upstream_delta, dict)
        delta: Chunk = upstream_delta if isinstance(upstream_delta, dict) else {}
        if "reasoning_content" in delta or "reasoning" in delta or "reasoning_details" in delta:
            # The fields never reach a chat client as they came: their text is reasoning, hidden or exposed,
            # before the content (in a whole message, reasoning comes first).
            changed = True
            details = delta.get("reasoning_details")
            if self._expose and isinstance(details, list) and _sealed(details):
                self._reason_blocks(index, state, details, events)
            elif reasoning := _upstream_reasoning(delta):
                self._reason(index, state, reasoning, _Segment.UPSTREAM_REASONING, events)
        content = delta.get("content")
        if isinstance(content, str) and content:
            if self._content_is_reasoning:
                changed = True
                self._visible(index, state, content, _Segment.THOUGHT_CONTENT, events)
            else:
                self._visible(index, state, content, _Segment.CONTENT, events)
        tool_calls = delta.get("tool_calls")
        if tool_calls is not None:
            changed = True
            if isinstance(tool_calls, list):
                for call_position, tool_call in enumerate(tool_calls):
                    if isinstance(tool_call, dict):
                        self._tool_call(index, state, call_position, tool_call, events)
        function_call = delta.get("function_call")
        if function_call is not None:
            changed = True
            if isinstance(function_call, dict):
                self._function_call(index, state, function_call, events)

        finish = choice.get("finish_reason")
        if finish is not None:
            self._settle_all(index, state, events)
            state.finished = True
            mapped = finish
            if isinstance(finish, str) and finish in _TOOL_FINISHES:
                mapped = ("function_call" if state.legacy else "tool_calls") if state.client_calls else "stop"
            changed = changed or mapped != finish
            events.append(Finish(index, mapped))
            self.stats.finish_reasons.append(finish_label(mapped))
        if self._passthrough:
            return not isinstance(choice.get("delta"), dict)
        if changed:
            return True
        # Unchanged: its content went out as it came (nothing held back or added), and nothing but the finish.
        shown = ""
        for event in events[start:]:
            if type(event) is TextDelta:
                shown += event.text
            elif type(event) not in _KEEPS_CHUNK:
                return True
        return shown != (content if isinstance(content, str) else "")

    def _visible(self, index: Hashable, state: _Choice, text: str, segment: _Source, events: list[Event]) -> None:
        """Visible text of a segment, through the think filter when the route has one."""
        think = state.think
        if think is None:
            self._show(index, state, text, segment, events)
            return
        if state.fed is not segment:
            # A new segment, or text again after a tool call: a think block may open at its start.
            self._end_segment(index, state, events)
            state.fed = segment
        self._pieces(index, state, think.feed(text), segment, events)

    def _pieces(
        self, index: Hashable, state: _Choice, pieces: list[Piece], segment: _Source, events: list[Event]
    ) -> None:
        for piece in pieces:
            if type(piece) is Visible:
                self._show(index, state, piece.text, segment, events)
            else:
                self._reason(index, state, piece.text, segment, events)

    def _show(self, index: Hashable, state: _Choice, text: str, segment: _Source, events: list[Event]) -> None:
        if segment is _THOUGHT_CONTENT:
            self._reason(index, state, text, _CONTENT, events)
            return
        if state.visible is not segment:
            if state.visible is not None:
                text = "\n\n" + text
            state.visible = segment
        events.append(TextDelta(index, text))

    def _reason(self, index: Hashable, state: _Choice, text: str, segment: _Source, events: list[Event]) -> None:
        self.stats.reasoning_chars += len(text)
        if not self._expose:
            return
        if state.reasoning is not segment:
            if state.reasoning is not None:
                text = "\n\n" + text
            state.reasoning = segment
        events.append(ReasoningDelta(index, text))

    def _reason_blocks(self, index: Hashable, state: _Choice, details: list[Any], events: list[Event]) -> None:
        """Exposed reasoning whose blocks are signed or encrypted: each block's text, then its seal, in order,
        so that the blocks come back to the provider whole. The details repeat the other fields' text."""
        for detail in details:
            if not isinstance(detail, dict):
                continue
            if text := text_of(detail):
                self._reason(index, state, text, _Segment.UPSTREAM_REASONING, events)
            seal = seal_of(detail)
            if seal is not None and seal.signature is not None:
                events.append(ReasoningSigned(index, seal.signature))
            elif seal is not None and seal.encrypted is not None:
                events.append(ReasoningRedacted(index, seal.encrypted))

    def _tool_call(self, index: Hashable, state: _Choice, position: int, tool_call: Chunk, events: list[Event]) -> None:
        slot = tool_call.get("index")
        if not isinstance(slot, int):
            slot = position
        call_id = tool_call.get("id") or None
        call = state.calls.get(slot)
        if call is None or (call_id is not None and call.id is not None and call_id != call.id):
            if call is not None:
                self._settle(index, state, call, events)
            extra = {key: value for key, value in tool_call.items() if key not in _TOOL_CALL_KEYS}
            call = state.calls[slot] = _Call(call_id, tool_call.get("type") or None, False, extra)
        elif call.id is None:
            call.id = call_id
        function = tool_call.get("function")
        if isinstance(function, dict):
            self._call_delta(index, state, call, function.get("name"), function.get("arguments"), events)

    def _function_call(self, index: Hashable, state: _Choice, function_call: Chunk, events: list[Event]) -> None:
        call = state.calls.get("function_call")
        if call is None:
            call = state.calls["function_call"] = _Call(None, None, True, {})
        self._call_delta(index, state, call, function_call.get("name"), function_call.get("arguments"), events)

    def _call_delta(
        self, index: Hashable, state: _Choice, call: _Call, name: Any, arguments: Any, events: list[Event]
    ) -> None:
        # A name arrives in pieces until the arguments start; afterwards a
        # repeated name (or an empty one) must not rename the call.
        if isinstance(name, str) and name and not call.fed:
            call.name += name
            if call.role is _CLIENT:
                events.append(ToolCallDelta(index, call.index, name=name))
        if not isinstance(arguments, str):
            arguments = ""
        if call.role is _UNDECIDED and (arguments or not self._may_be_message_tool(call.name)):
            self._decide(index, state, call, events)
        if arguments:
            call.fed = True
            call.size += len(arguments)
            limit = self.options.max_arguments_chars
            if call.size > limit:
                raise ArgumentsTooLong(f"a tool call's arguments exceed {limit} characters")
            self._arguments(index, state, call, arguments, events)

    def _may_be_message_tool(self, name: str) -> bool:
        return not self._passthrough and self.options.message_tool.startswith(name)

    def _decide(self, index: Hashable, state: _Choice, call: _Call, events: list[Event]) -> None:
        options = self.options
        # A tool call ends the visible text before it: what the think filter held back goes out before the call.
        self._end_segment(index, state, events)
        if not self._passthrough and call.name == options.message_tool:
            call.role = _MESSAGE
            call.parser = ArgumentsParser(capture=self._message_keys)
            self.stats.message_calls += 1
            return
        call.role = _CLIENT
        call.index = state.client_calls
        state.client_calls += 1
        state.legacy = state.legacy or call.legacy
        self.stats.client_calls += 1
        if self._kwarg and call.name not in options.keep_arguments_of:
            call.parser = ArgumentsParser(capture=(), drop=options.inner_thoughts_arg)
        call_id = call.id or "call_" + secrets.token_hex(12)
        events.append(
            ToolCallStart(
                index, call.index, call_id, call.name, call.type or "function", call.legacy, call.extra or None
            )
        )

    def _arguments(self, index: Hashable, state: _Choice, call: _Call, arguments: str, events: list[Event]) -> None:
        parser = call.parser
        if parser is None:
            events.append(ToolCallDelta(index, call.index, arguments))
            return
        for piece in parser.feed(arguments):
            if type(piece) is not Captured:
                events.append(ToolCallDelta(index, call.index, piece.text))
            elif call.role is _MESSAGE and piece.key == self.options.message_arg:
                self._visible(index, state, piece.text, call, events)
            else:
                self._reason(index, state, piece.text, call, events)

    def _settle(self, index: Hashable, state: _Choice, call: _Call, events: list[Event]) -> None:
        if call.settled:
            return
        call.settled = True
        if call.role is _UNDECIDED:
            self._decide(index, state, call, events)
        if call.parser is not None and call.fed:
            call.parser.close()
            if call.parser.error is not None:
                self.stats.invalid_arguments += 1
        if call.role is _CLIENT:
            events.append(ToolCallEnd(index, call.index))

    def _settle_all(self, index: Hashable, state: _Choice, events: list[Event]) -> None:
        for call in state.calls.values():
            self._settle(index, state, call, events)
        # No more text of this choice is due.
        self._end_segment(index, state, events)

    def _end_segment(self, index: Hashable, state: _Choice, events: list[Event]) -> None:
        """The segment the think filter reads is over: what it held back (a tag cut short) is what it turned out to be.

        restart() rather than close(): text may follow (after a tool call, or a stream that goes on after a finish).
        """
        if state.think is not None and state.fed is not None:
            self._pieces(index, state, state.think.restart(), state.fed, events)
            state.fed = None


def replay_completion(
    completion: Mapping[str, Any],
    options: RewriteOptions | None = None,
    stats: RewriteStats | None = None,
    raw: bytes | None = None,
) -> list[Event]:
    """The events of a non-streaming ``chat.completion``: each message replayed as a one-chunk stream.

    Both paths share every rule of the rewrite this way. The first event is
    a ``ChunkStart`` whose fields are the completion, with ``raw`` when
    nothing needed rewriting. Raises ``InvalidChunk`` for a completion no upstream can send.
    """
    choices = completion.get("choices")
    if not isinstance(choices, list):
        raise InvalidChunk("the completion has no choices")
    replayed = []
    for position, choice in enumerate(choices):
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            raise InvalidChunk("a choice has no message object")
        delta = dict(message)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            delta["tool_calls"] = [
                {**call, "index": i} if isinstance(call, dict) else call for i, call in enumerate(tool_calls)
            ]
        index = choice.get("index", position)
        replayed.append({**choice, "index": index, "delta": delta})
    rewriter = StreamRewriter(options, stats)
    start, *events = rewriter.feed({**completion, "choices": replayed}, raw)
    assert isinstance(start, ChunkStart)
    return [ChunkStart(completion, start.raw), *events, *rewriter.finish()]
