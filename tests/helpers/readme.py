"""The README as the tests that run it read it: its sections and code blocks, and the scripted upstream its
examples talk to."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator

from tests.helpers.paths import ROOT
from tests.helpers.servers import (
    Received,
    Reply,
    Running,
    ScriptedUpstream,
    clean_env,
    completion_of,
    gateway_process,
    json_reply,
    serve,
    stream_reply,
)
from tests.helpers.streams import agent_stream, split_evenly

README = (ROOT / "README.md").read_text()

PROVIDER_KEY = "sk-readme-provider-0123456789abcdef"
REPLY = "Hello from the scripted upstream! 😀"
THOUGHTS = "PRIVATE-THOUGHTS-never-shown"


def section(title: str) -> str:
    return README.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]


def code_blocks(text: str, language: str = "") -> list[str]:
    return [
        code for lang, code in re.findall(r"^```(\w*)\n(.*?)^```$", text, re.DOTALL | re.MULTILINE) if lang == language
    ]


def agent_answer(request: Received) -> Reply:
    """An agent-style model: it calls the client's get_weather when offered, else replies through send_message."""
    body = request.json
    offered = {tool["function"]["name"] for tool in body.get("tools", []) if tool.get("type") == "function"}
    if "get_weather" in offered and body["messages"][-1]["role"] == "user":
        arguments, name, call_id = {"inner_thoughts": THOUGHTS, "city": "Oslo"}, "get_weather", "call_w"
    else:
        arguments, name, call_id = {"inner_thoughts": THOUGHTS, "message": REPLY}, "send_message", "call_1"
    chunks = agent_stream(split_evenly(json.dumps(arguments), 7), name=name, call_id=call_id)
    return stream_reply(chunks) if body.get("stream") else json_reply(completion_of(chunks))


@contextlib.contextmanager
def scripted_gateway(*args: str, **env: str) -> Iterator[tuple[Running, ScriptedUpstream]]:
    """``gateway serve`` with OPENAI_API_KEY set and OPENAI_BASE_URL pointing at a scripted upstream."""
    upstream = ScriptedUpstream(default=agent_answer)
    with serve(upstream) as upstream_url:
        process_env = clean_env(OPENAI_API_KEY=PROVIDER_KEY, OPENAI_BASE_URL=upstream_url + "/v1", **env)
        with gateway_process(*args, env=process_env) as running:
            yield running, upstream
