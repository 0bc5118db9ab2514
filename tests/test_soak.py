"""Soak: many streaming requests with faults and disconnects; nothing leaks.

Skipped by default; run with ``pytest --soak tests/test_soak.py`` (a few minutes).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from pathlib import Path

import httpx
import pytest

from tests.servers import Received, Reply, ScriptedUpstream, gateway_process, json_reply, serve, sse
from tests.streams import agent_stream, split_evenly

REQUESTS = 1000
CONCURRENCY = 50


def agent_events() -> list[bytes]:
    return sse(agent_stream(split_evenly(json.dumps({"inner_thoughts": "t", "message": "soak " * 20}), 8)))


def faulty(request: Received) -> Reply:
    """Mostly healthy answers, with a share of every kind of fault."""
    roll = random.random()
    if roll < 0.05:
        return Reply(agent_events()[:4], then="break")
    if roll < 0.10:
        return json_reply({"error": {"message": "busy", "type": "server_error"}}, 503)
    if roll < 0.13:
        return Reply(agent_events()[:4], then="hang")
    if roll < 0.16:
        return Reply([*agent_events()[:3], b"data: {oops\n\n"])
    return Reply(agent_events(), delay=0.002)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def load(url: str, count: int) -> dict[str, int]:
    outcomes = {"done": 0, "error_event": 0, "http_error": 0, "disconnected": 0}
    semaphore = asyncio.Semaphore(CONCURRENCY)
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=CONCURRENCY)) as client:

        async def one() -> None:
            async with semaphore:
                body = {"model": "agent", "messages": [{"role": "user", "content": "hi"}], "stream": True}
                async with client.stream("POST", url + "/v1/chat/completions", json=body) as response:
                    if response.status_code != 200:
                        outcomes["http_error"] += 1
                        await response.aread()
                        return
                    if random.random() < 0.1:
                        async for _ in response.aiter_bytes():
                            break
                        outcomes["disconnected"] += 1
                        return
                    text = (await response.aread()).decode()
                    outcomes["done" if text.endswith("data: [DONE]\n\n") else "error_event"] += 1

        await asyncio.gather(*(one() for _ in range(count)))
    return outcomes


@pytest.mark.soak
def test_soak_with_faults_and_disconnects(tmp_path: Path) -> None:
    upstream = ScriptedUpstream(default=faulty)
    with serve(upstream) as upstream_url:
        config = tmp_path / "soak.yaml"
        config.write_text(
            "server: {retry_backoff: 0.01}\n"
            f"providers: {{up: {{base_url: '{upstream_url}/v1', timeout: {{idle: 0.5}}}}}}\n"
            "models: [{name: agent, provider: up, rewrite: {inject_tools: false}, max_retries: 1}]\n"
        )
        with gateway_process("--config", str(config), "--log-level", "warning") as running:
            url, pid = running.url, running.process.pid
            asyncio.run(load(url, 200))  # warm-up: pools, caches and allocator arenas fill once
            time.sleep(1.5)
            baseline_rss, baseline_fds = rss_kb(pid), open_fds(pid)
            outcomes = asyncio.run(load(url, REQUESTS))
            deadline = time.monotonic() + 10
            while upstream.active and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.5)
            growth_mb = (rss_kb(pid) - baseline_rss) / 1024
            fds = open_fds(pid)
            print(f"\nsoak: {outcomes}, RSS growth {growth_mb:.1f} MB, fds {baseline_fds} -> {fds}")
            assert sum(outcomes.values()) == REQUESTS and outcomes["done"] > REQUESTS * 0.7
            assert upstream.active == 0, "no upstream request is left open"
            assert fds <= baseline_fds + 10, "open connections return to baseline"
            assert growth_mb < 20
            assert httpx.get(url + "/healthz").status_code == 200
