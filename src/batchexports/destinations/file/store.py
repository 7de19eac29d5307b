"""The local-folder object store: files under BATCHEXPORTS_EXPORT_DIR, published atomically.

A file is written under a temporary name in its final folder and renamed into place on
commit, so readers never see a partial file and a re-run replaces the old file in one step.

The writer holds an exclusive `flock` on its temporary file while it writes; the kernel releases it
when the process dies, even by SIGKILL. So `remove_leftovers()` can tell a temporary file of a
dead writer (unlocked) from one being written (locked) exactly, and deletes only the former.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import logging
import os
import re
import uuid
from pathlib import Path

from batchexports.core.errors import NonRetryableError

logger = logging.getLogger(__name__)

# `.{final name}.{32 hex}.tmp`: the temporary files of LocalFileWriter, and nothing else.
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{32}\.tmp$")


class LocalFileWriter:
    def __init__(self, path: Path):
        self.path = path
        self.temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        self._file = open(self.temporary, "wb")  # noqa: SIM115 - closed in commit/abort
        # Locked until closed: `remove_leftovers` deletes only temporary files nobody holds.
        fcntl.flock(self._file.fileno(), fcntl.LOCK_EX)

    def write(self, data: bytes | memoryview) -> int:
        return self._file.write(data)

    def commit(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.temporary, self.path)

    def abort(self) -> None:
        self._file.close()
        self.temporary.unlink(missing_ok=True)


class LocalFolderStore:
    def __init__(self, root: Path):
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise NonRetryableError(f"The file '{key}' would be written outside the export folder; fix the prefix.")
        return path

    def open(self, key: str) -> LocalFileWriter:
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            return LocalFileWriter(path)
        except PermissionError:
            raise NonRetryableError(
                f"Permission denied writing '{key}' in the export folder; give the service's user write access."
            ) from None
        except (FileExistsError, NotADirectoryError):
            raise NonRetryableError(
                f"A file stands where a folder of '{key}' should be, in the export folder; move it or change the path."
            ) from None

    def put(self, key: str, data: bytes) -> None:
        writer = self.open(key)
        writer.write(data)
        writer.commit()

    def list_keys(self, prefix: str) -> list[str]:
        base = self._path(prefix) if prefix else self.root
        folder = base if prefix.endswith("/") or not prefix else base.parent
        if not folder.is_dir():
            return []
        found = []
        for path in folder.iterdir():
            key = path.relative_to(self.root).as_posix()
            if path.is_file() and key.startswith(prefix) and not path.name.startswith("."):
                found.append(key)
        return sorted(found)

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def url(self, key: str) -> str:
        return str(self._path(key))

    def remove_leftovers(self, prefix: str, started_before: dt.datetime | None = None) -> list[str]:
        """Delete the temporary files of dead writers whose final key starts with `prefix`, in the
        prefix's folder and below; `started_before` is not needed (the lock tells). Returns their keys."""
        base = self._path(prefix) if prefix else self.root
        folder = base if prefix.endswith("/") or not prefix else base.parent
        if not folder.is_dir():
            return []
        removed = []
        for directory, _, names in os.walk(folder):
            for name in names:
                match = TEMPORARY.match(name)
                if match is None:
                    continue
                path = Path(directory) / name
                final_key = path.with_name(match["name"]).relative_to(self.root).as_posix()
                if final_key.startswith(prefix) and _unlink_if_unlocked(path):
                    removed.append(path.relative_to(self.root).as_posix())
        if removed:
            logger.info("removed %d temporary file(s) of interrupted runs under %s", len(removed), folder)
        return sorted(removed)


def _unlink_if_unlocked(path: Path) -> bool:
    try:
        with open(path, "rb") as held:
            try:
                fcntl.flock(held.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # a writer is alive and writing it
            path.unlink(missing_ok=True)
            return True
    except FileNotFoundError:
        return False
