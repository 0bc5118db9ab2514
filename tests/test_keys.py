"""The key registry: a presented key resolves to its configured entry, compared in constant time, with its routes."""

from __future__ import annotations

import asyncio
import hashlib
import hmac

import httpx
import pytest

from gateway.config import Config
from gateway.keys import ClientKey, KeyRegistry, startup_warnings
from gateway.server.app import create_app
from gateway.server.stored import startup_warnings as stored_warnings
from gateway.state import Budget, Limits, Period


def config(**sections: object) -> Config:
    return Config.model_validate(
        {
            "providers": {"p": {"base_url": "http://up"}},
            "models": [
                {"name": name, "provider": "p"} for name in ("assistant", "assistant-thinking", "gpt-4o", "gpt-*")
            ],
            **sections,
        }
    )


REGISTRY = KeyRegistry.from_config(
    config(
        server={"api_keys": ["plain-one", "plain-two"]},
        keys=[
            {
                "name": "support-bot",
                "key": "sk-support",
                "models": ["assistant*"],
                "rpm": 600,
                "tpm": 200000,
                "max_concurrency": 20,
                "budget": {"tokens": 5000000, "period": "month"},
            },
            {"name": "batch", "key_sha256": hashlib.sha256(b"sk-batch").hexdigest(), "models": ["gpt-4o"]},
        ],
    )
)


def test_every_configured_key_resolves_to_its_entry() -> None:
    assert REGISTRY.required
    assert REGISTRY.resolve("plain-one") == ClientKey("api_keys[0]")
    assert REGISTRY.resolve("plain-two") == ClientKey("api_keys[1]")
    support = REGISTRY.resolve("sk-support")
    assert support == ClientKey("support-bot", ("assistant*",), Limits(600, 200000, 20, Budget(5000000, Period.MONTH)))
    batch = REGISTRY.resolve("sk-batch")  # known to the config only by its hash
    assert batch == ClientKey("batch", ("gpt-4o",), Limits())


@pytest.mark.parametrize(
    "presented", ["", "plain-on", "plain-one ", "SK-SUPPORT", hashlib.sha256(b"sk-batch").hexdigest()]
)
def test_anything_else_resolves_to_nothing(presented: str) -> None:
    assert REGISTRY.resolve(presented) is None


def test_without_keys_none_is_required() -> None:
    registry = KeyRegistry.from_config(config())
    assert not registry.required and registry.resolve("anything") is None


@pytest.mark.parametrize("presented", ["plain-one", "sk-batch", "sk-support", "unknown"])
def test_a_key_is_compared_with_every_entry_as_a_digest(presented: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the key is in the list, or whether it is there at all, does not change the work done."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    REGISTRY.resolve(presented)
    assert len(compared) == 4
    assert all(a == hashlib.sha256(presented.encode()).digest() and len(b) == 32 for a, b in compared)


def test_a_key_may_use_the_routes_its_globs_match() -> None:
    support = REGISTRY.resolve("sk-support")
    batch = REGISTRY.resolve("sk-batch")
    plain = REGISTRY.resolve("plain-one")
    assert support is not None and batch is not None and plain is not None
    assert support.may_use("assistant") and support.may_use("assistant-thinking")
    assert not support.may_use("gpt-4o") and not support.may_use("Assistant")
    assert batch.may_use("gpt-4o") and not batch.may_use("gpt-*") and not batch.may_use("assistant")
    assert all(plain.may_use(route) for route in ("assistant", "gpt-4o", "gpt-*"))
    assert not plain.limits.any and support.limits.any


# Authentication through the registry


def models_status(app_config: Config, authorization: str | None) -> int:
    app = create_app(app_config)
    headers = {} if authorization is None else {"authorization": authorization}

    async def main() -> int:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return (await client.get("/v1/models", headers=headers)).status_code

    return asyncio.run(main())


KEYS_ONLY = config(
    keys=[{"name": "app", "key": "sk-app-key"}, {"name": "hashed", "key_sha256": hashlib.sha256(b"sk-h").hexdigest()}]
)


@pytest.mark.parametrize("authorization", ["Bearer sk-app-key", "Bearer sk-h", "bearer  sk-app-key "])
def test_a_configured_key_is_let_in(authorization: str) -> None:
    assert models_status(KEYS_ONLY, authorization) == 200


@pytest.mark.parametrize(
    "authorization", [None, "Bearer sk-app", "Bearer " + hashlib.sha256(b"sk-h").hexdigest(), "sk-app-key"]
)
def test_with_only_keys_configured_auth_is_on(authorization: str | None) -> None:
    assert models_status(KEYS_ONLY, authorization) == 401


def test_start_up_warns_of_limits_kept_per_worker() -> None:
    limited = config(keys=[{"name": "app", "key": "sk-app-key", "rpm": 5}])
    assert startup_warnings(limited, 2) == [
        "server.state is memory: each of the 2 workers keeps its own limits"
        " (set server.state to a redis:// URL to share them)",
    ]
    assert startup_warnings(limited, 1) == []
    unlimited = config(keys=[{"name": "app", "key": "sk-app-key", "models": ["gpt-4o"]}])
    assert startup_warnings(unlimited, 4) == []
    shared = config(keys=[{"name": "app", "key": "sk-app-key", "rpm": 5}], server={"state": "redis://cache:6379/0"})
    assert startup_warnings(shared, 4) == []
    assert startup_warnings(config(), 1) == [
        "no server.api_keys configured: any client that can reach this port may use it"
    ]
    assert startup_warnings(config(server={"api_keys": ["k"]}), 4) == []


def test_start_up_warns_of_stored_responses_and_sealing_kept_per_process() -> None:
    assert stored_warnings(config(), 1, {}) == []
    per_worker, unsealed = stored_warnings(config(), 4, {})
    assert per_worker.startswith("server.state is memory: each of the 4 workers keeps its own stored responses")
    assert unsealed.startswith("no server.secret and no GATEWAY_SECRET")
    shared = config(server={"state": "redis://cache:6379/0"})
    assert [w[:20] for w in stored_warnings(shared, 1, {})] == ["no server.secret and"]
    assert stored_warnings(shared, 4, {"GATEWAY_SECRET": "a-secret-of-the-deployment"}) == []
    assert stored_warnings(config(server={"state": "redis://cache:6379/0", "secret": "s" * 32}), 4, {}) == []
