"""The archive's compression codec priced per record: bytes stored and CPU spent, deflate against zstandard.

    python -m bench.archive_codec_bench [--records 3000] [--sizes 4,12]

The archive (connectors/archive.py) keeps every accepted record for seven years as Avro container files: the
protected form (`payload`, JSON) and the whole record sealed under a KMS data key (`sealed`, base64 ciphertext,
which no codec shrinks much). Here synthetic claims of each size (the ingest bench's generator and feed contract)
go through the ingest stage with static keys, and their archive rows (the archive table's columns, as the SQL
over the accepted rows fills them) are written as Avro container files with each codec at Avro Java's default
level (deflate 6, zstandard 3) and its default sync interval (64,000 bytes a block), as Flink's avro format writes
them. Printed per codec and size: bytes per record, the ratio to no codec, and the CPU µs per record of the writer
(fastavro over the same zlib and libzstd that Avro's Java writer calls). Needs no local stack. Writes
bench/results/archive-codecs-<date>.json (decision 0053).
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.ingest_bench import feed_name, generate_claims, parse_sizes, write_contracts
from bench.resources import code_version, machine_info

RESULTS = Path(__file__).resolve().parent / "results"
SYNC_INTERVAL = 64_000  # org.apache.avro.file.DataFileConstants.DEFAULT_SYNC_INTERVAL
CODECS = {"null": None, "deflate": 6, "zstandard": 3}  # Avro Java's default levels
ROUNDS = 5


def archive_rows(size_kb: int, records: int, workdir: Path) -> list[dict[str, Any]]:
    """The archive rows of `records` synthetic claims of `size_kb` KiB: the ingest stage's accepted rows
    (udfs.rows.accepted_values, as the ingest operator emits them), the archive's columns of each."""
    from connectors.archive import ARCHIVE_COLUMNS
    from infra.local.reference import reference_data
    from infra.local.static_keys import static_protectors
    from udfs.ingest import Accepted, IngestStage
    from udfs.rows import accepted_texts, accepted_values
    from udfs.source import SourceRef

    feed = feed_name(size_kb, "codec")
    stage = IngestStage(write_contracts(workdir / f"contracts-{size_kb}", [feed]), static_protectors(),
                        reference_data(23))
    unit_ms = int(time.time() * 1000)
    rows = []
    for offset, claim in enumerate(generate_claims(records, size_kb, feed)):
        source = SourceRef.from_kafka(f"raw.{feed}", 0, offset)
        for out in stage.process(claim.payload, source, unit_ms):
            if isinstance(out, Accepted):
                row = accepted_texts(accepted_values(out, source.pointer(), unit_ms))  # as the archive's SQL casts
                rows.append({column: row[column] for column in ARCHIVE_COLUMNS})
    return rows


def archive_schema() -> dict[str, Any]:
    """The archive's columns as an Avro record, nullable as Flink's avro format writes them."""
    from connectors.archive import ARCHIVE_COLUMNS
    from udfs.rows import LONG_FIELDS

    return {"type": "record", "name": "archive", "fields": [
        {"name": name, "type": ["null", "long" if name in LONG_FIELDS else "string"], "default": None}
        for name in ARCHIVE_COLUMNS]}


def price(rows: list[dict[str, Any]], codec: str) -> dict[str, float]:
    """Bytes per record of one container file of `rows`, and the writer's CPU µs per record (best of ROUNDS)."""
    import fastavro

    schema = fastavro.parse_schema(archive_schema())
    cpu_s, size = [], 0
    for _ in range(ROUNDS):
        out = io.BytesIO()
        start = time.process_time()
        fastavro.writer(out, schema, rows, codec=codec, codec_compression_level=CODECS[codec],
                        sync_interval=SYNC_INTERVAL)
        cpu_s.append(time.process_time() - start)
        size = out.tell()
    assert list(fastavro.reader(io.BytesIO(out.getvalue()))) == rows  # what was written reads back
    return {"bytes_per_record": round(size / len(rows), 1), "cpu_us_per_record": round(min(cpu_s) / len(rows) * 1e6, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--sizes", type=parse_sizes, default=[4, 12])
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size_kb in args.sizes:
            rows = archive_rows(size_kb, args.records, Path(tmp))
            priced = {codec: price(rows, codec) for codec in CODECS}
            plain = priced["null"]["bytes_per_record"]
            for codec, figures in priced.items():
                figures["ratio_to_null"] = round(figures["bytes_per_record"] / plain, 3)
                per_core = round(1e6 / figures["cpu_us_per_record"]) if figures["cpu_us_per_record"] else None
                print(f"{size_kb:>2} KB  {codec:<9}  {figures['bytes_per_record']:>9,.1f} B/record  "
                      f"ratio {figures['ratio_to_null']:.3f}  {figures['cpu_us_per_record']:>7,.1f} CPU µs/record"
                      + (f"  ({per_core:,} records/s per core)" if per_core else ""))
            results[str(size_kb)] = {"records": len(rows), "codecs": priced}
    doc = {"what": "archive rows of synthetic claims as Avro container files, per codec (decision 0053)",
           "machine": machine_info(), "code": code_version(),
           "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
           "sync_interval": SYNC_INTERVAL, "levels": CODECS, "rounds": ROUNDS, "sizes": results}
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"archive-codecs-{datetime.now(UTC).date().isoformat()}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"results: {path.relative_to(RESULTS.parent.parent)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
