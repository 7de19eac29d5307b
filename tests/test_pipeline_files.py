"""Specification of the export pipeline into files, through the local-folder (File) destination."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from batchexports.core.run import Cancelled, CancelToken, Progress
from batchexports.destinations.files import keys
from batchexports.destinations.files.formats import FILE_FORMATS
from batchexports.pipeline.export import export
from tests.exports_fixtures import (
    HOUR,
    T0,
    decode_rows,
    expected_rows,
    exported_rows,
    file_run,
    known_events,
    store_with,
)

# PostHog's name of the interval [T0, T0 + 1h): `isoformat()` of both bounds.
BASE = "2024-05-01T10:00:00+00:00-2024-05-01T11:00:00+00:00"
OLD_BASE = "2024-05-01T10:00:00-2024-05-01T11:00:00"  # batchexports' name before
FORMAT_PAIRS = [(fmt, codec) for fmt, codecs in FILE_FORMATS.items() for codec in (None, *codecs)]


@pytest.fixture
def export_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))
    return folder


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize(("file_format", "compression"), FORMAT_PAIRS)
def test_every_format_and_compression_round_trips_row_by_row(tmp_path, export_dir, file_format, compression):
    source = known_events(500)
    store = store_with(tmp_path, source)
    config = {"path": "acme", "file_format": file_format, "compression": compression}
    result = export(file_run(config), store)
    (written,) = files_under(export_dir)
    assert result.records_completed == 500
    assert result.records_total_count == 500
    assert result.bytes_exported == written.stat().st_size
    assert result.files == (str(written),)
    assert exported_rows(decode_rows(written.read_bytes(), file_format, compression)) == expected_rows(source)


def test_jsonlines_nests_json_columns_and_writes_iso_timestamps(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(3))
    export(file_run({"path": "p", "file_format": "JSONLines"}), store)
    (written,) = files_under(export_dir)
    first = json.loads(written.read_text().splitlines()[0])
    assert isinstance(first["properties"], dict)
    assert first["timestamp"] == "2024-05-01T10:00:00.000000Z"
    assert list(first) == [
        "uuid", "team_id", "timestamp", "_inserted_at", "created_at", "event", "properties", "distinct_id",
        "elements_chain", "person_id", "person_properties", "set", "set_once",
    ]  # fmt: skip


def test_parquet_keeps_typed_columns(tmp_path, export_dir):
    import pyarrow as pa
    import pyarrow.parquet as pq

    store = store_with(tmp_path, known_events(3))
    export(file_run({"path": "p", "file_format": "Parquet", "compression": "zstd"}), store)
    (written,) = files_under(export_dir)
    schema = pq.read_schema(written)
    assert schema.field("timestamp").type == pa.timestamp("us", tz="UTC")
    assert schema.field("team_id").type == pa.int64()
    assert schema.field("properties").type == pa.string()
    assert pq.ParquetFile(written).metadata.row_group(0).column(0).compression == "ZSTD"


def test_keys_render_the_prefix_template_and_name_the_interval(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(10))
    prefix = "{table}/{year}-{month}-{day}/{hour}h{minute}m{second}s/{data_interval_start}"
    export(file_run({"path": "acme", "prefix": prefix, "file_format": "JSONLines", "compression": "gzip"}), store)
    (written,) = files_under(export_dir)
    assert written.relative_to(export_dir).as_posix() == (
        "acme/events/2024-05-01/11h00m00s/2024-05-01T10:00:00+00:00/"
        "2024-05-01T10:00:00+00:00-2024-05-01T11:00:00+00:00.jsonl.gz"
    ), "PostHog's names: date fields of the interval's end, bounds in ISO 8601 with the offset"


def test_unknown_placeholders_in_a_prefix_are_refused():
    with pytest.raises(keys.InvalidPrefix, match=r"\{week\}"):
        keys.check_prefix("{week}/x")


def test_max_file_size_splits_into_parts_and_writes_a_manifest(tmp_path, export_dir):
    source = known_events(20_000)
    store = store_with(tmp_path, source)
    config = {"path": "p", "file_format": "JSONLines", "max_file_size_mb": 1}
    result = export(file_run(config), store, batch_rows=1000)
    parts = [p for p in files_under(export_dir) if not p.name.endswith("manifest.json")]
    manifest = export_dir / "p" / f"{BASE}_manifest.json"
    assert len(parts) >= 3
    assert [p.name for p in parts] == [f"{BASE}-{n}.jsonl" for n in range(len(parts))]
    written = json.loads(manifest.read_text())
    assert written["files"] == [p.name for p in parts], "the keys, prefix included"
    assert set(written) == {"files", "receipt"}  # PostHog's shape plus the receipt (test_receipts.py)
    rows = [row for part in parts for row in decode_rows(part.read_bytes(), "JSONLines", None)]
    assert exported_rows(rows) == expected_rows(source)
    assert all(part.stat().st_size <= 1024 * 1024 + 600_000 for part in parts), "a part ends after its batch"
    assert len(result.files) == len(parts)


def test_a_rerun_replaces_the_same_files_and_removes_the_extra_parts_of_a_longer_attempt(tmp_path, export_dir):
    source = known_events(20_000)
    store = store_with(tmp_path, source)
    config = {"path": "p", "file_format": "CSV", "max_file_size_mb": 1}
    export(file_run(config), store, batch_rows=500)
    before = files_under(export_dir)
    smaller = {**config, "max_file_size_mb": 4}  # the same rows now fit fewer parts
    export(file_run(smaller), store, batch_rows=500)
    after = files_under(export_dir)
    assert len(after) < len(before)
    parts = [p for p in after if p.suffix == ".csv"]
    rows = [row for part in parts for row in decode_rows(part.read_bytes(), "CSV", None)]
    assert exported_rows(rows) == expected_rows(source), "every row exactly once after the re-run"
    manifest = next(p for p in after if p.name.endswith("manifest.json"))
    assert json.loads(manifest.read_text())["files"] == [p.name for p in parts]


def test_a_rerun_of_a_single_file_export_overwrites_it(tmp_path, export_dir):
    source = known_events(100)
    store = store_with(tmp_path, source)
    config = {"path": "p", "file_format": "Parquet"}
    export(file_run(config), store)
    (first,) = files_under(export_dir)
    first_inode = first.stat().st_ino
    export(file_run(config), store)
    (second,) = files_under(export_dir)
    assert second == first and second.stat().st_ino != first_inode, "replaced by a rename, not appended"
    assert exported_rows(decode_rows(second.read_bytes(), "Parquet", None)) == expected_rows(source)


def test_files_of_another_format_in_the_same_folder_are_left_alone(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(10))
    export(file_run({"path": "p", "file_format": "Parquet"}), store)
    export(file_run({"path": "p", "file_format": "CSV"}), store)
    assert sorted(p.suffix for p in files_under(export_dir)) == [".csv", ".parquet"]


def test_zero_rows_touch_nothing(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(10))
    result = export(file_run({"path": "p"}, start=T0 + 5 * HOUR), store)
    assert (result.records_completed, result.bytes_exported, result.files) == (0, 0, ())
    assert not export_dir.exists()


def test_only_the_interval_and_the_chosen_events_are_exported(tmp_path, export_dir):
    inside, outside = known_events(30), known_events(30, start=T0 + HOUR, seed=2)
    store = store_with(tmp_path, inside, outside)
    result = export(file_run({"path": "p", "include_events": ["$pageview"]}), store)
    (written,) = files_under(export_dir)
    rows = decode_rows(written.read_bytes(), "JSONLines", None)
    assert {r["uuid"] for r in rows} == {r["uuid"] for r in inside.to_pylist() if r["event"] == "$pageview"}
    assert result.records_total_count == result.records_completed == len(rows)


def test_progress_is_reported_as_batches_go(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(5000))
    seen: list[tuple[int, int]] = []

    def progress(state: Progress) -> None:
        seen.append((state.records_completed, state.bytes_exported))

    export(file_run({"path": "p"}), store, progress=progress, batch_rows=1000)
    assert [records for records, _ in seen[:5]] == [1000, 2000, 3000, 4000, 5000]
    assert seen[-1][0] == 5000 and seen[-1][1] == files_under(export_dir)[0].stat().st_size
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))


def test_cancellation_stops_between_batches_and_leaves_no_file(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(5000))
    token = CancelToken()

    def cancel_after_two_batches(state: Progress) -> None:
        if state.records_completed >= 2000:
            token.cancel()

    with pytest.raises(Cancelled):
        export(file_run({"path": "p"}), store, progress=cancel_after_two_batches, cancel=token, batch_rows=1000)
    assert files_under(export_dir) == [], "the partial file is discarded, not published"


def test_a_failed_export_leaves_no_partial_file(tmp_path, export_dir, monkeypatch):
    store = store_with(tmp_path, known_events(3000))
    from batchexports.destinations.files import writers

    original = writers.JSONLinesWriter.write
    calls = {"n": 0}

    def failing(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full")
        original(self, batch)

    monkeypatch.setattr(writers.JSONLinesWriter, "write", failing)
    with pytest.raises(OSError, match="disk full"):
        export(file_run({"path": "p"}), store, batch_rows=1000)
    assert files_under(export_dir) == []
    assert not any(name.startswith(".") for _, _, names in os.walk(export_dir) for name in names)


def test_persons_and_sessions_models_export_too(tmp_path, export_dir):
    from batchexports.events.normalize import normalize_event

    store = store_with(tmp_path)
    store.capture(
        3,
        [
            normalize_event(
                {"event": "$pageview", "distinct_id": "u", "properties": {"$session_id": "s", "$set": {"a": 1}}},
                now=dt.datetime.now(dt.UTC),
            )
        ],
    )
    now = dt.datetime.now(dt.UTC)  # the interval has ended: a run does not read one still open
    for model in ("persons", "sessions"):
        config = {"path": "p", "prefix": "{table}", "file_format": "JSONLines"}
        result = export(file_run(config, start=now - HOUR, end=now, model=model), store)
        assert result.records_completed == 1
    persons = json.loads((next((export_dir / "p" / "persons").iterdir())).read_text())
    sessions = json.loads((next((export_dir / "p" / "sessions").iterdir())).read_text())
    assert persons["properties"] == {"a": 1} and persons["distinct_id"] == "u"
    assert sessions["session_id"] == "s" and sessions["pageview_count"] == 1


# -- names as PostHog names them -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("file_format", "compression", "legacy", "name"),
    [  # PostHog's table (products/batch_exports/backend/tests/.../test_utils.py), plus CSV
        ("JSONLines", None, False, f"{BASE}.jsonl"),
        ("JSONLines", "gzip", False, f"{BASE}.jsonl.gz"),
        ("JSONLines", "brotli", True, f"{BASE}.jsonl.br"),
        ("JSONLines", "zstd", False, f"{BASE}.jsonl.zst"),
        ("Parquet", None, True, f"{BASE}.parquet"),
        ("Parquet", "zstd", False, f"{BASE}.parquet"),
        ("Parquet", "zstd", True, f"{BASE}.parquet.zst"),
        ("Parquet", "snappy", True, f"{BASE}.parquet.sz"),
        ("Parquet", "lz4", True, f"{BASE}.parquet.lz4"),
        ("Parquet", "gzip", True, f"{BASE}.parquet.gz"),
        ("CSV", "gzip", False, f"{BASE}.csv.gz"),
    ],
)
def test_file_names_carry_the_codec_as_posthog_names_them(tmp_path, export_dir, file_format, compression, legacy, name):
    store = store_with(tmp_path, known_events(5))
    config = {"path": "p", "file_format": file_format, "compression": compression, "legacy_parquet_extension": legacy}
    export(file_run(config), store)
    (written,) = files_under(export_dir)
    assert written.name == name
    assert exported_rows(decode_rows(written.read_bytes(), file_format, compression)) == expected_rows(known_events(5))


def test_the_prefix_date_comes_from_the_end_of_the_interval(tmp_path, export_dir):
    """An interval ending at midnight belongs to the next day's folder, as in PostHog."""
    start = dt.datetime(2024, 5, 1, 23, 0, tzinfo=dt.UTC)
    store = store_with(tmp_path, known_events(5, start=start))
    export(file_run({"path": "p", "prefix": "{year}/{month}/{day}/{hour}"}, start=start), store)
    (written,) = files_under(export_dir)
    assert written.relative_to(export_dir).as_posix() == (
        "p/2024/05/02/00/2024-05-01T23:00:00+00:00-2024-05-02T00:00:00+00:00.jsonl"
    )


def test_keys_of_an_interval_without_a_start_say_start():
    run = file_run({}, start=None, end=T0)  # type: ignore[arg-type]
    assert keys.render_prefix("{data_interval_start}/{data_interval_end}", run) == "START/2024-05-01T10:00:00+00:00"
    assert keys.manifest_name(run) == "START-2024-05-01T10:00:00+00:00_manifest.json"


def write_old_files(export_dir: Path, folder: str, names: list[str]) -> list[Path]:
    """Files as batchexports named them before (what a re-run must replace)."""
    paths = [export_dir / folder / name for name in names]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b'{"old": true}\n')
    return paths


def test_a_rerun_removes_the_files_an_earlier_run_wrote_under_the_old_names(tmp_path, export_dir):
    source = known_events(20_000)
    store = store_with(tmp_path, source)
    old = write_old_files(
        export_dir,
        "p",
        [*(f"{OLD_BASE}-{n}.jsonl" for n in range(6)), f"{OLD_BASE}.manifest.json", f"{OLD_BASE}.jsonl"],
    )
    kept = write_old_files(export_dir, "p", [f"{OLD_BASE}.parquet", "2024-05-01T11:00:00-2024-05-01T12:00:00.jsonl"])
    export(file_run({"path": "p", "file_format": "JSONLines", "max_file_size_mb": 1}), store, batch_rows=1000)
    assert not any(path.exists() for path in old), "no row is left twice"
    assert all(path.exists() for path in kept), "another format and another interval are left alone"
    parts = [p for p in files_under(export_dir / "p") if p.name.startswith(BASE) and p.suffix == ".jsonl"]
    rows = [row for part in parts for row in decode_rows(part.read_bytes(), "JSONLines", None)]
    assert exported_rows(rows) == expected_rows(source)
    assert (export_dir / "p" / f"{BASE}_manifest.json").exists()


def test_a_rerun_removes_old_files_from_the_folder_the_start_of_the_interval_named(tmp_path, export_dir):
    """Before, `{hour}` came from the interval's start: an old run of 10:00-11:00 wrote into `10/`;
    the re-run writes into `11/` and removes the old file from `10/`."""
    store = store_with(tmp_path, known_events(10))
    (old,) = write_old_files(export_dir, "p/10", [f"{OLD_BASE}.jsonl.gz"])
    (other,) = write_old_files(export_dir, "p/10", ["2024-05-01T09:00:00-2024-05-01T10:00:00.jsonl.gz"])
    export(file_run({"path": "p", "prefix": "{hour}", "compression": "gzip"}), store)
    assert not old.exists() and other.exists()
    assert [p.relative_to(export_dir).as_posix() for p in files_under(export_dir / "p" / "11")] == [
        f"p/11/{BASE}.jsonl.gz"
    ]


def test_switching_to_the_legacy_parquet_extension_replaces_the_file(tmp_path, export_dir):
    store = store_with(tmp_path, known_events(10))
    config = {"path": "p", "file_format": "Parquet", "compression": "zstd"}
    export(file_run(config), store)
    export(file_run({**config, "legacy_parquet_extension": True}), store)
    assert [p.name for p in files_under(export_dir)] == [f"{BASE}.parquet.zst"]
