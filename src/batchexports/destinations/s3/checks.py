"""The test steps of the S3 destination: the bucket answers, and an object can be written, read and deleted.

Each step builds its own client from the config, exactly as the sink does (same credentials,
endpoint, addressing style and encryption), and turns the classified error of the store into
a `DestinationCheckFailed` whose message says what to fix; keys never appear in it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Mapping
from typing import Any

from batchexports.core.errors import DestinationError
from batchexports.destinations.testing import DestinationCheckFailed, TestStep

TEST_PAYLOAD = b"batchexports destination test\n"


def _store(config: Mapping[str, Any]) -> Any:
    from batchexports.destinations.s3.store import S3ObjectStore

    try:
        return S3ObjectStore(config)
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None


def probe_key(config: Mapping[str, Any], now: dt.datetime | None = None) -> str:
    """`{prefix}/.batchexports-test-<uuid>`, the prefix rendered as a run ending `now` would render it."""
    from batchexports.core.run import ExportRun
    from batchexports.destinations.files import keys

    end = now or dt.datetime.now(dt.UTC)
    run = ExportRun(
        batch_export_id="destination-test",
        team_id=0,
        model="events",
        destination_type="S3",
        destination_config={},
        data_interval_start=end - dt.timedelta(hours=1),
        data_interval_end=end,
    )
    try:
        folder = keys.render_prefix(str(config.get("prefix") or ""), run)
    except (keys.InvalidPrefix, ValueError, IndexError) as error:
        raise DestinationCheckFailed(f"The prefix cannot be rendered: {error}") from None
    return keys.join_key(folder, f".batchexports-test-{uuid.uuid4().hex}")


def _check_bucket(config: Mapping[str, Any]) -> None:
    try:
        _store(config).head_bucket()
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None


def _check_write(config: Mapping[str, Any]) -> None:
    store = _store(config)
    key = probe_key(config)
    written = False
    try:
        store.put(key, TEST_PAYLOAD)
        written = True
        if store.get(key) != TEST_PAYLOAD:
            raise DestinationCheckFailed(
                f"An object written to '{store.url(key)}' read back different content; "
                "check that the endpoint is an S3-compatible store."
            )
        store.delete([key])
        written = False
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    finally:
        if written:  # best effort: the step has failed already
            with contextlib.suppress(DestinationError):
                store.delete([key])


STEPS = (
    TestStep(
        name="Connect to the bucket",
        description="Check that the bucket exists and the credentials can reach it.",
        check=_check_bucket,
    ),
    TestStep(
        name="Write and delete a test object",
        description="Write a small object under the prefix (with the configured encryption), read it back, "
        "and delete it.",
        check=_check_write,
    ),
)
