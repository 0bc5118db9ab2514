"""Log formatting: one JSON object (or one ``key=value`` line) per record, on stderr.

Structured fields travel in ``extra={"fields": {...}}``. Nothing here ever
sees message content or keys unless a caller put them in, and the gateway's
callers do not (``server.log_content`` is the one, explicit, exception).

A value a client chose (a path, a model name) can hold anything: in text
lines every value and message that is not plain printable text is written as
a quoted, escaped JSON string, so no value can end a line or forge a field;
JSON lines escape it by their nature. Callers cap such values (``capped``).
"""

from __future__ import annotations

import logging
import re
import sys
import time
from typing import Any, Final

import orjson

__all__ = ["MAX_VALUE_CHARS", "JsonFormatter", "TextFormatter", "capped", "log_python_reports"]

MAX_VALUE_CHARS: Final = 256
# What a text line may hold unquoted: printable ASCII other than space, quotes, backslash and '='.
_PLAIN: Final = re.compile(r"[!#-<>-\[\]-~]*")


def capped(value: str | None, limit: int = MAX_VALUE_CHARS) -> str | None:
    """A client-chosen value as it may go into a log line: at most ``limit`` characters, saying how many were cut."""
    if value is None or len(value) <= limit:
        return value
    return f"{value[:limit]}...({len(value) - limit} more characters)"


def _text_value(value: Any) -> str:
    text = "-" if value is None else value if isinstance(value, str) else str(value)
    return text if _PLAIN.fullmatch(text) else orjson.dumps(text).decode()


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    fields = getattr(record, "fields", None)
    return fields if isinstance(fields, dict) else {}


def _timestamp(record: logging.LogRecord) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable() or "=" in message:  # a client's path in it could forge a field otherwise
            message = orjson.dumps(message).decode()
        parts = [_timestamp(record), record.levelname, message]
        parts += [f"{key}={_text_value(value)}" for key, value in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def _log_unraisable(unraisable: Any) -> None:
    where = getattr(unraisable, "object", None)
    message = unraisable.err_msg or "Exception ignored"
    exc = unraisable.exc_value
    logging.getLogger("gateway.python").error(
        f"{message}: {where!r}" if where is not None else message,
        exc_info=(type(exc), exc, unraisable.exc_traceback) if exc is not None else None,
    )


def log_python_reports() -> None:
    """Python's own reports (warnings, exceptions ignored in ``__del__`` or a finaliser) as log records.

    Python writes them to stderr bare; routed through logging they are lines in the one format.
    """
    logging.captureWarnings(True)
    sys.unraisablehook = _log_unraisable
