"""Where batchexports keeps its state on disk, and the secret key it generates there.

Everything the embedded service writes (metadata database, events store, Temporal state,
exported files, the generated secret key) lives under one data directory so that a laptop
install is one folder to back up or delete.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_KEY_FILE = "secret_key"


def data_dir() -> Path:
    return Path(os.environ.get("BATCHEXPORTS_DATA_DIR", ".batchexports")).expanduser().resolve()


def export_dir() -> Path:
    configured = os.environ.get("BATCHEXPORTS_EXPORT_DIR")
    return Path(configured).expanduser().resolve() if configured else data_dir() / "exports"


def secret_key() -> str:
    """`BATCHEXPORTS_SECRET_KEY`, or a key generated once into the data directory.

    Losing this key makes encrypted destination secrets unreadable, hence it is written
    with owner-only permissions next to the database it protects.
    """
    configured = os.environ.get("BATCHEXPORTS_SECRET_KEY")
    if configured:
        return configured
    path = data_dir() / SECRET_KEY_FILE
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
