"""bench.archive_codec_bench prices real archive rows: the ingest stage's output, written per codec and read back."""

from __future__ import annotations

from pathlib import Path

from bench.archive_codec_bench import CODECS, archive_rows, price


def test_archive_rows_come_from_the_ingest_stage_and_every_codec_writes_what_reads_back(tmp_path: Path) -> None:
    rows = archive_rows(4, 40, tmp_path)
    assert len(rows) == 40 and all(r["record_type"] == "claim" and r["sealed"] and r["payload"] for r in rows)
    priced = {codec: price(rows, codec) for codec in CODECS}  # price() asserts the file reads back as written
    assert priced["zstandard"]["bytes_per_record"] < priced["null"]["bytes_per_record"]
    assert priced["deflate"]["bytes_per_record"] < priced["null"]["bytes_per_record"]
