"""Standard Webhooks signatures (https://www.standardwebhooks.com).

A secret is ``whsec_`` + base64 of random bytes (the HMAC key). Each request carries
``webhook-id`` (the message's id, the same on every attempt, so a receiver can drop
repeats), ``webhook-timestamp`` (unix seconds of this attempt) and ``webhook-signature``:
``v1,`` + base64 of HMAC-SHA256 over ``{id}.{timestamp}.{body}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from typing import Final

SECRET_PREFIX: Final = "whsec_"
SECRET_BYTES: Final = 24
"""Random bytes of a new secret (the spec asks for 24 to 64)."""


def new_signing_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def check_signing_secret(secret: str) -> None:
    """Raises ValueError unless ``secret`` is ``whsec_`` + base64 of 24 to 64 bytes."""
    if len(_key_of(secret)) not in range(SECRET_BYTES, 65):
        raise ValueError(f"a webhook secret holds {SECRET_BYTES} to 64 bytes")


def signature(secret: str, message_id: str, timestamp_s: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp_s}.".encode() + body
    digest = hmac.new(_key_of(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, message_id: str, timestamp_s: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp_s),
        "webhook-signature": signature(secret, message_id, timestamp_s, body),
    }


def _key_of(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret starts with {SECRET_PREFIX!r}")
    try:
        return base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None
