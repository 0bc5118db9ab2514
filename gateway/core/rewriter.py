"""Rewrites an agent-style model's answer into what a stock chat client expects.

The message tool's ``message`` argument becomes plain content, the model's
private reasoning is hidden (or exposed as ``reasoning_content``), and the
client's own tool calls pass through without the injected inner-thoughts
argument. Pure and synchronous: chunks in, chunks out.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from gateway.core.arguments import FILTERED, ArgumentsParser, Event

__all__ = ["InvalidChunk", "RewriteOptions", "RewriteStats", "StreamRewriter", "choice_index", "rewrite_completion"]

Chunk = dict[str, Any]

# Delta keys the rewriter owns; every other key passes through untouched.
_REWRITTEN: Final = ("content", "reasoning_content", "reasoning", "tool_calls", "function_call")
_TOOL_CALL_KEYS: Final = frozenset(("index", "id", "type", "function"))
_TOOL_FINISHES: Final = frozenset(("tool_calls", "function_call", "stop"))
# Segment markers for text that does not come from a tool call.
_CONTENT: Final = object()
_UPSTREAM_REASONING: Final = object()


class InvalidChunk(ValueError):
    """A decoded chunk that no chat completion stream can contain."""


def choice_index(choice: Chunk, position: int) -> Any:
    """The index a choice says it has (else its position), which keys its state across chunks."""
    index = choice.get("index", position)
    if isinstance(index, (dict, list)):
        raise InvalidChunk("a choice's index is an object or an array")
    return index


@dataclass(frozen=True, slots=True)
class RewriteOptions:
    """How one route's answers are rewritten."""

    message_tool: str = "send_message"
    message_arg: str = "message"
    inner_thoughts: Literal["kwarg", "content", "none"] = "kwarg"
    inner_thoughts_arg: str = "inner_thoughts"
    reasoning: Literal["hide", "expose"] = "hide"
    # Client tools that declare the inner-thoughts argument themselves keep it.
    keep_arguments_of: frozenset[str] = field(default_factory=frozenset)
    # One tool call's arguments beyond this many characters end the rewrite (see ``failure``).
    max_arguments_chars: int | None = None


@dataclass(slots=True)
class RewriteStats:
    """What the rewrite did, for metrics; never any text."""

    message_calls: int = 0
    client_calls: int = 0
    reasoning_chars: int = 0
    invalid_arguments: int = 0


class _Channel:
    """Text bound for one delta field; a new segment is set off by a blank line."""

    __slots__ = ("parts", "segment")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.segment: object = None

    def add(self, text: str, segment: object) -> None:
        if segment is not self.segment:
            if self.segment is not None:
                self.parts.append("\n\n")
            self.segment = segment
        self.parts.append(text)

    def take(self) -> str | None:
        if not self.parts:
            return None
        text = "".join(self.parts)
        self.parts.clear()
        return text


class _Call:
    """One upstream tool call, undecided until its name is certain."""

    __slots__ = (
        "id", "type", "name", "legacy", "is_message", "decided", "settled", "fed", "size", "parser", "index", "extra"
    )

    def __init__(self, call_id: str | None, call_type: str | None, legacy: bool) -> None:
        self.id = call_id
        self.type = call_type
        self.name = ""
        self.legacy = legacy
        self.is_message = False
        self.decided = False
        self.settled = False
        self.fed = False
        self.size = 0
        self.parser: ArgumentsParser | None = None
        self.index = -1  # the client-visible index, once decided as a client call
        self.extra: dict[str, Any] = {}


class _Choice:
    """Per-choice state, plus the output being assembled for the current chunk."""

    __slots__ = ("calls", "started", "finished", "client_calls", "legacy", "visible", "reasoning", "entries")

    def __init__(self) -> None:
        self.calls: dict[int | str, _Call] = {}
        self.started = False
        self.finished = False
        self.client_calls = 0
        self.legacy = False
        self.visible = _Channel()
        self.reasoning = _Channel()
        # Client tool-call deltas of the current chunk, by call, in order.
        self.entries: dict[_Call, tuple[dict[str, Any], dict[str, Any]]] = {}


class StreamRewriter:
    """Rewrites one streamed response, chunk by chunk.

    ``feed`` takes a decoded ``chat.completion.chunk`` and returns the chunks
    to send: the very same object when nothing changed (so the caller may
    forward the original bytes), a rewritten copy, or nothing; it raises
    ``InvalidChunk`` for a chunk no stream can contain. ``finish`` settles
    what the stream left open. ``failure`` says why the rewrite had to stop
    (a limit was exceeded); from then on nothing more is sent.
    """

    def __init__(self, options: RewriteOptions | None = None, stats: RewriteStats | None = None) -> None:
        self.options = options = options or RewriteOptions()
        self.stats = stats if stats is not None else RewriteStats()
        self.failure: str | None = None
        self._choices: dict[Any, _Choice] = {}
        self._template: Chunk = {}
        self._kwarg = options.inner_thoughts == "kwarg"
        self._content_is_reasoning = options.inner_thoughts == "content"
        self._expose = options.reasoning == "expose"
        self._message_keys = (
            (options.message_arg, options.inner_thoughts_arg) if self._kwarg else (options.message_arg,)
        )

    @property
    def finished(self) -> bool:
        """Whether every choice seen so far has received its ``finish_reason``."""
        return bool(self._choices) and all(state.finished for state in self._choices.values())

    def feed(self, chunk: Chunk) -> list[Chunk]:
        if self.failure is not None:
            return []
        choices = chunk.get("choices") if isinstance(chunk, dict) else None
        if not isinstance(choices, list) or not choices:
            return [chunk]
        self._template = chunk
        out: list[Any] = []
        changed = False
        for position, choice in enumerate(choices):
            if not isinstance(choice, dict):
                out.append(choice)
                continue
            new = self._rewrite_choice(choice, position)
            changed = changed or new is not choice
            if new is not None:
                out.append(new)
        if not changed:
            return [chunk]
        if not out and chunk.get("usage") is None:
            return []
        rewritten = dict(chunk)
        rewritten["choices"] = out
        return [rewritten]

    @staticmethod
    def continues(chunk: Chunk) -> bool:
        """Whether ``chunk``, once fed, only carried an argument fragment of the call in its slot.

        Then ``feed_fragment(chunk, arguments)`` does what ``feed`` would do
        with a copy of ``chunk`` carrying other ``arguments``, so a caller that
        recognises such copies by their bytes need not decode them.
        """
        if not isinstance(chunk, dict) or chunk.get("usage") is not None:
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

    def feed_fragment(self, chunk: Chunk, arguments: str) -> Chunk | None:
        """``feed`` of ``chunk`` (one that ``continues``) with ``arguments`` as its fragment.

        Returns the delta of the one rewritten choice, or None when there is
        nothing to send; the rest of the chunk is ``chunk``'s.
        """
        if self.failure is not None:
            return None
        self._template = chunk
        choice = chunk["choices"][0]
        state = self._choices[choice_index(choice, 0)]
        self._call_delta(state, state.calls[choice["delta"]["tool_calls"][0]["index"]], None, arguments)
        delta = self._take_output(state, {})
        return delta if any(delta.values()) else None

    def finish(self) -> list[Chunk]:
        choices = []
        for index, state in self._choices.items():
            self._settle_all(state)
            delta = self._take_output(state, {})
            if delta:
                choices.append({"index": index, "delta": delta, "finish_reason": None})
        if not choices:
            return []
        chunk = {key: value for key, value in self._template.items() if key not in ("choices", "usage")}
        chunk["choices"] = choices
        return [chunk]

    def _rewrite_choice(self, choice: Chunk, position: int) -> Chunk | None:
        """The choice itself when nothing changes, a rewritten copy, or None to drop it."""
        index = choice_index(choice, position)
        state = self._choices.get(index)
        if state is None:
            state = self._choices[index] = _Choice()
        first = not state.started
        state.started = True

        delta = choice.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        content = delta.get("content")
        text = content if isinstance(content, str) else ""
        structural = self._content_is_reasoning and bool(text)
        if text:
            if self._content_is_reasoning:
                self._reason(state, text, _CONTENT)
            else:
                state.visible.add(text, _CONTENT)
        for key in ("reasoning_content", "reasoning"):
            reasoning = delta.get(key)
            if reasoning is not None:
                structural = True
                if isinstance(reasoning, str) and reasoning:
                    self._reason(state, reasoning, _UPSTREAM_REASONING)
        tool_calls = delta.get("tool_calls")
        if tool_calls is not None:
            structural = True
            if isinstance(tool_calls, list):
                for call_position, tool_call in enumerate(tool_calls):
                    if isinstance(tool_call, dict):
                        self._tool_call(state, call_position, tool_call)
        function_call = delta.get("function_call")
        if function_call is not None:
            structural = True
            if isinstance(function_call, dict):
                self._function_call(state, function_call)

        finish = choice.get("finish_reason")
        mapped = finish
        if finish is not None:
            self._settle_all(state)
            state.finished = True
            if isinstance(finish, str) and finish in _TOOL_FINISHES:
                mapped = ("function_call" if state.legacy else "tool_calls") if state.client_calls else "stop"

        passed_through = state.visible.parts == [text] if text else not state.visible.parts
        if not structural and mapped == finish and passed_through:
            state.visible.parts.clear()
            return choice

        new_delta = {key: value for key, value in delta.items() if key not in _REWRITTEN}
        if "content" in delta and not text:
            new_delta["content"] = content
        self._take_output(state, new_delta)
        if not first and finish is None and not any(new_delta.values()) and choice.get("usage") is None:
            return None
        rewritten = dict(choice)
        if new_delta or "delta" in choice:
            rewritten["delta"] = new_delta
        if finish is not None:
            rewritten["finish_reason"] = mapped
        return rewritten

    def _take_output(self, state: _Choice, delta: Chunk) -> Chunk:
        """Move what the choice assembled for this chunk into ``delta``."""
        visible = state.visible.take()
        if visible is not None:
            delta["content"] = visible
        reasoning = state.reasoning.take()
        if reasoning is not None:
            delta["reasoning_content"] = reasoning
        if state.entries:
            for wrapper, function in state.entries.values():
                if wrapper is function:
                    delta["function_call"] = function
                else:
                    delta.setdefault("tool_calls", []).append(wrapper)
            state.entries.clear()
        return delta

    def _reason(self, state: _Choice, text: str, segment: object) -> None:
        self.stats.reasoning_chars += len(text)
        if self._expose:
            state.reasoning.add(text, segment)

    def _tool_call(self, state: _Choice, position: int, tool_call: Chunk) -> None:
        slot = tool_call.get("index")
        if not isinstance(slot, int):
            slot = position
        call_id = tool_call.get("id") or None
        call = state.calls.get(slot)
        if call is None or (call_id is not None and call.id is not None and call_id != call.id):
            if call is not None:
                self._settle(state, call)
            call = state.calls[slot] = _Call(call_id, tool_call.get("type") or None, legacy=False)
            call.extra = {key: value for key, value in tool_call.items() if key not in _TOOL_CALL_KEYS}
        elif call.id is None:
            call.id = call_id
        function = tool_call.get("function")
        if isinstance(function, dict):
            self._call_delta(state, call, function.get("name"), function.get("arguments"))

    def _function_call(self, state: _Choice, function_call: Chunk) -> None:
        call = state.calls.get("function_call")
        if call is None:
            call = state.calls["function_call"] = _Call(None, None, legacy=True)
        self._call_delta(state, call, function_call.get("name"), function_call.get("arguments"))

    def _call_delta(self, state: _Choice, call: _Call, name: Any, arguments: Any) -> None:
        # A name arrives in pieces until the arguments start; afterwards a
        # repeated name (or an empty one) must not rename the call.
        if isinstance(name, str) and name and not call.fed:
            call.name += name
            if call.decided and not call.is_message:
                function = self._entry(state, call)[1]
                function["name"] = function.get("name", "") + name
        if not isinstance(arguments, str):
            arguments = ""
        if not call.decided and (arguments or not self.options.message_tool.startswith(call.name)):
            self._decide(state, call)
        if arguments:
            call.fed = True
            call.size += len(arguments)
            limit = self.options.max_arguments_chars
            if limit is not None and call.size > limit:
                self.failure = f"a tool call's arguments exceed {limit} characters"
                return
            self._arguments(state, call, arguments)

    def _decide(self, state: _Choice, call: _Call) -> None:
        options = self.options
        call.decided = True
        if call.name == options.message_tool:
            call.is_message = True
            call.parser = ArgumentsParser(capture=self._message_keys)
            self.stats.message_calls += 1
            return
        call.index = state.client_calls
        state.client_calls += 1
        state.legacy = state.legacy or call.legacy
        self.stats.client_calls += 1
        if self._kwarg and call.name not in options.keep_arguments_of:
            call.parser = ArgumentsParser(capture=(), drop=options.inner_thoughts_arg)
        function: dict[str, Any] = {"name": call.name, "arguments": ""}
        if call.legacy:
            state.entries[call] = (function, function)
        else:
            header = {"index": call.index, "id": call.id or "call_" + secrets.token_hex(12)}
            header["type"] = call.type or "function"
            state.entries[call] = ({**header, **call.extra, "function": function}, function)

    def _entry(self, state: _Choice, call: _Call) -> tuple[dict[str, Any], dict[str, Any]]:
        """This chunk's delta for a client call: (tool-call wrapper, its function)."""
        entry = state.entries.get(call)
        if entry is None:
            if call.legacy:
                function: dict[str, Any] = {}
                entry = (function, function)
            else:
                function = {}
                entry = ({"index": call.index, "function": function}, function)
            state.entries[call] = entry
        return entry

    def _arguments(self, state: _Choice, call: _Call, arguments: str) -> None:
        parser = call.parser
        events: list[Event] = [(FILTERED, arguments)] if parser is None else parser.feed(arguments)
        for key, text in events:
            if key is FILTERED:
                function = self._entry(state, call)[1]
                function["arguments"] = function.get("arguments", "") + text
            elif call.is_message and key == self.options.message_arg:
                state.visible.add(text, call)
            else:
                self._reason(state, text, call)

    def _settle(self, state: _Choice, call: _Call) -> None:
        if call.settled:
            return
        call.settled = True
        if not call.decided:
            self._decide(state, call)
        if call.parser is not None and call.fed:
            call.parser.close()
            if call.parser.error is not None:
                self.stats.invalid_arguments += 1

    def _settle_all(self, state: _Choice) -> None:
        for call in state.calls.values():
            self._settle(state, call)


def rewrite_completion(completion: Chunk, options: RewriteOptions | None = None, stats: RewriteStats | None = None) -> Chunk:
    """Rewrite a non-streaming ``chat.completion`` with the streaming semantics.

    Each message is replayed as a one-chunk stream, so both paths share every
    rule; the resulting deltas are folded back into a message.
    """
    choices = completion.get("choices") if isinstance(completion, dict) else None
    if not isinstance(choices, list):
        return completion
    new_choices = []
    for choice in choices:
        message = choice.get("message") if isinstance(choice, dict) else None
        if not isinstance(message, dict):
            new_choices.append(choice)
            continue
        delta = dict(message)
        tool_calls = message.get("tool_calls")
        if isinstance(tool_calls, list):
            delta["tool_calls"] = [
                {**call, "index": i} if isinstance(call, dict) else call for i, call in enumerate(tool_calls)
            ]
        rewriter = StreamRewriter(options, stats)
        replay = {"choices": [{"index": 0, "delta": delta, "finish_reason": choice.get("finish_reason")}]}
        merged, finish = _fold(rewriter.feed(replay) + rewriter.finish())
        new_message = {key: value for key, value in message.items() if key not in _REWRITTEN[1:]}
        new_message["content"] = merged.get("content")
        for key in ("reasoning_content", "tool_calls", "function_call"):
            if merged.get(key):
                new_message[key] = merged[key]
        new_choice = dict(choice)
        new_choice["message"] = new_message
        if "finish_reason" in choice:
            new_choice["finish_reason"] = finish
        new_choices.append(new_choice)
    rewritten = dict(completion)
    rewritten["choices"] = new_choices
    return rewritten


def _fold(chunks: list[Chunk]) -> tuple[Chunk, Any]:
    """Concatenate the deltas of a one-choice stream into message fields."""
    merged: Chunk = {}
    calls: dict[int, Chunk] = {}
    finish = None
    for chunk in chunks:
        for choice in chunk["choices"]:
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") or {}
            for key in ("content", "reasoning_content"):
                if delta.get(key):
                    merged[key] = (merged.get(key) or "") + delta[key]
            for call in delta.get("tool_calls") or ():
                call = {**call, "function": dict(call["function"])}
                index = call.pop("index")
                if index in calls:
                    _concat_function(calls[index]["function"], call["function"])
                else:
                    calls[index] = call
            if "function_call" in delta:
                _concat_function(merged.setdefault("function_call", {}), delta["function_call"])
    if calls:
        merged["tool_calls"] = [calls[index] for index in sorted(calls)]
    return merged, finish


def _concat_function(into: Chunk, piece: Chunk) -> None:
    for key in ("name", "arguments"):
        if key in piece:
            into[key] = into.get(key, "") + piece[key]
