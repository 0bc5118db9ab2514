"""Stored responses: what every state backend keeps of the Responses door's answers, filed by owner.

An owner is a client key's digest (``ClientKey.owner``): every read and write
names one, and a backend keeps each owner's records apart (the memory store in
its own shelf, Redis under keys that carry the owner), so one key never finds
another's record and an id it does not own looks exactly like one that never
existed. A record is opaque bytes to the store; the Responses dialect writes
and reads it. The store keeps, per owner, which response holds each item id
(for ``item_reference``), each record's expiry, and the bytes the owner holds
in all, bounded by ``Retention.per_key``: storing past it forgets that owner's
records closest to expiry first.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Entry", "Fetched", "ResponseStore", "Retention"]


@dataclass(frozen=True, slots=True)
class Entry:
    """One response to store: its id, its record, the ids of its items, and the earlier responses it continues
    (kept as long as it is: a conversation lives while it is continued)."""

    id: str
    data: bytes
    items: tuple[str, ...] = ()
    touch: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a stored response lives (seconds), and how many bytes one owner may hold in all."""

    ttl: float
    per_key: int


@dataclass(frozen=True, slots=True)
class Fetched:
    """The records asked for (None: not stored for this owner), and the response holding each item asked for."""

    records: list[bytes | None]
    holders: list[str | None]


class ResponseStore(ABC):
    """Stored responses of every owner. Reads and deletes raise ``StateUnavailable`` when the state cannot answer;
    ``store_response`` never raises (the answer it stores has gone out already) and says whether it stored."""

    @abstractmethod
    async def fetch_responses(self, owner: str, ids: Sequence[str], items: Sequence[str] = ()) -> Fetched:
        """The records of ``ids`` and the responses holding ``items``, of ``owner`` alone, in one round trip."""

    @abstractmethod
    async def store_response(self, owner: str, entry: Entry, retention: Retention) -> bool:
        """Store ``entry`` for ``retention.ttl`` seconds and push its ``touch`` records' expiry as far."""

    @abstractmethod
    async def delete_response(self, owner: str, response_id: str) -> bool:
        """Delete a stored response; False when ``owner`` has none of that id."""
