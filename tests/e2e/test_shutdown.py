"""Graceful shutdown: draining, then SIGTERM on a real gateway process, seen as a load balancer sees it."""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from pathlib import Path

import httpx

from gateway.config import parse_config
from gateway.server.app import create_app
from tests.helpers.servers import Reply, ScriptedUpstream, gateway_process, serve, sse
from tests.helpers.streams import agent_stream, split_evenly


def agent_events(pieces: int) -> list[bytes]:
    document = json.dumps({"inner_thoughts": "t", "message": "m" * pieces})
    return sse(agent_stream(split_evenly(document, max(1, len(document) // pieces))))


def test_draining_refuses_new_requests_and_turns_readiness_off() -> None:
    config = parse_config(
        "providers: {p: {base_url: 'http://127.0.0.1:9/v1'}}\nmodels: [{name: m, provider: p}]", "t.yaml", env={}
    )
    app = create_app(config)

    async def scenario() -> tuple[int, int, int, dict[str, str]]:
        gateway = app.service
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


def test_sigterm_as_a_load_balancer_sees_it(tmp_path: Path) -> None:
    """Readiness fails first and new requests get 503 with retry-after, on open connections and new ones,
    for the drain delay; then new connections are refused; the stream in flight finishes; exit 0."""
    upstream = ScriptedUpstream()
    upstream.reply(Reply(agent_events(30), delay=0.15))  # about 4.5 s: past the drain delay, within the grace
    with serve(upstream) as upstream_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"server: {{drain_delay: 3, shutdown_grace: 10}}\nproviders: {{up: {{base_url: '{upstream_url}/v1'}}}}\n"
            "models: [{name: agent, provider: up, rewrite: {inject_tools: false}}]\n"
        )
        with gateway_process("--config", str(config)) as running, httpx.Client(base_url=running.url) as balancer:
            assert balancer.get("/readyz").status_code == 200  # a kept-alive connection, as a balancer's probe keeps
            streamed: list[str] = []
            request = {"model": "agent", "messages": [], "stream": True}
            client = threading.Thread(
                target=lambda: streamed.append(
                    httpx.post(running.url + "/v1/chat/completions", json=request, timeout=30).text
                )
            )
            client.start()
            while not upstream.requests:
                time.sleep(0.01)
            running.process.send_signal(signal.SIGTERM)

            deadline = time.monotonic() + 2
            while balancer.get("/readyz").status_code == 200:
                assert time.monotonic() < deadline, "readiness fails as soon as the signal arrives"
                time.sleep(0.02)
            assert balancer.get("/healthz").status_code == 200, "the process is still alive"
            late = httpx.post(running.url + "/v1/chat/completions", json={"model": "agent", "messages": []})
            assert late.status_code == 503 and late.json()["error"]["code"] == "gateway_shutdown"
            assert late.headers["retry-after"] == "1" and late.headers["connection"] == "close"
            assert upstream.requests[1:] == [], "a request arriving while draining is not sent upstream"

            deadline = time.monotonic() + 15
            while True:
                try:
                    httpx.get(running.url + "/readyz", timeout=1)
                except httpx.ConnectError:
                    break  # the listener is closed
                except httpx.RemoteProtocolError:
                    pass  # accepted as the server began closing, then dropped: ask again until it refuses
                assert time.monotonic() < deadline, "the listener closes once the drain delay is over"
                time.sleep(0.05)
            assert client.is_alive(), "the stream in flight outlives the drain delay"
            client.join(20)
            assert running.process.wait(20) == 0
    assert streamed[0].endswith("data: [DONE]\n\n")


def test_sigterm_lets_short_streams_finish_ends_long_ones_and_exits_0(tmp_path: Path) -> None:
    upstream = ScriptedUpstream()
    short, long = Reply(agent_events(8), delay=0.1), Reply(agent_events(80), delay=0.1)
    upstream.reply(short, long)
    with serve(upstream) as upstream_url:
        config = tmp_path / "gateway.yaml"
        config.write_text(
            f"server: {{drain_delay: 0, shutdown_grace: 1.5}}\nproviders: {{up: {{base_url: '{upstream_url}/v1'}}}}\n"
            "models: [{name: agent, provider: up, rewrite: {inject_tools: false}}]\n"
        )
        with gateway_process("--config", str(config)) as running:
            url, process = running.url, running.process
            bodies: dict[str, str] = {}

            def stream(name: str) -> None:
                response = httpx.post(
                    url + "/v1/chat/completions", json={"model": "agent", "messages": [], "stream": True}, timeout=30
                )
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
    assert bodies["short"].endswith("data: [DONE]\n\n"), "a stream shorter than the grace period completes"
    last = json.loads(bodies["long"].strip().split("\n\n")[-1][6:])
    assert last["error"]["code"] == "gateway_shutdown" and "[DONE]" not in bodies["long"]
