"""The listening socket, bound before anything claims to have started, and the health probe that finds it.

The CLI binds the socket itself and hands it to uvicorn: a port in use or a
bad address then fails before any "startup complete" line, and ``--port 0``
("any free port") reports the port the kernel actually chose. Uvicorn and
httpx are imported where they are used, so ``check-config`` starts quickly.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import uvicorn

__all__ = ["ListenError", "bind", "local_url", "probe", "serve", "url"]

# Uvicorn's default listen backlog.
_BACKLOG: Final = 2048
# Addresses that mean "every interface"; a probe reaches them through loopback.
_WILDCARDS: Final = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}


class ListenError(Exception):
    """The socket could not be bound; the message is one line naming the address and the reason."""


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket listening on ``host:port`` (port 0: any free port), inheritable by worker processes."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(f"cannot listen on {_authority(host, port)}: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        # Listening now, not when the server starts: connections made meanwhile wait instead of being refused.
        sock.listen(_BACKLOG)
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {_authority(host, port)}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url(host: str, sock: socket.socket) -> str:
    """The base URL clients use for a bound socket, with the port it really got."""
    return f"http://{_authority(host, sock.getsockname()[1])}/v1"


def serve(config: uvicorn.Config, sock: socket.socket) -> bool:
    """Runs uvicorn on an already bound socket, with ``config.workers`` processes; False if it never started."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    if config.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return True
    server = uvicorn.Server(config)
    server.run(sockets=[sock])
    return server.started


def local_url(host: str, port: int) -> str:
    """Where a process on this machine reaches a gateway listening on ``host:port``."""
    return f"http://{_authority(_WILDCARDS.get(host, host), port)}"


def probe(base_url: str, timeout: float) -> str | None:
    """``GET /healthz``: None when it answers 200, else why not, in one line."""
    import httpx

    try:
        status = httpx.get(base_url + "/healthz", timeout=timeout).status_code
    except httpx.HTTPError as exc:
        return f"{base_url}/healthz: {exc or type(exc).__name__}"
    return None if status == 200 else f"{base_url}/healthz: status {status}"


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
