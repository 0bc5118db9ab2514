"""The hot path: the gateway's outermost ASGI callable, and the front doors reached without Starlette.

Every request starts here: it gets its record and request id, is counted in
flight, and is reported once at its end (``access``); traced, it is a server
span from here to there (``tracing``). A request for one of
the paths in ``direct`` (the front doors and ``count_tokens``) goes straight
to its ``Endpoint``: no Starlette request, response, middleware or routing
runs for it, and its answer is written to the server's ``send`` with no
wrapper. Everything else (health, metrics, models, forwarding, unknown
paths) is Starlette's, whose messages are noted in the record on their way
out as the writer's are (``access.send_noted``).

``direct`` is a speed shortcut only: the same endpoints are Starlette routes
as well, and with ``direct`` empty (``create_app(..., hot_path=False)``) every
request takes Starlette's way; the tests compare the two.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.server.access import PROBES, open_record, report, send_noted
from gateway.server.service import Service

__all__ = ["HotPath"]


class HotPath:
    """The app uvicorn serves: ``direct`` endpoints by exact path, ``app`` (Starlette) for the rest."""

    def __init__(self, service: Service, app: ASGIApp, direct: Mapping[str, ASGIApp]) -> None:
        self.service = service
        self.app = app
        self._direct = dict(direct)
        self._metrics = service.metrics
        self._tracing = service.tracing
        self._recent = service.recent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # the lifespan: Starlette's
            return
        record = open_record(scope)
        endpoint = self._direct.get(scope["path"])
        counted = scope["path"] not in PROBES
        tracing = self._tracing
        traced = tracing.start(scope) if tracing is not None and tracing.traces(scope) else None
        in_flight = self._metrics.in_flight
        if counted:
            in_flight.inc()
        try:
            if endpoint is not None:
                await endpoint(scope, receive, send)
                return

            await self.app(scope, receive, functools.partial(send_noted, send, record))
        except Exception:
            # Starlette re-raises what its error handler has answered (a 500 that says connection: close); the
            # server would then cut the connection, and the client's next request on it with it. Only an answer
            # cut short must go that way.
            if not record.complete:
                raise
        finally:
            if counted:
                in_flight.dec()
            report(self._metrics, record, scope, self._recent)
            if traced is not None:
                traced.finish(record, scope)
