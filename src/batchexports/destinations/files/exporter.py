"""Exporting record batches as files: format, compression, size-based parts, manifest, stale parts.

The manifest (written when files are split in parts, as PostHog does) lists the parts and the
receipt of the rows written.

Keys are deterministic (see `keys.py`), so exporting the same interval again replaces the same
objects; after a successful export, the files of this interval and format that it did not write are
deleted: the extra parts of an earlier and longer attempt, and what an earlier run wrote under
batchexports' older names. A re-run therefore never duplicates rows.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from batchexports.core.receipts import ReceiptTally
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.files import keys, leftovers
from batchexports.destinations.files.object_store import ObjectStore, ObjectWriter
from batchexports.destinations.files.writers import FormatWriter, open_writer


@dataclass(frozen=True)
class FileSettings:
    prefix: str
    file_format: str
    compression: str | None
    max_file_size_mb: int | None
    legacy_parquet_extension: bool = False

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FileSettings:
        return cls(
            prefix=config.get("prefix") or "",
            file_format=config.get("file_format") or "JSONLines",
            compression=config.get("compression") or None,
            max_file_size_mb=config.get("max_file_size_mb") or None,
            # Only an explicit true: a config stored before the field existed wrote `.parquet`.
            legacy_parquet_extension=config.get("legacy_parquet_extension") is True,
        )


@dataclass(frozen=True)
class FilesWritten:
    keys: tuple[str, ...]
    urls: tuple[str, ...]
    bytes_written: int
    records: int


class _Part:
    def __init__(self, store: ObjectStore, key: str, settings: FileSettings, schema: pa.Schema):
        self.key = key
        self.object: ObjectWriter = store.open(key)
        self.writer: FormatWriter = open_writer(settings.file_format, self.object, schema, settings.compression)

    def finish(self) -> int:
        self.writer.close()
        self.object.commit()
        return self.writer.bytes_written

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the object is discarded anyway
            self.writer.close()
        self.object.abort()


def export_files(
    store: ObjectStore,
    run: ExportRun,
    settings: FileSettings,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
) -> FilesWritten:
    folder = keys.render_prefix(settings.prefix, run)
    split = settings.max_file_size_mb is not None
    limit = (settings.max_file_size_mb or 0) * 1024 * 1024
    written: list[str] = []
    total_bytes = records = 0
    state = Progress()

    def key_of(part: int | None) -> str:
        name = keys.file_name(run, settings.file_format, settings.compression, part, settings.legacy_parquet_extension)
        return keys.join_key(folder, name)

    leftovers.clean_interval(
        store, keys.join_key(folder, keys.base_name(run))
    )  # issue 12: earlier attempts' temp files
    # The manifest carries the receipt of the rows written (`core/receipts.py`), for a reader to check.
    tally = ReceiptTally(run.model) if split else None
    if tally is not None:
        batches = tally.counting(batches)
    part: _Part | None = _Part(store, key_of(0 if split else None), settings, schema)
    try:
        for batch in batches:
            if cancel:
                cancel.raise_if_cancelled()
            if part is None:  # the previous part filled up: open the next one only when rows come
                part = _Part(store, key_of(len(written)), settings, schema)
            part.writer.write(batch)
            records += batch.num_rows
            if split and part.writer.bytes_written >= limit:
                total_bytes += part.finish()
                written.append(part.key)
                part = None
            if progress:
                state.records_completed = records
                state.bytes_exported = total_bytes + (part.writer.bytes_written if part else 0)
                state.files = list(written)
                progress(state)
        if cancel:
            cancel.raise_if_cancelled()
        if part is not None:
            total_bytes += part.finish()
            written.append(part.key)
    except BaseException:
        if part is not None:
            part.abort()
        raise
    finally:
        if tally is not None:
            tally.close()
    if tally is not None:
        manifest_key = keys.join_key(folder, keys.manifest_name(run))
        manifest: dict[str, Any] = {"files": written}  # PostHog's shape: the full keys
        if tally.receipt is not None:
            manifest["receipt"] = tally.receipt.as_dict()  # ours: PostHog's readers look at "files" only
        store.put(manifest_key, json.dumps(manifest).encode())
        written_with_manifest = [*written, manifest_key]
    else:
        written_with_manifest = list(written)
    _remove_stale(store, folder, run, settings, set(written_with_manifest))
    if progress:
        state.records_completed, state.bytes_exported, state.files = records, total_bytes, list(written)
        progress(state)
    return FilesWritten(tuple(written), tuple(store.url(k) for k in written), total_bytes, records)


def _remove_stale(store: ObjectStore, folder: str, run: ExportRun, settings: FileSettings, kept: set[str]) -> None:
    """Delete this interval's files of this format that this export did not write: the parts of an
    earlier, longer attempt, and what an earlier run wrote under batchexports' older names, in the
    folder the prefix rendered to then (`keys.legacy_*`). Files of other formats are left alone
    (another export may own them)."""
    legacy_folder = keys.legacy_render_prefix(settings.prefix, run)
    wanted = {
        folder: (
            [keys.base_name(run), keys.legacy_base_name(run)],
            [keys.manifest_name(run), keys.legacy_manifest_name(run)],
        )
    }
    if legacy_folder.strip("/") != folder.strip("/"):
        wanted[legacy_folder] = ([keys.legacy_base_name(run)], [keys.legacy_manifest_name(run)])
    extension = re.escape(keys.EXTENSIONS[settings.file_format])
    stale: list[str] = []
    for where, (names, manifests) in wanted.items():
        bases = [keys.join_key(where, name) for name in names]
        manifest_keys = [keys.join_key(where, name) for name in manifests]
        own = re.compile(
            "(?:" + "|".join(map(re.escape, bases)) + r")(?:-\d+)?\." + extension + r"(?:\.[a-z0-9]+)?$"
            + "|(?:" + "|".join(map(re.escape, manifest_keys)) + ")$"
        )  # fmt: skip
        # Character by character on purpose: one key listing finds both namings.
        listed = os.path.commonprefix([*bases, *manifest_keys])  # noqa: RUF071
        stale.extend(key for key in store.list_keys(listed) if key not in kept and own.match(key))
    if stale:
        store.delete(stale)
