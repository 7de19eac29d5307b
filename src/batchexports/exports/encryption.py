"""Encryption at rest of destination secrets (Fernet, keyed from BATCHEXPORTS_SECRET_KEY).

Several keys may be configured to rotate: the first encrypts, every key can decrypt.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from rest_framework.exceptions import APIException


def _fernet_key(secret: str) -> bytes:
    # Any string may be configured; Fernet needs 32 url-safe base64 bytes.
    return base64.urlsafe_b64encode(hashlib.sha256(("fernet:" + secret).encode()).digest())


@cache
def _cipher(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(_fernet_key(key)) for key in keys])


def cipher() -> MultiFernet:
    return _cipher(tuple(settings.BATCHEXPORTS_SECRET_KEYS))


class SecretsUnreadable(APIException):
    """Stored secrets cannot be decrypted with the configured keys: an operator's mistake, said plainly."""

    status_code = 500
    default_code = "secrets_unreadable"


def encrypt_json(value: dict[str, Any]) -> str:
    if not value:
        return ""
    return cipher().encrypt(json.dumps(value, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        return json.loads(cipher().decrypt(token.encode()))
    except InvalidToken:
        raise SecretsUnreadable(
            "Destination secrets cannot be decrypted: BATCHEXPORTS_SECRET_KEY differs from the key they were "
            "saved with. Restore the old key (you may list it after the new one, comma-separated)."
        ) from None
