"""Benchmark of the shared state: the cost of one limit check in process and against a local redis-server.

Run by hand: ``python bench/bench_state.py`` (starts ``redis-server`` on a free
loopback port, without persistence) or ``--redis redis://host:port/db``. Each
operation is awaited one at a time, on uvloop as the gateway runs, and timed
alone, in blocks taken in turn; the table gives µs per operation (p50, p99,
mean). Compare rows within one run: the machine is shared.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop
from redis.asyncio import Redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import start_redis

from gateway.state import Budget, Limits, MemoryStore, Period, RedisStore, StateStore

# Every limit set, and none ever reached: the check does all its work and always admits.
EVERY_LIMIT = Limits(rpm=10**9, tpm=10**12, max_concurrency=10**6, budget=Budget(10**15, Period.MONTH))
RPM_ONLY = Limits(rpm=10**9)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


Timed = Callable[[], Awaitable[float]]


def timing(operation: Callable[[], Awaitable[object]]) -> Timed:
    async def timed() -> float:
        start = time.perf_counter_ns()
        await operation()
        return (time.perf_counter_ns() - start) / 1000

    return timed


def operations(store: StateStore) -> list[tuple[str, Timed]]:
    async def admit_every_limit() -> float:
        start = time.perf_counter_ns()
        answer = await store.admit("bench", EVERY_LIMIT)
        elapsed = (time.perf_counter_ns() - start) / 1000
        assert answer.allowed and answer.lease is not None
        await store.finish(
            answer.lease.key, Limits(), 0, answer.lease
        )  # not timed: the slot is given back when the request ends
        return elapsed

    async def finish_every_limit() -> float:
        answer = await store.admit("bench-finish", EVERY_LIMIT)  # not timed: the request's admission
        assert answer.allowed and answer.lease is not None
        start = time.perf_counter_ns()
        await store.finish("bench-finish", EVERY_LIMIT, 100, answer.lease)
        return (time.perf_counter_ns() - start) / 1000

    return [
        ("admit: rpm, tpm, budget and a concurrency slot", admit_every_limit),
        ("admit: rpm only", timing(lambda: store.admit("bench-rpm", RPM_ONLY))),
        ("admit: a key without limits", timing(lambda: store.admit("bench-free", Limits()))),
        ("finish: tokens to tpm and budget, and the slot back", finish_every_limit),
        ("cooling_down: 3 deployments", timing(lambda: store.cooling_down(["a", "b", "c"]))),
    ]


BLOCKS = 10


async def run(url: str, iterations: int) -> None:
    """Each operation in blocks of consecutive calls, the blocks of all operations in turn, again and again.

    Within a block the code path is warm, as in a busy gateway; across blocks a busy moment on the shared
    machine falls on every operation alike. (Alternating single calls instead makes whichever operation
    follows a Redis wait pay for the cold caches, which says more about the order than the operation.)
    """
    memory = MemoryStore()
    redis = RedisStore.from_url(url, prefix=f"bench:{uuid.uuid4().hex}:", timeout=5.0)
    bare = Redis.from_url(url)
    rows: list[tuple[str, str, Timed]] = []
    for (name, in_memory), (_, in_redis) in zip(operations(memory), operations(redis), strict=True):
        rows += [(name, "memory", in_memory), (name, "redis", in_redis)]
    rows.append(("PING, the bare round trip", "redis", timing(bare.ping)))
    samples: list[list[float]] = [[] for _ in rows]
    try:
        for _ in range(max(1, iterations // 10)):  # warm-up: connections, the script cache, the code paths
            for _, _, operation in rows:
                await operation()
        for _ in range(BLOCKS):
            for taken, (_, _, operation) in zip(samples, rows, strict=True):
                for _ in range(max(1, iterations // BLOCKS)):
                    taken.append(await operation())
    finally:
        await redis.aclose()
        await bare.aclose()
    print(
        f"{iterations} calls of each operation, one at a time, in {BLOCKS} blocks;"
        f" Python {sys.version.split()[0]}, uvloop"
    )
    print()
    print("| operation | backend | p50 µs | p99 µs | mean µs |")
    print("|---|---|---|---|---|")
    for (name, backend, _), taken in zip(rows, samples, strict=True):
        p50, p99, mean = percentile(taken, 0.5), percentile(taken, 0.99), statistics.fmean(taken)
        print(f"| {name} | {backend} | {p50:.1f} | {p99:.1f} | {mean:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--redis", help="a Redis URL to use instead of starting redis-server")
    parser.add_argument("--iterations", type=int, default=10000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-state-") as tmp:
        server = None if args.redis else start_redis(Path(tmp))
        url = args.redis if server is None else f"redis://127.0.0.1:{server.port}/0"
        try:
            uvloop.run(run(url, args.iterations))
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()
