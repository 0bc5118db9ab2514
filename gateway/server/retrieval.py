"""The endpoints that read stored responses back: ``GET`` and ``DELETE /v1/responses/{id}``, and
``GET /v1/responses/{id}/input_items`` (OpenAI's list, newest first by default).

They name no model and reach no provider, so they are not admitted under a key's limits (as ``/v1/models``):
the key is checked, and everything is looked up under its owner, where another key's response is missing.
"""

from __future__ import annotations

import orjson
from starlette.datastructures import QueryParams

from gateway.dialects import STORED, Record
from gateway.server.exchange import Handler, Incoming, Reply, json_reply
from gateway.server.pipeline import client_of
from gateway.server.stored import StoredResponses, fetch, forget, owner_of

__all__ = ["retrieval_handlers"]


async def _owned(incoming: Incoming) -> tuple[StoredResponses, str, str, Record | None]:
    """The stored responses, the asking key's owner, the id in the path and the record the owner holds under it."""
    service = incoming.service
    client = client_of(incoming)
    service.refuse_when_draining()
    owner = owner_of(client)
    response_id: str = incoming.scope["path_params"]["response_id"]
    [data] = (await fetch(service.stored.store, owner, [response_id], [])).records
    return service.stored, owner, response_id, STORED.decode(data) if data is not None else None


def retrieval_handlers(elsewhere: Handler) -> tuple[Handler, Handler]:
    """``/v1/responses/{id}`` (GET, DELETE) and ``/v1/responses/{id}/input_items`` (GET). A response not stored
    here goes to ``elsewhere`` (forwarded) when a provider serves the Responses API itself and may hold it."""

    async def response(incoming: Incoming) -> Reply:
        stored, owner, response_id, found = await _owned(incoming)
        if found is None:
            return await _missing(incoming, elsewhere, response_id)
        if incoming.method == "DELETE":
            if not await forget(stored.store, owner, response_id):
                return await _missing(incoming, elsewhere, response_id)
            return json_reply(orjson.dumps({"id": response_id, "object": "response", "deleted": True}))
        return json_reply(orjson.dumps(found.response))

    async def input_items(incoming: Incoming) -> Reply:
        stored, owner, response_id, found = await _owned(incoming)
        if found is None:
            return await _missing(incoming, elsewhere, response_id)
        records = (await fetch(stored.store, owner, found.ancestors, [])).records
        chain = [STORED.decode(data) for data in records if data is not None]
        items = [*STORED.continued_items(chain), *found.input]
        page = STORED.input_items_page(items, QueryParams(incoming.query))
        return json_reply(orjson.dumps(page))

    return response, input_items


async def _missing(incoming: Incoming, elsewhere: Handler, response_id: str) -> Reply:
    if incoming.service.native.stateful_responses:
        return await elsewhere(incoming)
    raise STORED.not_found("Response", response_id)
