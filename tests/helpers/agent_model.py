"""A scripted model for agent mode: a tool-calling model that checks what the gateway made of each request."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers.servers import Received, Reply, completion_of, json_reply, stream_reply
from tests.helpers.streams import agent_stream, call, choice, chunk, split_evenly


class AgentModel:
    """A tool-calling model made agent-style by the gateway: it must receive the injected tools and history."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def check(self, body: dict[str, Any]) -> None:
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools", [])}
        if "send_message" not in tools or body.get("tool_choice") != "required":
            self.problems.append("the message tool was not injected or not required")
        for name, function in tools.items():
            if next(iter(function["parameters"]["properties"])) != "inner_thoughts":
                self.problems.append(f"{name} lacks inner_thoughts")
        messages = body["messages"]
        if messages[0]["role"] != "system" or "send_message" not in messages[0]["content"]:
            self.problems.append("no system prompt")
        for position, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            if message.get("content"):
                self.problems.append("assistant text reached the model as text")
            calls = message.get("tool_calls") or []
            ids = {c["id"] for c in calls}
            answered = {
                m["tool_call_id"] for m in messages[position + 1 : position + 1 + len(calls)] if m["role"] == "tool"
            }
            if ids != answered:
                self.problems.append("a tool call is not answered right after its assistant message")

    def __call__(self, request: Received) -> Reply:
        body = request.json
        self.check(body)
        last = body["messages"][-1]
        tools = {t["function"]["name"] for t in body["tools"]}
        if last["role"] == "user" and "weather" in last["content"].lower() and "get_weather" in tools:
            arguments = [
                json.dumps({"inner_thoughts": "I need the weather first.", "message": "Checking."}),
                json.dumps({"inner_thoughts": "Use the tool.", "city": "Oslo"}),
            ]
            chunks = [
                chunk(
                    choice(role="assistant", content=None, tool_calls=[call(0, "", id="call_m", name="send_message")])
                ),
                *[chunk(choice(tool_calls=[call(0, piece)])) for piece in split_evenly(arguments[0], 4)],
                chunk(choice(tool_calls=[call(1, "", id="call_weather", name="get_weather")])),
                *[chunk(choice(tool_calls=[call(1, piece)])) for piece in split_evenly(arguments[1], 4)],
                chunk(choice(finish="tool_calls")),
            ]
        else:
            said = last["content"] if last["role"] != "tool" else f"the tool said {last['content']}"
            document = json.dumps({"inner_thoughts": "Reply kindly.", "message": f"Answer to: {said}"})
            chunks = agent_stream(split_evenly(document, 3))
        return stream_reply(chunks) if body.get("stream") else json_reply(completion_of(chunks))
