"""Profile a server under the end-to-end benchmark's load with py-spy, and name its hot spots.

Run by hand: ``python bench/profile_e2e.py [--server gateway|bare] [--load burst|paced]``
(needs ``pip install py-spy``). Starts the scripted upstream and the server,
loads it for ``--seconds`` while ``py-spy record`` samples it, then prints the
functions with the most samples: on-CPU time spent in the function itself
("self", C code included in its Python caller) and under it ("total").

- ``burst``: closed loop, ``--concurrency`` clients, whole streams at once (throughput);
- ``paced``: open loop at ``--rate`` streams/s, one event every ``--interval-ms`` (per-chunk cost);
- ``request``: closed loop, ``--concurrency`` clients, non-streaming requests.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import uvloop
from common import ServerProcess, start_bare, start_gateway, start_upstream
from load import chat_request, closed_loop, open_loop
from upstream import model_name

AREAS = {
    "gateway/": "gateway",
    "starlette/": "starlette",
    "uvicorn/": "uvicorn",
    "httpx/": "httpx",
    "httpcore/": "httpcore",
    "h11/": "h11",
    "anyio/": "anyio",
    "asyncio/": "asyncio",
    "logging/": "logging",
    "pydantic": "pydantic",
    "contextlib.py": "contextlib",
}


def parse_options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=("gateway", "bare"), default="gateway")
    parser.add_argument("--route", default="agent", help="the gateway route: agent (rewrite) or plain (default agent)")
    parser.add_argument("--load", choices=("burst", "paced", "request"), default="burst")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--interval-ms", type=float, default=10.0)
    parser.add_argument("--fragments", type=int, default=50)
    parser.add_argument(
        "--padded", action="store_true", help="OpenAI-style obfuscation padding in every upstream chunk"
    )
    parser.add_argument("--sample-rate", type=int, default=200, help="py-spy samples per second (default 200)")
    parser.add_argument("--gateway-log-level", default="info")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--output", type=Path, help="keep py-spy's collapsed stacks here (flamegraph.pl, speedscope)")
    return parser.parse_args()


def area(frame: str) -> str:
    """The package a py-spy frame, ``function (path)``, belongs to."""
    path = frame.rpartition("(")[2]
    return next((name for prefix, name in AREAS.items() if path.startswith(prefix) or f"/{prefix}" in path), "other")


def hot_spots(collapsed: Path, top: int) -> str:
    """Self and total sample shares per function, and self shares per package."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    samples = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        weight = int(count)
        samples += weight
        own[frames[-1]] += weight
        areas[area(frames[-1])] += weight
        for frame in set(frames):
            total[frame] += weight
    lines = [f"{samples} on-CPU samples", "", f"self % (top {top})"]
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in own.most_common(top)]
    lines += ["", f"total % (top {top}, below the event loop)"]
    below_loop = [(frame, n) for frame, n in total.most_common() if n < samples]
    lines += [f"{100 * n / samples:6.1f}  {frame}" for frame, n in below_loop[:top]]
    lines += ["", "self % by package"]
    lines += [f"{100 * n / samples:6.1f}  {name}" for name, n in areas.most_common()]
    return "\n".join(lines)


async def load(server: ServerProcess, options: argparse.Namespace) -> str:
    route = options.route if options.server == "gateway" else "agent"
    if options.load in ("burst", "request"):
        stream = options.load == "burst"
        request = chat_request(server.port, model_name(route), stream)
        result = await closed_loop(server.port, request, options.concurrency, options.seconds, 0.0)
        return f"{result.rate:.0f} {'streams' if stream else 'requests'}/s, {result.errors} errors"
    request = chat_request(server.port, model_name(route, options.interval_ms), True)
    pool = int(options.rate * (options.fragments + 1) * options.interval_ms / 1000 * 1.5) + 8
    opened = await open_loop(server.port, request, options.rate, options.seconds, pool)
    return f"{len(opened.exchanges)} streams, {opened.errors} errors, send lag up to {opened.max_lag * 1000:.1f} ms"


def main() -> None:
    options = parse_options()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
        log_dir = Path(tmp)
        output = options.output or log_dir / "stacks.txt"
        upstream = start_upstream(log_dir, options.fragments, options.padded)
        servers = [upstream]
        try:
            upstream.wait_ready()
            server = (
                start_bare(log_dir, upstream.port)
                if options.server == "bare"
                else start_gateway(log_dir, upstream.port, 1, options.gateway_log_level)
            )
            servers.append(server)
            server.wait_ready()
            record = [
                py_spy,
                "record",
                "--pid",
                str(server.pid),
                "--duration",
                str(int(options.seconds)),
                "--rate",
                str(options.sample_rate),
                "--format",
                "raw",
                "--nolineno",
                "--output",
                str(output),
            ]
            spy = subprocess.Popen(record, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            summary = uvloop.run(load(server, options))
            _, errors = spy.communicate(timeout=options.seconds + 30)
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed: {errors.decode(errors='replace')}")
        finally:
            for process in reversed(servers):
                process.stop()
        print(
            f"{options.server} ({options.route if options.server == 'gateway' else 'pass-through'}),"
            f" {options.load} load: {summary}"
        )
        print(hot_spots(output, options.top))


if __name__ == "__main__":
    main()
