"""Sealed blobs: they open for the key they were sealed for, under the secrets the gateway holds, until they expire;
anything else is a SealError with a reason, never another exception."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import ServerConfig
from gateway.sealing import Sealer, SealError, secrets_of

SECRET = b"the-current-secret-0123456789"
OLD = b"the-previous-secret-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_sealed_text_opens_for_its_owner_and_hides_what_it_holds() -> None:
    sealer = Sealer([SECRET], ttl=60)
    blob = sealer.seal("owner-a", "The reasoning, é 😀.")
    assert sealer.open("owner-a", blob) == "The reasoning, é 😀."
    assert "reasoning" not in base64.urlsafe_b64decode(blob).decode("latin-1")
    assert sealer.seal("owner-a", "same") != sealer.seal("owner-a", "same"), "a fresh nonce each time"


def test_another_owner_cannot_open_it() -> None:
    sealer = Sealer([SECRET], ttl=60)
    with pytest.raises(SealError, match="another API key"):
        sealer.open("owner-b", sealer.seal("owner-a", "text"))


@given(st.integers(min_value=0), st.integers(min_value=1, max_value=255))
def test_any_altered_byte_is_refused(position: int, flip: int) -> None:
    sealer = Sealer([SECRET], ttl=60)
    raw = bytearray(base64.urlsafe_b64decode(sealer.seal("owner-a", "text")))
    raw[position % len(raw)] ^= flip
    with pytest.raises(SealError):
        sealer.open("owner-a", base64.urlsafe_b64encode(bytes(raw)).decode())


@pytest.mark.parametrize(
    "blob", ["", "not base64 !", "AAAA", "é", base64.urlsafe_b64encode(b"\x02" + bytes(60)).decode()]
)
def test_what_the_gateway_did_not_issue_is_refused(blob: str) -> None:
    with pytest.raises(SealError, match="not an encrypted_content this gateway issued"):
        Sealer([SECRET], ttl=60).open("owner-a", blob)


def test_an_older_secret_still_opens_what_it_sealed_and_a_dropped_one_does_not() -> None:
    before = Sealer([OLD], ttl=60).seal("owner-a", "from before the rotation")
    rotated = Sealer([SECRET, OLD], ttl=60)
    assert rotated.open("owner-a", before) == "from before the rotation"
    after = rotated.seal("owner-a", "after")
    assert Sealer([SECRET], ttl=60).open("owner-a", after) == "after", "the first secret seals"
    with pytest.raises(SealError, match="does not hold"):
        Sealer([SECRET], ttl=60).open("owner-a", before)


def test_a_blob_expires() -> None:
    clock = Clock()
    sealer = Sealer([SECRET], ttl=10, clock=clock)
    blob = sealer.seal("owner-a", "text")
    clock.now += 9
    assert sealer.open("owner-a", blob) == "text"
    clock.now += 2
    with pytest.raises(SealError, match="expired"):
        sealer.open("owner-a", blob)


def test_the_secrets_come_from_the_config_else_the_environment() -> None:
    configured = ServerConfig(secret=SECRET.decode(), previous_secrets=(OLD.decode(),))
    assert secrets_of(configured, {"GATEWAY_SECRET": "ignored-0123456789"}) == [SECRET, OLD]
    assert secrets_of(ServerConfig(), {"GATEWAY_SECRET": "from-the-environment"}) == [b"from-the-environment"]
    assert secrets_of(ServerConfig(), {}) == []
