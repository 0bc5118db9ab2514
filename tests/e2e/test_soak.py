"""Soak: a deployment's day, compressed. Two replicas on one real Redis, faulty upstream answers, clients that leave,
Redis restarted mid-run, limited keys among the traffic; nothing truncated silently, nothing leaked, limits held.

Skipped by default; run with ``pytest --soak -s tests/e2e/test_soak.py``. ``SOAK_STREAMS`` (default 100,000) and
``SOAK_SECONDS`` (default 900) bound the run; it prints what it measured (``bench/README.md`` has a run's figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers.redis_server import RedisServer
from tests.helpers.servers import Received, Reply, ScriptedUpstream, gateway_process, json_reply, serve, sse
from tests.helpers.streams import agent_stream, split_evenly

STREAMS = int(os.environ.get("SOAK_STREAMS", "100000"))
SECONDS = float(os.environ.get("SOAK_SECONDS", "900"))
CONCURRENCY = 48
MESSAGE = "soak " * 20
SECRET = "SECRET-590"
KEYS = {"bulk": "sk-soak-bulk-0123456789", "rpm": "sk-soak-rpm-0123456789", "conc": "sk-soak-conc-0123456789"}
RPM = 600
MAX_CONCURRENCY = 4


def agent_events() -> list[bytes]:
    return sse(agent_stream(split_evenly(json.dumps({"inner_thoughts": SECRET, "message": MESSAGE}), 8)))


def faulty(request: Received) -> Reply:
    """About one answer in ten is a fault, of every kind a provider produces."""
    roll = random.random()
    if roll < 0.03:
        return Reply(agent_events()[:4], then="break")
    if roll < 0.05:
        return json_reply({"error": {"message": "busy", "type": "server_error"}}, 503)
    if roll < 0.07:
        return Reply(agent_events()[:4], then="hang")
    if roll < 0.085:
        return Reply([*agent_events()[:3], b"data: {oops\n\n"])
    if roll < 0.10:
        return Reply([*agent_events()[:3], b'data: {"choices": "not a list", "note": "%s"}\n\n' % SECRET.encode()])
    return Reply(agent_events(), delay=0.002)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def redis_slots(server: RedisServer) -> int:
    """Slots held in Redis now, over every key."""
    script = (
        b"local n = 0 for _, k in ipairs(redis.call('KEYS', '*:slots')) do n = n + redis.call('ZCARD', k) end return n"
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as connection:
        connection.sendall(b'EVAL "' + script + b'" 0\r\n')
        return int(connection.recv(64)[1:].split(b"\r\n")[0])


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    rpm_admitted: list[float] = field(default_factory=list)  # when each of the rpm key's requests was answered 200
    secret_seen: int = 0
    concurrent: int = 0  # the conc key's requests in flight, as its client counts them
    most_concurrent: int = 0


async def one(client: httpx.AsyncClient, url: str, key: str, tally: Tally) -> None:
    body = {"model": "agent", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    counted = False
    try:
        async with client.stream(
            "POST", url + "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {KEYS[key]}"}
        ) as response:
            if response.status_code != 200:
                tally.outcomes[f"http {response.status_code}"] += 1
                await response.aread()
                return
            if key == "conc":  # admitted: in flight, as its client sees it, until the last byte is read
                counted = True
                tally.concurrent += 1
                tally.most_concurrent = max(tally.most_concurrent, tally.concurrent)
            if key == "rpm":
                tally.rpm_admitted.append(time.time())
            if random.random() < 0.1:
                async for _ in response.aiter_bytes():
                    break
                tally.outcomes["client left"] += 1
                return
            text = (await response.aread()).decode()
    finally:
        if counted:
            tally.concurrent -= 1
    tally.secret_seen += SECRET in text
    shown = "".join(
        (choice.get("delta") or {}).get("content") or ""
        for line in text.split("\n\n")
        if line.startswith("data: {")
        for choice in json.loads(line[6:]).get("choices") or ()
    )
    if text.endswith("data: [DONE]\n\n"):
        tally.outcomes["whole" if shown == MESSAGE else "truncated silently"] += 1
    elif '"error"' in text.rsplit("\n\n", 2)[-2]:
        tally.outcomes["error event"] += 1
    else:
        tally.outcomes["truncated silently"] += 1


async def drive(urls: list[str], streams: int, seconds: float, tally: Tally) -> int:
    """``streams`` requests (or as many as ``seconds`` allow), spread over the replicas and the keys."""
    started = time.monotonic()
    sent = 0
    limits = httpx.Limits(max_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker(number: int) -> None:
            nonlocal sent
            while sent < streams and time.monotonic() - started < seconds:
                sent += 1
                roll = random.random()
                key = "rpm" if roll < 0.15 else "conc" if roll < 0.25 else "bulk"
                await one(client, urls[number % len(urls)], key, tally)

        await asyncio.gather(*(worker(n) for n in range(CONCURRENCY)))
    return sent


@pytest.mark.soak
def test_soak_two_replicas_on_one_redis(tmp_path: Path, own_redis: RedisServer) -> None:
    upstream = ScriptedUpstream(default=faulty)
    with serve(upstream) as upstream_url:
        config = tmp_path / "soak.json"
        config.write_text(
            json.dumps(
                {
                    "server": {"retry_backoff": 0.01, "state": own_redis.url},
                    "providers": {"up": {"base_url": f"{upstream_url}/v1", "timeout": {"idle": 0.5}}},
                    "models": [
                        {"name": "agent", "provider": "up", "rewrite": {"inject_tools": False}, "max_retries": 1}
                    ],
                    "keys": [
                        {"name": "bulk", "key": KEYS["bulk"]},
                        {"name": "rpm", "key": KEYS["rpm"], "rpm": RPM},
                        {"name": "conc", "key": KEYS["conc"], "max_concurrency": MAX_CONCURRENCY},
                    ],
                }
            )
        )
        with (
            gateway_process("--config", str(config), "--log-level", "warning") as east,
            gateway_process("--config", str(config), "--log-level", "warning") as west,
        ):
            replicas = [east, west]
            urls = [replica.url for replica in replicas]
            asyncio.run(drive(urls, 400, 60, Tally()))  # warm-up: pools, caches and allocator arenas fill once
            time.sleep(1.5)
            baseline = {r.url: (rss_kb(r.process.pid), open_fds(r.process.pid)) for r in replicas}
            slot_samples: list[int] = []
            outage: list[float] = []
            stop = threading.Event()

            def watch() -> None:
                """Sample the slots Redis holds, and restart Redis once, half way through."""
                half = time.monotonic() + min(SECONDS, STREAMS / 100) / 2
                while not stop.is_set():
                    if not outage and time.monotonic() > half:
                        outage.append(time.time())
                        own_redis.stop()
                        time.sleep(3)
                        own_redis.start()
                        outage.append(time.time())
                    with contextlib.suppress(OSError):
                        slot_samples.append(redis_slots(own_redis))
                    time.sleep(0.01)

            watcher = threading.Thread(target=watch)
            watcher.start()
            tally = Tally()
            began = time.monotonic()
            try:
                sent = asyncio.run(drive(urls, STREAMS, SECONDS, tally))
            finally:
                stop.set()
                watcher.join()
            elapsed = time.monotonic() - began
            deadline = time.monotonic() + 10
            while upstream.active and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2)
            growth = {r.url: (rss_kb(r.process.pid) - baseline[r.url][0]) / 1024 for r in replicas}
            fds = {r.url: (baseline[r.url][1], open_fds(r.process.pid)) for r in replicas}
            left_in_redis = redis_slots(own_redis)
            healthy = [httpx.get(url + "/healthz").status_code for url in urls]

    # Whole minutes of the rpm key while Redis was up: never more than its limit.
    windows: Counter[int] = Counter(int(moment // 60) for moment in tally.rpm_admitted)
    outage_minutes = {int(moment // 60) for moment in outage}
    first, last = (min(windows), max(windows)) if windows else (0, -1)
    up_windows = {m: n for m, n in windows.items() if m not in outage_minutes and first < m < last}
    report: dict[str, Any] = {
        "streams": sent,
        "seconds": round(elapsed),
        "outcomes": dict(tally.outcomes),
        "private text seen": tally.secret_seen,
        "rpm key, whole minutes with Redis up": sorted(up_windows.values()),
        "conc key, most slots in Redis": max(slot_samples, default=0),
        "conc key, most in flight as its clients count": tally.most_concurrent,
        "slots left in Redis": left_in_redis,
        "upstream requests left open": upstream.active,
        "RSS growth MB": {url: round(mb, 1) for url, mb in growth.items()},
        "fds (baseline, after)": fds,
    }
    print("\nsoak:", json.dumps(report, indent=2))
    assert tally.outcomes["truncated silently"] == 0 and tally.secret_seen == 0
    assert upstream.active == 0 and left_in_redis == 0
    assert all(after <= before + 10 for before, after in fds.values()), "open connections return to baseline"
    assert all(mb < 20 for mb in growth.values())
    assert all(count <= RPM for count in up_windows.values())
    assert max(slot_samples, default=0) <= MAX_CONCURRENCY
    assert healthy == [200, 200]
