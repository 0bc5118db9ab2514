"""Shared helpers of the end-to-end benchmark: the servers as subprocesses, /proc readings, statistics.

Every server runs in its own session on 127.0.0.1 with its output in a log
file, so a benchmark can stop it (and its uvicorn workers) by process group
and show the log when it fails to start.
"""

from __future__ import annotations

import contextlib
import math
import os
import platform
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
HOST = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

GATEWAY_CONFIG = """\
server:
  host: {host}
providers:
  up:
    base_url: http://{host}:{upstream_port}/v1
models:
  - name: "agent*"
    provider: up
    rewrite: {{inject_tools: false}}
  - name: "plain*"
    provider: up
"""
"""Globs, because the upstream reads its pacing from the model name (``agent@10ms``)."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def raise_fd_limit(wanted: int = 65536) -> int:
    """Thousands of open streams need three sockets each; servers started afterwards inherit the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return max(soft, target)


def http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    """The status of a plain GET, or None when nothing answers."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nhost: {HOST}:{port}\r\nconnection: close\r\n\r\n".encode())
            head = conn.recv(64)
    except OSError:
        return None
    parts = head.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None


def children(pid: int) -> list[int]:
    """Direct children, found through /proc (no psutil on purpose: nothing to install)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(entry))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read()
    except OSError:
        return b""


def cpu_seconds(pid: int) -> float:
    """User plus system time of one process (utime + stime from /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy, all CPUs (user, nice, system, irq, softirq from /proc/stat)."""
    with open("/proc/stat", "rb") as stat:
        fields = [int(value) for value in stat.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = fields
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """VmRSS from /proc/<pid>/status."""
    try:
        with open(f"/proc/{pid}/status", "rb") as status:
            for line in status:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ServerProcess:
    """A benchmark server in its own session, so that stopping it stops its workers too."""

    def __init__(self, name: str, argv: Sequence[str], port: int, log_dir: Path, workers: int = 1) -> None:
        self.name = name
        self.port = port
        self.expected_workers = workers
        self.log_path = log_dir / f"{name.replace(' ', '-')}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=REPO, start_new_session=True
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, path: str = "/healthz", timeout: float = 60.0) -> None:
        """Until ``path`` answers 200 and every worker process is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            if http_status(self.port, path) == 200 and len(self.workers()) == self.expected_workers:
                if self.expected_workers > 1:
                    time.sleep(1.0)  # the health check may have reached only the first worker to start
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready on port {self.port} after {timeout:.0f} s:\n{self.log_tail()}")

    def workers(self) -> list[int]:
        """The processes that serve requests: uvicorn's workers when it has some, else the process itself."""
        if self.expected_workers == 1:
            return [self.pid]
        return [pid for pid in children(self.pid) if b"resource_tracker" not in _cmdline(pid)]

    def cpu_seconds(self) -> float:
        return sum(self.worker_cpu_seconds())

    def total_cpu_seconds(self) -> float:
        """The workers and, when there are several, their parent too."""
        parent = cpu_seconds(self.pid) if self.expected_workers > 1 else 0.0
        return parent + self.cpu_seconds()

    def worker_cpu_seconds(self) -> list[float]:
        return [cpu_seconds(pid) for pid in self.workers()]

    def rss_bytes(self) -> int:
        return sum(rss_bytes(pid) for pid in self.workers())

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.process.wait()

    def _signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signum)


def start_upstream(log_dir: Path, fragments: int, padded: bool = False) -> ServerProcess:
    port = free_port()
    argv = [sys.executable, str(BENCH / "upstream.py"), "--port", str(port), "--fragments", str(fragments)]
    if padded:
        argv.append("--padded")
    return ServerProcess("upstream", argv, port, log_dir)


def start_bare(log_dir: Path, upstream_port: int, transport: str = "gateway") -> ServerProcess:
    port = free_port()
    argv = [
        sys.executable, str(BENCH / "bare.py"), "--port", str(port),
        "--upstream", f"http://{HOST}:{upstream_port}/v1", "--transport", transport,
    ]
    return ServerProcess("bare" if transport == "gateway" else f"bare-{transport}", argv, port, log_dir)


def start_gateway(log_dir: Path, upstream_port: int, workers: int = 1, log_level: str = "info") -> ServerProcess:
    """``gateway serve`` exactly as deployed, on a config with the ``agent*`` and ``plain*`` routes."""
    config = log_dir / "gateway.yaml"
    config.write_text(GATEWAY_CONFIG.format(host=HOST, upstream_port=upstream_port))
    port = free_port()
    argv = [
        sys.executable, "-m", "gateway", "serve", "--config", str(config),
        "--port", str(port), "--workers", str(workers), "--log-level", log_level,
    ]
    name = "gateway" if workers == 1 else f"gateway-w{workers}"
    return ServerProcess(name, argv, port, log_dir, workers=workers)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (``q`` in 0..100)."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def machine() -> dict[str, Any]:
    """What a reader needs to compare runs: CPU, memory, kernel, load, and the stack's versions."""
    model = "unknown"
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    with open("/proc/meminfo") as meminfo:
        total_kib = int(meminfo.readline().split()[1])
    versions = {}
    for package in ("uvicorn", "uvloop", "httptools", "starlette", "httpx", "httpcore", "orjson", "pydantic"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpus": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "memory_gib": round(total_kib / MIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": [round(value, 2) for value in os.getloadavg()],
        "versions": versions,
    }
