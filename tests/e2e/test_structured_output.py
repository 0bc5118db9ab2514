"""Structured output on an agent route: the model's JSON is the answer, reasoning still hidden.

A client asking for ``response_format`` (``json_schema`` or ``json_object``) on an agent route gets an
answer without injection: the upstream receives the request as the client wrote it (no message tool,
no forced tool call), and the model's JSON content reaches the client as it came, while its
reasoning (a ``reasoning_content`` field, a think block) stays hidden.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import Received, Reply, ScriptedUpstream, completion_of, json_reply, serve, stream_reply
from tests.helpers.streams import choice, chunk, split_evenly

CONFIG = """
providers:
  up: {{base_url: "{upstream}/v1"}}
models:
  - {{name: agent, provider: up, model: tool-model, rewrite: {{}}}}
"""
SECRET = "PRIVATE: the user wants a city"


class City(BaseModel):
    name: str
    country: str


def structured_model(request: Received) -> Reply:
    """A model that answers a JSON-schema request with JSON content, after reasoning it must not show."""
    body = request.json
    answer = json.dumps({"name": "Oslo", "country": "Norway"})
    reasoning = [chunk(choice(role="assistant", content="", reasoning_content=SECRET))]
    content = [chunk(choice(content=piece)) for piece in split_evenly(f"<think>{SECRET}</think>{answer}", 5)]
    chunks = [*reasoning, *content, chunk(choice(finish="stop"))]
    return stream_reply(chunks) if body.get("stream") else json_reply(completion_of(chunks))


@pytest.fixture(scope="module")
def gateway() -> Iterator[tuple[ScriptedUpstream, str]]:
    upstream = ScriptedUpstream(default=structured_model)
    with (
        serve(upstream) as upstream_url,
        serve(create_app(parse_config(CONFIG.format(upstream=upstream_url), "t.yaml", env={}))) as url,
    ):
        yield upstream, url


def sent_without_injection(upstream: ScriptedUpstream) -> dict[str, Any]:
    sent: dict[str, Any] = upstream.requests[-1].json
    assert "tools" not in sent and "tool_choice" not in sent
    assert sent["response_format"]["type"] in ("json_schema", "json_object")
    assert all(message["role"] != "system" for message in sent["messages"]), "no agent system prompt either"
    return sent


def test_openai_parse_gets_the_model_as_json(gateway: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    completion = client.chat.completions.parse(
        model="agent", messages=[{"role": "user", "content": "A city?"}], response_format=City
    )
    message = completion.choices[0].message
    assert message.parsed == City(name="Oslo", country="Norway")
    assert SECRET not in (message.content or "") and (message.model_extra or {}).get("reasoning_content") is None
    assert sent_without_injection(upstream)["response_format"]["json_schema"]["name"] == "City"


def test_openai_streamed_json_object_arrives_whole_and_reasoning_stays_hidden(
    gateway: tuple[ScriptedUpstream, str],
) -> None:
    upstream, url = gateway
    client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
    stream = client.chat.completions.create(
        model="agent",
        messages=[{"role": "user", "content": "A city?"}],
        stream=True,
        response_format={"type": "json_object"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert json.loads(text) == {"name": "Oslo", "country": "Norway"}
    assert all(SECRET not in c.model_dump_json() for c in chunks)
    sent_without_injection(upstream)


def test_langchain_with_structured_output(gateway: tuple[ScriptedUpstream, str]) -> None:
    upstream, url = gateway
    chat = ChatOpenAI(model="agent", base_url=url + "/v1", api_key="none", max_retries=0)
    assert chat.with_structured_output(City).invoke("A city?") == City(name="Oslo", country="Norway")
    sent_without_injection(upstream)
