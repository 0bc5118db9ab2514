"""Shared state: the same behaviour from the in-process backend and from a real Redis, and what only Redis shares."""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

import pytest
from redis.asyncio import Redis

from gateway.state import (
    Admission,
    Budget,
    FailurePolicy,
    Lease,
    Limits,
    MemoryStore,
    Period,
    Quota,
    RedisStore,
    Refusal,
    StateStore,
    StateUnavailable,
    create_store,
)
from gateway.state.base import Observed, Window, duration, period_bounds, summarize
from tests.helpers.redis_server import RedisServer

T = TypeVar("T")

# Tuesday 2023-11-14 22:13:20.25 UTC: a quarter second into bucket 1_700_000_000.
START = 1_700_000_000.25
BUCKET = 1_700_000_000
MIDNIGHT = datetime(2023, 11, 15, tzinfo=UTC).timestamp()


class FakeClock:
    """The workers' clock, moved by the test: windows, leases and periods pass without waiting."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Stores:
    """Makes stores of one backend; the Redis ones of a test share a key prefix no other test uses."""

    def __init__(self, backend: str, redis_url: str | None) -> None:
        self.backend = backend
        self.redis_url = redis_url
        self.prefix = f"test:{uuid.uuid4().hex}:"
        self.made: list[StateStore] = []

    def __call__(
        self, clock: Callable[[], float] | None = None, lease_seconds: float = 30.0, **options: Any
    ) -> StateStore:
        store: StateStore
        clock = clock or FakeClock()
        if self.backend == "memory":
            store = MemoryStore(clock, lease_seconds)
        else:
            assert self.redis_url is not None
            # Closed and patient: a slow moment on a busy machine must fail the test, not quietly admit.
            settings: dict[str, Any] = {"failure": FailurePolicy.CLOSED, "timeout": 10.0, **options}
            store = RedisStore.from_url(
                self.redis_url, prefix=self.prefix, clock=clock, lease_seconds=lease_seconds, **settings
            )
        self.made.append(store)
        return store

    def run(self, scenario: Callable[[], Awaitable[T]]) -> T:
        async def main() -> T:
            try:
                return await scenario()
            finally:
                for store in self.made:
                    await store.aclose()

        return asyncio.run(main())


@pytest.fixture(params=["memory", "redis"])
def stores(request: pytest.FixtureRequest) -> Stores:
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    return Stores(request.param, url)


@pytest.fixture
def redis_stores(redis_url: str) -> Stores:
    return Stores("redis", redis_url)


def near(limit: int, remaining: int, reset: float) -> Quota:
    """A quota whose reset is compared up to float rounding."""
    return Quota(limit, remaining, cast(float, pytest.approx(reset)))


async def admit_many(store: StateStore, key: str, limits: Limits, count: int) -> list[Admission]:
    return [await store.admit(key, limits) for _ in range(count)]


# Requests per minute


def test_requests_per_minute_admit_up_to_the_limit_then_wait_for_the_oldest_to_leave(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(rpm=3)

    async def scenario() -> None:
        answers = await admit_many(store, "app", limits, 4)
        assert [a.refusal for a in answers] == [None, None, None, Refusal.REQUESTS]
        assert [a.requests.remaining for a in answers if a.requests] == [2, 1, 0, 0]
        refused = answers[3]
        assert refused.retry_after == pytest.approx(59.75)
        assert refused.headers() == {
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "59.75s",
            "retry-after": "60",
            "retry-after-ms": "59750",
        }
        clock.advance(59.7)
        assert (await store.admit("app", limits)).refusal is Refusal.REQUESTS
        clock.advance(0.1)  # the first second's bucket has left the window
        again = await admit_many(store, "app", limits, 4)
        assert [a.refusal for a in again] == [None, None, None, Refusal.REQUESTS]

    stores.run(scenario)


def test_a_refusal_says_when_the_next_request_fits(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(rpm=3)

    async def scenario() -> None:
        for _ in range(3):
            assert (await store.admit("app", limits)).allowed
            clock.advance(20)
        clock.advance(-10)  # +50: three requests in the last minute
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.REQUESTS and refused.retry_after == pytest.approx(9.75)
        clock.advance(10)  # +60: the first has left
        assert (await store.admit("app", limits)).allowed
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.REQUESTS and refused.retry_after == pytest.approx(19.75)
        assert refused.requests is not None and refused.requests.reset == pytest.approx(59.75)

    stores.run(scenario)


def test_refused_requests_do_not_count(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)

    async def scenario() -> None:
        limits = Limits(rpm=2)
        assert [a.allowed for a in await admit_many(store, "app", limits, 12)] == [True] * 2 + [False] * 10
        clock.advance(60)
        assert [a.allowed for a in await admit_many(store, "app", limits, 3)] == [True, True, False]
        # Nor does a request another limit turned away.
        both = Limits(rpm=2, max_concurrency=1)
        first = await store.admit("other", both)
        assert (await store.admit("other", both)).refusal is Refusal.CONCURRENCY
        assert first.lease is not None
        await store.finish(first.lease.key, Limits(), 0, first.lease)
        second = await store.admit("other", both)
        assert second.allowed and second.requests is not None and second.requests.remaining == 0
        assert second.lease is not None
        await store.finish(second.lease.key, Limits(), 0, second.lease)
        assert (await store.admit("other", both)).refusal is Refusal.REQUESTS

    stores.run(scenario)


def test_keys_are_counted_apart(stores: Stores) -> None:
    store = stores()
    limits = Limits(rpm=1)

    async def scenario() -> None:
        assert (await store.admit("a", limits)).allowed
        assert (await store.admit("b", limits)).allowed
        assert not (await store.admit("a", limits)).allowed

    stores.run(scenario)


def test_a_key_without_limits_is_admitted_without_headers(stores: Stores) -> None:
    store = stores()

    async def scenario() -> None:
        answer = await store.admit("free", Limits())
        assert answer == Admission(None) and answer.headers() == {}

    stores.run(scenario)


# Tokens


def test_tokens_per_minute_admit_on_what_was_spent_and_charge_when_usage_arrives(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(tpm=100)

    async def scenario() -> None:
        for _ in range(3):  # admission alone spends nothing
            answer = await store.admit("app", limits)
            assert answer.allowed and answer.tokens == Quota(100, 100, 0.0)
        await store.finish("app", limits, 60, None)
        answer = await store.admit("app", limits)
        assert answer.allowed and answer.tokens == near(100, 40, 59.75)
        clock.advance(10)
        await store.finish("app", limits, 60, None)  # a request may run past the limit; the next one waits
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.TOKENS and refused.tokens == near(100, 0, 59.75)
        assert refused.retry_after == pytest.approx(49.75)  # the first 60 leave, and 60 < 100
        assert refused.headers()["x-ratelimit-remaining-tokens"] == "0"
        assert refused.headers()["x-ratelimit-limit-tokens"] == "100"
        clock.advance(50)
        answer = await store.admit("app", limits)
        assert answer.allowed and answer.tokens is not None and answer.tokens.remaining == 40

    stores.run(scenario)


def test_a_daily_budget_is_refused_until_midnight_utc(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(budget=Budget(1000, Period.DAY))

    async def scenario() -> None:
        await store.finish("app", limits, 600, None)
        answer = await store.admit("app", limits)
        assert answer.allowed and answer.budget == near(1000, 400, MIDNIGHT - START)
        await store.finish("app", limits, 400, None)
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.BUDGET and refused.retry_after == pytest.approx(MIDNIGHT - START)
        headers = refused.headers()
        assert headers["x-ratelimit-limit-tokens"] == "1000" and headers["x-ratelimit-remaining-tokens"] == "0"
        assert headers["x-ratelimit-reset-tokens"] == "1h46m39.75s" and headers["retry-after"] == "6400"
        clock.now = MIDNIGHT
        answer = await store.admit("app", limits)
        assert answer.allowed and answer.budget is not None and answer.budget.remaining == 1000

    stores.run(scenario)


def test_a_weekly_budget_runs_monday_to_monday(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(budget=Budget(100, Period.WEEK))
    monday = datetime(2023, 11, 20, tzinfo=UTC).timestamp()

    async def scenario() -> None:
        await store.finish("app", limits, 100, None)
        clock.now = monday - 1  # Sunday night: still the same week
        assert (await store.admit("app", limits)).refusal is Refusal.BUDGET
        clock.now = monday
        assert (await store.admit("app", limits)).allowed

    stores.run(scenario)


def test_the_spent_budget_wins_and_the_wait_is_the_longest(stores: Stores) -> None:
    store = stores()
    limits = Limits(rpm=1, budget=Budget(10, Period.DAY))

    async def scenario() -> None:
        assert (await store.admit("app", limits)).allowed
        await store.finish("app", limits, 10, None)
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.BUDGET
        assert refused.retry_after == pytest.approx(MIDNIGHT - START)

    stores.run(scenario)


def test_the_token_headers_describe_the_limit_closer_to_refusing(stores: Stores) -> None:
    store = stores()
    limits = Limits(tpm=1000, budget=Budget(5000, Period.MONTH))

    async def scenario() -> None:
        await store.finish("app", limits, 300, None)
        assert (await store.admit("app", limits)).headers()["x-ratelimit-remaining-tokens"] == "700"
        await store.finish("app", limits, 4500, None)  # the budget has 200 left, the minute 0
        refused = await store.admit("app", limits)
        assert refused.refusal is Refusal.TOKENS and refused.headers()["x-ratelimit-remaining-tokens"] == "0"

    stores.run(scenario)


# Concurrency leases


def test_concurrency_slots_are_taken_and_given_back(stores: Stores) -> None:
    store = stores()
    limits = Limits(max_concurrency=2)

    async def scenario() -> None:
        first, second, third = await admit_many(store, "app", limits, 3)
        assert first.lease is not None and second.lease is not None and first.lease != second.lease
        assert third.refusal is Refusal.CONCURRENCY and third.lease is None and third.retry_after == 1.0
        assert third.concurrency == Quota(2, 0, 0.0) and third.headers()["retry-after"] == "1"
        await store.finish(first.lease.key, Limits(), 0, first.lease)
        fourth = await store.admit("app", limits)
        assert fourth.allowed and fourth.concurrency == Quota(2, 0, 0.0)

    stores.run(scenario)


def test_a_lease_nobody_renews_comes_back_when_it_expires(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock, lease_seconds=10)
    limits = Limits(max_concurrency=1)

    async def scenario() -> None:
        assert (await store.admit("app", limits)).allowed
        clock.advance(9.9)
        assert (await store.admit("app", limits)).refusal is Refusal.CONCURRENCY
        clock.advance(0.2)
        assert (await store.admit("app", limits)).allowed

    stores.run(scenario)


def test_a_renewed_lease_is_kept_and_a_lapsed_one_put_back(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock, lease_seconds=10)
    limits = Limits(max_concurrency=1)

    async def scenario() -> None:
        lease = (await store.admit("app", limits)).lease
        assert lease is not None
        clock.advance(8)
        await store.renew([lease])
        clock.advance(8)  # past the first expiry, before the renewed one
        assert (await store.admit("app", limits)).refusal is Refusal.CONCURRENCY
        clock.advance(3)
        assert (await store.admit("app", limits)).lease is not None  # lapsed: another request took the slot
        await store.renew([lease])  # the first request still runs, so it is counted again
        assert (await store.admit("app", limits)).refusal is Refusal.CONCURRENCY

    stores.run(scenario)


def test_finish_charges_the_tokens_and_gives_the_slot_back_in_one_step(stores: Stores) -> None:
    store = stores()
    limits = Limits(tpm=100, max_concurrency=1, budget=Budget(1000, Period.DAY))

    async def scenario() -> None:
        first = await store.admit("app", limits)
        assert first.lease is not None and not (await store.admit("app", limits)).allowed
        await store.finish("app", limits, 70, first.lease)
        again = await store.admit("app", limits)
        assert again.allowed and again.tokens == near(100, 30, 59.75) and again.budget is not None
        assert again.budget.remaining == 930

    stores.run(scenario)


def test_a_kept_slot_is_renewed_while_the_request_runs_and_given_back_at_its_finish(stores: Stores) -> None:
    # Real time: the renewals run in the background every half second, well inside the 1.5 s lease.
    store = stores(clock=time.time, lease_seconds=1.5)
    limits = Limits(max_concurrency=1)

    async def scenario() -> None:
        answer = await store.admit("app", limits)
        assert answer.lease is not None
        store.keep(answer.lease)
        await asyncio.sleep(4)  # more than two lease lengths
        assert (await store.admit("app", limits)).refusal is Refusal.CONCURRENCY
        store.let_go(answer.lease)
        await store.finish("app", limits, 0, answer.lease)
        assert (await store.admit("app", limits)).allowed

    stores.run(scenario)


def test_observe_reads_what_each_key_used_and_counts_nothing(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)
    limits = Limits(rpm=5, tpm=100, max_concurrency=3, budget=Budget(1000, Period.DAY))
    other = Limits(rpm=2)

    async def scenario() -> None:
        first, second = await admit_many(store, "app", limits, 2)
        await store.finish("app", limits, 70, first.lease)
        clock.advance(1)
        keys = {"app": limits, "other": other, "plain": Limits()}
        seen = await store.observe(keys)
        assert seen == await store.observe(keys)  # reading twice counted nothing
        app = seen["app"]
        assert app.requests is not None and app.requests.used == 2
        assert app.tokens is not None and app.tokens.used == 70
        assert app.budget_spent == 70 and app.slots_held == 1  # the second request still runs
        assert seen["other"].requests is not None and seen["other"].requests.used == 0  # never seen: nothing used
        assert seen["plain"] == Observed(clock())  # no limits: nothing to read
        assert (await store.admit("app", limits)).requests == near(5, 2, 59.75)  # the two, and this one
        clock.advance(60)
        later = (await store.observe({"app": limits}))["app"]
        assert later.requests is not None and later.requests.used == 0 and later.tokens is not None
        assert later.tokens.used == 0 and later.budget_spent == 70  # the minute is over, not the day
        assert second.lease is not None

    stores.run(scenario)


# Deployments


def test_a_deployment_cools_down_after_failures_in_a_row(stores: Stores) -> None:
    clock = FakeClock()
    store = stores(clock)

    async def scenario() -> None:
        assert [await store.failed("east", 3, 30) for _ in range(2)] == [False, False]
        assert await store.cooling_down(["east", "west"]) == {}
        assert await store.failed("east", 3, 30)
        assert await store.cooling_down(["east", "west"]) == {"east": pytest.approx(30)}
        clock.advance(29.9)
        assert await store.cooling_down(["east"]) == {"east": pytest.approx(0.1)}
        clock.advance(0.2)
        assert await store.cooling_down(["east"]) == {}
        # The count started again at the cool-down.
        assert [await store.failed("east", 3, 30) for _ in range(3)] == [False, False, True]

    stores.run(scenario)


def test_a_success_ends_the_run_of_failures(stores: Stores) -> None:
    store = stores()

    async def scenario() -> None:
        assert [await store.failed("east", 3, 30) for _ in range(2)] == [False, False]
        await store.succeeded("east")
        assert [await store.failed("east", 3, 30) for _ in range(2)] == [False, False]
        assert await store.cooling_down(["east"]) == {}
        assert await store.failed("east", 3, 0)  # a zero cool-down: the run ends, nothing cools
        assert await store.cooling_down(["east"]) == {}

    stores.run(scenario)


def test_failures_far_apart_are_not_a_run() -> None:
    clock = FakeClock()
    store = MemoryStore(clock)

    async def scenario() -> None:
        assert not await store.failed("east", 2, 30)
        clock.advance(601)
        assert not await store.failed("east", 2, 30)

    asyncio.run(scenario())


# The two backends agree


def test_both_backends_give_the_same_answers_to_the_same_history(redis_url: str) -> None:
    """A random history of checks, charges, releases and time passing, run through both backends side by side."""
    limits = (
        Limits(rpm=5),
        Limits(tpm=300),
        Limits(rpm=8, tpm=500, max_concurrency=3, budget=Budget(800, Period.DAY)),
        Limits(max_concurrency=2),
    )
    for seed in range(3):
        rng = random.Random(seed)
        clock = FakeClock()
        memory = Stores("memory", None)(clock, lease_seconds=20)
        redis = Stores("redis", redis_url)(clock, lease_seconds=20)

        async def history(
            rng: random.Random = rng, memory: StateStore = memory, redis: StateStore = redis, clock: FakeClock = clock
        ) -> None:
            held: list[tuple[Lease, Lease]] = []
            try:
                for _ in range(300):
                    step = rng.random()
                    key = f"k{rng.randrange(len(limits))}"
                    key_limits = limits[int(key[1:])]
                    if step < 0.55:
                        here, there = await memory.admit(key, key_limits), await redis.admit(key, key_limits)
                        assert replace(here, lease=None) == replace(there, lease=None)
                        if here.lease is not None and there.lease is not None:
                            held.append((here.lease, there.lease))
                    elif step < 0.75:
                        tokens = rng.randrange(1, 200)
                        await memory.finish(key, key_limits, tokens, None)
                        await redis.finish(key, key_limits, tokens, None)
                    elif step < 0.8:
                        every = {f"k{index}": key_limits for index, key_limits in enumerate(limits)}
                        assert await memory.observe(every) == await redis.observe(every)
                    elif step < 0.85 and held:
                        here_lease, there_lease = held.pop(rng.randrange(len(held)))
                        await memory.finish(here_lease.key, Limits(), 0, here_lease)
                        await redis.finish(there_lease.key, Limits(), 0, there_lease)
                    else:
                        clock.advance(rng.choice((0.3, 1.0, 4.5, 13.0, 31.0)))
            finally:
                await memory.aclose()
                await redis.aclose()

        asyncio.run(history())


# Only Redis shares


def test_two_workers_share_a_rate_limit_exactly(redis_stores: Stores) -> None:
    clock = FakeClock()
    first, second = redis_stores(clock), redis_stores(clock)
    limits = Limits(rpm=10)

    async def scenario() -> None:
        answers = await asyncio.gather(*(store.admit("app", limits) for store in (first, second) * 10))
        assert sum(a.allowed for a in answers) == 10
        assert sorted(a.requests.remaining for a in answers if a.allowed and a.requests) == list(range(10))

    redis_stores.run(scenario)


def test_a_budget_spent_through_one_worker_is_refused_through_the_other(redis_stores: Stores) -> None:
    first, second = redis_stores(), redis_stores()
    limits = Limits(budget=Budget(1000, Period.MONTH))

    async def scenario() -> None:
        assert (await second.admit("app", limits)).allowed
        await first.finish("app", limits, 1000, None)
        refused = await second.admit("app", limits)
        assert refused.refusal is Refusal.BUDGET
        first_of_december = datetime(2023, 12, 1, tzinfo=UTC).timestamp()
        assert refused.retry_after == pytest.approx(first_of_december - START)

    redis_stores.run(scenario)


def test_what_one_worker_counted_is_observed_through_the_other(redis_stores: Stores) -> None:
    clock = FakeClock()
    first, second = redis_stores(clock), redis_stores(clock)
    limits = Limits(rpm=10, tpm=500, max_concurrency=4)

    async def scenario() -> None:
        admitted = await admit_many(first, "app", limits, 3)
        await first.finish("app", limits, 120, admitted[0].lease)
        seen = (await second.observe({"app": limits}))["app"]
        assert seen.requests is not None and seen.requests.used == 3
        assert seen.tokens is not None and seen.tokens.used == 120 and seen.slots_held == 2

    redis_stores.run(scenario)


def test_a_deployment_cooled_down_by_one_worker_is_skipped_by_the_other(redis_stores: Stores) -> None:
    first, second = redis_stores(), redis_stores()

    async def scenario() -> None:
        assert await first.failed("east", 1, 30)
        assert await second.cooling_down(["east", "west"]) == {"east": pytest.approx(30)}
        # Failures in a row add up across workers too.
        assert not await first.failed("west", 2, 30)
        assert await second.failed("west", 2, 30)

    redis_stores.run(scenario)


def test_the_slot_of_a_worker_that_died_comes_back_when_its_lease_expires(redis_stores: Stores) -> None:
    clock = FakeClock()
    doomed, survivor = redis_stores(clock, lease_seconds=10), redis_stores(clock, lease_seconds=10)
    limits = Limits(max_concurrency=1)

    async def scenario() -> None:
        assert (await doomed.admit("app", limits)).allowed
        await doomed.aclose()  # gone without giving the slot back
        assert (await survivor.admit("app", limits)).refusal is Refusal.CONCURRENCY
        clock.advance(10.1)
        assert (await survivor.admit("app", limits)).allowed

    redis_stores.run(scenario)


def test_every_key_expires_on_its_own(redis_stores: Stores, redis_url: str) -> None:
    store = redis_stores()
    limits = Limits(rpm=5, tpm=100, max_concurrency=2, budget=Budget(1000, Period.WEEK))

    async def scenario() -> None:
        answer = await store.admit("app", limits)
        await store.finish("app", limits, 10, None)
        assert answer.lease is not None
        await store.renew([answer.lease])
        await store.failed("east", 5, 30)
        await store.failed("west", 1, 30)
        inspector = Redis.from_url(redis_url)
        try:
            keys = [key async for key in inspector.scan_iter(f"{redis_stores.prefix}*")]
            assert len(keys) == 6  # requests, tokens, budget, slots; east's failures; west's cool-down
            ttls = {key.decode(): await inspector.pttl(key) for key in keys}
        finally:
            await inspector.aclose()
        assert all(ttl > 0 for ttl in ttls.values()), ttls

    redis_stores.run(scenario)


# Redis unavailable


def test_redis_stopped_open_holds_each_key_to_what_this_worker_counted_then_limits_resume(
    own_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Open means limits per worker, not no limits: the guard saw every request admitted through Redis."""
    failures: list[str] = []
    store = RedisStore.from_url(own_redis.url, failure=FailurePolicy.OPEN, timeout=5.0, on_failure=failures.append)
    limits = Limits(rpm=3)

    async def scenario() -> None:
        try:
            await store.start()
            assert [a.allowed for a in await admit_many(store, "app", limits, 2)] == [True, True]
            own_redis.stop()
            with caplog.at_level(logging.WARNING, logger="gateway.state"):
                answers = await admit_many(store, "app", limits, 5)
                assert await store.cooling_down(["east"]) == {}
                assert await store.observe({"app": limits}) == {}  # not known now: left out, never a failure
                await store.finish("app", Limits(tpm=10), 5, None)
            assert [a.allowed for a in answers] == [True, False, False, False, False]
            assert answers[0].headers()["x-ratelimit-remaining-requests"] == "0"
            assert failures == ["admit"] * 5 + ["cooling_down", "observe", "finish"]
            warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.state"]
            assert len(warnings) == 1, warnings  # one warning per interval, not one per request
            assert f"127.0.0.1:{own_redis.port}" in warnings[0] and "state_failure: open" in warnings[0]
            own_redis.start()  # empty again: no persistence
            assert [a.allowed for a in await admit_many(store, "app", limits, 4)] == [True, True, True, False]
            assert failures == ["admit"] * 5 + ["cooling_down", "observe", "finish"]
        finally:
            await store.aclose()

    asyncio.run(scenario())


def test_redis_stopped_closed_refuses_limit_checks_only(own_redis: RedisServer) -> None:
    failures: list[str] = []
    store = RedisStore.from_url(own_redis.url, failure=FailurePolicy.CLOSED, timeout=5.0, on_failure=failures.append)
    limits = Limits(rpm=2, max_concurrency=5)

    async def scenario() -> None:
        try:
            lease = (await store.admit("app", limits)).lease
            assert lease is not None
            own_redis.stop()
            with pytest.raises(StateUnavailable, match=r"server\.state_failure: closed") as refused:
                await store.admit("app", limits)
            assert str(own_redis.port) not in str(refused.value)  # where Redis is stays in the log
            # Deployment health is advice to routing: without it no deployment is cooling down.
            assert await store.cooling_down(["east"]) == {}
            # A request already under way is not failed by its bookkeeping.
            await store.finish("app", Limits(tpm=10), 5, None)
            await store.renew([lease])
            await store.finish(lease.key, Limits(), 0, lease)
            assert not await store.failed("east", 1, 30)
            await store.succeeded("east")
            assert failures == ["admit", "cooling_down", "finish", "renew", "finish", "failed", "succeeded"]
            own_redis.start()
            assert [a.allowed for a in await admit_many(store, "app", limits, 3)] == [True, True, False]
        finally:
            await store.aclose()

    asyncio.run(scenario())


@pytest.mark.parametrize("failure", list(FailurePolicy))
def test_redis_too_slow_is_treated_as_down(own_redis: RedisServer, failure: FailurePolicy) -> None:
    failures: list[str] = []
    store = RedisStore.from_url(own_redis.url, failure=failure, timeout=0.05, on_failure=failures.append)
    limits = Limits(rpm=1)

    async def scenario() -> Admission | None:
        try:
            own_redis.pause()
            try:
                return await store.admit("app", limits)
            finally:
                own_redis.resume()
        finally:
            await store.aclose()

    if failure is FailurePolicy.OPEN:
        answer = asyncio.run(scenario())
        assert answer is not None and answer.allowed and answer.requests is not None and answer.requests.remaining == 0
    else:
        with pytest.raises(StateUnavailable, match="did not answer in time"):
            asyncio.run(scenario())
    assert failures == ["admit"]


def test_bookkeeping_outlasts_a_stall_a_check_would_not(own_redis: RedisServer) -> None:
    """Tokens charged, or a slot given back, while Redis stalls for longer than state_timeout are not lost."""
    failures: list[str] = []
    store = RedisStore.from_url(own_redis.url, failure=FailurePolicy.CLOSED, timeout=0.05, on_failure=failures.append)
    limits = Limits(tpm=100, max_concurrency=1)

    async def stalled(operation: Awaitable[None]) -> None:
        own_redis.pause()
        try:
            pending = asyncio.ensure_future(operation)
            await asyncio.sleep(0.2)  # four times state_timeout
        finally:
            own_redis.resume()
        await pending

    async def scenario() -> None:
        try:
            first = await store.admit("app", limits)
            assert first.lease is not None
            await stalled(store.finish("app", limits, 60, None))
            await stalled(store.finish(first.lease.key, Limits(), 0, first.lease))
            again = await store.admit("app", limits)  # the slot is back, and the tokens counted
            assert again.allowed and again.tokens is not None and again.tokens.remaining == 40
        finally:
            await store.aclose()

    asyncio.run(scenario())
    assert failures == []


def test_a_password_comes_from_the_url() -> None:
    with RedisServer("--requirepass", "s3cret-pass") as server:

        async def scenario(url: str) -> Admission:
            store = create_store(url, "closed", 5.0)
            try:
                return await store.admit("app", Limits(rpm=1))
            finally:
                await store.aclose()

        assert asyncio.run(scenario(f"redis://:s3cret-pass@127.0.0.1:{server.port}/0")).allowed
        with pytest.raises(StateUnavailable) as refused:
            asyncio.run(scenario(f"redis://:wrong-pass@127.0.0.1:{server.port}/0"))
        assert "wrong-pass" not in str(refused.value) and "AuthenticationError" in str(refused.value)


def test_memory_is_the_default_store() -> None:
    assert isinstance(create_store("memory"), MemoryStore)


# The pure rules


@pytest.mark.parametrize(
    ("moment", "period", "label", "end"),
    [
        (datetime(2023, 11, 14, 22, 13, tzinfo=UTC), Period.DAY, "2023-11-14", datetime(2023, 11, 15, tzinfo=UTC)),
        (datetime(2023, 11, 14, 22, 13, tzinfo=UTC), Period.WEEK, "2023-11-13", datetime(2023, 11, 20, tzinfo=UTC)),
        (datetime(2023, 11, 20, 0, 0, tzinfo=UTC), Period.WEEK, "2023-11-20", datetime(2023, 11, 27, tzinfo=UTC)),
        (datetime(2023, 11, 14, 22, 13, tzinfo=UTC), Period.MONTH, "2023-11-01", datetime(2023, 12, 1, tzinfo=UTC)),
        (datetime(2023, 12, 31, 23, 59, tzinfo=UTC), Period.MONTH, "2023-12-01", datetime(2024, 1, 1, tzinfo=UTC)),
        (datetime(2023, 12, 31, 23, 59, tzinfo=UTC), Period.DAY, "2023-12-31", datetime(2024, 1, 1, tzinfo=UTC)),
        (datetime(2024, 2, 29, 12, 0, tzinfo=UTC), Period.MONTH, "2024-02-01", datetime(2024, 3, 1, tzinfo=UTC)),
    ],
)
def test_budget_periods_are_calendar_periods_in_utc(
    moment: datetime, period: Period, label: str, end: datetime
) -> None:
    assert period_bounds(moment.timestamp(), period) == (label, end.timestamp())


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.02, "20ms"),
        (0.9994, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.75, "59.75s"),
        (360, "6m0s"),
        (3723.25, "1h2m3.25s"),
        (86400 * 3, "72h0m0s"),
    ],
)
def test_waits_are_written_as_openai_writes_them(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_a_window_knows_which_bucket_must_leave_for_the_next_request() -> None:
    buckets = {100: 5, 130: 2, 159: 1, 40: 99}  # bucket 40 is more than a minute old
    assert summarize(buckets, 159, 10) == Window(8, 159, None)
    assert summarize(buckets, 159, 8) == Window(8, 159, 100)
    assert summarize(buckets, 159, 3) == Window(8, 159, 130)
    assert summarize({}, 159, 3) == Window(0, None, None)
