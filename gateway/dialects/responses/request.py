"""A Responses request, read field by field into the neutral ``Request`` (and what the response object repeats).

Input items become messages as the chat answers they came from were: an
assistant message item and the function calls after it are one assistant
turn; reasoning items go with the assistant turn that follows them; a
function call's output is a tool result answering an earlier call. The gateway
resolves ``previous_response_id`` and ``item_reference`` items before
translation (``stored``): a request reaches this parser with the stored
conversation first (``conversation``). Stored conversations and prompts are refused.

Tools become chat function tools: a ``namespace`` is flattened into its
functions (``<namespace>__<name>``), a ``custom`` (freeform) tool is a function
of one string argument, ``input``, and ``local_shell`` a function of the command
line; ``tool_names`` says what each upstream name stands for, so that the
answer gives the calls back in the client's own shape (``ClientTool``). The
hosted tools only the provider's own servers can run (``web_search``,
``file_search``, ``mcp``, ...) are left out and named in ``dropped_tools``; the
route says whether such a request is refused instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final

from gateway.core import json_body
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.fields import Field
from gateway.core.request import (
    Image,
    Message,
    Part,
    Reasoning,
    Request,
    Role,
    Text,
    Tool,
    ToolCall,
    ToolChoice,
    ToolResult,
)
from gateway.dialects.openai_errors import WORDING

__all__ = ["ClientTool", "ResponsesRequest", "ToolKind", "parse_payload", "parse_request"]

# Fields that need state the gateway does not keep: refused whenever they are set.
_STATEFUL: Final = {
    "previous_response_id": "a stored response",
    "conversation": "a stored conversation",
    "prompt": "a stored prompt template",
}
# Fields read by the translation; any other field has no chat-completions counterpart and is dropped.
_TRANSLATED: Final = frozenset(
    (
        "model",
        "input",
        "instructions",
        "stream",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "max_output_tokens",
        "temperature",
        "top_p",
        "user",
        "metadata",
        "stop",
        "text",
        "reasoning",
        "store",
        "background",
        *_STATEFUL,
    )
)
_TOOL_CHOICES: Final = ("auto", "none", "required")
_TEXT_PARTS: Final = ("input_text", "output_text")
_ROLES: Final = {"user": Role.USER, "assistant": Role.ASSISTANT, "system": Role.SYSTEM, "developer": Role.SYSTEM}
# Tools that only the provider's own servers run: chat completions cannot carry them, so they are left out.
_HOSTED: Final = frozenset(
    (
        "web_search",
        "web_search_preview",
        "web_search_2025_08_26",
        "web_search_preview_2025_03_11",
        "file_search",
        "code_interpreter",
        "image_generation",
        "computer_use_preview",
        "computer",
        "mcp",
        # Searches tools deferred until asked for; its results come back as tools the gateway cannot add later.
        "tool_search",
    )
)
_LOCAL_SHELL: Final = "local_shell"
_LOCAL_SHELL_PARAMETERS: Final = {
    "type": "object",
    "properties": {
        "command": {"type": "array", "items": {"type": "string"}, "description": "The command and its arguments."},
        "workdir": {"type": "string", "description": "The directory to run it in."},
        "timeout_ms": {"type": "integer", "description": "How long it may run, in milliseconds."},
    },
    "required": ["command"],
}
_LOCAL_SHELL_DESCRIPTION: Final = "Runs a command on the user's machine and returns its output."


class ToolKind(Enum):
    """What a chat function tool stands for in the client's request."""

    FUNCTION = "function"
    CUSTOM = "custom"  # a freeform tool: its call's ``input`` is the function's one argument
    LOCAL_SHELL = "local_shell"


@dataclass(frozen=True, slots=True)
class ClientTool:
    """The client's tool behind one upstream function name: its kind, its own name and its namespace."""

    kind: ToolKind
    name: str
    namespace: str | None = None


def flat_name(namespace: str | None, name: str) -> str:
    """The upstream function name of a namespaced tool: ``<namespace>__<name>`` (a namespace ending in ``_``
    is joined as it is)."""
    if namespace is None:
        return name
    return namespace + name if namespace.endswith("_") else f"{namespace}__{name}"


@dataclass(frozen=True, slots=True)
class ResponsesRequest:
    """A validated Responses request: the neutral request, and the settings the ``response`` object repeats."""

    request: Request
    echo: Mapping[str, Any]
    # Upstream function names that are not plain function tools of the client (namespaced, custom, local shell).
    tool_names: Mapping[str, ClientTool] = field(default_factory=dict)
    # The hosted tools left out of the upstream request, by type.
    dropped_tools: tuple[str, ...] = ()
    # Seals the text of a reasoning item as its ``encrypted_content``, when the client asked for it (``include``).
    seal: Callable[[str], str] | None = None

    def client_tool(self, name: str) -> ClientTool:
        """What an upstream call's function name stands for (a plain function tool when nothing else)."""
        return self.tool_names.get(name) or ClientTool(ToolKind.FUNCTION, name)

    @property
    def model(self) -> str:
        return self.request.model

    @property
    def stream(self) -> bool:
        return self.request.stream


def _invalid(field: Field, message: str, code: str = "invalid_value") -> GatewayError:
    return field.fail(message, code)


def _wrong_type(field: Field, expected: str) -> GatewayError:
    return field.fail(f"Invalid type for '{field.where}': expected {expected}.", "invalid_type")


def parse_request(body: bytes) -> ResponsesRequest:
    """A Responses request body, validated and read; a 400 whose ``param`` names the field otherwise."""
    return parse_payload(json_body.loads(body))


def parse_payload(payload: Any, conversation: Sequence[Any] | None = None) -> ResponsesRequest:
    """A decoded Responses request, validated and read. ``conversation`` is the stored conversation its
    ``previous_response_id`` named, as input items (None: the request may not name one)."""
    if not isinstance(payload, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
    root = Field(payload, WORDING)
    for key, needs in _STATEFUL.items():
        if root.has(key) and not (key == "previous_response_id" and conversation is not None):
            raise _invalid(
                root.get(key),
                f"'{key}' is not supported: it refers to {needs}, and the gateway keeps no state. "
                "Send the whole conversation in 'input' instead.",
                "unsupported_parameter",
            )
    if root.get("background").boolean():
        raise _invalid(
            root.get("background"),
            "'background: true' is not supported: the gateway keeps no state to poll. Leave it unset or false.",
            "unsupported_value",
        )
    root.get("store").boolean()  # accepted and ignored: the gateway stores nothing
    model = root.get("model").string(required=True, non_empty=True)
    assert model is not None
    stream = bool(root.get("stream").boolean())
    instructions = root.get("instructions").string()
    dropped = {key for key in root.members() if key not in _TRANSLATED and root.has(key)}
    history = _History()
    if instructions:
        history.messages.append(Message(Role.SYSTEM, (Text(instructions),)))
    if conversation:
        history.extend(Field(list(conversation), WORDING, ("previous_response_id",)))
    history.read(root.get("input"))
    tools = _Tools()
    for listed in (root.get("tools"), *history.tools):
        tools.read(listed)
    tool_choice, echo_choice = _tool_choice(root.get("tool_choice"))
    parallel = root.get("parallel_tool_calls").boolean()
    max_output_tokens = root.get("max_output_tokens").integer()
    temperature = root.get("temperature").number()
    top_p = root.get("top_p").number()
    user = root.get("user").string()
    metadata = root.get("metadata").object()
    stop = _stop(root.get("stop"))
    text = root.get("text")
    response_format = None
    if text.object() is not None:
        dropped.update(f"text.{key}" for key in text.members() if key != "format" and text.has(key))
        response_format = _response_format(text.get("format"))
    reasoning = root.get("reasoning")
    effort = None
    if reasoning.object() is not None:
        dropped.update(f"reasoning.{key}" for key in reasoning.members() if key != "effort" and reasoning.has(key))
        effort = reasoning.get("effort").string()
    echo = {
        "instructions": instructions,
        "max_output_tokens": max_output_tokens,
        "metadata": metadata or {},
        "parallel_tool_calls": True if parallel is None else parallel,
        "temperature": temperature,
        "text": {"format": text.get("format").value or {"type": "text"}},
        "tool_choice": echo_choice,
        "tools": tools.echo,
        "top_p": top_p,
        "reasoning": {"effort": effort, "summary": None},
        "user": user,
    }
    if history.unanswered_reasoning:
        dropped.add("reasoning items with no assistant turn after them")
    request = Request(
        model=model,
        stream=stream,
        messages=tuple(history.messages),
        tools=tuple(tools.tools),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=max_output_tokens,
        temperature=temperature,
        top_p=top_p,
        stop=stop,
        user=user,
        metadata=metadata,
        reasoning_effort=effort,
        response_format=response_format,
        dropped=frozenset(dropped),
    )
    return ResponsesRequest(request, echo, tools.names, tuple(tools.dropped))


class _History:
    """Input items as messages: an assistant turn gathers the items that make it up.

    An assistant message item and the function calls after it (and a message after those) make one assistant
    turn, as one chat answer; two message items in a row are two turns. Reasoning items wait for the next
    assistant item and go with its turn.
    """

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.unanswered_reasoning = False
        self._turn: list[Part] | None = None  # the assistant turn being gathered, while more of it may follow
        self._turn_has_calls = False
        self._reasoning: list[Part] = []  # reasoning items waiting for the assistant turn they led to
        self._calls: set[str] = set()
        # ``additional_tools`` items: tools a developer item makes available from there on (Codex's code mode).
        self.tools: list[Field] = []

    def extend(self, items: Field) -> None:
        """Items that come before the input (a stored conversation), read as if they began it."""
        for item in items.entries():
            self._item(item)

    def read(self, items: Field) -> None:
        if isinstance(items.value, str):
            self._append(Message(Role.USER, (Text(items.value),)))
            return
        if items.present and not isinstance(items.value, list):
            raise _wrong_type(items, "a string or an array of input items")
        entries = items.array(required=True, min_items=1)
        assert entries is not None
        for item in entries:
            self._item(item)
        self._close_turn()
        self.unanswered_reasoning = bool(self._reasoning)

    def _item(self, item: Field) -> None:
        kind = item.kind()
        if kind is None and item.has("role"):
            kind = "message"
        if kind == "message":
            self._message(item)
        elif kind == "function_call":
            arguments = item.get("arguments").string(required=True)
            assert arguments is not None
            self._call(item, _named(item), arguments)
        elif kind == "custom_tool_call":
            text = item.get("input").string(required=True)
            assert text is not None
            self._call(item, _named(item), json_body.dumps({"input": text}).decode())
        elif kind == "local_shell_call":
            self._call(item, _LOCAL_SHELL, _local_shell_arguments(item.get("action")))
        elif kind in ("function_call_output", "custom_tool_call_output"):
            self._output(item, item.get("call_id"))
        elif kind == "local_shell_call_output":
            self._output(item, item.get("call_id") if item.has("call_id") else item.get("id"))
        elif kind == "reasoning":
            self._reasoning_item(item)
        elif kind == "additional_tools":
            item.get("tools").array(required=True)
            self.tools.append(item.get("tools"))
        elif kind == "item_reference" or (kind is None and item.has("id")):
            raise _invalid(
                item,
                f"{item.where} refers to a stored item, and the gateway keeps no state: send the item itself.",
                "unsupported_parameter",
            )
        elif kind is None:
            raise item.wording.missing(item.get("type").where)
        else:
            raise _invalid(
                item.get("type"),
                f"Input items of type {kind!r} are not supported: the gateway translates to chat completions, "
                "which carry messages, function calls, their outputs and reasoning.",
                "unsupported_value",
            )

    def _call(self, item: Field, name: str, arguments: str) -> None:
        call_id = item.get("call_id").string(required=True)
        assert call_id is not None
        self._assistant(ToolCall(call_id, name, arguments), call=True)
        self._calls.add(call_id)

    def _append(self, message: Message) -> None:
        self._close_turn()
        self.messages.append(message)

    def _assistant(self, part: Part, *, call: bool = False) -> None:
        if self._turn is not None and not call and not self._turn_has_calls:
            self._close_turn()
        if self._turn is None:
            self._turn, self._turn_has_calls = [], False
        self._turn += self._reasoning
        self._reasoning = []
        self._turn.append(part)
        self._turn_has_calls = self._turn_has_calls or call

    def _close_turn(self) -> None:
        if self._turn is not None:
            self.messages.append(Message(Role.ASSISTANT, tuple(self._turn)))
            self._turn = None

    def _message(self, item: Field) -> None:
        role_field = item.get("role")
        role = _ROLES.get(role_field.string(required=True) or "")
        if role is None:
            raise _invalid(
                role_field,
                f"Invalid value for '{role_field.where}': expected 'user', 'assistant', 'system' or 'developer'.",
            )
        content = item.get("content")
        if isinstance(content.value, str):
            parts: tuple[Part, ...] = (Text(content.value),)
        elif isinstance(content.value, list):
            parts = _parts(content, images=role is Role.USER)
        elif content.present:
            raise _wrong_type(content, "a string or an array of content parts")
        else:
            raise content.wording.missing(content.where)
        if role is Role.ASSISTANT:
            self._assistant(Text("".join(part.text for part in parts if isinstance(part, Text))))
        else:
            # Chat providers without a developer role are many; system is what the model sees either way.
            self._append(Message(role, parts))

    def _output(self, item: Field, answers: Field) -> None:
        call_id = answers.string(required=True)
        assert call_id is not None
        if call_id not in self._calls:
            raise _invalid(
                answers,
                f"No call item before {item.where} has the call_id {call_id!r} that this output answers.",
            )
        output = item.get("output")
        if not output.present:
            raise output.wording.missing(output.where)
        self._append(Message(Role.USER, (ToolResult(call_id, _tool_output(output)),)))

    def _reasoning_item(self, item: Field) -> None:
        texts: list[str] = []
        for key, part_type in (("content", "reasoning_text"), ("summary", "summary_text")):
            for part in item.get(key).entries():
                kind = part.get("type")
                if part.kind() != part_type:
                    raise _invalid(kind, f"Invalid value for '{kind.where}': expected {part_type!r}.")
                text = part.get("text").string(required=True)
                assert text is not None
                texts.append(text)
            if texts:  # the reasoning itself when present, else its summary
                break
        if texts:
            self._reasoning.append(Reasoning("".join(texts)))


def _parts(content: Field, *, images: bool) -> tuple[Part, ...]:
    """Content parts: text (input, output, refusal) and, in user messages, images."""
    parts: list[Part] = []
    for part in content.entries():
        kind = part.kind()
        if kind in _TEXT_PARTS:
            text = part.get("text").string(required=True)
            assert text is not None
            parts.append(Text(text))
        elif kind == "refusal":
            refusal = part.get("refusal").string(required=True)
            assert refusal is not None
            parts.append(Text(refusal))
        elif kind == "input_image" and images:
            parts.append(_image(part))
        elif kind == "input_image":
            raise _invalid(
                part.get("type"),
                f"Images are supported in user messages only, not at '{part.where}'.",
                "unsupported_value",
            )
        elif kind is None:
            raise part.wording.missing(part.get("type").where)
        else:
            raise _invalid(
                part.get("type"),
                f"Content parts of type {kind!r} are not supported: the gateway translates to chat completions "
                "and accepts input_text, output_text, refusal and input_image parts.",
                "unsupported_value",
            )
    if all(isinstance(part, Text) for part in parts):
        return (Text("".join(part.text for part in parts if isinstance(part, Text))),)
    return tuple(parts)


def _image(part: Field) -> Image:
    url = part.get("image_url").string()
    if url is None:
        if part.has("file_id"):
            raise _invalid(
                part.get("file_id"),
                "Images by file_id are not supported (the gateway keeps no files): send an image_url or a data URL.",
                "unsupported_parameter",
            )
        raise part.wording.missing(part.get("image_url").where)
    return Image(url, part.get("detail").string())


def _tool_output(output: Field) -> str:
    """A function call's output as a tool result's text."""
    if isinstance(output.value, str):
        return output.value
    if not isinstance(output.value, list):
        raise _wrong_type(output, "a string or an array of content parts")
    texts = []
    for part in output.entries():
        kind = part.kind()
        if kind not in _TEXT_PARTS:
            raise _invalid(
                part.get("type"),
                f"Function call outputs of type {kind!r} are not supported: chat tool messages carry text only.",
                "unsupported_value",
            )
        text = part.get("text").string(required=True)
        assert text is not None
        texts.append(text)
    return "".join(texts)


class _Tools:
    """The client's tools as chat function tools, what each upstream name stands for, and what was left out."""

    def __init__(self) -> None:
        self.tools: list[Tool] = []
        self.echo: list[dict[str, Any]] = []  # the tools as the ``response`` object repeats them
        self.names: dict[str, ClientTool] = {}
        self.dropped: list[str] = []

    def read(self, tools: Field) -> None:
        for tool in tools.entries():
            kind = tool.kind(required=True)
            if kind in _HOSTED:
                if kind not in self.dropped:
                    self.dropped.append(kind)
                continue
            if kind == "namespace":
                namespace = tool.get("name").string(required=True, non_empty=True)
                about = tool.get("description").string()
                for inner in tool.get("tools").entries():
                    self._tool(inner, namespace, about)
                self.echo.append(dict(tool.value))
            elif kind == _LOCAL_SHELL:
                client = ClientTool(ToolKind.LOCAL_SHELL, _LOCAL_SHELL)
                self._add(client, tool, _LOCAL_SHELL_DESCRIPTION, _LOCAL_SHELL_PARAMETERS, None)
            else:
                self._tool(tool, None, None)

    def _tool(self, tool: Field, namespace: str | None, about: str | None) -> None:
        kind = tool.kind(required=True)
        if kind not in ("function", "custom"):
            where = "inside a namespace" if namespace is not None else f"({tool.where})"
            raise _invalid(
                tool.get("type"),
                f"The tool {kind!r} {where} is not supported: the gateway translates to chat completions, which "
                "have function tools only; it maps function, custom, namespace and local_shell tools to them "
                "and leaves out hosted tools. Built-in tools work on a route whose provider serves the "
                "Responses API natively.",
                "unsupported_value",
            )
        name = tool.get("name").string(required=True, non_empty=True)
        assert name is not None
        description = tool.get("description").string()
        if about:
            description = f"{description}\n\n({namespace}: {about})" if description else f"({namespace}: {about})"
        if kind == "custom":
            client = ClientTool(ToolKind.CUSTOM, name, namespace)
            self._add(client, tool, _custom_description(description, tool.get("format")), _CUSTOM_PARAMETERS, None)
        else:
            client = ClientTool(ToolKind.FUNCTION, name, namespace)
            self._add(client, tool, description, tool.get("parameters").object(), tool.get("strict").boolean())

    def _add(
        self,
        client: ClientTool,
        tool: Field,
        description: str | None,
        parameters: Mapping[str, Any] | None,
        strict: bool | None,
    ) -> None:
        upstream = flat_name(client.namespace, client.name)
        if upstream in self.names or any(known.name == upstream for known in self.tools):
            raise _invalid(tool, f"Two tools are named {upstream!r} (after flattening namespaces): {tool.where}.")
        if client.kind is not ToolKind.FUNCTION or client.namespace is not None:
            self.names[upstream] = client
        self.tools.append(Tool(upstream, description, parameters, strict))
        if client.kind is ToolKind.FUNCTION and client.namespace is None:
            echo = {"type": "function", "name": upstream, "description": description, "parameters": parameters}
            self.echo.append({**echo, "strict": strict})
        elif client.namespace is None:
            self.echo.append(dict(tool.value))


_CUSTOM_PARAMETERS: Final = {
    "type": "object",
    "properties": {"input": {"type": "string", "description": "The tool's input, as its description says."}},
    "required": ["input"],
    "additionalProperties": False,
}


def _custom_description(description: str | None, input_format: Field) -> str:
    """A freeform tool's description, with the format its input must have (a grammar, when it gives one)."""
    parts = [description] if description else []
    if input_format.present and input_format.kind() == "grammar":
        syntax = input_format.get("syntax").string() or "lark"
        definition = input_format.get("definition").string() or ""
        parts.append(f"The `input` argument is raw text (not JSON) in this {syntax} grammar:\n{definition}")
    else:
        parts.append("The `input` argument is raw text, not JSON.")
    return "\n\n".join(parts)


def _named(item: Field) -> str:
    """The upstream name of a call item's tool: its name, under its namespace when it has one."""
    name = item.get("name").string(required=True)
    assert name is not None
    return flat_name(item.get("namespace").string(), name)


def _local_shell_arguments(action: Field) -> str:
    """A ``local_shell_call``'s action as the arguments of the ``local_shell`` function."""
    action.object(required=True)
    command = _strings_of(action.get("command"))
    arguments: dict[str, Any] = {"command": command}
    if (workdir := action.get("working_directory").string()) is not None:
        arguments["workdir"] = workdir
    if (timeout := action.get("timeout_ms").integer()) is not None:
        arguments["timeout_ms"] = timeout
    return json_body.dumps(arguments).decode()


def _strings_of(field: Field) -> list[str]:
    values = []
    for entry in field.array(required=True) or ():
        value = entry.string(required=True)
        assert value is not None
        values.append(value)
    return values


def _tool_choice(choice: Field) -> tuple[ToolChoice | None, str | dict[str, Any]]:
    """The tool choice, and as the ``response`` object repeats it."""
    if not choice.present:
        return None, "auto"
    if isinstance(choice.value, str):
        if choice.value not in _TOOL_CHOICES:
            raise _invalid(
                choice, f"Invalid value for '{choice.where}': expected 'auto', 'none', 'required' or a function."
            )
        mode = choice.value
        return ToolChoice(mode), mode  # type: ignore[arg-type]
    if not isinstance(choice.value, dict):
        raise _wrong_type(choice, "a string or an object")
    kind = choice.kind()
    if kind not in ("function", "custom"):
        raise _invalid(
            choice.get("type"),
            f"tool_choice of type {kind!r} is not supported: the gateway translates to chat completions, "
            "where a tool choice names a function.",
            "unsupported_value",
        )
    name = choice.get("name").string(required=True)
    assert name is not None
    return ToolChoice("function", flat_name(choice.get("namespace").string(), name)), dict(choice.value)


def _stop(stop: Field) -> str | tuple[str, ...] | None:
    if stop.value is None or isinstance(stop.value, str):
        return stop.value
    if isinstance(stop.value, list) and all(isinstance(item, str) for item in stop.value):
        return tuple(stop.value)
    raise _wrong_type(stop, "a string or an array of strings")


def _response_format(text_format: Field) -> dict[str, Any] | None:
    """``text.format`` as a chat ``response_format``; plain text is the default and needs none."""
    if text_format.object() is None:
        return None
    kind = text_format.kind()
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_object"}
    if kind == "json_schema":
        name = text_format.get("name").string(required=True)
        schema = text_format.get("schema").object(required=True)
        json_schema: dict[str, Any] = {"name": name, "schema": schema}
        if (description := text_format.get("description").string()) is not None:
            json_schema["description"] = description
        if (strict := text_format.get("strict").boolean()) is not None:
            json_schema["strict"] = strict
        return {"type": "json_schema", "json_schema": json_schema}
    if kind is None:
        raise text_format.wording.missing(text_format.get("type").where)
    raise _invalid(
        text_format.get("type"),
        f"Invalid value for '{text_format.get('type').where}': expected 'text', 'json_object' or 'json_schema'.",
    )
