"""Sealing what a stateless client carries for the gateway (a Responses reasoning item's ``encrypted_content``).

A sealed blob is AES-256-GCM (``cryptography``'s AESGCM) under a key derived
with HKDF-SHA256 from ``server.secret`` (or ``GATEWAY_SECRET``), so every
replica given the same secret opens what any of them sealed. The associated
data binds the blob to the client key it was sealed for and to its expiry, so
a blob opens only for that key and only until then; its header names the
secret it was sealed with (a short digest of the derived key), so older
secrets (``server.previous_secrets``) still open what they sealed while only
the first one seals.

Layout, then URL-safe base64: version (1 byte), key id (8), expiry in Unix
seconds (8, big-endian), nonce (12), ciphertext and tag.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
import struct
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.config import ServerConfig

__all__ = ["SECRET_VARIABLE", "SealError", "Sealer", "process_secret", "secrets_of"]

SECRET_VARIABLE: Final = "GATEWAY_SECRET"
_VERSION: Final = b"\x01"
_HEADER: Final = struct.Struct(">c8sQ")
_NONCE_BYTES: Final = 12


class SealError(ValueError):
    """A blob that does not open: ``reason`` says why in words a client may read (never what it held)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"agent-gateway " + purpose).derive(secret)


class Sealer:
    """Seals text for one owner (a client key's ``owner``) until ``ttl`` seconds from now; opens it again."""

    def __init__(self, secrets_: Sequence[bytes], ttl: float, clock: Callable[[], float] = time.time) -> None:
        if not secrets_:
            raise ValueError("a sealer needs at least one secret")
        self._keys = {_derive(s, b"key id v1")[:8]: AESGCM(_derive(s, b"sealed content v1")) for s in secrets_}
        self._sealing = _derive(secrets_[0], b"key id v1")[:8]
        self._ttl = ttl
        self._clock = clock

    def seal(self, owner: str, text: str) -> str:
        expires = int(self._clock() + self._ttl)
        header = _HEADER.pack(_VERSION, self._sealing, expires)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._keys[self._sealing].encrypt(nonce, text.encode(), header + owner.encode())
        return base64.urlsafe_b64encode(header + nonce + sealed).decode("ascii")

    def open(self, owner: str, blob: str) -> str:
        """The text sealed in ``blob`` for ``owner``; a ``SealError`` for anything else."""
        try:
            raw = base64.urlsafe_b64decode(blob.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, ValueError):
            raise SealError("it is not an encrypted_content this gateway issued") from None
        if len(raw) < _HEADER.size + _NONCE_BYTES + 16 or raw[:1] != _VERSION:
            raise SealError("it is not an encrypted_content this gateway issued")
        body = _HEADER.size + _NONCE_BYTES
        header, nonce, sealed = raw[: _HEADER.size], raw[_HEADER.size : body], raw[body:]
        _, key_id, expires = _HEADER.unpack(header)
        key = self._keys.get(key_id)
        if key is None:
            raise SealError("it was sealed with a secret this gateway does not hold")
        try:
            text = key.decrypt(nonce, sealed, header + owner.encode())
        except InvalidTag:
            raise SealError("it was altered, or issued to another API key") from None
        if expires <= self._clock():
            raise SealError("it has expired")
        return text.decode()


def secrets_of(server: ServerConfig, env: Mapping[str, str]) -> list[bytes]:
    """The configured secrets, the sealing one first (``server.secret``, else ``GATEWAY_SECRET``); empty if none."""
    first = server.secret.get_secret_value() if server.secret is not None else env.get(SECRET_VARIABLE, "")
    rest = [secret.get_secret_value() for secret in server.previous_secrets]
    return [secret.encode() for secret in ([first] if first else []) + rest]


def process_secret() -> bytes:
    """A secret of this process alone, for a gateway given none: sealed blobs open only in this process."""
    return secrets.token_bytes(32)
