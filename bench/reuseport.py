"""The gateway's app in N worker processes, each listening on a socket of its own with SO_REUSEPORT.

For ``workers.py`` only, to measure whether a socket per worker balances
keep-alive clients better than uvicorn's workers sharing one listening socket
(the kernel then spreads new connections over the sockets by a hash of their
addresses). Each worker runs the app as ``gateway serve`` does (the same
factory, uvloop, httptools, the gateway's logging and metrics across workers);
the gateway itself is unchanged.

Run: ``python bench/reuseport.py --port 9300 --workers 2 --config gateway.yaml``
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
from types import FrameType

import uvicorn

from gateway.cli import log_config


def serve_worker(host: str, port: int, log_level: str) -> None:
    """One worker: its own listening socket on the shared port, and uvicorn on it."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listener.bind((host, port))
    listener.listen(2048)
    config = uvicorn.Config(
        "gateway.server.app:app_from_env",
        factory=True,
        loop="uvloop",
        http="httptools",
        log_level=log_level,
        log_config=log_config(log_level, "text"),
        access_log=False,
        server_header=False,
    )
    uvicorn.Server(config).run(sockets=[listener])


def supervise(options: argparse.Namespace) -> int:
    """Start the workers, pass SIGTERM and SIGINT on to them, and wait for them all."""
    os.environ["GATEWAY_CONFIG"] = os.path.abspath(options.config)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="reuseport-metrics-"))
    argv = [
        sys.executable,
        __file__,
        "--worker",
        "--host",
        options.host,
        "--port",
        str(options.port),
        "--log-level",
        options.log_level,
    ]
    workers = [subprocess.Popen(argv) for _ in range(options.workers)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for worker in workers:
            worker.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max(worker.wait() for worker in workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9300)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--config", default="gateway.yaml", help="the gateway's config file")
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        serve_worker(options.host, options.port, options.log_level)
    else:
        sys.exit(supervise(options))


if __name__ == "__main__":
    main()
