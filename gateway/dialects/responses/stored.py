"""Stored responses, pure: what a request needs from the store, the request it makes once that is fetched, the
record kept of its answer, and the stored objects the retrieval endpoints answer with.

The shell fetches and stores; everything here works on what it fetched. A
request is read in two steps: ``lookup`` reads what it refers to (its
``previous_response_id``, its ``item_reference`` items, the sealed reasoning
it sends back), then ``resolve`` makes the request from the records found:
the stored conversation (each earlier response's input and output items,
oldest first) comes before its input, each reference is replaced by the item
it names, and sealed reasoning is opened. An earlier turn goes upstream as the
client saw it (the stored output is the response the client got), so its
reasoning goes back only where the route's rules send reasoning back, as for
reasoning the client sends itself.

A record holds the response object exactly as the client got it, the request's
own input items (references resolved, each with an id, in the shapes
``input_items`` lists) and the ids of the responses it continues.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from gateway.core import json_body
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.fields import Field
from gateway.dialects.openai_errors import WORDING
from gateway.dialects.responses.encoder import ResponsesStreamEncoder
from gateway.dialects.responses.request import ResponsesRequest, parse_payload

__all__ = [
    "ENCRYPTED_REASONING",
    "Continued",
    "Lookup",
    "Record",
    "continued_items",
    "decode",
    "final_of",
    "input_items_page",
    "lookup",
    "not_found",
    "record_of",
    "resolve",
]

ENCRYPTED_REASONING: Final = "reasoning.encrypted_content"
_RECORD_VERSION: Final = 1
# Item ids the store files (a client's own ids included): short, and of an alphabet that needs no escaping.
_ITEM_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")
_PAGE_LIMIT: Final = (1, 100)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A create request as first read: its body, and what it needs from the store before it can be translated."""

    payload: dict[str, Any]
    model: str
    previous: str | None
    references: tuple[tuple[int, str], ...]  # (input index, item id) of each item_reference
    sealed: tuple[tuple[int, str], ...]  # (input index, encrypted_content) of each sealed reasoning item
    store: bool
    encrypted: bool  # include asks for reasoning.encrypted_content

    @property
    def stream(self) -> bool:
        return self.payload.get("stream") is True


@dataclass(frozen=True, slots=True)
class Record:
    """A stored response: the object as the client got it, its own input items, the responses it continues."""

    response: dict[str, Any]
    input: list[dict[str, Any]]
    ancestors: tuple[str, ...]

    @property
    def id(self) -> str:
        return str(self.response["id"])

    def item(self, item_id: str) -> dict[str, Any] | None:
        return next((item for item in (*self.input, *self.output) if item.get("id") == item_id), None)

    @property
    def output(self) -> list[dict[str, Any]]:
        output = self.response.get("output")
        return output if isinstance(output, list) else []


@dataclass(frozen=True, slots=True)
class Continued:
    """A create request resolved against the store: the request to answer, and what storing its answer needs."""

    request: ResponsesRequest
    input: list[dict[str, Any]]
    ancestors: tuple[str, ...]
    store: bool


def not_found(kind: str, item_id: str, param: str | None = None) -> GatewayError:
    """OpenAI's 404 for an id: the same whether it never existed, expired, was deleted or is another key's."""
    message = f"{kind} with id '{item_id}' not found."
    return GatewayError(ErrorKind.NOT_FOUND, message, param=param, code=None)


def lookup(body: bytes) -> Lookup:
    """What a create request refers to, each field checked (a 400 naming it otherwise)."""
    payload = json_body.loads(body)
    if not isinstance(payload, dict):
        raise GatewayError(ErrorKind.INVALID_REQUEST, "The request body must be a JSON object.")
    root = Field(payload, WORDING)
    model = root.get("model").string(required=True, non_empty=True)
    assert model is not None
    previous = root.get("previous_response_id").string(non_empty=True)
    store = root.get("store").boolean()
    include = [entry.string(required=True) for entry in root.get("include").entries()]
    references: list[tuple[int, str]] = []
    sealed: list[tuple[int, str]] = []
    items = root.get("input")
    for index, item in enumerate(items.value if isinstance(items.value, list) else ()):
        if not isinstance(item, dict):
            continue  # the parser names what is wrong with it
        field = Field(item, WORDING, ("input", index))
        kind = item.get("type")
        if kind == "item_reference" or (kind is None and "role" not in item and "id" in item):
            item_id = field.get("id").string(required=True, non_empty=True)
            assert item_id is not None
            references.append((index, item_id))
        elif kind == "reasoning" and item.get("encrypted_content") is not None:
            blob = field.get("encrypted_content").string(required=True)
            assert blob is not None
            sealed.append((index, blob))
    return Lookup(
        payload,
        model,
        previous,
        tuple(references),
        tuple(sealed),
        store=store is not False,
        encrypted=ENCRYPTED_REASONING in include,
    )


def decode(data: bytes) -> Record:
    """A stored record, as ``record_of`` wrote it."""
    stored = json_body.loads(data)
    return Record(stored["response"], stored["input"], tuple(stored["ancestors"]))


def continued_items(chain: Iterable[Record]) -> list[dict[str, Any]]:
    """The conversation of ``chain`` (oldest first): each response's input items, then its output items."""
    return [_trusted(item) for record in chain for item in (*record.input, *record.output)]


def resolve(
    found: Lookup,
    chain: Sequence[Record],
    referenced: Mapping[str, dict[str, Any]],
    *,
    unseal: Callable[[str], str],
    seal: Callable[[str], str] | None,
) -> Continued:
    """The request, with ``chain`` (the stored conversation ``previous_response_id`` names, oldest first) before its
    input and each reference replaced by the item ``referenced`` holds for it; the shell has made sure every one
    was found. ``unseal`` opens sealed reasoning (raising ``ValueError`` with the reason otherwise), ``seal`` seals
    the answer's (None: not asked for)."""
    payload = dict(found.payload)
    history = continued_items(chain) if found.previous is not None else None
    if found.previous is not None:
        payload.pop("previous_response_id", None)
    if found.references or found.sealed:
        items = list(payload["input"])
        in_history = {item.get("id") for item in history or ()}
        for index, item_id in found.references:
            if item_id in in_history:
                raise GatewayError(
                    ErrorKind.INVALID_REQUEST,
                    f"Duplicate item found with id {item_id}: previous_response_id already holds it. "
                    "Remove duplicate items from your input and try again.",
                    param=f"input[{index}]",
                    code="invalid_value",
                )
            items[index] = _trusted(referenced[item_id])
        for index, blob in found.sealed:
            items[index] = _opened(items[index], index, blob, unseal)
        payload["input"] = items
    parsed = parse_payload(payload, history)
    echo = {**parsed.echo, "store": found.store, "previous_response_id": found.previous}
    request = dataclasses.replace(parsed, echo=echo, seal=seal)
    own = payload.get("input")
    stored_input = [_stored(item) for item in own] if isinstance(own, list) else [_stored(own)]
    ancestors = (*chain[-1].ancestors, chain[-1].id) if found.previous is not None and chain else ()
    return Continued(request, stored_input, ancestors, found.store)


def record_of(continued: Continued, response: dict[str, Any]) -> tuple[bytes, tuple[str, ...]]:
    """What is stored of an answer: the record, and the ids of its items (for ``item_reference``)."""
    stored = {"v": _RECORD_VERSION, "response": response, "input": continued.input, "ancestors": continued.ancestors}
    output = response.get("output") if isinstance(response.get("output"), list) else []
    ids = (item.get("id") for item in (*continued.input, *(output or ())))
    return json_body.encode(stored), tuple(
        dict.fromkeys(i for i in ids if isinstance(i, str) and _ITEM_ID.fullmatch(i))
    )


def final_of(encoder: object) -> dict[str, Any] | None:
    """The response object a stream of this door ended with (None for another door's encoder, or no end)."""
    return encoder.final if isinstance(encoder, ResponsesStreamEncoder) else None


def input_items_page(items: Sequence[dict[str, Any]], query: Mapping[str, str]) -> dict[str, Any]:
    """A page of ``items`` (the conversation a response answered, oldest first) as OpenAI's ``input_items`` list:
    ``order`` (``desc``, newest first, by default), ``after`` an item id, ``limit`` 1 to 100 (default 20)."""
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise _bad_query("order", f"Invalid value for 'order': expected 'asc' or 'desc', got {order!r}.")
    raw_limit = query.get("limit", "20")
    if not raw_limit.isdigit() or not _PAGE_LIMIT[0] <= int(raw_limit) <= _PAGE_LIMIT[1]:
        raise _bad_query("limit", f"Invalid value for 'limit': expected an integer from 1 to 100, got {raw_limit!r}.")
    limit = int(raw_limit)
    ordered = list(items) if order == "asc" else list(reversed(items))
    start = 0
    if (after := query.get("after")) is not None:
        position = next((i for i, item in enumerate(ordered) if item.get("id") == after), None)
        if position is None:
            raise _bad_query("after", f"Invalid value for 'after': no item with id {after!r} in this list.")
        start = position + 1
    page = ordered[start : start + limit]
    return {
        "object": "list",
        "data": page,
        "first_id": page[0].get("id") if page else None,
        "last_id": page[-1].get("id") if page else None,
        "has_more": start + limit < len(ordered),
    }


def _bad_query(param: str, message: str) -> GatewayError:
    return GatewayError(ErrorKind.INVALID_REQUEST, message, param=param, code="invalid_value")


def _trusted(item: dict[str, Any]) -> dict[str, Any]:
    """A stored item as it goes into a request: the store's copy is authoritative, so a sealed blob it carries (for
    the client) is not opened again (its reasoning is the item's own text)."""
    if "encrypted_content" in item:
        return {key: value for key, value in item.items() if key != "encrypted_content"}
    return item


def _opened(item: dict[str, Any], index: int, blob: str, unseal: Callable[[str], str]) -> dict[str, Any]:
    """A reasoning item whose sealed reasoning is opened: its text, as the gateway sealed it, is what goes back."""
    try:
        text = unseal(blob)
    except ValueError as exc:
        raise GatewayError(
            ErrorKind.INVALID_REQUEST,
            f"The encrypted_content of input[{index}] could not be opened: {exc}. Send the reasoning item as this "
            "gateway returned it to this API key, or leave the reasoning item out.",
            param=f"input[{index}].encrypted_content",
            code="invalid_encrypted_content",
        ) from None
    opened = {key: value for key, value in item.items() if key != "encrypted_content"}
    opened["content"] = [{"type": "reasoning_text", "text": text}]
    return opened


def _new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(24)


def _stored(item: Any) -> dict[str, Any]:
    """An input item as ``input_items`` lists it (and as a later request reads it back): with an id and a status,
    text content as parts; what it says is unchanged."""
    if isinstance(item, str):
        return _stored({"type": "message", "role": "user", "content": item})
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind == "message":
        role = item.get("role")
        content = item.get("content")
        text_type = "output_text" if role == "assistant" else "input_text"
        if isinstance(content, str):
            content = [{"type": text_type, "text": content}]
        if role == "assistant":
            content = [
                {"annotations": [], **part, "type": "output_text"}
                if part.get("type") in ("input_text", "output_text")
                else part
                for part in content
            ]
        return {
            "id": item.get("id") or _new_id("msg_"),
            "type": "message",
            "role": role,
            "content": content,
            "status": item.get("status") or "completed",
        }
    prefixes = {"function_call": "fc_", "function_call_output": "fco_", "reasoning": "rs_"}
    if kind in prefixes:
        stored = {**item, "id": item.get("id") or _new_id(prefixes[kind])}
        if kind == "reasoning":
            stored.setdefault("summary", [])
        else:
            stored.setdefault("status", "completed")
        return stored
    return dict(item)
