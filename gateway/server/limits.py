"""Client keys on the request path: the routes a key may use, and its limits, held across every worker.

A request that names a route is permitted (``Limiter.permit``: 403 for a
route the key may not use), then admitted once, before its first upstream
attempt (``Limiter.admit``: 429 when a limit has no room, 503 when the shared
state cannot be reached and ``state_failure`` is ``closed``). Admission gives
it a ``Ticket``: the rate-limit headers of every answer, its concurrency slot
(a lease, renewed while the request runs) and the charge of its tokens. A
ticket is settled exactly once, on every exit: charged what the upstream
usage said, or an estimate when an answer ended without one, and its slot
given back.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from enum import Enum
from typing import Final

import anyio

from gateway.config import Config, ModelRoute
from gateway.core.errors import ErrorKind, GatewayError
from gateway.core.usage import TokenUsage, UsageTail, estimate_size, usage_of
from gateway.keys import ClientKey
from gateway.server.metrics import Metrics, RequestRecord
from gateway.state import Admission, Refusal, StateStore, StateUnavailable
from gateway.state.base import duration

__all__ = ["Limiter", "Stage", "Ticket"]

_NO_ADMISSION: Final = Admission(None)


class Stage(Enum):
    """Where an admitted request is, which decides what settling it charges."""

    ADMITTED = "admitted"  # no upstream has answered yet: nothing is due
    ANSWERING = "answering"  # an upstream is answering: its tokens are due, from its usage or estimated
    SETTLED = "settled"  # charged, and the slot given back


class Ticket:
    """One admitted request of a client key (or of no key, when the config has none)."""

    __slots__ = ("_key", "_lease", "_prompt_estimate", "_record", "_stage", "_store", "headers")

    def __init__(self, key: ClientKey | None, admission: Admission, store: StateStore, record: RequestRecord) -> None:
        # OpenAI's rate-limit headers, for every answer of this request.
        self.headers = admission.headers()
        self._key = key
        self._store = store
        self._record = record
        self._stage = Stage.ADMITTED
        self._prompt_estimate = 0
        # The concurrency slot, renewed in the background until the ticket is settled.
        self._lease = admission.lease
        if self._lease is not None:
            store.keep(self._lease)

    @property
    def stage(self) -> Stage:
        return self._stage

    @property
    def client(self) -> ClientKey | None:
        """The key the request was admitted for (None when the config names no keys)."""
        return self._key

    @property
    def charges_tokens(self) -> bool:
        """Whether this key's tokens are counted against a limit (``tpm`` or a budget)."""
        limits = self._key.limits if self._key is not None else None
        return limits is not None and (limits.tpm is not None or limits.budget is not None)

    def answering(self, prompt_estimate: Callable[[], int]) -> None:
        """An upstream accepted the request; ``prompt_estimate`` is what its prompt is charged should no usage come
        (called only for a key whose tokens count)."""
        if self._stage is Stage.SETTLED:
            return
        self._stage = Stage.ANSWERING
        if self.charges_tokens:
            self._prompt_estimate = prompt_estimate()

    async def settle(self, usage: TokenUsage | None = None, completion_estimate: int = 0) -> None:
        """Charge the tokens, the usage's or (for an answer that ended without usage) the prompt's estimate plus
        ``completion_estimate``, and give the slot back. Only the first call does anything; it is not cancelled."""
        if self._stage is Stage.SETTLED or self._key is None:
            self._stage = Stage.SETTLED
            return
        stage, self._stage = self._stage, Stage.SETTLED
        tokens = None
        if self.charges_tokens:
            tokens = usage.tokens if usage is not None else None
            if tokens is None and stage is Stage.ANSWERING:
                tokens = self._record.estimated_tokens = self._prompt_estimate + completion_estimate
        if self._lease is not None:
            self._store.let_go(self._lease)
        with anyio.CancelScope(shield=True):
            await self._store.finish(self._key.name, self._key.limits, tokens or 0, self._lease)

    async def forwarded(
        self, status: int, headers: Mapping[str, str], body: AsyncIterator[bytes], sent: int
    ) -> AsyncIterator[bytes]:
        """A forwarded answer's body, settling the ticket as it ends: charged the usage its end reports, else an
        estimate, a token per three bytes of the request (``sent`` bytes) and of the answer. The usage goes in
        the request's record too, for its metrics and its log line.

        A whole body's last part goes out only once the ticket is charged, so a client that sends its next
        request on reading it finds the tokens counted; an event stream's parts go out as they come.
        """
        tail = UsageTail() if status < 400 and "content-encoding" not in headers else None
        if status < 400:
            self.answering(lambda: estimate_size(sent))
        size = 0

        async def charge() -> None:
            usage = usage_of(tail.usage()) if tail is not None and self._stage is not Stage.SETTLED else None
            self._record.usage(usage)
            await self.settle(usage, completion_estimate=estimate_size(size))

        try:
            if tail is None:
                async for part in body:
                    size += len(part)
                    yield part
                return
            # Held back for a key whose tokens count; otherwise nothing waits for the charge.
            hold = self.charges_tokens and not headers.get("content-type", "").startswith("text/event-stream")
            held: bytes | None = None
            async for part in body:
                size += len(part)
                tail.feed(part)
                if not hold:
                    yield part
                    continue
                if held is not None:
                    yield held
                held = part
            await charge()
            if held is not None:
                yield held
        finally:
            await charge()


class Limiter:
    """The client keys' routes and limits, over the state store ``server.state`` names."""

    def __init__(self, config: Config, store: StateStore, metrics: Metrics) -> None:
        self._routes = tuple(route.name for route in config.models)
        self._store = store
        self._metrics = metrics

    def permit(self, client: ClientKey | None, route: ModelRoute | None, model: str | None = None) -> None:
        """403 unless the key may use the route; a forwarded request that names no model is for keys that may
        use every route (it reaches a provider's account beyond any one model: files, batches, ...)."""
        if client is None:
            return
        if route is None:
            if not all(client.may_use(name) for name in self._routes):
                message = "This API key may use only some models, so not endpoints whose request names no model."
                raise GatewayError(ErrorKind.FORBIDDEN, message)
        elif not client.may_use(route.name):
            message = f"This API key may not use the model {model or route.name!r}."
            raise GatewayError(ErrorKind.FORBIDDEN, message, param="model")

    def visible(self, client: ClientKey | None, routes: Iterable[ModelRoute]) -> list[ModelRoute]:
        """The routes a key may use, for ``/v1/models``."""
        return [route for route in routes if client is None or client.may_use(route.name)]

    async def admit(self, client: ClientKey | None, record: RequestRecord) -> Ticket:
        """The request's ticket once every limit of its key has room (counting it); a 429 or 503 otherwise."""
        if client is None or not client.limits.any:
            return Ticket(client, _NO_ADMISSION, self._store, record)
        try:
            admission = await self._store.admit(client.name, client.limits)
        except StateUnavailable as exc:
            message = f"{exc} Retry later."
            raise GatewayError(
                ErrorKind.UNAVAILABLE, message, code="state_unavailable", headers={"retry-after": "1"}
            ) from None
        if admission.refusal is not None:
            self._metrics.key_rejections.labels(client.name, admission.refusal.value).inc()
            raise _refused(client, admission, admission.refusal)
        return Ticket(client, admission, self._store, record)


def _refused(client: ClientKey, admission: Admission, refusal: Refusal) -> GatewayError:
    """The 429 a refused request gets: which limit, and when to come back."""
    limits = client.limits
    wait = f" Retry in {duration(admission.retry_after or 0)}."
    headers = admission.headers()
    if refusal is Refusal.BUDGET:
        assert limits.budget is not None
        budget = _many(limits.budget.tokens, "token")
        message = (
            f"This API key has used its budget of {budget} for this {limits.budget.period};"
            f" it renews in {duration(admission.retry_after or 0)}."
        )
        # The SDKs would retry a 429; a spent budget will not come back within their retries.
        return GatewayError(ErrorKind.QUOTA, message, headers={**headers, "x-should-retry": "false"})
    if refusal is Refusal.REQUESTS:
        message = f"Rate limit reached: this API key may send {_many(limits.rpm, 'request')} per minute.{wait}"
    elif refusal is Refusal.TOKENS:
        message = f"Rate limit reached: this API key may use {_many(limits.tpm, 'token')} per minute.{wait}"
    else:
        in_flight = _many(limits.max_concurrency, "request")
        message = f"Rate limit reached: this API key may have {in_flight} in flight at once.{wait}"
    return GatewayError(ErrorKind.RATE_LIMITED, message, headers=headers)


def _many(count: int | None, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
