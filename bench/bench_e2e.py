"""End-to-end benchmark: the gateway against a direct connection to the upstream and the raw and bare pass-throughs.

Run by hand: ``python bench/bench_e2e.py [--quick]``. One run starts a scripted
upstream (``upstream.py``), the raw pass-through (``raw.py``: the floor of the gateway's
server and transport), the bare one (``bare.py``: Starlette and ``AsyncClient`` on top) and the gateway
(``gateway serve``, with one worker and, separately, two), checks every
target's answers, then measures the same workload against each:

1. closed-loop throughput, streams/s and non-streaming requests/s (burst upstream),
   on chat completions and, for the agent route, also on the Responses API
   ("gateway resp": the same conversation as ``POST /v1/responses``);
2. open-loop latency at a fixed rate (burst upstream): time to first and last byte;
3. the same at a lower rate with a paced upstream, and the server's CPU time per
   stream and per upstream chunk over that run;
4. resident memory idle and with many streams open at once;
5. two gateway workers against one (from 1).

It prints one table and one JSON line. The machine is shared and noisy: read
the ratios within one run, and the "others" CPU column, which is what the rest
of the machine did meanwhile.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
from common import (
    MIB,
    ServerProcess,
    machine,
    percentile,
    raise_fd_limit,
    start_bare,
    start_collector,
    start_gateway,
    start_litellm,
    start_raw,
    start_upstream,
)
from load import closed_loop, hold_open, open_loop
from targets import Run, Target, check_answers
from upstream import Script, model_name

QUICK = {"duration": 1.5, "warmup": 0.5, "rounds": 1, "latency_seconds": 3.0}
FULL = {"duration": 6.0, "warmup": 1.0, "rounds": 2, "latency_seconds": 12.0}


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, under 2 minutes in all (default: about 8)")
    parser.add_argument("--duration", type=float, help="seconds per closed-loop run (quick 1.5, full 6)")
    parser.add_argument("--warmup", type=float, help="seconds before each closed-loop window (quick 0.5, full 1)")
    parser.add_argument("--rounds", type=int, help="closed-loop rounds over all targets, best kept (quick 1, full 2)")
    parser.add_argument("--concurrency", default="16,64", help="closed-loop clients, comma-separated (default 16,64)")
    parser.add_argument("--rate", type=float, default=100.0, help="open loop, burst upstream: streams/s (default 100)")
    parser.add_argument(
        "--paced-rate", type=float, default=20.0, help="open loop, paced upstream: streams/s (default 20)"
    )
    parser.add_argument("--latency-seconds", type=float, help="seconds per open-loop run (quick 3, full 12)")
    parser.add_argument("--fragments", type=int, default=50, help="argument fragments per answer (default 50)")
    parser.add_argument(
        "--padded", action="store_true", help="OpenAI-style obfuscation padding in every upstream chunk"
    )
    parser.add_argument(
        "--paced-rounds",
        type=int,
        default=1,
        help="paced open-loop rounds, the targets taking turns; each target's median kept (default 1)",
    )
    parser.add_argument(
        "--interval-ms", type=float, default=10.0, help="paced upstream: ms between events (default 10)"
    )
    parser.add_argument(
        "--open-streams", type=int, default=1000, help="streams open at once for the memory figure (default 1000)"
    )
    parser.add_argument(
        "--hold-interval-ms", type=float, default=1000.0, help="ms between events of those streams (default 1000)"
    )
    parser.add_argument(
        "--gateway-log-level", default="info", help="the gateway's --log-level (default info, as deployed)"
    )
    parser.add_argument("--no-workers2", action="store_true", help="skip the two-worker gateway")
    parser.add_argument(
        "--targets", help="only these targets, comma-separated (say 'gateway,gateway traced'; default: every one)"
    )
    parser.add_argument(
        "--traced",
        action="store_true",
        help="also run the gateway with OpenTelemetry traces on, sent to a collector, as the target 'gateway traced'",
    )
    parser.add_argument(
        "--compare-with",
        type=Path,
        metavar="CHECKOUT",
        help="also run the gateway of another checkout (an earlier commit, say) as the target 'gateway before'",
    )
    options = parser.parse_args(argv)
    for name, value in (QUICK if options.quick else FULL).items():
        if getattr(options, name) is None:
            setattr(options, name, value)
    options.concurrency = [int(part) for part in options.concurrency.split(",")]
    return options


@contextlib.contextmanager
def servers(options: argparse.Namespace, log_dir: Path) -> Iterator[dict[str, ServerProcess | str]]:
    """Every server of the run, started together and stopped on every exit; a string says why a peer is missing."""
    with contextlib.ExitStack() as stack:
        started: dict[str, ServerProcess | str] = {}

        def start(name: str, server: ServerProcess) -> None:
            stack.callback(server.stop)
            started[name] = server

        upstream = start_upstream(log_dir, options.fragments, options.padded)
        start("upstream", upstream)
        start("raw", start_raw(log_dir, upstream.port))
        start("bare", start_bare(log_dir, upstream.port))
        start("bare httpcore", start_bare(log_dir, upstream.port, "httpcore"))
        start("gateway", start_gateway(log_dir, upstream.port, 1, options.gateway_log_level))
        if not options.no_workers2:
            start("gateway w2", start_gateway(log_dir, upstream.port, 2, options.gateway_log_level))
        if options.traced:
            collector = start_collector(log_dir)
            start("collector", collector)
            traced = start_gateway(log_dir, upstream.port, 1, options.gateway_log_level, traces_to=collector.port)
            start("gateway traced", traced)
        if options.compare_with is not None:
            source = options.compare_with.resolve()
            start("gateway before", start_gateway(log_dir, upstream.port, 1, options.gateway_log_level, source))
        models = [
            model_name("agent"),
            model_name("agent", options.interval_ms),
            model_name("agent", options.hold_interval_ms),
        ]
        litellm = start_litellm(log_dir, upstream.port, models)
        if isinstance(litellm, str):
            started["litellm"] = litellm
        else:
            start("litellm", litellm)
        for name, server in list(started.items()):
            if not isinstance(server, ServerProcess):
                continue
            try:
                server.wait_ready("/health/liveliness" if name == "litellm" else "/healthz")
            except RuntimeError as exc:
                if name != "litellm":
                    raise
                started[name] = f"failed to start, peer skipped: {str(exc).splitlines()[0]}"
        yield started


def _percent(usage: dict[str, float], seconds: float) -> dict[str, float]:
    return {name: 100 * used / seconds for name, used in usage.items()}


async def measure_throughput(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """Closed loop, burst upstream: the best of ``rounds`` runs per target, kind and concurrency."""
    options = run.options
    best: dict[tuple[str, str, int], dict[str, Any]] = {}
    for kind in ("stream", "request"):
        for concurrency in options.concurrency:
            for _ in range(options.rounds):
                for target in targets:
                    await run.settle()
                    result = await closed_loop(
                        target.port,
                        target.request(kind == "stream"),
                        concurrency,
                        options.duration,
                        options.warmup,
                        run.meters(target),
                    )
                    row = {
                        "target": target.name,
                        "kind": kind,
                        "concurrency": concurrency,
                        "rate": result.rate,
                        "errors": result.errors,
                        "cpu_percent": _percent(result.usage, result.seconds),
                    }
                    key = (target.name, kind, concurrency)
                    if key not in best or row["rate"] > best[key]["rate"]:
                        best[key] = row
    return list(best.values())


async def measure_open_loop(run: Run, targets: list[Target], rate: float, interval_ms: float) -> list[dict[str, Any]]:
    """Open loop at a fixed rate: latency percentiles, added latency over the first target, and server CPU per
    stream."""
    options = run.options
    stream_seconds = (options.fragments + 1) * interval_ms / 1000 + 0.05
    pool = math.ceil(rate * stream_seconds * 1.5) + 8
    rows = []
    for target in targets:
        request = target.request(True, interval_ms)
        await run.settle()
        await open_loop(target.port, request, rate, 1.0, pool)  # fills every connection pool on the way
        started = time.perf_counter()
        result = await open_loop(target.port, request, rate, options.latency_seconds, pool, run.meters(target))
        elapsed = time.perf_counter() - started
        ttfb = sorted(exchange.ttfb * 1000 for exchange in result.exchanges)
        ttlb = sorted(exchange.ttlb * 1000 for exchange in result.exchanges)
        streams = len(result.exchanges) + result.errors
        per_stream = result.usage["server"] / max(streams, 1) * 1e6
        rows.append(
            {
                "target": target.name,
                "rate": rate,
                "interval_ms": interval_ms,
                "streams": streams,
                "errors": result.errors,
                "max_send_lag_ms": result.max_lag * 1000,
                "ttfb_ms": {f"p{q}": percentile(ttfb, q) for q in (50, 90, 99)},
                "ttlb_ms": {f"p{q}": percentile(ttlb, q) for q in (50, 90, 99)},
                "server_cpu_us_per_stream": per_stream,
                "server_cpu_us_per_chunk": per_stream / (options.fragments + 2),
                "cpu_percent": _percent(result.usage, elapsed),
            }
        )
    reference = rows[0]
    for row in rows:
        for metric in ("ttfb_ms", "ttlb_ms"):
            row[f"added_{metric}"] = {q: row[metric][q] - reference[metric][q] for q in row[metric]}
    return rows


async def measure_paced(run: Run, targets: list[Target]) -> list[dict[str, Any]]:
    """The paced open loop ``paced_rounds`` times over, the targets taking turns, each target's median round kept
    (by CPU per stream, its per-round figures beside it): one window's CPU reading moves by more than the few
    percent tracing costs, and turns spread a slow spell of the machine over every target."""
    options = run.options
    rounds = [
        await measure_open_loop(run, targets, options.paced_rate, options.interval_ms)
        for _ in range(options.paced_rounds)
    ]
    kept = []
    for rows in zip(*rounds, strict=True):
        ordered = sorted(rows, key=lambda row: row["server_cpu_us_per_stream"])
        median = dict(ordered[len(ordered) // 2])
        median["server_cpu_us_per_stream_rounds"] = [row["server_cpu_us_per_stream"] for row in rows]
        kept.append(median)
    return kept


async def measure_memory(run: Run, targets: list[Target], idle: dict[str, int]) -> list[dict[str, Any]]:
    """RSS summed over the server's workers: idle at start, before, and while ``open_streams`` streams are open."""
    options = run.options
    rows = []
    for target in targets:
        before = target.server.rss_bytes()
        request = target.request(True, options.hold_interval_ms)
        held = await hold_open(target.port, request, options.open_streams, target.server.rss_bytes)
        await asyncio.sleep(1.0)  # the server's clean-up after the hang-ups, for the "after" figure
        rows.append(
            {
                "target": target.name,
                "idle_mib": idle[target.name] / MIB,
                "before_mib": before / MIB,
                "open_mib": held.sample / MIB,
                "per_stream_kib": (held.sample - before) / max(held.opened, 1) / 1024,
                "opened": held.opened,
                "after_mib": target.server.rss_bytes() / MIB,
            }
        )
    return rows


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(max(65536, 4 * options.open_streams))
    script = Script(model_name("agent"), options.fragments, options.padded)
    results: dict[str, Any] = {
        "bench": "e2e",
        "machine": machine(),
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
    }
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as tmp, servers(options, Path(tmp)) as running:
        processes = [server for server in running.values() if isinstance(server, ServerProcess)]
        upstream = running["upstream"]
        assert isinstance(upstream, ServerProcess)
        run = Run(options, upstream, processes)
        candidates = [
            ("direct", "upstream", "agent", "relayed", "chat"),
            ("raw", "raw", "agent", "relayed", "chat"),
            ("bare", "bare", "agent", "relayed", "chat"),
            ("bare httpcore", "bare httpcore", "agent", "relayed", "chat"),
            ("gateway", "gateway", "agent", "rewritten", "chat"),
            ("gateway before", "gateway before", "agent", "rewritten", "chat"),
            ("gateway traced", "gateway traced", "agent", "rewritten", "chat"),
            ("gateway resp", "gateway", "agent", "rewritten", "responses"),
            ("gateway messages", "gateway", "agent", "rewritten", "messages"),
            ("gateway plain", "gateway", "plain", "relayed", "chat"),
            ("gateway plain before", "gateway before", "plain", "relayed", "chat"),
            ("gateway w2", "gateway w2", "agent", "rewritten", "chat"),
            ("litellm", "litellm", "agent", "any", "chat"),
        ]
        targets = []
        chosen = None if options.targets is None else {name.strip() for name in options.targets.split(",")}
        for name, server, route, answer, front_door in candidates:
            process = running.get(server)
            if isinstance(process, ServerProcess) and (chosen is None or name in chosen):
                targets.append(Target(name, process, route, answer, front_door=front_door))
        results["notes"] = [f"{name}: {why}" for name, why in running.items() if isinstance(why, str)]
        await check_answers(targets, script, [options.interval_ms])
        by_name = {target.name: target for target in targets}
        memory_targets = [by_name[name] for name in ("raw", "bare", "gateway", "gateway w2") if name in by_name]
        idle = {target.name: target.server.rss_bytes() for target in memory_targets}
        single = [target for target in targets if target.name != "gateway w2"]

        results["throughput"] = await measure_throughput(run, targets)
        results["latency"] = await measure_open_loop(run, single, options.rate, 0)
        results["paced"] = await measure_paced(run, single)
        results["memory"] = await measure_memory(run, memory_targets, idle)
        collector = running.get("collector")
        if isinstance(collector, ServerProcess):
            results["traced_spans"] = received_spans(collector.port)
    results["seconds"] = time.monotonic() - started
    results["verdicts"] = verdicts(results)
    return results


def received_spans(port: int) -> int:
    """The spans the collector received: the traced gateway's traces did arrive (0 would mean they did not)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
        spans: int = json.load(answer)["spans"]
    return spans


def _rate(results: dict[str, Any], target: str, kind: str, concurrency: int) -> float:
    row = _throughput_row(results, target, kind, concurrency)
    return row["rate"] if row else math.nan


def _throughput_row(results: dict[str, Any], target: str, kind: str, concurrency: int) -> dict[str, Any] | None:
    return next(
        (
            row
            for row in results["throughput"]
            if (row["target"], row["kind"], row["concurrency"]) == (target, kind, concurrency)
        ),
        None,
    )


def _row(rows: list[dict[str, Any]], target: str) -> dict[str, Any] | None:
    return next((row for row in rows if row["target"] == target), None)


def verdicts(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with its measured value and whether it passes."""
    options = results["options"]
    out = []

    def check(name: str, value: float, limit: float, at_least: bool, unit: str) -> None:
        passed = value >= limit if at_least else value <= limit
        out.append(
            {"target": name, "value": value, "limit": limit, "unit": unit, "at_least": at_least, "pass": bool(passed)}
        )

    latency = _row(results["latency"], "gateway")
    if latency:
        check(f"added TTFB p50 at {options['rate']:g} streams/s", latency["added_ttfb_ms"]["p50"], 1.0, False, "ms")
        check(f"added TTFB p99 at {options['rate']:g} streams/s", latency["added_ttfb_ms"]["p99"], 3.0, False, "ms")
    concurrency = options["concurrency"]
    low = 16 if 16 in concurrency else concurrency[0]
    for target, limit in (("gateway plain", 0.6), ("gateway", 0.5)):
        ratio = _rate(results, target, "stream", low) / _rate(results, "raw", "stream", low)
        check(f"streams at {low} clients, {target} / raw", ratio, limit, True, "x")
    raw_latency = _row(results["latency"], "raw")
    for target in ("gateway plain", "gateway"):
        row = _row(results["latency"], target)
        if row and raw_latency:
            over_raw = row["ttfb_ms"]["p50"] - raw_latency["ttfb_ms"]["p50"]
            check(f"TTFB p50 over raw's, {target}", over_raw, 0.3, False, "ms")
    paced = _row(results["paced"], "gateway")
    if paced:
        check("gateway CPU per streamed chunk, paced", paced["server_cpu_us_per_chunk"], 20.0, False, "µs")
    traced = _row(results["paced"], "gateway traced")
    if paced and traced:
        extra = traced["server_cpu_us_per_stream"] / paced["server_cpu_us_per_stream"] - 1
        check("CPU per stream with traces on, over off, paced", 100 * extra, 5.0, False, "%")
        check("spans the collector received", results.get("traced_spans", 0), 1, True, "spans")
    memory = _row(results["memory"], "gateway")
    if memory:
        check(f"gateway RSS with {options['open_streams']} open streams", memory["open_mib"], 150.0, False, "MiB")
    if _row(results["throughput"], "gateway w2"):
        for clients in concurrency:
            ratio = _rate(results, "gateway w2", "stream", clients) / _rate(results, "gateway", "stream", clients)
            check(f"streams at {clients} clients, 2 workers / 1", ratio, 1.6, True, "x")
    return out


def _render_open_loop(rows: list[dict[str, Any]], title: str) -> list[str]:
    lines = [
        title,
        (
            f"{'target':<15}{'TTFB p50':>9}{'p90':>7}{'p99':>7}{'TTLB p50':>10}{'p90':>8}{'p99':>8}"
            f"{'+TTFB p50':>11}{'p99':>7}{'+TTLB p50':>11}{'p99':>7}"
            f"{'errors':>8}{'lag':>6}{'server %':>10}{'others %':>10}"
        ),
    ]
    for row in rows:
        first, last, added_first, added_last = (
            row["ttfb_ms"],
            row["ttlb_ms"],
            row["added_ttfb_ms"],
            row["added_ttlb_ms"],
        )
        lines.append(
            f"{row['target']:<15}{first['p50']:>9.2f}{first['p90']:>7.2f}{first['p99']:>7.2f}"
            f"{last['p50']:>10.2f}{last['p90']:>8.2f}{last['p99']:>8.2f}"
            f"{added_first['p50']:>+11.2f}{added_first['p99']:>+7.2f}{added_last['p50']:>+11.2f}{added_last['p99']:>+7.2f}"
            f"{row['errors']:>8}{row['max_send_lag_ms']:>6.1f}{row['cpu_percent']['server']:>10.0f}{row['cpu_percent']['others']:>10.0f}"
        )
    return lines


def render(results: dict[str, Any]) -> str:
    """The human-readable report: one section per measurement, then the targets."""
    options, info = results["options"], results["machine"]
    chunks = options["fragments"] + 2
    lines = [
        (
            f"machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory_gib']} GiB, Linux {info['kernel']},"
            f" Python {info['python']}, load average at start {info['load_average']}"
        ),
        "stack: " + ", ".join(f"{name} {version}" for name, version in info["versions"].items()),
        (
            f"workload: {options['fragments']} argument fragments ({chunks} chunks) per answer"
            f"{', padded like OpenAI' if options['padded'] else ''};"
            f" {'quick' if options['quick'] else 'full'} run, {results['seconds']:.0f} s"
        ),
        *(f"note: {note}" for note in results["notes"]),
        "",
        f"1. closed loop, burst upstream, best of {options['rounds']} x {options['duration']:g} s:"
        " answers/s and % of raw",
    ]
    concurrency = options["concurrency"]
    columns = [(kind, clients) for kind in ("stream", "request") for clients in concurrency]
    header = "".join(f"{kind + 's @' + str(clients):>16}" for kind, clients in columns)
    lines.append(f"{'target':<15}{header}  CPU % at streams @{concurrency[0]}: server, others")
    targets = list(dict.fromkeys(row["target"] for row in results["throughput"]))
    for target in targets:
        cells = []
        for kind, clients in columns:
            rate, raw = _rate(results, target, kind, clients), _rate(results, "raw", kind, clients)
            cells.append(f"{rate:>10,.0f} {100 * rate / raw:>4.0f}%")
        first = _throughput_row(results, target, "stream", concurrency[0])
        assert first is not None
        errors = sum(row["errors"] for row in results["throughput"] if row["target"] == target)
        lines.append(
            f"{target:<15}{''.join(f'{cell:>16}' for cell in cells)}"
            f"  {first['cpu_percent']['server']:>5.0f} {first['cpu_percent']['others']:>5.0f}"
            + (f"  errors {errors}" if errors else "")
        )
    if "gateway w2" in targets:
        parts = []
        for kind, clients in columns:
            row = _throughput_row(results, "gateway w2", kind, clients)
            assert row is not None
            split = " + ".join(
                f"{value:.0f}" for name, value in row["cpu_percent"].items() if name.startswith("worker")
            )
            parts.append(
                f"{kind}s @{clients} {row['rate'] / _rate(results, 'gateway', kind, clients):.2f}x (CPU % {split})"
            )
        lines.append("2 workers / 1: " + ", ".join(parts))
    if "gateway resp" in targets:
        ratios = [
            f"{kind}s @{clients}"
            f" {_rate(results, 'gateway resp', kind, clients) / _rate(results, 'gateway', kind, clients):.2f}x"
            for kind, clients in columns
        ]
        lines.append("Responses / chat completions, agent route: " + ", ".join(ratios))
    lines += [""]
    lines += _render_open_loop(
        results["latency"],
        f"2. open loop, burst upstream, {options['rate']:g} streams/s for {options['latency_seconds']:g} s:"
        " ms, + is over direct",
    )
    lines += [""]
    lines += _render_open_loop(
        results["paced"],
        f"3. open loop, paced upstream (one event every {options['interval_ms']:g} ms),"
        f" {options['paced_rate']:g} streams/s for {options['latency_seconds']:g} s: ms",
    )
    raw_paced = _row(results["paced"], "raw")
    lines += [
        f"{'server CPU':<15}{'µs/stream burst':>16}{'paced':>8}{'µs/chunk paced':>16}{'over raw':>11}"
        "   (direct: the upstream's own)"
    ]
    for burst, paced in zip(results["latency"], results["paced"], strict=True):
        over = paced["server_cpu_us_per_chunk"] - raw_paced["server_cpu_us_per_chunk"] if raw_paced else math.nan
        lines.append(
            f"{paced['target']:<15}{burst['server_cpu_us_per_stream']:>16.0f}{paced['server_cpu_us_per_stream']:>8.0f}"
            f"{paced['server_cpu_us_per_chunk']:>16.1f}{over:>+11.1f}"
        )
    if options.get("paced_rounds", 1) > 1:
        lines.append(f"paced µs/stream in each of {options['paced_rounds']} rounds (the median above):")
        for paced in results["paced"]:
            lines.append(
                f"  {paced['target']:<15}" + " ".join(f"{us:>7.0f}" for us in paced["server_cpu_us_per_stream_rounds"])
            )
    lines += [
        "",
        f"4. resident memory (VmRSS, summed over workers), {options['open_streams']} streams open at once: MiB",
        f"{'target':<15}{'idle':>7}{'before':>8}{'open':>7}{'KiB/stream':>11}{'after':>7}{'opened':>8}",
    ]
    for row in results["memory"]:
        lines.append(
            f"{row['target']:<15}{row['idle_mib']:>7.1f}{row['before_mib']:>8.1f}{row['open_mib']:>7.1f}"
            f"{row['per_stream_kib']:>11.1f}{row['after_mib']:>7.1f}{row['opened']:>8}"
        )
    lines += ["", "targets"]
    for verdict in results["verdicts"]:
        relation = ">=" if verdict["at_least"] else "<="
        lines.append(
            f"  {'PASS' if verdict['pass'] else 'FAIL'}  {verdict['target']}: {verdict['value']:.2f} {verdict['unit']}"
            f" (target {relation} {verdict['limit']:g} {verdict['unit']})"
        )
    return "\n".join(lines)


def main() -> None:
    options = parse_options()
    results = uvloop.run(bench(options))
    print(render(results))
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
