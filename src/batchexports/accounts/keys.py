"""Generating and hashing API keys.

Personal API keys (`phx_…`) are shown once and stored as a SHA-256 digest: they are long
random strings, so a fast unsalted hash is as safe as a slow one and lets us look a key
up by its digest. Project API keys (`phc_…`) identify a project to the capture endpoints
and are public by design (they ship inside web pages), so they are stored as they are.
"""

from __future__ import annotations

import hashlib
import secrets

PERSONAL_API_KEY_PREFIX = "phx_"
PROJECT_API_KEY_PREFIX = "phc_"


def generate_personal_api_key() -> str:
    return PERSONAL_API_KEY_PREFIX + secrets.token_urlsafe(32)


def generate_project_api_key() -> str:
    return PROJECT_API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(value: str) -> str:
    return "sha256$" + hashlib.sha256(value.encode()).hexdigest()


def mask_key(value: str) -> str:
    """A recognisable but useless form of a key, for listings: `phx_…a1b2`."""
    return f"{value[:4]}...{value[-4:]}"
