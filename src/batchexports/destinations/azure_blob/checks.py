"""The test steps of the Azure Blob destination: the container is reachable, and a blob can be
written, read back, listed and deleted under the configured prefix.

Each step opens its own client from the connection string (steps run independently) and turns
every failure into a `DestinationCheckFailed` whose message says what to fix; the messages come
from the object store's error classification and never contain the connection string, its
account key or its SAS token.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from batchexports.core.errors import DestinationError
from batchexports.destinations.testing import DestinationCheckFailed, TestStep

if TYPE_CHECKING:
    from batchexports.destinations.azure_blob.store import AzureBlobObjectStore

PAYLOAD = b"batchexports destination test\n"


@contextlib.contextmanager
def _store(config: Mapping[str, Any]) -> Iterator[AzureBlobObjectStore]:
    from batchexports.destinations.azure_blob.store import AzureBlobObjectStore  # the Azure SDK, only when used

    try:
        store = AzureBlobObjectStore(config)
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    try:
        yield store
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    finally:
        store.close()


def probe_blob_key(config: Mapping[str, Any], now: dt.datetime | None = None) -> str:
    """Where the write step puts its blob: under the prefix as a run ending `now` renders it."""
    from batchexports.core.run import ExportRun
    from batchexports.destinations.files import keys

    moment = now or dt.datetime.now(dt.UTC)
    run = ExportRun("test", 0, "events", "AzureBlob", {}, None, moment)
    try:
        folder = keys.render_prefix(str(config.get("prefix") or ""), run)
    except keys.InvalidPrefix as error:
        raise DestinationCheckFailed(str(error)) from None
    return keys.join_key(folder, f".batchexports-test-{uuid.uuid4().hex}")


def _check_container(config: Mapping[str, Any]) -> None:
    with _store(config) as store:
        store.check_container()


def _check_write(config: Mapping[str, Any]) -> None:
    key = probe_blob_key(config)
    with _store(config) as store:
        written = False
        try:
            store.put(key, PAYLOAD)
            written = True
            if store.read(key) != PAYLOAD:
                raise DestinationCheckFailed(f"The test blob '{key}' read back different content than was written.")
            if key not in store.list_keys(key):
                raise DestinationCheckFailed(
                    f"The test blob '{key}' was written but does not appear when listing the container; "
                    "the connection string needs the list permission."
                )
            store.delete([key])
            written = False
            if key in store.list_keys(key):
                raise DestinationCheckFailed(f"The test blob '{key}' is still listed after deleting it.")
        finally:
            if written:
                with contextlib.suppress(Exception):
                    store.delete([key])


STEPS = (
    TestStep(
        name="Connect to the container",
        description="Connect to the storage account with the connection string and make sure the container exists.",
        check=_check_container,
    ),
    TestStep(
        name="Write and delete a test blob",
        description="Upload a small blob under the prefix, read it back, list it, and delete it.",
        check=_check_write,
    ),
)
