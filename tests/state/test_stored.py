"""Stored responses in both backends: the same answers from the in-process store and from a real Redis.

Each test runs against both (``stores``); Redis keeps its own time for expiry, so the tests that let a response
expire move the workers' clock and, on Redis, also wait the TTL out for real (a second or two).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gateway.state import StateStore
from gateway.state.stored import Entry, Retention
from tests.state.test_state import FakeClock, Stores

OWNER, OTHER = "owner-a", "owner-b"
DAY = Retention(ttl=86400, per_key=10_000)


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Stores:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Stores(request.param, url)


def entry(response_id: str, size: int = 10, items: tuple[str, ...] = (), touch: tuple[str, ...] = ()) -> Entry:
    return Entry(response_id, response_id.encode().ljust(size, b"."), items, touch)


async def records(store: StateStore, owner: str, *ids: str) -> list[bytes | None]:
    return (await store.fetch_responses(owner, ids)).records


def test_a_stored_response_is_fetched_by_its_owner_alone(stores: Stores) -> None:
    async def scenario() -> None:
        store = stores()
        assert await store.store_response(OWNER, entry("resp_1", items=("msg_1", "fc_1")), DAY)
        mine = await store.fetch_responses(OWNER, ["resp_1", "resp_none"], ["fc_1", "msg_1", "msg_none"])
        assert mine.records == [b"resp_1....", None] and mine.holders == ["resp_1", "resp_1", None]
        # Another owner asking for the same ids finds exactly what an owner finds for ids that never existed.
        theirs = await store.fetch_responses(OTHER, ["resp_1", "resp_none"], ["fc_1", "msg_1", "msg_none"])
        assert theirs.records == [None, None] and theirs.holders == [None, None, None]
        assert not await store.delete_response(OTHER, "resp_1")
        assert await records(store, OWNER, "resp_1") == [b"resp_1...."]

    stores.run(scenario)


def test_a_deleted_response_and_its_items_are_gone(stores: Stores) -> None:
    async def scenario() -> None:
        store = stores()
        await store.store_response(OWNER, entry("resp_1", items=("msg_1",)), DAY)
        await store.store_response(OWNER, entry("resp_2", items=("msg_2",)), DAY)
        assert await store.delete_response(OWNER, "resp_1")
        assert not await store.delete_response(OWNER, "resp_1")
        fetched = await store.fetch_responses(OWNER, ["resp_1", "resp_2"], ["msg_1", "msg_2"])
        assert fetched.records == [None, b"resp_2...."] and fetched.holders == [None, "resp_2"]

    stores.run(scenario)


def test_an_owner_holds_at_most_its_bytes_and_the_first_to_expire_go_first(stores: Stores) -> None:
    async def scenario() -> None:
        clock = FakeClock(time.time())
        store = stores(clock)
        cap = Retention(ttl=3600, per_key=100)
        for number in range(1, 5):  # 4 x 30 bytes: the fourth pushes the first out
            assert await store.store_response(OWNER, entry(f"resp_{number}", 30, items=(f"msg_{number}",)), cap)
            clock.advance(1)
        fetched = await store.fetch_responses(OWNER, [f"resp_{n}" for n in range(1, 5)], ["msg_1", "msg_4"])
        assert [record is not None for record in fetched.records] == [False, True, True, True]
        assert fetched.holders == [None, "resp_4"]
        # Continuing resp_2 keeps it as long as the new one: the next to go is resp_3.
        assert await store.store_response(OWNER, entry("resp_5", 30, touch=("resp_2",)), cap)
        kept = await records(store, OWNER, "resp_2", "resp_3", "resp_4", "resp_5")
        assert [record is not None for record in kept] == [True, False, True, True]
        # Another owner's bytes are its own.
        assert await store.store_response(OTHER, entry("resp_x", 90), cap)
        assert await records(store, OWNER, "resp_4") != [None]
        # A record larger than the cap is refused outright, and nothing is pushed out for it.
        assert not await store.store_response(OWNER, entry("resp_big", 101), cap)
        assert await records(store, OWNER, "resp_big", "resp_5") == [None, entry("resp_5", 30).data]

    stores.run(scenario)


def test_a_response_expires_after_its_ttl_unless_a_later_one_continues_it(stores: Stores) -> None:
    async def scenario() -> None:
        clock = FakeClock(time.time())
        store = stores(clock)
        short = Retention(ttl=1, per_key=10_000)
        await store.store_response(OWNER, entry("resp_old", items=("msg_old",)), short)
        await store.store_response(OWNER, entry("resp_kept", items=("msg_kept",)), short)
        clock.advance(0.6)
        await asyncio.sleep(0.6 if stores.backend == "redis" else 0)
        await store.store_response(OWNER, entry("resp_new", touch=("resp_kept",)), short)
        clock.advance(0.6)
        await asyncio.sleep(0.6 if stores.backend == "redis" else 0)
        fetched = await store.fetch_responses(OWNER, ["resp_old", "resp_kept", "resp_new"], ["msg_old", "msg_kept"])
        assert fetched.records == [None, entry("resp_kept").data, entry("resp_new").data]
        assert fetched.holders == [None, "resp_kept"]
        assert not await store.delete_response(OWNER, "resp_old")
        clock.advance(1)
        await asyncio.sleep(1 if stores.backend == "redis" else 0)
        assert await records(store, OWNER, "resp_kept", "resp_new") == [None, None]

    stores.run(scenario)


@pytest.mark.parametrize("size", [0, 1, 1_000_000])
def test_a_record_comes_back_byte_for_byte(stores: Stores, size: int) -> None:
    async def scenario() -> None:
        store = stores()
        data = bytes(range(256)) * (size // 256) + b'{"\xc3\xa9"}'[: size % 256]
        assert await store.store_response(OWNER, Entry("resp_1", data), Retention(60, 2_000_000))
        assert await records(store, OWNER, "resp_1") == [data]

    stores.run(scenario)
