"""Agent mode on the request side: the upstream model answers through the message tool.

With ``inject_tools`` the gateway adds the message tool (and the inner-thoughts
argument to every client tool), forces a tool call, and rewrites past
assistant turns into message-tool calls, so any tool-calling model behaves as
an agent-style model while the client speaks plain chat. Pure functions: the
client's payload in, the upstream payload out (or a 400 for history it cannot read).

A request for structured output (``response_format`` of type ``json_schema``
or ``json_object``) is answered without injection: the model writes the JSON
as its content, which the client gets as it came, while reasoning fields stay
hidden as on every other answer.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Final

import orjson

from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.options import RewriteOptions, Thoughts

__all__ = ["TOOL_RESULT", "call_id", "default_system_prompt", "prepare"]

MESSAGE_TOOL_DESCRIPTION = "Send a message to the user. This is the only way the user sees your reply."
MESSAGE_ARG_DESCRIPTION = "The reply the user sees."
INNER_THOUGHTS_DESCRIPTION = (
    "Private reasoning before acting: what you understood, your plan, what to say. The user never sees it."
)
TOOL_RESULT = "Message sent."
_STRUCTURED: Final = frozenset(("json_schema", "json_object"))


def default_system_prompt(options: RewriteOptions) -> str:
    thoughts = (
        f"Before acting, think privately in the `{options.inner_thoughts_arg}` argument of every tool call; "
        "the user never sees it. "
        if options.inner_thoughts is Thoughts.KWARG
        else ""
    )
    return (
        f"You reply to the user only by calling the `{options.message_tool}` tool: "
        f"its `{options.message_arg}` argument is the reply the user sees. "
        f"{thoughts}You may call other tools first when you need them; end every turn with `{options.message_tool}`."
    )


def prepare(payload: dict[str, Any], options: RewriteOptions) -> tuple[dict[str, Any], RewriteOptions]:
    """The upstream payload for a client payload, and the route's options narrowed to this request."""
    tools = payload.get("tools")
    if _wants_structured_output(payload):
        # The answer is the content itself: nothing is injected, so nothing is stripped from it.
        return payload, dataclasses.replace(options, inner_thoughts=Thoughts.NONE)
    kwarg = options.inner_thoughts is Thoughts.KWARG
    own = _tools_declaring(tools, options.inner_thoughts_arg) if kwarg else frozenset()
    if own:
        options = dataclasses.replace(options, keep_arguments_of=own)
    if not options.inject_tools or "functions" in payload:
        return payload, options
    upstream = dict(payload)
    upstream["tools"] = [*(_with_inner_thoughts(tool, options) for tool in tools or ()), _message_tool(options)]
    choice = payload.get("tool_choice")
    if choice is None or choice == "auto":
        upstream["tool_choice"] = "required"
    elif choice == "none":
        upstream["tool_choice"] = {"type": "function", "function": {"name": options.message_tool}}
    upstream["messages"] = _history(payload["messages"], options)
    prompt = default_system_prompt(options) if options.system_prompt is None else options.system_prompt
    if prompt:
        upstream["messages"] = _with_system_prompt(upstream["messages"], prompt)
    return upstream, options


def _wants_structured_output(payload: dict[str, Any]) -> bool:
    response_format = payload.get("response_format")
    return isinstance(response_format, dict) and response_format.get("type") in _STRUCTURED


def _function_of(tool: Any) -> dict[str, Any] | None:
    if isinstance(tool, dict) and tool.get("type") == "function":
        function = tool.get("function")
        if isinstance(function, dict):
            return function
    return None


def _tools_declaring(tools: Any, arg: str) -> frozenset[str]:
    """Client tools whose schema already has the argument: theirs to keep, not ours to strip."""
    names: set[str] = set()
    for tool in tools or ():
        function = _function_of(tool)
        if function is None or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, dict) else None
        if isinstance(properties, dict) and arg in properties:
            names.add(function["name"])
    return frozenset(names)


def _string(description: str) -> dict[str, str]:
    return {"type": "string", "description": description}


def _message_tool(options: RewriteOptions) -> dict[str, Any]:
    properties = {}
    if options.inner_thoughts is Thoughts.KWARG:
        properties[options.inner_thoughts_arg] = _string(
            options.inner_thoughts_description or INNER_THOUGHTS_DESCRIPTION
        )
    properties[options.message_arg] = _string(options.message_arg_description or MESSAGE_ARG_DESCRIPTION)
    return {
        "type": "function",
        "function": {
            "name": options.message_tool,
            "description": options.message_tool_description or MESSAGE_TOOL_DESCRIPTION,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            },
        },
    }


def _with_inner_thoughts(tool: Any, options: RewriteOptions) -> Any:
    """The client tool with the inner-thoughts argument first (kwarg mode), unless it has one already."""
    function = _function_of(tool)
    if options.inner_thoughts is not Thoughts.KWARG or function is None:
        return tool
    name = function.get("name")
    if isinstance(name, str) and name in options.keep_arguments_of:
        return tool
    parameters = function.get("parameters")
    if not isinstance(parameters, dict):
        parameters = {"type": "object", "properties": {}}
    properties = parameters.get("properties")
    required = parameters.get("required")
    thoughts = _string(options.inner_thoughts_description or INNER_THOUGHTS_DESCRIPTION)
    new_parameters = {
        **parameters,
        "properties": {options.inner_thoughts_arg: thoughts, **(properties if isinstance(properties, dict) else {})},
        "required": [options.inner_thoughts_arg, *(required if isinstance(required, list) else ())],
    }
    return {**tool, "function": {**function, "parameters": new_parameters}}


def _text_of(content: Any, position: int) -> str:
    """An assistant message's text; a text part whose ``text`` is not a string is the client's error."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = []
    for index, part in enumerate(content):
        if isinstance(part, dict) and part.get("type") == "text":
            text = part.get("text")
            if not isinstance(text, str):
                param = f"messages.{position}.content.{index}.text"
                raise GatewayError(
                    ErrorKind.INVALID_REQUEST, f"Invalid value for '{param}': expected a string.", param=param
                )
            texts.append(text)
    return "".join(texts)


def call_id(position: int, text: str) -> str:
    """Deterministic, so the same conversation gives the same upstream prefix (and prompt caching works)."""
    return "call_" + hashlib.sha256(f"{position}\x00{text}".encode()).hexdigest()[:24]


def _history(messages: list[Any], options: RewriteOptions) -> list[Any]:
    """Past assistant text becomes a message-tool call and its answer, as the model would have produced it."""
    out: list[Any] = []
    for position, message in enumerate(messages):
        assistant = isinstance(message, dict) and message.get("role") == "assistant"
        text = _text_of(message.get("content"), position) if assistant else ""
        if not text:
            out.append(message)
            continue
        identifier = call_id(position, text)
        arguments = orjson.dumps({options.message_arg: text}).decode()
        call = {
            "id": identifier,
            "type": "function",
            "function": {"name": options.message_tool, "arguments": arguments},
        }
        rewritten = {key: value for key, value in message.items() if key != "content"}
        rewritten["content"] = None
        client_calls = message.get("tool_calls")
        rewritten["tool_calls"] = [call, *(client_calls if isinstance(client_calls, list) else ())]
        out.append(rewritten)
        out.append({"role": "tool", "tool_call_id": identifier, "content": TOOL_RESULT})
    return out


def _with_system_prompt(messages: list[Any], prompt: str) -> list[Any]:
    for position, message in enumerate(messages):
        if isinstance(message, dict) and message.get("role") in ("system", "developer"):
            content = message.get("content")
            if isinstance(content, str):
                merged = {**message, "content": f"{content}\n\n{prompt}" if content else prompt}
            elif isinstance(content, list):
                merged = {**message, "content": [*content, {"type": "text", "text": prompt}]}
            else:
                merged = {**message, "content": prompt}
            return [*messages[:position], merged, *messages[position + 1 :]]
    return [{"role": "system", "content": prompt}, *messages]
