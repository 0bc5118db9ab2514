"""Stored responses, the I/O half: fetched before a Responses request is translated, stored as its answer ends
(the endpoints that read them back are ``gateway.server.retrieval``'s).

Every read names the owner of the client key that asks (``ClientKey.owner``), and the store files each owner's
records apart, so another key's response is not found the way a response that never existed is not found: the
same lookup, the same miss, the same 404 (``STORED.not_found``). What the records mean (the conversation they
hold, the request they make) is the pure half's, in the Responses dialect (``gateway.dialects.STORED``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Final

import orjson

from gateway.config import Config
from gateway.core.errors import ErrorKind, GatewayError
from gateway.dialects import STORED, Continued, Lookup, Record, StreamEncoder
from gateway.keys import ClientKey
from gateway.sealing import SECRET_VARIABLE, Sealer, secrets_of
from gateway.server.offload import off_loop
from gateway.state import StateStore, StateUnavailable
from gateway.state.stored import Entry, Fetched, Retention

__all__ = ["ANONYMOUS", "StoredResponses", "fetch", "forget", "owner_of", "startup_warnings"]

log = logging.getLogger("gateway.responses")

# The owner of what is stored when the config names no keys: every client, as every client may call.
ANONYMOUS: Final = "anonymous"


def startup_warnings(config: Config, workers: int, env: Mapping[str, str]) -> list[str]:
    """What an operator must hear at start-up about where stored responses and sealed reasoning hold."""
    warnings = []
    shared = config.server.state != "memory"
    if workers > 1 and not shared:
        warnings.append(
            f"server.state is memory: each of the {workers} workers keeps its own stored responses, so"
            " previous_response_id and item references work only on the worker that stored them"
            " (set server.state to a redis:// URL to share them)"
        )
    if (workers > 1 or shared) and not secrets_of(config.server, env):
        warnings.append(
            f"no server.secret and no {SECRET_VARIABLE}: each process seals reasoning (encrypted_content) with a"
            " key of its own, which no other process, and no restart, opens"
        )
    return warnings


def owner_of(client: ClientKey | None) -> str:
    return client.owner if client is not None else ANONYMOUS


class StoredResponses:
    """One process's way to the stored responses: the store (``server.state``), the sealer, the retention."""

    def __init__(self, config: Config, store: StateStore, sealer: Sealer) -> None:
        self.store = store
        self.sealer = sealer
        responses = config.responses
        self.retention = Retention(responses.store_ttl, responses.max_bytes_per_key)
        self.max_stored_bytes = responses.max_stored_bytes

    async def continued(self, owner: str, found: Lookup, size: int) -> Continued:
        """The request ``found`` makes once what it refers to is fetched: a 404 for what ``owner`` does not hold
        (the same for what never existed), a 400 for sealed reasoning that does not open."""
        references = [item_id for _, item_id in found.references]
        first = await fetch(self.store, owner, [found.previous] if found.previous else [], references)
        previous = None
        if found.previous is not None:
            if (data := first.records[0]) is None:
                raise STORED.not_found("Previous response", found.previous, "previous_response_id")
            previous = STORED.decode(data)
        for (index, item_id), holder in zip(found.references, first.holders, strict=True):
            if holder is None:
                raise STORED.not_found("Item", item_id, f"input[{index}]")
        ancestors = list(previous.ancestors) if previous is not None else []
        holders = [holder for holder in first.holders if holder is not None and holder != found.previous]
        wanted = list(dict.fromkeys((*ancestors, *holders)))
        records = dict(zip(wanted, (await fetch(self.store, owner, wanted, [])).records, strict=True)) if wanted else {}
        fetched = sum(len(data) for data in (*first.records, *records.values()) if data is not None)
        seal = functools.partial(self.sealer.seal, owner) if found.encrypted else None
        unseal = functools.partial(self.sealer.open, owner)
        return await off_loop(size + fetched, _resolve, found, previous, records, ancestors, unseal=unseal, seal=seal)

    async def keep(self, owner: str, continued: Continued, response: dict[str, Any]) -> None:
        """Store an answer (when its request did not say ``store: false``); never raises: the answer is out."""
        if not continued.store:
            return
        try:
            data, items = STORED.record_of(continued, response)
            response_id = str(response["id"])
            if len(data) > self.max_stored_bytes:
                log.warning(
                    "response %s not stored: its record is %d bytes, over responses.max_stored_bytes (%d)",
                    response_id,
                    len(data),
                    self.max_stored_bytes,
                )
                return
            entry = Entry(response_id, data, items, continued.ancestors)
            if not await self.store.store_response(owner, entry, self.retention):
                log.warning("response %s not stored: the state store could not store it", response_id)
        except Exception:
            log.exception("response not stored: storing it failed")

    async def keep_stream(self, owner: str, continued: Continued, encoder: StreamEncoder) -> None:
        """Store a streamed answer as it ends, before its last event goes out: retrievable once the client has it."""
        final = STORED.final_of(encoder)
        if final is not None:
            await self.keep(owner, continued, final)

    async def keep_body(self, owner: str, continued: Continued, body: bytes) -> None:
        await self.keep(owner, continued, orjson.loads(body))


def _resolve(
    found: Lookup,
    previous: Record | None,
    records: dict[str, bytes | None],
    ancestors: Sequence[str],
    **sealing: Any,
) -> Continued:
    """The pure half, over what was fetched: the chain of earlier responses (a 404 when one of them is gone) and
    the referenced items."""
    decoded = {rid: STORED.decode(data) for rid, data in records.items() if data is not None}
    chain: list[Record] = []
    if previous is not None:
        for ancestor in ancestors:
            if ancestor not in decoded:
                raise STORED.not_found("Previous response", found.previous or "", "previous_response_id")
            chain.append(decoded[ancestor])
        chain.append(previous)
        decoded[previous.id] = previous
    referenced: dict[str, dict[str, Any]] = {}
    for index, item_id in found.references:
        item = next((r.item(item_id) for r in decoded.values() if r.item(item_id) is not None), None)
        if item is None:
            raise STORED.not_found("Item", item_id, f"input[{index}]")
        referenced[item_id] = item
    return STORED.resolve(found, chain, referenced, **sealing)


async def fetch(store: StateStore, owner: str, ids: Sequence[str], items: Sequence[str]) -> Fetched:
    try:
        return await store.fetch_responses(owner, ids, items)
    except StateUnavailable as exc:
        raise _unavailable(exc) from None


def _unavailable(exc: StateUnavailable) -> GatewayError:
    """The state store could not answer: a 503 to retry, as for a limit check under ``state_failure: closed``."""
    message = f"{exc} Retry later."
    return GatewayError(ErrorKind.UNAVAILABLE, message, code="state_unavailable", headers={"retry-after": "1"})


async def forget(store: StateStore, owner: str, response_id: str) -> bool:
    try:
        return await store.delete_response(owner, response_id)
    except StateUnavailable as exc:
        raise _unavailable(exc) from None
