"""The latest requests of this process, for the console's table: a bounded ring fed as each request is reported."""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final

from starlette.types import Scope

from gateway.dialects import FRONT_DOORS
from gateway.server.metrics import RequestRecord

__all__ = ["CONSOLE_API", "DOOR_NAMES", "PLAYGROUND", "Recent"]

# The console's JSON endpoints live below this path (``gateway.server.console``).
CONSOLE_API: Final = "/console/api"
# The front doors by the names the console shows them under (its playground's <select> too): chat, responses,
# messages, the first part of each door's path below /v1/.
DOOR_NAMES: Final = {door.path.removeprefix("/v1/").split("/")[0]: door.path for door in FRONT_DOORS}
_BY_PATH: Final = {path: name for name, path in DOOR_NAMES.items()}
PLAYGROUND: Final = f"{CONSOLE_API}/playground"


class Recent:
    """The latest requests of this process, newest last: a bounded ring, each entry the record as reported."""

    def __init__(self, size: int = 500) -> None:
        self._rows: deque[tuple[int, float, str, float, RequestRecord]] = deque(maxlen=size)
        self._count = 0

    def add(self, record: RequestRecord, scope: Scope, duration: float) -> None:
        """Keep the API's requests and the playground's; not probes, scrapes or the console's own reads."""
        path: str = scope["path"]
        if not (path.startswith("/v1/") or path == PLAYGROUND):
            return
        self._count += 1
        self._rows.append((self._count, time.time(), scope["path"], duration, record))

    def since(self, seen: int) -> list[dict[str, Any]]:
        """The requests after number ``seen``, as the console's table shows them: numbers, names, no content."""
        return [
            {
                "seq": seq,
                "time": when,
                "key": record.key,
                "route": record.route,
                "model": record.model,
                "door": _BY_PATH.get(path, "playground" if path == PLAYGROUND else path),
                "status": record.status,
                "stream": record.stream,
                "duration_ms": round(duration * 1000, 1),
                "ttft_ms": None
                if record.first_byte is None or not record.stream
                else round(record.first_byte * 1000, 1),
                "prompt_tokens": record.prompt_tokens,
                "completion_tokens": record.completion_tokens,
                "retries": record.retries,
                "request_id": record.request_id,
            }
            for seq, when, path, duration, record in self._rows
            if seq > seen
        ]
