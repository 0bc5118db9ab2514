"""The ``gateway`` command: ``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import copy
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

from gateway import __version__
from gateway.config import Config, ConfigError, default_config, load_config
from gateway.keys import startup_warnings

__all__ = ["main"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description="An OpenAI-compatible gateway for agent-style models.")
    parser.add_argument("--version", action="version", version=f"agent-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help="YAML config file (default: $GATEWAY_CONFIG, else the built-in default)")
    serve.add_argument("--host", help="address to listen on (default: server.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: server.port, 8080)")
    serve.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    serve.add_argument("--log-level", choices=LOG_LEVELS, default="info")

    check = commands.add_parser("check-config", help="validate a config file and print the resolved routes")
    check.add_argument("path")

    args = parser.parse_args(argv)
    if args.command == "check-config":
        return check_config(args.path)
    return serve_command(args)


def check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        print(config.describe(), flush=True)
    except BrokenPipeError:
        # The reader (`| head`) went away; that is not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def serve_command(args: argparse.Namespace) -> int:
    path = args.config or os.environ.get("GATEWAY_CONFIG") or None
    try:
        config = load_config(path) if path else default_config()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    host = args.host or config.server.host
    port = args.port or config.server.port
    print(banner(config, path, host, port, args.workers), file=sys.stderr, flush=True)
    # Workers are separate processes: they find the config through the environment.
    if path:
        os.environ["GATEWAY_CONFIG"] = os.path.abspath(path)
    else:
        os.environ.pop("GATEWAY_CONFIG", None)
    # Several workers share their metrics through files (prometheus-client's multiprocess mode),
    # which must be chosen before any worker imports the metrics.
    metrics_dir = None
    if args.workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir

    import uvicorn

    # Uvicorn re-raises SIGTERM once its graceful shutdown is over; by then the
    # gateway has drained, so ending here is success (exit status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        uvicorn.run(
            "gateway.app:app_from_env",
            factory=True,
            host=host,
            port=port,
            workers=args.workers,
            loop="uvloop",
            http="httptools",
            log_level=args.log_level,
            log_config=log_config(args.log_level, config.server.log_format),
            access_log=False,
            server_header=False,
            # Past the gateway's own grace period, so the streams it ends get their error event out first.
            timeout_graceful_shutdown=math.ceil(config.server.shutdown_grace) + 5,
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def banner(config: Config, path: str | None, host: str, port: int, workers: int) -> str:
    if config.is_demo:
        source = "DEMO provider (built in, no network): no config file and no OPENAI_API_KEY"
    elif path:
        source = f"config {path}"
    else:
        source = "every model proxied to OpenAI in agent mode (OPENAI_API_KEY set, no config file)"
    lines = [
        f"agent-gateway {__version__} on http://{host}:{port}/v1 ({workers} worker{'s' if workers != 1 else ''})",
        f"  serving: {source}",
        f"  routes: {', '.join(route.name for route in config.models)}",
    ]
    lines += [f"  WARNING: {warning}" for warning in startup_warnings(config, workers)]
    return "\n".join(lines)


def log_config(level: str, log_format: str) -> dict[str, Any]:
    """Uvicorn's logging setup plus the gateway's loggers, applied in every worker process."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    formatter = "JsonFormatter" if log_format == "json" else "TextFormatter"
    config["formatters"]["gateway"] = {"()": f"gateway.logs.{formatter}"}
    config["handlers"]["gateway"] = {"class": "logging.StreamHandler", "formatter": "gateway", "stream": "ext://sys.stderr"}
    config["loggers"]["gateway"] = {"handlers": ["gateway"], "level": level.upper(), "propagate": False}
    return config
