"""The Vercel AI SDK's OpenAI provider through the gateway: its real multi-step tool loop, which from the second
step on sends the earlier steps' items back as ``item_reference`` items (its default, ``store: true``).

The SDK is pinned in ``tests/e2e/vercel/package.json`` and installed by ``.ci/run`` (``npm ci``); without it
the test is skipped with the reason, and under CI it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest

from tests.e2e.test_responses_stored import KEY, started
from tests.helpers.paths import ROOT

PROJECT = ROOT / "tests" / "e2e" / "vercel"


def node() -> str:
    binary = shutil.which("node")
    if binary is None or not (PROJECT / "node_modules" / "ai").is_dir():
        message = "the Vercel AI SDK is not installed: npm ci --prefix tests/e2e/vercel (Node 18 or later)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return binary


@pytest.mark.parametrize("mode", ["generate", "stream"])
def test_the_ai_sdk_tool_loop_refers_to_its_earlier_items_and_completes(mode: str) -> None:
    binary = node()
    with started() as gateway:
        ran = subprocess.run(
            [binary, str(PROJECT / "tool_loop.mjs"), gateway.url + "/v1", KEY, mode],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        result = json.loads(ran.stdout.strip().splitlines()[-1])
        assert result == {"text": "It is sunny in Oslo.", "calls": ["Oslo"], "steps": ["tool-calls", "stop"]}
        first, second = gateway.bodies
        references = [item for item in second["input"] if item.get("type") == "item_reference"]
        assert references, second["input"]
        outputs: list[Any] = [item for item in second["input"] if item.get("type") == "function_call_output"]
        assert len(outputs) == 1 and "previous_response_id" not in second
        # The upstream got the earlier call back, and its result after it, as chat completions carry them.
        _, answered = (request.json for request in gateway.upstream.requests)
        call_ids = [call["id"] for message in answered["messages"] for call in message.get("tool_calls") or ()]
        tool_message = answered["messages"][-1]
        assert tool_message["role"] == "tool" and tool_message["tool_call_id"] in call_ids
        assert tool_message["tool_call_id"] == outputs[0]["call_id"]
        assert first.get("store") is not False
