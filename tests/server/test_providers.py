"""What reaches a provider follows what the provider takes: its token-limit field, reasoning_effort."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import RecordingTransport

COMPLETION = {
    "id": "c",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}],
}


def sent_upstream(provider: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """The chat request the provider received for one client request."""
    config = f"""
providers: {{up: {{base_url: "http://upstream.test/v1", {provider}}}}}
models: [{{name: plain, provider: up}}]
"""
    recorder = RecordingTransport(orjson.dumps(COMPLETION))
    app = create_app(parse_config(config, "t.yaml", env={}), {"up": recorder})

    async def main() -> int:
        service = app.service
        await service.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
                return (await client.post(path, json=body)).status_code
        finally:
            await service.stop()

    assert asyncio.run(main()) == 200
    [request] = recorder.requests
    assert request.url.path == "/v1/chat/completions"
    sent: dict[str, Any] = orjson.loads(request.content)
    return sent


MESSAGES = [{"role": "user", "content": "Hi"}]
LIMITED = [
    ("/v1/chat/completions", {"model": "plain", "messages": MESSAGES, "max_completion_tokens": 64}),
    ("/v1/responses", {"model": "plain", "input": "Hi", "max_output_tokens": 64}),
    ("/v1/messages", {"model": "plain", "messages": MESSAGES, "max_tokens": 64}),
]


@pytest.mark.parametrize(("path", "body"), LIMITED, ids=["chat", "responses", "messages"])
def test_the_token_limit_goes_where_the_provider_reads_it(path: str, body: dict[str, Any]) -> None:
    default = sent_upstream("token_limit: max_completion_tokens", path, body)
    assert default["max_completion_tokens"] == 64 and "max_tokens" not in default
    older = sent_upstream("token_limit: max_tokens", path, body)
    assert older["max_tokens"] == 64 and "max_completion_tokens" not in older


EFFORT = [
    ("/v1/responses", {"model": "plain", "input": "Hi", "reasoning": {"effort": "high"}}),
    (
        "/v1/messages",
        {
            "model": "plain",
            "messages": MESSAGES,
            "max_tokens": 64000,
            "thinking": {"type": "enabled", "budget_tokens": 32000},
        },
    ),
]


@pytest.mark.parametrize(("path", "body"), EFFORT, ids=["responses", "messages"])
def test_a_translated_reasoning_effort_reaches_only_a_provider_that_takes_it(path: str, body: dict[str, Any]) -> None:
    assert sent_upstream("reasoning_effort: true", path, body)["reasoning_effort"] == "high"
    assert "reasoning_effort" not in sent_upstream("reasoning_effort: false", path, body)


def test_a_chat_clients_own_reasoning_effort_is_its_own() -> None:
    body = {"model": "plain", "messages": MESSAGES, "reasoning_effort": "low"}
    assert sent_upstream("reasoning_effort: false", "/v1/chat/completions", body)["reasoning_effort"] == "low"
