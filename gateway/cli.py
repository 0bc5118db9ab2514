"""The ``gateway`` command: ``serve`` and ``check-config``."""

from __future__ import annotations

import argparse
import logging
import math
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any, NoReturn

from gateway import __version__
from gateway.config import Config, ConfigError, default_config, describe, load_config
from gateway.keys import startup_warnings
from gateway.server.listen import ListenError, bind, local_url, probe, serve, url
from gateway.server.stored import startup_warnings as stored_warnings

__all__ = ["main"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
logger = logging.getLogger("gateway")


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line, with exit status 2, like a config file's problems."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see '{self.prog} --help')\n")


def _port(text: str) -> int:
    if text.strip().isdigit() and 0 <= int(text) <= 65535:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a port number from 0 (any free port) to 65535, got {text!r}")


def _workers(text: str) -> int:
    if text.strip().isdigit() and int(text) >= 1:
        return int(text)
    raise argparse.ArgumentTypeError(f"expected a whole number of worker processes, at least 1, got {text!r}")


def _host(text: str) -> str:
    if text and text.strip() == text:
        return text
    raise argparse.ArgumentTypeError(f"expected an IP address or host name, got {text!r}")


def _path(text: str) -> str:
    if text:
        return text
    raise argparse.ArgumentTypeError("expected the path of a YAML file, got ''")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _Parser(prog="gateway", description="An OpenAI-compatible gateway for agent-style models.")
    parser.add_argument("--version", action="version", version=f"agent-gateway {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("serve", help="run the gateway in the foreground (Ctrl+C or SIGTERM to stop)")
    _address_options(run)
    run.add_argument("--workers", type=_workers, default=1, help="worker processes (default: 1)")
    run.add_argument("--log-level", choices=LOG_LEVELS, default="info")

    check = commands.add_parser("check-config", help="validate a config file and print the resolved routes")
    check.add_argument("path", type=_path)

    health = commands.add_parser("health", help="exit 0 when the gateway on the configured address answers /healthz")
    _address_options(health, probe=True)

    # Options a command does not know are that command's error, pointing to its own --help.
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        {"serve": run, "check-config": check, "health": health}[args.command].error(
            f"unrecognized arguments: {' '.join(unknown)}"
        )
    if args.command == "check-config":
        return check_config(args.path)
    if args.command == "health":
        return health_command(args)
    return serve_command(args)


def _address_options(parser: argparse.ArgumentParser, *, probe: bool = False) -> None:
    parser.add_argument(
        "--config", type=_path, help="YAML config file (default: $GATEWAY_CONFIG, else the built-in default)"
    )
    if probe:
        parser.add_argument(
            "--host", type=_host, help="address of the gateway to probe (default: server.host, 127.0.0.1)"
        )
        parser.add_argument("--port", type=_port, help="port of the gateway to probe (default: server.port, 8080)")
        return
    parser.add_argument("--host", type=_host, help="address to listen on (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=_port, help="port to listen on, 0 for any free one (default: server.port, 8080)")


def check_config(path: str) -> int:
    try:
        config = load_config(path)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        print(describe(config), flush=True)
    except BrokenPipeError:
        # The reader (`| head`) went away; that is not an error worth a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _load(args: argparse.Namespace) -> tuple[Config, str | None]:
    """The config ``serve`` would use: ``--config``, else ``$GATEWAY_CONFIG``, else the built-in default."""
    path = args.config or os.environ.get("GATEWAY_CONFIG") or None
    return (load_config(path) if path else default_config()), path


def serve_command(args: argparse.Namespace) -> int:
    try:
        config, path = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    try:
        sock = bind(host, port)
    except ListenError as exc:
        print(f"gateway serve: {exc}", file=sys.stderr)
        return 1
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

    from gateway.server.protocol import GuardedHttpToolsProtocol

    # Uvicorn re-raises SIGTERM once its graceful shutdown is over; by then the
    # gateway has drained, so ending here is success (exit status 0).
    signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        # Building the uvicorn config applies the logging setup, so the banner below is formatted like every other line.
        server_config = uvicorn.Config(
            "gateway.server.app:app_from_env",
            factory=True,
            workers=args.workers,
            loop="uvloop",
            http=GuardedHttpToolsProtocol,  # httptools, with deadlines for slow clients
            ws="none",  # no websocket endpoints: an upgrade request is answered as plain HTTP
            log_level=args.log_level,
            log_config=log_config(args.log_level, config.server.log_format),
            access_log=False,
            server_header=False,
            # Past the gateway's own drain delay and grace period (a second signal may hand over before the
            # delay is up), so the streams it ends get their error event out first.
            timeout_graceful_shutdown=math.ceil(config.server.drain_delay + config.server.shutdown_grace) + 5,
        )
        announce(config, path, url(host, sock), args.workers)
        started = serve(server_config, sock)
    except KeyboardInterrupt:
        started = True
    finally:
        sock.close()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0 if started else 3


def health_command(args: argparse.Namespace) -> int:
    """The container HEALTHCHECK: finds the port the way ``serve`` does, so it follows the configured one."""
    try:
        config, _ = _load(args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    host = args.host if args.host is not None else config.server.host
    port = args.port if args.port is not None else config.server.port
    problem = probe(local_url(host, port), timeout=2)
    if problem is not None:
        print(f"gateway health: {problem}", file=sys.stderr)
        return 1
    return 0


def announce(config: Config, path: str | None, base_url: str, workers: int) -> None:
    """What is being served, and where: the first log lines, in the same format as the rest."""
    if path:
        source = f"config {path}"
    elif config.is_demo:
        source = "DEMO provider (built in, no network): no config file and no OPENAI_API_KEY"
    else:
        base = next(iter(config.providers.values())).base_url
        source = f"OpenAI-compatible provider {base} in agent mode (OPENAI_API_KEY set, no config file)"
    routes = ", ".join(f"{route.name} -> {route.model or '(requested name)'}" for route in config.models)
    plural = "s" if workers != 1 else ""
    message = f"agent-gateway {__version__} serving on {base_url} ({workers} worker{plural}); stop with Ctrl+C"
    logger.info(message, extra={"fields": {"url": base_url, "workers": workers, "serving": source, "routes": routes}})
    for warning in [*startup_warnings(config, workers), *stored_warnings(config, workers, os.environ)]:
        logger.warning(warning)


def log_config(level: str, log_format: str) -> dict[str, Any]:
    """One handler and one format on stderr for every logger, in every worker process.

    The gateway's and uvicorn's at ``level``; the root's at warning and above, so what a library or asyncio
    reports (a task's lost exception, a warning) is a line in the same format, not a bare message that breaks
    a log shipper's parser.
    """
    formatter = "JsonFormatter" if log_format == "json" else "TextFormatter"
    stderr = {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"gateway": {"()": f"gateway.server.logs.{formatter}"}},
        "handlers": {
            "stderr": {"class": "logging.StreamHandler", "formatter": "gateway", "stream": "ext://sys.stderr"}
        },
        "loggers": {"gateway": stderr, "uvicorn": stderr, "uvicorn.access": stderr},
        "root": {"handlers": ["stderr"], "level": "WARNING"},
    }
