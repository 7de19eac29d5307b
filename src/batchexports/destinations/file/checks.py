"""The test steps of the local-folder destination: the folder can be made, a file written and removed.

They resolve the configured path under the export directory exactly as the sink will, and
refuse to follow a symlink out of it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchexports import datadir
from batchexports.destinations.testing import DestinationCheckFailed, TestStep


def resolve_folder(config: Mapping[str, Any], root: Path | None = None) -> Path:
    """The absolute folder a File destination writes into; never outside the export directory."""
    base = (root or datadir.export_dir()).resolve()
    folder = (base / str(config["path"])).resolve()
    if folder != base and base not in folder.parents:
        raise DestinationCheckFailed(
            f"The folder '{config['path']}' resolves outside the export directory (a symlink?); "
            "choose a folder inside it."
        )
    return folder


def _check_folder(config: Mapping[str, Any]) -> None:
    folder = resolve_folder(config)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise DestinationCheckFailed(
            f"Permission denied creating the folder '{config['path']}' in the export directory; "
            "give the service's user write access to it."
        ) from None
    except (FileExistsError, NotADirectoryError):
        raise DestinationCheckFailed(
            f"'{config['path']}' (or a part of it) exists in the export directory and is not a folder."
        ) from None


def _check_write(config: Mapping[str, Any]) -> None:
    folder = resolve_folder(config)
    if not folder.is_dir():
        raise DestinationCheckFailed(f"The folder '{config['path']}' does not exist yet; run the first step.")
    name = f".batchexports-test-{uuid.uuid4().hex}"
    temporary, final = folder / (name + ".tmp"), folder / name
    payload = b"batchexports destination test\n"
    try:
        temporary.write_bytes(payload)
        os.replace(temporary, final)  # the sink publishes files the same way: write, then rename
        if final.read_bytes() != payload:
            raise DestinationCheckFailed(f"A file written to '{config['path']}' read back different content.")
    except PermissionError:
        raise DestinationCheckFailed(
            f"Permission denied writing a file in '{config['path']}'; give the service's user write access."
        ) from None
    except OSError as error:
        raise DestinationCheckFailed(f"Could not write a file in '{config['path']}': {error.strerror}.") from None
    finally:
        for leftover in (temporary, final):
            leftover.unlink(missing_ok=True)


STEPS = (
    TestStep(
        name="Create the folder",
        description="Make sure the folder exists under the export directory, creating it if needed.",
        check=_check_folder,
    ),
    TestStep(
        name="Write and delete a test file",
        description="Write a small file into the folder, read it back, and delete it.",
        check=_check_write,
    ),
)
