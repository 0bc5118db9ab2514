"""Worker balance: how keep-alive clients spread over the gateway's worker processes.

Run by hand: ``python bench/workers.py [--smoke]``. Starts the scripted upstream
and the gateway with ``--workers`` workers three ways:

- ``uvicorn``: ``gateway serve --workers N``, uvicorn's workers sharing one listening socket;
- ``reuseport``: ``reuseport.py``, the same app in N processes with a socket each (SO_REUSEPORT),
  the kernel spreading new connections over them by a hash of their addresses;
- ``granian``: granian's ``--workers N`` (shared socket), when granian is installed.

For each, ``--clients`` keep-alive connections are opened, all at once and, in a
second window, one every ``--stagger-ms``; each sends requests back to back for
``--seconds``. Which worker owns each connection is read from ``/proc`` (the
worker whose file descriptors hold the server side of that TCP connection), so
the requests per worker are counted exactly, with nothing added to the gateway.
Printed per server and window: connections and requests per worker, each worker's
CPU %, and the requests/s of them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvloop
from common import (
    BENCH,
    HOST,
    ServerProcess,
    cpu_seconds,
    free_port,
    machine,
    raise_fd_limit,
    start_gateway,
    start_granian,
    start_upstream,
    write_gateway_config,
)
from load import Connection, chat_request, connect
from upstream import model_name

SERVERS = ("uvicorn", "reuseport", "granian")


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one-second windows, to check the harness")
    parser.add_argument("--servers", default=",".join(SERVERS), help=f"comma-separated, from {', '.join(SERVERS)}")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--clients", type=int, default=16, help="keep-alive connections (default 16)")
    parser.add_argument("--seconds", type=float, help="seconds per window (full 8, smoke 1)")
    parser.add_argument(
        "--stagger-ms", type=float, default=20.0, help="ms between connections in the staggered window (default 20)"
    )
    parser.add_argument("--stream", action="store_true", help="burst streams instead of non-streaming requests")
    parser.add_argument("--log-level", default="info", help="the gateway's log level (default info)")
    options = parser.parse_args(argv)
    if options.seconds is None:
        options.seconds = 1.0 if options.smoke else 8.0
    options.servers = [name.strip() for name in options.servers.split(",") if name.strip()]
    return options


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets a process holds open."""
    inodes = set()
    with contextlib.suppress(OSError):
        for entry in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{entry}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def connection_owners(server_port: int, workers: list[int]) -> dict[int, int]:
    """Client port -> the pid of the worker holding the server side of that established connection."""
    by_inode: dict[int, int] = {}
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
            if state == "01" and int(local.split(":")[1], 16) == server_port:
                by_inode[inode] = int(remote.split(":")[1], 16)
    owners = {}
    for pid in workers:
        for inode in _socket_inodes(pid) & by_inode.keys():
            owners[by_inode[inode]] = pid
    return owners


async def _window(server: ServerProcess, request: bytes, options: argparse.Namespace, stagger: float) -> dict[str, Any]:
    """Open the connections (at once, or one every ``stagger`` s), then requests back to back on each."""
    if stagger:
        connections: list[Connection] = []
        for _ in range(options.clients):
            connections.append(await connect(server.port))
            await asyncio.sleep(stagger)
    else:
        connections = list(await asyncio.gather(*(connect(server.port) for _ in range(options.clients))))
    await asyncio.sleep(0.2)
    workers = server.workers()
    owners = connection_owners(server.port, workers)
    counts: Counter[int] = Counter()
    errors = 0
    deadline = time.perf_counter() + options.seconds

    async def client(connection: Connection) -> None:
        nonlocal errors
        port = connection.transport.get_extra_info("sockname")[1] if connection.transport else 0
        while time.perf_counter() < deadline and not connection.closed:
            exchange = await connection.request(request)
            if exchange.complete:
                counts[port] += 1
            else:
                errors += 1

    cpu_before = [cpu_seconds(pid) for pid in workers]
    started = time.perf_counter()
    await asyncio.gather(*(client(connection) for connection in connections), return_exceptions=True)
    elapsed = time.perf_counter() - started
    cpu_after = [cpu_seconds(pid) for pid in workers]
    for connection in connections:
        connection.close()
    per_worker = []
    for position, pid in enumerate(workers):
        ports = [port for port, owner in owners.items() if owner == pid]
        per_worker.append(
            {
                "pid": pid,
                "connections": len(ports),
                "requests": sum(counts[port] for port in ports),
                "cpu_percent": 100 * (cpu_after[position] - cpu_before[position]) / elapsed,
            }
        )
    total = sum(counts.values())
    unowned = total - sum(row["requests"] for row in per_worker)
    return {"workers": per_worker, "requests": total, "unowned": unowned, "errors": errors, "rate": total / elapsed}


def start_reuseport(log_dir: Path, upstream_port: int, workers: int, log_level: str) -> ServerProcess:
    config = write_gateway_config(log_dir, upstream_port)
    port = free_port()
    metrics = tempfile.mkdtemp(prefix="metrics-", dir=log_dir)
    argv = [
        sys.executable,
        str(BENCH / "reuseport.py"),
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--config",
        str(config),
        "--log-level",
        log_level,
    ]
    return ServerProcess(
        "reuseport", argv, port, log_dir, workers=workers, supervised=True, env={"PROMETHEUS_MULTIPROC_DIR": metrics}
    )


@contextlib.contextmanager
def started(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


async def bench(options: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit()
    results: dict[str, Any] = {
        "bench": "workers",
        "machine": machine(),
        "options": dict(vars(options)),
        "servers": [],
        "notes": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp:
        log_dir = Path(tmp)
        upstream = start_upstream(log_dir, 50)
        with started(upstream):
            for name in options.servers:
                if name == "uvicorn":
                    server: ServerProcess | str = start_gateway(
                        log_dir, upstream.port, options.workers, options.log_level
                    )
                elif name == "reuseport":
                    server = start_reuseport(log_dir, upstream.port, options.workers, options.log_level)
                else:
                    server = start_granian(log_dir, upstream.port, options.workers, options.log_level)
                if isinstance(server, str):
                    results["notes"].append(f"{name}: {server}")
                    continue
                with started(server):
                    request = chat_request(server.port, model_name("agent"), options.stream)
                    row = {"server": name}
                    for window, stagger in (("at once", 0.0), ("staggered", options.stagger_ms / 1000)):
                        await asyncio.sleep(0.5)
                        row[window] = await _window(server, request, options, stagger)
                    results["servers"].append(row)
    return results


def render(results: dict[str, Any]) -> str:
    options = results["options"]
    kind = "burst streams" if options["stream"] else "non-streaming requests"
    lines = [
        f"{options['clients']} keep-alive clients, {kind}, {options['workers']} workers,"
        f" {options['seconds']:g} s per window" + (" (SMOKE run)" if options["smoke"] else ""),
        *(f"note: {note}" for note in results["notes"]),
        f"{'server':<11}{'window':<11}{'requests/s':>11}   per worker: connections / requests (CPU %)",
    ]
    for row in results["servers"]:
        for window in ("at once", "staggered"):
            measured = row[window]
            split = ", ".join(
                f"{worker['connections']} / {worker['requests']} ({worker['cpu_percent']:.0f}%)"
                for worker in measured["workers"]
            )
            extra = f"  unattributed {measured['unowned']}" if measured["unowned"] else ""
            extra += f"  errors {measured['errors']}" if measured["errors"] else ""
            lines.append(f"{row['server']:<11}{window:<11}{measured['rate']:>11,.0f}   {split}{extra}")
    return "\n".join(lines)


def main() -> None:
    options = parse_options()
    results = uvloop.run(bench(options))
    print(render(results))
    print(json.dumps(results, ensure_ascii=False))


if __name__ == "__main__":
    main()
