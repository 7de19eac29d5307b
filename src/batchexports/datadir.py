"""Where batchexports keeps its state on disk, and the secret key it generates there.

Everything the embedded service writes (metadata database, events store, Temporal state,
exported files, the generated secret key) lives under one data directory so that a laptop
install is one folder to back up or delete. One process at a time owns it (`DataDirLock`): the
DuckDB file and the embedded Temporal server's state cannot be shared.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

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


# -- one instance per data directory ----------------------------------------------------------

LOCK_FILE = "batchexports.lock"
HOLDER_READ_WAIT = 1.0  # a holder writes its details just after it takes the lock


class DataDirBusy(Exception):
    """Another live process holds the data directory's lock; `holder` is what it wrote there."""

    def __init__(self, directory: Path, holder: dict[str, Any]) -> None:
        self.directory = directory
        self.holder = holder
        pid = holder.get("pid", "unknown")
        what = holder.get("command") or "batchexports"
        url = f", serving {holder['url']}" if holder.get("url") else ""
        since = f", since {holder['started_at']}" if holder.get("started_at") else ""
        super().__init__(
            f"the data directory {directory} is in use by another process: "
            f"pid {pid} (`batchexports {what}`{url}{since}). Stop that one first (Ctrl-C in its terminal, "
            f"or `kill {pid}`), or give this one a data directory of its own with BATCHEXPORTS_DATA_DIR."
        )


class DataDirLock:
    """An exclusive `flock` on `<data dir>/batchexports.lock`, held for the life of the process.

    The OS releases it when the process dies, however it dies, so a crash never leaves a stale
    lock. The file holds the holder's pid, command, URL and Temporal worker identity: a second
    process reads them to say who holds the directory, and the next holder reads them to know
    which worker's unfinished activities it may take over (that worker is dead: its lock is gone).
    """

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or data_dir()
        self.path = self.directory / LOCK_FILE
        self.previous: dict[str, Any] = {}  # what the last holder wrote (it is gone now)
        self._fd: int | None = None

    def acquire(self, command: str, url: str | None = None, worker_identity: str | None = None) -> DataDirLock:
        """Take the lock at once or raise DataDirBusy; never waits for the holder."""
        self.directory.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read_holder(fd)
                os.close(fd)
                raise DataDirBusy(self.directory, holder) from None
            # Locked; but if the file was replaced meanwhile (deleted by hand), the lock guards
            # nothing anyone else would find: start over on the file that is there now.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        self._fd = fd
        self.previous = _parse(_read_all(fd))
        info = {
            "pid": os.getpid(),
            "command": command,
            "url": url,
            "worker_identity": worker_identity,
            "started_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        return self

    @staticmethod
    def _read_holder(fd: int) -> dict[str, Any]:
        deadline = time.monotonic() + HOLDER_READ_WAIT
        while True:
            holder = _parse(_read_all(fd))
            if holder or time.monotonic() >= deadline:
                return holder
            time.sleep(0.05)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _read_all(fd: int) -> bytes:
    return os.pread(fd, 64 * 1024, 0)


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
