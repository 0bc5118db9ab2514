"""The gateway against the field: the figures gateways publish, for each target on the same scripted upstream.

Run by hand: ``python bench/bench_field.py [--smoke]`` (``bash bench/peers.sh`` first, for the
peers). One run starts the scripted upstream (``upstream.py``), the raw and bare pass-throughs, the gateway on
uvicorn (``gateway serve``) and on granian, Portkey's gateway and LiteLLM's proxy (each peer skipped
with a note when it is not installed), checks every target's answers, then measures, per target:

1. added latency at concurrency 1, non-streaming, p50/p99 over a direct connection;
2. on paced streams (one event every 10 and every 25 ms), added time to first token and added
   inter-token latency p50/p99 over direct (a gap between two content deltas at the client, less the
   gap between the upstream events they came from), and whether any stream's gaps bunch;
3. sustained requests/s with a 20 ms upstream time to first byte, at the highest concurrency whose
   p99 stays under twice that;
4. the most concurrent paced streams held for a window (30 s) with no stream's gap p99 over 50 ms;
5. server CPU per stream and per chunk at 64 paced streams, and RSS with 1,000 streams open.

It prints one table per figure and one JSON line (``"bench": "field"``). The machine is shared:
read the ratios within one run, and the "others" CPU column.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import itertools
import json
import math
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import uvloop
from common import (
    HOST,
    MIB,
    ServerProcess,
    machine,
    peer_versions,
    percentile,
    raise_fd_limit,
    start_bare,
    start_gateway,
    start_granian,
    start_litellm,
    start_portkey,
    start_raw,
    start_upstream,
)
from load import Exchange, closed_loop, hold_open, timed_payloads
from targets import Run, Target, check_answers, delta_text
from upstream import Script, model_name

FULL = {
    "request_seconds": 5.0,
    "stream_seconds": 12.0,
    "stream_clients": "1,16",
    "rate_seconds": 3.0,
    "rate_concurrency": "1,2,4,8,16,24,32,48,64,96,128,192,256,384,512",
    "capacity_seconds": 30.0,
    "capacity_max": 1024,
    "cpu_seconds": 10.0,
    "cpu_clients": 64,
    "open_streams": 1000,
    "warmup": 1.0,
    "hold_timeout": 60.0,
}
SMOKE = {
    "request_seconds": 1.0,
    "stream_seconds": 1.5,
    "stream_clients": "1,4",
    "rate_seconds": 0.7,
    "rate_concurrency": "1,4,16,64",
    "capacity_seconds": 2.0,
    "capacity_max": 64,
    "cpu_seconds": 1.5,
    "cpu_clients": 16,
    "open_streams": 100,
    "warmup": 0.3,
    "hold_timeout": 15.0,
}
"""Defaults of the options left unset: the full run's, or, with ``--smoke``, seconds and small counts."""
TARGETS = ("direct", "raw", "bare", "gateway", "gateway plain", "granian", "granian plain", "portkey", "litellm")
"""Every target, in the order of the report; ``direct`` is the reference every "added" figure is over."""
FIGURES = (1, 2, 3, 4, 5)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="seconds-long windows and small counts, to check the harness (4 to 7 minutes)",
    )
    parser.add_argument(
        "--targets", default=",".join(TARGETS), help=f"comma-separated, from {', '.join(TARGETS)} (default all)"
    )
    parser.add_argument("--figures", default="1,2,3,4,5", help="which figures to measure (default 1,2,3,4,5)")
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="also run the gateway of another checkout (an earlier commit, say) as 'before' and 'before plain'",
    )
    parser.add_argument("--fragments", type=int, default=50, help="argument fragments per answer (default 50)")
    parser.add_argument("--warmup", type=float, help="seconds before each window (full 1)")
    parser.add_argument("--request-seconds", type=float, help="1: seconds of sequential requests per target (full 5)")
    parser.add_argument(
        "--intervals", default="10,25", help="2: ms between paced events, comma-separated (default 10,25)"
    )
    parser.add_argument("--stream-clients", help="2: concurrent streams, comma-separated (full 1,16)")
    parser.add_argument("--stream-seconds", type=float, help="2: seconds per window (full 12)")
    parser.add_argument(
        "--first-byte-ms", type=float, default=20.0, help="3: the upstream's time to first byte (default 20)"
    )
    parser.add_argument(
        "--rate-concurrency",
        help="3: concurrency steps, tried in order until p99 reaches twice the time to first byte (full 1,2,4,...,512)",
    )
    parser.add_argument("--rate-seconds", type=float, help="3: seconds per step (full 3)")
    parser.add_argument(
        "--capacity-interval-ms", type=float, default=25.0, help="4: ms between paced events (default 25)"
    )
    parser.add_argument(
        "--capacity-limit-ms", type=float, default=50.0, help="4: the most a stream's gap p99 may be (default 50)"
    )
    parser.add_argument(
        "--capacity-start", type=int, default=8, help="4: streams at the first step, doubled at each (default 8)"
    )
    parser.add_argument("--capacity-max", type=int, help="4: the most streams tried (full 1024)")
    parser.add_argument(
        "--capacity-refine",
        type=int,
        default=2,
        help="4: halving steps between the last pass and the first fail (default 2)",
    )
    parser.add_argument(
        "--capacity-seconds", type=float, help="4: seconds each step is held (full 30; shorten for smoke runs)"
    )
    parser.add_argument("--cpu-clients", type=int, help="5: concurrent paced streams for CPU per stream (full 64)")
    parser.add_argument("--cpu-interval-ms", type=float, default=10.0, help="5: ms between paced events (default 10)")
    parser.add_argument("--cpu-seconds", type=float, help="5: seconds of the CPU window (full 10)")
    parser.add_argument("--open-streams", type=int, help="5: streams open at once for RSS (full 1000)")
    parser.add_argument(
        "--hold-interval-ms", type=float, default=1000.0, help="5: ms between events of those streams (default 1000)"
    )
    parser.add_argument("--hold-timeout", type=float, help="5: seconds to wait for every stream to start (full 60)")
    parser.add_argument(
        "--gateway-log-level", default="info", help="the gateway's log level, on uvicorn and granian (default info)"
    )
    options = parser.parse_args(argv)
    for name, value in (SMOKE if options.smoke else FULL).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    options.targets = [name.strip() for name in options.targets.split(",") if name.strip()]
    if options.compare_with is not None:
        options.targets += [name for name in ("before", "before plain") if name not in options.targets]
    unknown = set(options.targets) - set(TARGETS) - {"before", "before plain"}
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    if "direct" not in options.targets:
        options.targets.insert(0, "direct")
    options.figures = [int(part) for part in options.figures.split(",")]
    options.intervals = [float(part) for part in options.intervals.split(",")]
    options.stream_clients = [int(part) for part in options.stream_clients.split(",")]
    options.rate_concurrency = [int(part) for part in options.rate_concurrency.split(",")]
    return options


def models(options: argparse.Namespace) -> list[str]:
    """Every model name the run sends, for a peer that needs each one routed (LiteLLM)."""
    names = [model_name("agent"), model_name("agent", 0, options.first_byte_ms)]
    for interval in (
        *options.intervals,
        options.capacity_interval_ms,
        options.cpu_interval_ms,
        options.hold_interval_ms,
    ):
        names.append(model_name("agent", interval))
    return list(dict.fromkeys(names))


@contextlib.contextmanager
def servers(options: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, ServerProcess | str]]:
    """The servers the chosen targets need, started together and stopped on every exit; a string says why one is
    missing."""
    wanted = {name.split()[0] for name in options.targets}
    with contextlib.ExitStack() as stack:
        started: dict[str, ServerProcess | str] = {}
        upstream = start_upstream(log_dir, options.fragments)
        stack.callback(upstream.stop)
        started["direct"] = upstream
        starters: dict[str, Callable[[], ServerProcess | str]] = {
            "raw": lambda: start_raw(log_dir, upstream.port),
            "bare": lambda: start_bare(log_dir, upstream.port),
            "gateway": lambda: start_gateway(log_dir, upstream.port, 1, options.gateway_log_level),
            "before": lambda: start_gateway(
                log_dir, upstream.port, 1, options.gateway_log_level, options.compare_with.resolve()
            ),
            "granian": lambda: start_granian(log_dir, upstream.port, 1, options.gateway_log_level),
            "portkey": lambda: start_portkey(log_dir),
            "litellm": lambda: start_litellm(log_dir, upstream.port, models(options)),
        }
        for name, start in starters.items():
            if name in wanted:
                server = start()
                if isinstance(server, ServerProcess):
                    stack.callback(server.stop)
                started[name] = server
        health = {"portkey": "/", "litellm": "/health/liveliness"}
        for name, server in list(started.items()):
            if isinstance(server, ServerProcess):
                try:
                    server.wait_ready(health.get(name, "/healthz"), timeout=120.0)
                except RuntimeError as exc:
                    if name in ("direct", "raw", "bare", "gateway"):
                        raise
                    started[name] = f"failed to start, skipped: {str(exc).splitlines()[0]}"
        yield started


def make_targets(options: argparse.Namespace, running: dict[str, ServerProcess | str]) -> list[Target]:
    upstream = running["direct"]
    assert isinstance(upstream, ServerProcess)
    portkey = {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://{HOST}:{upstream.port}/v1",
        "authorization": "Bearer bench",
    }
    kinds = {
        "direct": ("agent", "relayed", {}),
        "raw": ("agent", "relayed", {}),
        "bare": ("agent", "relayed", {}),
        "gateway": ("agent", "rewritten", {}),
        "gateway plain": ("plain", "relayed", {}),
        "before": ("agent", "rewritten", {}),
        "before plain": ("plain", "relayed", {}),
        "granian": ("agent", "rewritten", {}),
        "granian plain": ("plain", "relayed", {}),
        "portkey": ("agent", "relayed", portkey),
        "litellm": ("agent", "relayed", {}),
    }
    targets = []
    for name in options.targets:
        server = running.get(name.split()[0])
        if isinstance(server, ServerProcess):
            route, answer, headers = kinds[name]
            targets.append(Target(name, server, route, answer, headers))
    return targets


def visible_after_each_event(script: Script, answer: str) -> list[int]:
    """How many characters of the text a client sees (the message for a rewriting target, the
    arguments for a relaying one) the upstream had sent after each fragment event: element ``i`` is
    after event ``i + 1`` (event 0 names the call). An escape counts once its last character is in."""
    if answer != "rewritten":
        return list(script.fragment_ends)
    arguments = script.arguments
    position = arguments.index('"message":"') + len('"message":"')
    completed = []
    while arguments[position] != '"':
        length = (6 if arguments[position + 1] == "u" else 2) if arguments[position] == "\\" else 1
        position += length
        completed.append(position)
    return [bisect.bisect_right(completed, end) for end in script.fragment_ends]


@dataclass(slots=True)
class StreamTiming:
    """One paced stream as the client saw it, against the upstream's schedule."""

    ttft: float
    """From the request's last byte to the first content delta, in seconds."""
    first_late: float
    """How much later the first content delta came than the upstream event it came from (its schedule
    counted from the request's last byte): "added time to first token" is this less direct's."""
    gaps: list[float]
    """Between consecutive content deltas, in seconds."""
    upstream_gaps: list[float]
    """Between the upstream events those deltas came from."""
    right: bool
    """Whether the text added up to the whole answer."""

    @property
    def bunched(self) -> bool:
        return any(
            gap < upstream / 2 for gap, upstream in zip(self.gaps, self.upstream_gaps, strict=True) if upstream > 0
        )


class StreamTimer:
    """Turns a paced answer's timed reads into a ``StreamTiming`` (the load driver's ``digest``)."""

    def __init__(self, script: Script, answer: str, interval: float, first_byte: float = 0.0) -> None:
        self.visible = visible_after_each_event(script, answer)
        self.content = answer == "rewritten"
        self.interval = interval
        self.first_byte = first_byte

    def __call__(self, exchange: Exchange) -> StreamTiming:
        arrivals: list[float] = []
        events: list[int] = []
        seen = 0
        for arrived, payload in timed_payloads(exchange):
            if b'"content"' not in payload and b'"arguments"' not in payload:
                continue
            content, arguments = delta_text(orjson.loads(payload))
            added = len(content if self.content else arguments)
            if added:
                seen += added
                arrivals.append(arrived)
                events.append(bisect.bisect_left(self.visible, seen) + 1)
        if not arrivals:
            return StreamTiming(math.nan, math.nan, [], [], False)
        first_due = exchange.sent + self.first_byte + events[0] * self.interval
        gaps = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
        upstream_gaps = [(later - earlier) * self.interval for earlier, later in itertools.pairwise(events)]
        return StreamTiming(
            arrivals[0] - exchange.sent, arrivals[0] - first_due, gaps, upstream_gaps, seen == self.visible[-1]
        )


def _ms(values: Sequence[float], qs: Sequence[int] = (50, 99)) -> dict[str, float]:
    ordered = sorted(value * 1000 for value in values)
    return {f"p{q}": percentile(ordered, q) for q in qs}


def _added(row: dict[str, Any], reference: dict[str, Any] | None, key: str) -> dict[str, float]:
    if reference is None:
        return dict.fromkeys(row[key], math.nan)
    return {q: row[key][q] - reference[key][q] for q in row[key]}


def _percent(usage: dict[str, float], seconds: float) -> dict[str, float]:
    return {name: 100 * used / seconds for name, used in usage.items()}


async def measure_overhead(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """1. Sequential non-streaming requests on one keep-alive connection: latency, and what each target adds."""
    options = run.options
    rows = []
    for target in targets:
        await run.settle()
        result = await closed_loop(target.port, target.request(False), 1, options.request_seconds, options.warmup)
        rows.append(
            {
                "target": target.name,
                "requests": result.completed,
                "errors": result.errors,
                "latency_ms": _ms([exchange.ttlb for exchange in result.exchanges]),
            }
        )
    reference = next((row for row in rows if row["target"] == "direct"), None)
    for row in rows:
        row["added_ms"] = _added(row, reference, "latency_ms")
    return rows


async def measure_streams(run: Run, targets: list[Target], script: Script) -> list[dict[str, Any]]:
    """2. Paced streams, closed loop at each concurrency: time to first token and the gaps between content deltas."""
    options = run.options
    rows = []
    for interval_ms in options.intervals:
        for clients in options.stream_clients:
            group = []
            for target in targets:
                timer = StreamTimer(script, target.answer, interval_ms / 1000)
                await run.settle()
                result = await closed_loop(
                    target.port,
                    target.request(True, interval_ms),
                    clients,
                    options.stream_seconds,
                    options.warmup,
                    run.meters(target),
                    digest=timer,
                )
                timings: list[StreamTiming] = result.digests
                right = [timing for timing in timings if timing.right]
                differences = [
                    gap - upstream
                    for timing in right
                    for gap, upstream in zip(timing.gaps, timing.upstream_gaps, strict=True)
                ]
                ratios = [
                    gap / upstream
                    for timing in right
                    for gap, upstream in zip(timing.gaps, timing.upstream_gaps, strict=True)
                    if upstream > 0
                ]
                group.append(
                    {
                        "target": target.name,
                        "interval_ms": interval_ms,
                        "clients": clients,
                        "streams": len(timings),
                        "errors": result.errors,
                        "wrong": len(timings) - len(right),
                        "ttft_ms": _ms([timing.ttft for timing in right]),
                        "first_late_ms": _ms([timing.first_late for timing in right]),
                        "itl_ms": _ms(differences),
                        "gap_ms": _ms([gap for timing in right for gap in timing.gaps]),
                        "bunched_streams": sum(1 for timing in right if timing.bunched),
                        "smallest_gap_ratio": min(ratios, default=math.nan),
                        "cpu_percent": _percent(result.usage, result.seconds),
                    }
                )
            reference = next((row for row in group if row["target"] == "direct"), None)
            for row in group:
                row["added_ttft_ms"] = _added(row, reference, "first_late_ms")
                row["added_itl_ms"] = _added(row, reference, "itl_ms")
            rows += group
    return rows


async def measure_rate(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """3. Non-streaming requests with a slow first byte upstream, closed loop at rising concurrency, until p99 reaches
    twice that."""
    options = run.options
    limit_ms = 2 * options.first_byte_ms
    rows = []
    for target in targets:
        steps = []
        for clients in options.rate_concurrency:
            await run.settle()
            result = await closed_loop(
                target.port,
                target.request(False, 0, options.first_byte_ms),
                clients,
                options.rate_seconds,
                options.warmup,
                run.meters(target),
            )
            latency = _ms([exchange.ttlb for exchange in result.exchanges])
            passed = result.errors == 0 and result.completed > 0 and latency["p99"] < limit_ms
            steps.append(
                {
                    "clients": clients,
                    "rate": result.rate,
                    "errors": result.errors,
                    "latency_ms": latency,
                    "pass": passed,
                    "server_percent": _percent(result.usage, result.seconds)["server"],
                }
            )
            if not passed:
                break
        passing = [step for step in steps if step["pass"]]
        rows.append(
            {"target": target.name, "limit_ms": limit_ms, "best": passing[-1] if passing else None, "steps": steps}
        )
    return rows


def _stream_p99_ms(timing: StreamTiming) -> float:
    return percentile(sorted(timing.gaps), 99) * 1000 if timing.gaps else math.nan


async def _capacity_step(run: Run, target: Target, streams: int, timer: StreamTimer) -> dict[str, Any]:
    options = run.options
    await run.settle()
    result = await closed_loop(
        target.port,
        target.request(True, options.capacity_interval_ms),
        streams,
        options.capacity_seconds,
        options.warmup,
        run.meters(target),
        digest=timer,
    )
    timings: list[StreamTiming] = result.digests
    worst = [_stream_p99_ms(timing) for timing in timings]
    wrong = sum(1 for timing in timings if not timing.right)
    worst_p99 = max(worst, default=math.nan)
    return {
        "streams": streams,
        "completed": result.completed,
        "errors": result.errors,
        "wrong": wrong,
        "worst_stream_p99_ms": worst_p99,
        "median_stream_p99_ms": percentile(sorted(worst), 50),
        "pass": result.errors == 0 and wrong == 0 and bool(timings) and worst_p99 <= options.capacity_limit_ms,
        "server_percent": _percent(result.usage, result.seconds)["server"],
        "others_percent": _percent(result.usage, result.seconds)["others"],
    }


async def measure_capacity(run: Run, targets: list[Target], script: Script) -> list[dict[str, Any]]:
    """4. Concurrent paced streams, doubled until a stream's gap p99 passes the limit, then halved in between."""
    options = run.options
    rows = []
    for target in targets:
        timer = StreamTimer(script, target.answer, options.capacity_interval_ms / 1000)
        steps = []
        streams = options.capacity_start
        while streams <= options.capacity_max:
            steps.append(await _capacity_step(run, target, streams, timer))
            if not steps[-1]["pass"]:
                break
            streams *= 2
        low = max((step["streams"] for step in steps if step["pass"]), default=0)
        high = min((step["streams"] for step in steps if not step["pass"]), default=0)
        for _ in range(options.capacity_refine):
            if not high or high - low <= 1:
                break
            step = await _capacity_step(run, target, (low + high) // 2, timer)
            steps.append(step)
            low, high = (step["streams"], high) if step["pass"] else (low, step["streams"])
        rows.append({"target": target.name, "held": low, "first_failed": high or None, "steps": steps})
    return rows


async def measure_cpu(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """5. Server CPU per stream and per chunk at ``cpu_clients`` paced streams, and RSS with ``open_streams`` open."""
    options = run.options
    chunks = options.fragments + 2
    rows = []
    for target in targets:
        await run.settle()
        result = await closed_loop(
            target.port,
            target.request(True, options.cpu_interval_ms),
            options.cpu_clients,
            options.cpu_seconds,
            options.warmup,
            run.meters(target),
        )
        per_stream = result.usage["server"] / result.completed * 1e6 if result.completed else math.nan
        await run.settle()
        before = target.server.rss_bytes()
        request = target.request(True, options.hold_interval_ms)
        held = await hold_open(
            target.port, request, options.open_streams, target.server.rss_bytes, options.hold_timeout
        )
        rows.append(
            {
                "target": target.name,
                "streams_per_second": result.rate,
                "errors": result.errors,
                "cpu_us_per_stream": per_stream,
                "cpu_us_per_chunk": per_stream / chunks,
                "cpu_percent": _percent(result.usage, result.seconds),
                "rss_before_mib": before / MIB,
                "rss_open_mib": held.sample / MIB,
                "opened": held.opened,
            }
        )
    return rows


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(max(65536, 4 * max(options.open_streams, options.capacity_max)))
    script = Script(model_name("agent"), options.fragments)
    results: dict[str, Any] = {
        "bench": "field",
        "machine": machine(),
        "peers": peer_versions(),
        "options": dict(vars(options)),
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-field-") as tmp, servers(options, Path(tmp)) as running:
        upstream = running["direct"]
        assert isinstance(upstream, ServerProcess)
        processes = [server for server in running.values() if isinstance(server, ServerProcess)]
        run = Run(options, upstream, processes)
        targets = make_targets(options, running)
        results["notes"] = [f"{name}: {why}" for name, why in running.items() if isinstance(why, str)]
        await check_answers(targets, script, [*options.intervals, options.capacity_interval_ms], options.first_byte_ms)
        results["checked"] = [target.name for target in targets]
        if 1 in options.figures:
            results["overhead"] = await measure_overhead(run, targets)
        if 2 in options.figures:
            results["streams"] = await measure_streams(run, targets, script)
        if 3 in options.figures:
            results["rate"] = await measure_rate(run, targets)
        if 4 in options.figures:
            results["capacity"] = await measure_capacity(run, targets, script)
        if 5 in options.figures:
            results["cpu"] = await measure_cpu(run, targets)
    results["seconds"] = time.monotonic() - started
    return results


def _pair(values: dict[str, float], signed: bool = False) -> str:
    form = "{:+.2f}" if signed else "{:.2f}"
    return " / ".join(form.format(values[q]) for q in ("p50", "p99"))


def render(results: dict[str, Any]) -> str:
    """The human-readable report: one table per figure."""
    options, info = results["options"], results["machine"]
    lines = [
        (
            f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Linux {info['kernel']},"
            f" Python {info['python']}, load average at start {info['load_average']}"
        ),
        "stack: " + ", ".join(f"{name} {version}" for name, version in info["versions"].items()),
        "peers: " + ", ".join(f"{name} {version}" for name, version in results["peers"].items()),
        (
            f"workload: {options['fragments']} argument fragments ({options['fragments'] + 2} chunks) per answer;"
            f" {'SMOKE run (figures not meaningful)' if options['smoke'] else 'full run'}, {results['seconds']:.0f} s"
        ),
        "answers checked: " + ", ".join(results["checked"]),
        *(f"note: {note}" for note in results["notes"]),
    ]
    if "overhead" in results:
        lines += [
            "",
            "1. non-streaming, concurrency 1: ms, + is over direct",
            f"{'target':<15}{'p50 / p99':>16}{'added p50 / p99':>20}{'requests':>10}",
        ]
        for row in results["overhead"]:
            lines.append(
                f"{row['target']:<15}{_pair(row['latency_ms']):>16}{_pair(row['added_ms'], True):>20}"
                f"{row['requests']:>10}"
            )
    if "streams" in results:
        lines += [
            "",
            (
                "2. paced streams: ms; TTFT = to the first content delta; ITL = client gap less upstream gap;"
                " + is over direct"
            ),
            (
                f"{'target':<15}{'every':>6}{'clients':>8}{'TTFT p50 / p99':>17}{'+TTFT p50 / p99':>18}"
                f"{'ITL p50 / p99':>16}{'+ITL p50 / p99':>17}{'gap p50 / p99':>17}{'bunched':>9}{'min gap':>8}"
                f"{'streams':>8}{'server %':>9}{'others %':>9}"
            ),
        ]
        for row in results["streams"]:
            lines.append(
                f"{row['target']:<15}{row['interval_ms']:>6g}{row['clients']:>8}{_pair(row['ttft_ms']):>17}"
                f"{_pair(row['added_ttft_ms'], True):>18}{_pair(row['itl_ms'], True):>16}"
                f"{_pair(row['added_itl_ms'], True):>17}"
                f"{_pair(row['gap_ms']):>17}{row['bunched_streams']:>9}{row['smallest_gap_ratio']:>8.2f}{row['streams']:>8}"
                f"{row['cpu_percent']['server']:>9.0f}{row['cpu_percent']['others']:>9.0f}"
                + (f"  errors {row['errors']}" if row["errors"] else "")
                + (f"  WRONG {row['wrong']}" if row["wrong"] else "")
            )
    if "rate" in results:
        lines += [
            "",
            (
                f"3. requests/s with a {options['first_byte_ms']:g} ms upstream first byte,"
                f" at the highest concurrency with p99 < {2 * options['first_byte_ms']:g} ms"
            ),
            f"{'target':<15}{'clients':>8}{'requests/s':>11}{'p50 / p99 ms':>16}{'server %':>9}   next step (failed)",
        ]
        for row in results["rate"]:
            best, last = row["best"], row["steps"][-1]
            head = f"{row['target']:<15}"
            head += (
                f"{best['clients']:>8}{best['rate']:>11,.0f}{_pair(best['latency_ms']):>16}{best['server_percent']:>9.0f}"
                if best
                else f"{'none':>8}{'':>36}"
            )
            tail = (
                ""
                if last["pass"]
                else f"   {last['clients']} clients: {last['rate']:,.0f}/s, p99 {last['latency_ms']['p99']:.1f} ms,"
                f" errors {last['errors']}"
            )
            lines.append(head + tail)
    if "capacity" in results:
        lines += [
            "",
            (
                f"4. concurrent streams (one event every {options['capacity_interval_ms']:g} ms)"
                f" held {options['capacity_seconds']:g} s"
                f" with every stream's gap p99 <= {options['capacity_limit_ms']:g} ms"
            ),
            f"{'target':<15}{'held':>6}{'failed at':>10}   steps: streams -> worst stream p99 ms (server %)",
        ]
        for row in results["capacity"]:
            steps = ", ".join(
                f"{step['streams']}{'' if step['pass'] else '!'}"
                f" -> {step['worst_stream_p99_ms']:.0f} ({step['server_percent']:.0f}%)"
                + (f" errors {step['errors']}" if step["errors"] else "")
                + (f" wrong {step['wrong']}" if step["wrong"] else "")
                for step in sorted(row["steps"], key=lambda step: step["streams"])
            )
            lines.append(f"{row['target']:<15}{row['held']:>6}{row['first_failed'] or '-':>10}   {steps}")
    if "cpu" in results:
        lines += [
            "",
            (
                f"5. server CPU at {options['cpu_clients']} paced streams"
                f" (one event every {options['cpu_interval_ms']:g} ms);"
                f" RSS with {options['open_streams']} streams open (direct: the upstream's own)"
            ),
            (
                f"{'target':<15}{'streams/s':>10}{'µs/stream':>10}{'µs/chunk':>9}{'server %':>9}{'others %':>9}"
                f"{'RSS MiB':>8}{'open':>7}{'opened':>7}"
            ),
        ]
        for row in results["cpu"]:
            lines.append(
                f"{row['target']:<15}{row['streams_per_second']:>10.1f}{row['cpu_us_per_stream']:>10.0f}{row['cpu_us_per_chunk']:>9.1f}"
                f"{row['cpu_percent']['server']:>9.0f}{row['cpu_percent']['others']:>9.0f}{row['rss_before_mib']:>8.1f}"
                f"{row['rss_open_mib']:>7.1f}{row['opened']:>7}"
                + (f"  errors {row['errors']}" if row["errors"] else "")
            )
    return "\n".join(lines)


def main() -> None:
    options = parse_options()
    results = uvloop.run(bench(options))
    print(render(results))
    print(json.dumps(results, ensure_ascii=False, default=str))


if __name__ == "__main__":
    main()
