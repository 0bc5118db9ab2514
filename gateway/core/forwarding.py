"""What a forwarded (pass-through) request may carry to a provider, and what comes back. Pure policy, no I/O.

A forwarded request goes to the provider's base URL plus the part of the
client's path after ``/v1``. That part is checked as it arrived, still
percent-encoded, so that no server on the way, however it decodes or
normalises a path, can read it as leaving the base URL:

- it is ``/`` followed by one or more segments separated by ``/``;
- a segment holds only letters, digits, ``-._~!$&'()*+,=:@`` and
  percent-escapes of characters that have to be escaped (space, ``"<>^`{|}``,
  the sub-delimiters and ``:@``, and bytes above 0x7F);
- so never an escaped ``.``, ``/``, ``\\``, ``%``, ``;``, ``?``, ``#``, control
  character or unreserved character, in any case, and no literal ``\\`` or ``;``;
- a segment holds at least one ASCII letter or digit, so no segment is empty
  or made of dots (``.``, ``..``, ``...``) or dots and spaces;
- escaped bytes above 0x7F spell UTF-8 (no overlong ``%C0%AE`` for a ``.``).

Anything else is refused with 400 before a byte is sent. A valid path is then
forwarded only if it matches one of the provider's ``forward`` patterns (else
404): ``/``-separated segments where ``*`` stands for any one segment and a
final ``**`` for any number of them, none included.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Final

from gateway.core.errors import ErrorKind, GatewayError

__all__ = [
    "DEFAULT_ANTHROPIC_FORWARD_HEADERS",
    "DEFAULT_FORWARD",
    "DEFAULT_FORWARD_HEADERS",
    "HOP_BY_HOP",
    "Pattern",
    "allowed_path",
    "checked_path",
    "forwardable_header",
    "not_forwarded",
    "parse_pattern",
    "refuse_rewrite_route",
    "request_headers",
    "response_headers",
]

# The OpenAI API besides chat completions (served by the gateway itself) and models (listed by it).
DEFAULT_FORWARD: Final = (
    "/embeddings",
    "/moderations",
    "/completions",
    "/audio/**",
    "/images/**",
    "/files/**",
    "/uploads/**",
    "/batches/**",
    "/fine_tuning/**",
    "/vector_stores/**",
    "/responses/**",
    "/conversations/**",
    "/containers/**",
    "/evals/**",
    "/assistants/**",
    "/threads/**",
)

# Client request headers forwarded unless a provider says otherwise: the Assistants API needs this one; an
# `api: anthropic` provider's Messages clients name the features they use in the other.
DEFAULT_FORWARD_HEADERS: Final = ("openai-beta",)
DEFAULT_ANTHROPIC_FORWARD_HEADERS: Final = ("anthropic-beta",)

# Never forwarded in either direction (RFC 9110 §7.6.1), plus framing and the host, which the gateway sets itself.
HOP_BY_HOP: Final = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)

# Request headers every forwarded request keeps: what the body and the answer need.
_ALWAYS_FORWARDED: Final = frozenset({"content-type", "accept"})
# Header names that carry (or select) credentials, in any spelling a provider uses: never forwarded, never allowed.
_CREDENTIAL: Final = re.compile(r"auth|key|token|secret|cookie|passw|session|signature|credential|organization|project")
# Headers the gateway sets itself.
_OWN: Final = frozenset({"x-request-id", "user-agent"})
# Upstream response headers never relayed: cookies, and what describes the provider's host rather than the gateway.
# Besides hop-by-hop ones: cookies, the host's own policies, and what the gateway's server sets itself (its
# date; no server header, which says what runs behind it).
_NOT_RELAYED: Final = HOP_BY_HOP | {
    "set-cookie",
    "set-cookie2",
    "alt-svc",
    "strict-transport-security",
    "date",
    "server",
}

_LITERAL: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~!$&'()*+,=:@")
# Characters a client may have to escape, and that no server treats as a path separator or a dot.
_ESCAPABLE: Final = frozenset(b" \"<>^`{|}!$&'()*+,=:@") | frozenset(range(0x80, 0x100))
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
_ALNUM: Final = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")

Pattern = tuple[str, ...]

# Forwarded endpoints where the model answers (OpenAI's, and Anthropic's Messages API).
_ANSWERING: Final = ("/completions", "/threads/**")


def _segment_problem(segment: bytes) -> str | None:
    """Why a raw path segment is refused, or None when it is fine."""
    if not segment.strip(b"."):
        return f"the segment '{segment.decode()}'" if segment else "an empty segment"
    named = False  # whether a letter or digit appears outside the escapes
    position = 0
    while position < len(segment):
        byte = segment[position]
        if byte == 0x25:  # "%"
            escape = segment[position + 1 : position + 3]
            if len(escape) != 2 or not _HEX.issuperset(escape):
                return "a '%' that does not start an escape"
            if int(escape, 16) not in _ESCAPABLE:
                return f"the escape %{escape.decode()}"
            position += 3
            continue
        if byte not in _LITERAL:
            return f"the character {chr(byte)!r}"
        named = named or byte in _ALNUM
        position += 1
    if not named:
        return "a segment without a letter or digit"
    try:  # escaped bytes above 0x7F must spell UTF-8: an overlong "." (%C0%AE) is not a character
        urllib.parse.unquote_to_bytes(segment).decode("utf-8")
    except UnicodeDecodeError:
        return "escapes that are not UTF-8"
    return None


def checked_path(raw_path: bytes) -> str:
    """The path after ``/v1``, exactly as the client sent it, once every segment is valid; else a 400."""
    path = raw_path.removeprefix(b"/v1")
    if not path.startswith(b"/"):
        raise _invalid(raw_path, "it does not start with /v1/")
    for segment in path[1:].split(b"/"):
        problem = _segment_problem(segment)
        if problem is not None:
            raise _invalid(raw_path, f"it has {problem}")
    return path.decode("ascii")


def _invalid(raw_path: bytes, reason: str) -> GatewayError:
    shown = raw_path.decode("latin-1")[:200]
    message = f"The path '{shown}' cannot be forwarded: {reason}."
    return GatewayError(ErrorKind.INVALID_REQUEST, message, code="invalid_path")


@functools.lru_cache(maxsize=256)
def parse_pattern(text: str) -> Pattern:
    """A ``forward`` entry as its segments; raises ``ValueError`` naming what is wrong."""
    if not text.startswith("/"):
        raise ValueError(f"expected a path starting with '/', got {text!r}")
    segments = tuple(text[1:].split("/"))
    for position, segment in enumerate(segments):
        if segment == "**" and position != len(segments) - 1:
            raise ValueError(f"'**' may only end a pattern, got {text!r}")
        if segment not in ("*", "**") and _segment_problem(segment.encode("utf-8")) is not None:
            raise ValueError(f"expected path segments, '*' or a final '**', got {text!r}")
    return segments


def allowed_path(path: str, patterns: Iterable[str]) -> bool:
    """Whether a checked path matches one of the patterns (``forward`` entries)."""
    segments = path[1:].split("/")
    return any(_matches(segments, parse_pattern(pattern)) for pattern in patterns)


def _matches(segments: Sequence[str], pattern: Pattern) -> bool:
    if pattern and pattern[-1] == "**":
        fixed = pattern[:-1]
        return len(segments) >= len(fixed) and _matches(segments[: len(fixed)], fixed)
    return len(segments) == len(pattern) and all(p in ("*", s) for p, s in zip(pattern, segments, strict=True))


def not_forwarded(path: str) -> GatewayError:
    return GatewayError(
        ErrorKind.NOT_FOUND, f"The path '/v1{path}' is not forwarded to this provider.", code="not_found"
    )


def refuse_rewrite_route(path: str, route: str, rewrites: bool) -> None:
    """A rewrite route answers on the front doors only: forwarded verbatim to another endpoint where the
    model answers, the upstream's message-tool call and its inner thoughts would reach the client raw."""
    if rewrites and allowed_path(path, _ANSWERING):
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"The model route {route!r} rewrites the model's answers and is served on /v1/chat/completions,"
            f" /v1/responses and /v1/messages, not on /v1{path}.",
            param="model",
            code="unsupported_endpoint",
        )


def forwardable_header(name: str) -> bool:
    """Whether a header may be named in ``forward_headers``: no credential, no hop-by-hop, none the gateway sets."""
    lowered = name.lower()
    return not (_CREDENTIAL.search(lowered) or lowered in HOP_BY_HOP or lowered in _OWN)


def request_headers(client: Iterable[tuple[str, str]], allowed: Iterable[str]) -> dict[str, str]:
    """The client's headers a forwarded request carries: the body's type, ``accept``, and the allowed ones."""
    pairs = [(name.lower(), value) for name, value in client]
    names = (_ALWAYS_FORWARDED | {name.lower() for name in allowed if forwardable_header(name)}) - _nominated(pairs)
    return {name: value for name, value in pairs if name in names}


def response_headers(upstream: Iterable[tuple[str, str]]) -> dict[str, str]:
    """An upstream answer's headers for the client: all but hop-by-hop ones (and those its ``connection``
    names), cookies and host-specific ones; the provider's request id comes back as ``x-upstream-request-id``
    and its rate-limit headers as ``x-upstream-ratelimit-*`` (``x-ratelimit-*`` are the gateway's own)."""
    pairs = [(name.lower(), value) for name, value in upstream]
    nominated = _nominated(pairs)
    headers = {
        "x-upstream-" + name[2:] if name.startswith("x-ratelimit-") else name: value
        for name, value in pairs
        if name not in _NOT_RELAYED and name not in nominated
    }
    upstream_id = headers.pop("x-request-id", None)
    if upstream_id is not None:
        headers["x-upstream-request-id"] = upstream_id
    return headers


def _nominated(pairs: Iterable[tuple[str, str]]) -> frozenset[str]:
    """Headers a ``connection`` header names: hop-by-hop too (RFC 9110 §7.6.1)."""
    return frozenset(
        token.strip().lower() for name, value in pairs if name == "connection" for token in value.split(",")
    )
