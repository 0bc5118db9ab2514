"""Client keys: which configured key a request presents, and which routes that key may use. Pure.

Only the SHA-256 of each key is kept. A presented key is hashed once and its
digest compared with every entry's, always all of them, with
``hmac.compare_digest``: the time taken says nothing about which key nearly
matched, nor where in the list the right one is.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from gateway.config import Config, KeyConfig, key_digest
from gateway.state.base import Limits

__all__ = ["ClientKey", "KeyRegistry", "startup_warnings"]


@dataclass(frozen=True, slots=True)
class ClientKey:
    """A configured client key, as known once it has been presented: its name, routes and limits."""

    # The `keys[].name`, or `api_keys[N]` for an entry of `server.api_keys` (a name no `keys` entry can take).
    name: str
    models: tuple[str, ...] = ("*",)
    limits: Limits = field(default_factory=Limits)
    # The key's SHA-256: what its stored state is filed under, whatever its name or place in the config.
    digest: bytes = field(default=b"", repr=False, compare=False)

    @property
    def owner(self) -> str:
        """Who the key's stored responses belong to: not its name (``api_keys[0]`` moves when the list is
        reordered) but a digest of the key itself, so no other key, now or after a config change, reads them."""
        return hashlib.sha256(b"agent-gateway stored state\0" + self.digest).hexdigest()[:32]

    def may_use(self, route_name: str) -> bool:
        """Whether a route is among this key's globs (matched against the route's name, as configured)."""
        return any(fnmatchcase(route_name, glob) for glob in self.models)

    @classmethod
    def of(cls, key: KeyConfig) -> ClientKey:
        return cls(key.name, key.models, Limits(key.rpm, key.tpm, key.max_concurrency, key.budget), key.digest)


class KeyRegistry:
    """Every client key the config names, ``server.api_keys`` and ``keys`` alike."""

    def __init__(self, entries: Iterable[tuple[bytes, ClientKey]]) -> None:
        self._entries = tuple(entries)

    @classmethod
    def from_config(cls, config: Config) -> KeyRegistry:
        unnamed = (
            (digest, ClientKey(f"api_keys[{i}]", digest=digest))
            for i, digest in enumerate(map(key_digest, config.server.api_keys))
        )
        named = ((key.digest, ClientKey.of(key)) for key in config.keys)
        return cls([*unnamed, *named])

    @property
    def clients(self) -> tuple[ClientKey, ...]:
        """Every key's entry, in config order (names and limits only)."""
        return tuple(entry for _, entry in self._entries)

    @property
    def required(self) -> bool:
        """Whether clients must present a key at all: only when the config names at least one."""
        return bool(self._entries)

    def resolve(self, presented: str) -> ClientKey | None:
        """The entry a presented key belongs to, or None; compares against every entry whatever the outcome."""
        digest = key_digest(presented)
        found = None
        for entry_digest, entry in self._entries:
            if hmac.compare_digest(digest, entry_digest):
                found = entry
        return found


def startup_warnings(config: Config, workers: int) -> list[str]:
    """What an operator must hear at start-up about who may call the gateway and how far limits reach."""
    warnings = []
    if not config.server.api_keys and not config.keys:
        warnings.append("no server.api_keys configured: any client that can reach this port may use it")
    if workers > 1 and config.server.state == "memory" and any(key.limited for key in config.keys):
        warnings.append(
            f"server.state is memory: each of the {workers} workers keeps its own limits"
            " (set server.state to a redis:// URL to share them)"
        )
    return warnings
