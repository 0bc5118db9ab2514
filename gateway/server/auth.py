"""Who may call the gateway: the key a request presents, resolved against every configured key."""

from __future__ import annotations

from collections.abc import Mapping

from gateway.config import Config
from gateway.core.errors import ErrorKind, GatewayError
from gateway.keys import ClientKey, KeyRegistry

__all__ = ["Auth"]


class Auth:
    """Checks a request's key; with no keys configured, everyone may call."""

    def __init__(self, config: Config) -> None:
        self._keys = KeyRegistry.from_config(config)

    def check(self, headers: Mapping[str, str], *, x_api_key: bool = False) -> ClientKey | None:
        """The client key of ``Authorization: Bearer <key>``, or (``x_api_key``, Anthropic's clients)
        ``x-api-key: <key>``; None when the config names no keys."""
        if not self._keys.required:
            return None
        scheme, _, token = headers.get("authorization", "").partition(" ")
        presented = [token.strip()] if scheme.lower() == "bearer" else []
        if x_api_key and "x-api-key" in headers:
            # Anthropic's clients may send both (a coding agent with a token and a key set): either may be ours.
            presented.append(headers["x-api-key"])
        client = next(filter(None, map(self._keys.resolve, presented)), None)
        if client is None:
            where = "'Authorization: Bearer <key>'" + (" or 'x-api-key: <key>'" if x_api_key else "")
            raise GatewayError(ErrorKind.UNAUTHORIZED, f"Invalid or missing API key: send {where}.")
        return client
