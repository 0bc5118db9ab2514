"""End to end: a route with a limited key against a local redis-server, beside the same route unlimited.

Run by hand: ``python bench/bench_limits.py [--quick]`` (starts ``redis-server``
on a free loopback port, without persistence). One run starts the scripted
upstream (``upstream.py``), redis-server and two gateways (``gateway serve``,
one worker each) on the same routes and keys, one with ``server.state`` on
that Redis and one in process (the default). Each has two keys for the same
routes: ``unlimited`` (an entry of ``server.api_keys``) and ``limited``
(``rpm``, ``tpm``, ``max_concurrency`` and a month's ``budget``, all too high
to refuse anything, so that every request pays for every check: admission,
a slot held and given back, tokens charged from the usage). It measures, the
targets taken in turn:

1. closed-loop throughput, streams/s and non-streaming requests/s (burst upstream);
2. open-loop latency at a fixed rate (burst upstream): time to first and last
   byte, what each target adds over the unlimited key on the same gateway, and
   the CPU time per request of the gateway and of redis-server.

Every answer is checked first; after the run the gateways' ``/metrics`` must
show no refusal and no failed round trip to Redis (a failed check admits
without Redis, which would flatter the limited rows). It prints tables and
one JSON line. The machine is shared and noisy: read the ratios within one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
from common import HOST, ServerProcess, free_port, machine, percentile, raise_fd_limit, start_redis, start_upstream
from load import closed_loop, open_loop
from targets import Run, Target, check_answers
from upstream import Script, model_name

QUICK = {"duration": 1.5, "warmup": 0.5, "rounds": 1, "latency_seconds": 3.0}
FULL = {"duration": 6.0, "warmup": 1.0, "rounds": 2, "latency_seconds": 12.0}
UNLIMITED_KEY = "sk-bench-unlimited-0123456789"
LIMITED_KEY = "sk-bench-limited-0123456789"
HUGE = 10**12

CONFIG = """\
server:
  host: {host}
  state: {state}
  state_timeout: {state_timeout}
  api_keys: ["{unlimited}"]
providers:
  up:
    base_url: http://{host}:{upstream_port}/v1
models:
  - name: "agent*"
    provider: up
    rewrite: {{inject_tools: false}}
  - name: "plain*"
    provider: up
keys:
  - name: limited
    key: "{limited}"
    rpm: {huge}
    tpm: {huge}
    max_concurrency: 1000000
    budget: {{tokens: {huge}, period: month}}
"""


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, about a minute in all (default: about 4)")
    parser.add_argument("--duration", type=float, help="seconds per closed-loop run (quick 1.5, full 6)")
    parser.add_argument("--warmup", type=float, help="seconds before each closed-loop window (quick 0.5, full 1)")
    parser.add_argument("--rounds", type=int, help="closed-loop rounds over all targets, best kept (quick 1, full 2)")
    parser.add_argument("--concurrency", type=int, default=16, help="closed-loop clients (default 16)")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop: streams/s (default 100)")
    parser.add_argument("--latency-seconds", type=float, help="seconds per open-loop run (quick 3, full 12)")
    parser.add_argument("--fragments", type=int, default=50, help="argument fragments per answer (default 50)")
    parser.add_argument(
        "--state-timeout",
        type=float,
        default=0.05,
        help="the gateways' server.state_timeout (default 0.05, the gateway's)",
    )
    options = parser.parse_args(argv)
    for name, value in (QUICK if options.quick else FULL).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    return options


def start_gateway(log_dir: Path, name: str, upstream_port: int, state: str, state_timeout: float) -> ServerProcess:
    config = log_dir / f"{name}.yaml"
    config.write_text(
        CONFIG.format(
            host=HOST,
            state=state,
            state_timeout=state_timeout,
            unlimited=UNLIMITED_KEY,
            limited=LIMITED_KEY,
            upstream_port=upstream_port,
            huge=HUGE,
        )
    )
    port = free_port()
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config), "--port", str(port), "--workers", "1"]
    return ServerProcess(name, argv, port, log_dir)


@contextlib.contextmanager
def servers(options: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, ServerProcess]]:
    with contextlib.ExitStack() as stack:
        started: dict[str, ServerProcess] = {}

        def start(server: ServerProcess) -> ServerProcess:
            stack.callback(server.stop)
            started[server.name] = server
            return server

        upstream = start(start_upstream(log_dir, options.fragments))
        redis = start(start_redis(log_dir))
        start(start_gateway(log_dir, "gateway-memory", upstream.port, "memory", options.state_timeout))
        start(
            start_gateway(
                log_dir, "gateway-redis", upstream.port, f"redis://{HOST}:{redis.port}/0", options.state_timeout
            )
        )
        for server in started.values():
            if server.name.startswith("gateway"):
                server.wait_ready()
        yield started


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def measure_throughput(run: Run, targets: list[Target], redis: ServerProcess) -> list[dict[str, Any]]:
    """Closed loop, burst upstream: the best of ``rounds`` runs per target and kind."""
    options = run.options
    best: dict[tuple[str, str], dict[str, Any]] = {}
    for kind in ("stream", "request"):
        for _ in range(options.rounds):
            for target in targets:
                await run.settle()
                meters = {**run.meters(target), "redis": redis.cpu_seconds}
                result = await closed_loop(
                    target.port,
                    target.request(kind == "stream"),
                    options.concurrency,
                    options.duration,
                    options.warmup,
                    meters,
                )
                row = {
                    "target": target.name,
                    "kind": kind,
                    "rate": result.rate,
                    "errors": result.errors,
                    "server_cpu_us": result.usage["server"] / max(result.completed, 1) * 1e6,
                    "redis_cpu_us": result.usage["redis"] / max(result.completed, 1) * 1e6,
                }
                if (target.name, kind) not in best or row["rate"] > best[(target.name, kind)]["rate"]:
                    best[(target.name, kind)] = row
    return list(best.values())


async def measure_latency(run: Run, targets: list[Target], redis: ServerProcess) -> list[dict[str, Any]]:
    """Open loop at a fixed rate, burst upstream: latency percentiles and CPU per stream."""
    options = run.options
    pool = math.ceil(options.rate * 0.5) + 8
    rows = []
    for target in targets:
        request = target.request(True)
        await run.settle()
        await open_loop(target.port, request, options.rate, 1.0, pool)  # fills every connection pool on the way
        meters = {**run.meters(target), "redis": redis.cpu_seconds}
        result = await open_loop(target.port, request, options.rate, options.latency_seconds, pool, meters)
        ttfb = sorted(exchange.ttfb * 1000 for exchange in result.exchanges)
        ttlb = sorted(exchange.ttlb * 1000 for exchange in result.exchanges)
        streams = max(len(result.exchanges) + result.errors, 1)
        rows.append(
            {
                "target": target.name,
                "streams": streams,
                "errors": result.errors,
                "max_send_lag_ms": result.max_lag * 1000,
                "ttfb_ms": {f"p{q}": percentile(ttfb, q) for q in (50, 90, 99)},
                "ttlb_ms": {f"p{q}": percentile(ttlb, q) for q in (50, 90, 99)},
                "server_cpu_us": result.usage["server"] / streams * 1e6,
                "redis_cpu_us": result.usage["redis"] / streams * 1e6,
            }
        )
    for row in rows:
        state = row["target"].split()[0]
        reference = next(other for other in rows if other["target"] == f"{state} unlimited")
        for metric in ("ttfb_ms", "ttlb_ms"):
            row[f"added_{metric}"] = {q: row[metric][q] - reference[metric][q] for q in row[metric]}
    return rows


def metric_total(server: ServerProcess, prefix: str) -> float:
    """The sum of the samples in the gateway's ``/metrics`` whose lines start with ``prefix``."""
    with urllib.request.urlopen(f"http://{HOST}:{server.port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(65536)
    script = Script(model_name("agent"), options.fragments)
    results: dict[str, Any] = {"bench": "limits", "machine": machine(), "options": dict(vars(options))}
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-limits-") as tmp, servers(options, Path(tmp)) as running:
        run = Run(options, running["upstream"], list(running.values()))
        redis = running["redis"]
        targets = [
            Target(f"{state} {key}", running[f"gateway-{state}"], "agent", "rewritten", bearer(secret))
            for state in ("memory", "redis")
            for key, secret in (("unlimited", UNLIMITED_KEY), ("limited", LIMITED_KEY))
        ]
        await check_answers(targets, script, [0])
        results["throughput"] = await measure_throughput(run, targets, redis)
        results["latency"] = await measure_latency(run, targets, redis)
        checks = {}
        for name in ("gateway-memory", "gateway-redis"):
            checks[name] = {
                "rejections": metric_total(running[name], "gateway_key_rejections_total"),
                "state_failures": metric_total(running[name], "gateway_state_failures_total"),
                "failed_operations": {
                    operation: metric_total(running[name], f'gateway_state_failures_total{{operation="{operation}"}}')
                    for operation in ("admit", "charge", "renew", "release", "cooling_down", "failed", "succeeded")
                },
                "limited_answered": metric_total(
                    running[name], 'gateway_key_requests_total{key="limited",status="200"}'
                ),
            }
        results["checks"] = checks
    results["seconds"] = time.monotonic() - started
    return results


def report(results: dict[str, Any]) -> None:
    options = results["options"]
    print(
        f"limits end to end: {options['concurrency']} clients closed loop, {options['rate']:g} streams/s open loop,"
        f" {options['fragments']} fragments, burst upstream; {results['seconds']:.0f} s"
    )
    print()
    print("| target | streams/s | requests/s | gateway CPU µs/stream | redis CPU µs/stream |")
    print("|---|---|---|---|---|")
    rows = {(row["target"], row["kind"]): row for row in results["throughput"]}
    for target in dict.fromkeys(row["target"] for row in results["throughput"]):
        stream, request = rows[(target, "stream")], rows[(target, "request")]
        cpu = f"{stream['server_cpu_us']:.0f} | {stream['redis_cpu_us']:.0f}"
        print(f"| {target} | {stream['rate']:.0f} | {request['rate']:.0f} | {cpu} |")
    print()
    print("| target | TTFB p50 / p90 / p99 ms | added p50 / p99 | TTLB p50 / p99 ms | gateway CPU µs/stream | errors |")
    print("|---|---|---|---|---|---|")
    for row in results["latency"]:
        ttfb, ttlb, added = row["ttfb_ms"], row["ttlb_ms"], row["added_ttfb_ms"]
        first_byte = f"{ttfb['p50']:.2f} / {ttfb['p90']:.2f} / {ttfb['p99']:.2f}"
        first_byte += f" | {added['p50']:+.2f} / {added['p99']:+.2f}"
        last_byte = f"{ttlb['p50']:.2f} / {ttlb['p99']:.2f}"
        print(f"| {row['target']} | {first_byte} | {last_byte} | {row['server_cpu_us']:.0f} | {row['errors']} |")
    print()
    for name, check in results["checks"].items():
        failed = ", ".join(f"{op} {count:.0f}" for op, count in check["failed_operations"].items() if count) or "none"
        print(
            f"{name}: the limited key had {check['limited_answered']:.0f} answers, {check['rejections']:.0f} refusals;"
            f" failed round trips to the state store: {failed}"
        )
    print(json.dumps(results))


def main() -> None:
    options = parse_options()
    results = uvloop.run(bench(options))
    report(results)
    failed = [name for name, check in results["checks"].items() if check["rejections"] or check["state_failures"]]
    if failed:
        raise SystemExit(
            f"not a fair run: refusals or failed round trips to Redis on {', '.join(failed)} (a check that timed out"
            " admitted without Redis); a busier machine needs a longer --state-timeout"
        )


if __name__ == "__main__":
    main()
