"""The endpoints that read stored responses back: ``GET`` and ``DELETE /v1/responses/{id}``, and
``GET /v1/responses/{id}/input_items`` (OpenAI's list, newest first by default).

They name no model and reach no provider, so they are not admitted under a key's limits (as ``/v1/models``):
the key is checked, and everything is looked up under its owner, where another key's response is missing.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.dialects import STORED, Record
from gateway.server.access import record_of
from gateway.server.pipeline import Handler, client_of, service_of
from gateway.server.stored import StoredResponses, fetch, forget, owner_of

__all__ = ["retrieval_handlers"]


async def _owned(request: Request) -> tuple[StoredResponses, str, str, Record | None]:
    """The stored responses, the asking key's owner, the id in the path and the record the owner holds under it."""
    service = service_of(request)
    client = client_of(service, request, record_of(request.scope))
    service.refuse_when_draining()
    owner = owner_of(client)
    response_id = request.path_params["response_id"]
    [data] = (await fetch(service.stored.store, owner, [response_id], [])).records
    return service.stored, owner, response_id, STORED.decode(data) if data is not None else None


def retrieval_handlers(elsewhere: Handler) -> tuple[Handler, Handler]:
    """``/v1/responses/{id}`` (GET, DELETE) and ``/v1/responses/{id}/input_items`` (GET). A response not stored
    here goes to ``elsewhere`` (forwarded) when a provider serves the Responses API itself and may hold it."""

    async def response(request: Request) -> Response:
        stored, owner, response_id, found = await _owned(request)
        if found is None:
            return await _missing(request, elsewhere, response_id)
        if request.method == "DELETE":
            if not await forget(stored.store, owner, response_id):
                return await _missing(request, elsewhere, response_id)
            body = {"id": response_id, "object": "response", "deleted": True}
            return Response(orjson.dumps(body), media_type="application/json")
        return Response(orjson.dumps(found.response), media_type="application/json")

    async def input_items(request: Request) -> Response:
        stored, owner, response_id, found = await _owned(request)
        if found is None:
            return await _missing(request, elsewhere, response_id)
        records = (await fetch(stored.store, owner, found.ancestors, [])).records
        chain = [STORED.decode(data) for data in records if data is not None]
        items = [*STORED.continued_items(chain), *found.input]
        page = STORED.input_items_page(items, request.query_params)
        return Response(orjson.dumps(page), media_type="application/json")

    return response, input_items


async def _missing(request: Request, elsewhere: Handler, response_id: str) -> Response:
    if service_of(request).native_responses:
        return await elsewhere(request)
    raise STORED.not_found("Response", response_id)
