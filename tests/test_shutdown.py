"""Graceful shutdown: draining, then SIGTERM on a real gateway process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.config import parse_config
from tests.servers import Reply, ScriptedUpstream, free_port, serve, sse
from tests.streams import agent_stream, split_evenly


def agent_events(pieces: int) -> list[bytes]:
    document = json.dumps({"inner_thoughts": "t", "message": "m" * pieces})
    return sse(agent_stream(split_evenly(document, max(1, len(document) // pieces))))


def test_draining_refuses_new_requests_and_turns_readiness_off() -> None:
    config = parse_config("providers: {p: {base_url: 'http://127.0.0.1:9/v1'}}\nmodels: [{name: m, provider: p}]", "t.yaml", env={})
    app = create_app(config)

    async def scenario() -> tuple[int, int, int, dict[str, str]]:
        gateway = app.app.state.gateway
        await gateway.start()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            before = (await client.get("/readyz")).status_code
            gateway.drain()
            after = (await client.get("/readyz")).status_code
            refused = await client.post("/v1/chat/completions", json={"model": "m", "messages": []})
        await gateway.stop()
        return before, after, refused.status_code, refused.json()["error"]

    before, after, refused, error = asyncio.run(scenario())
    assert (before, after, refused) == (200, 503, 503) and error["code"] == "gateway_shutdown"


def test_sigterm_lets_short_streams_finish_ends_long_ones_and_exits_0(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    short, long = Reply(agent_events(8), delay=0.1), Reply(agent_events(80), delay=0.1)
    upstream.reply(short, long)
    with serve(upstream) as upstream_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"server: {{shutdown_grace: 1.5}}\nproviders: {{up: {{base_url: '{upstream_url}/v1'}}}}\n"
            "models: [{name: agent, provider: up, rewrite: {inject_tools: false}}]\n"
        )
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "GATEWAY_CONFIG")}
        process = subprocess.Popen([sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port)], env=env, stderr=subprocess.PIPE, text=True)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(url + "/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and process.poll() is None, "the gateway did not start"
                    time.sleep(0.1)
            bodies: dict[str, str] = {}

            def stream(name: str) -> None:
                response = httpx.post(url + "/v1/chat/completions", json={"model": "agent", "messages": [], "stream": True}, timeout=30)
                bodies[name] = response.text

            threads = [threading.Thread(target=stream, args=(name,)) for name in ("short", "long")]
            for thread in threads:
                thread.start()
                while len(upstream.requests) < threads.index(thread) + 1:
                    time.sleep(0.01)
            time.sleep(0.2)
            process.send_signal(signal.SIGTERM)
            for thread in threads:
                thread.join(20)
            assert process.wait(20) == 0
        finally:
            if process.poll() is None:
                process.kill()
    assert bodies["short"].endswith("data: [DONE]\n\n"), "a stream shorter than the grace period completes"
    last = json.loads(bodies["long"].strip().split("\n\n")[-1][6:])
    assert last["error"]["code"] == "gateway_shutdown" and "[DONE]" not in bodies["long"]
