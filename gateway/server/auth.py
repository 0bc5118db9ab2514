"""Who may call the gateway: the configured keys, compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from gateway.core.errors import ErrorKind, GatewayError

__all__ = ["Auth"]


class Auth:
    """Checks a request's gateway key; with no keys configured, everyone may call."""

    def __init__(self, keys: Sequence[str]) -> None:
        self._keys = [key.encode() for key in keys]

    def check(self, headers: Mapping[str, str], *, x_api_key: bool = False) -> None:
        """``Authorization: Bearer <key>``, or (``x_api_key``, Anthropic's clients) ``x-api-key: <key>``."""
        if not self._keys:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = token.strip() if scheme.lower() == "bearer" else None
        if presented is None and x_api_key:
            presented = headers.get("x-api-key")
        # Compare against every key, so the time taken says nothing about which one nearly matched.
        candidate = (presented or "").encode()
        matched = False
        for key in self._keys:
            matched |= hmac.compare_digest(candidate, key)
        if presented is None or not matched:
            where = "'Authorization: Bearer <key>'" + (" or 'x-api-key: <key>'" if x_api_key else "")
            raise GatewayError(ErrorKind.UNAUTHORIZED, f"Invalid or missing API key: send {where}.")
