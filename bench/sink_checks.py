"""After a bench run: did every record land once, how long did commits take, and remove what it made.

A throughput number from a run that dropped or doubled records is worthless, so the bench compares
the Iceberg table and the archive with the expected business keys (infra.local.ground_truth, the
pipeline's own comparison) and with the generator's record ids before it reports anything.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from connectors.properties import IngestConfig
from tools.private_cluster import delete_prefix
from tools.readback import archive_bytes, archived_ids, committed_dead_letters, iceberg_table, s3_client


@dataclass(frozen=True)
class ClaimsCheck:
    """What the bench claims table holds, and each row's commit latency in milliseconds."""

    rows: int
    distinct_ids: int
    missing: int
    unexpected: int
    snapshots: int
    commit_latency_ms: list[float]
    missing_keys: int = 0  # expected business keys not in the table (counted with multiplicity)
    extra_keys: int = 0  # business keys in the table beyond the expected ones (duplicates included)
    # (committed-at epoch seconds, distinct records the table held by then) per snapshot: the run's progress.
    commits: list[tuple[float, int]] = field(default_factory=list)


def _key_differences(held: Counter[str], expected: Counter[str]) -> tuple[int, int]:
    return (expected - held).total(), (held - expected).total()


def check_claims(cfg: IngestConfig, expected_ids: set[str], expected_keys: Counter[str]) -> ClaimsCheck:
    """Compare the claims table with the expected ids and business keys; attribute each row to its snapshot.

    Commit latency of a row = committed-at time of the first snapshot that contains it minus its
    ingested_at (set by the Python operator). Found by scanning every snapshot in commit order and
    diffing record ids, so it is exact per row, at the cost of one scan per snapshot.
    """
    table = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.claims_table)
    snapshots = sorted(table.snapshots(), key=lambda s: s.timestamp_ms)
    seen: set[str] = set()
    latencies: list[float] = []
    commits: list[tuple[float, int]] = []
    for snapshot in snapshots:
        rows = table.scan(snapshot_id=snapshot.snapshot_id, selected_fields=("record_id", "ingested_at")).to_arrow()
        for record_id, ingested_at in zip(rows.column("record_id").to_pylist(),
                                          rows.column("ingested_at").to_pylist(), strict=True):
            if record_id in seen:
                continue
            seen.add(record_id)
            latencies.append(snapshot.timestamp_ms - ingested_at.timestamp() * 1000)
        commits.append((snapshot.timestamp_ms / 1000, len(seen)))
    current = table.scan(selected_fields=("record_id", "business_key")).to_arrow()
    ids = Counter(current.column("record_id").to_pylist())
    missing_keys, extra_keys = _key_differences(Counter(current.column("business_key").to_pylist()), expected_keys)
    return ClaimsCheck(
        rows=current.num_rows, distinct_ids=len(ids), missing=len(expected_ids - ids.keys()),
        unexpected=len(ids.keys() - expected_ids), snapshots=len(snapshots), commit_latency_ms=latencies,
        missing_keys=missing_keys, extra_keys=extra_keys, commits=commits,
    )


def check_archive(cfg: IngestConfig, expected_ids: set[str], expected_keys: Counter[str]) -> dict[str, float]:
    """Archived record count, distinct ids, ids missing, business keys missing or extra in committed files, and
    those files' bytes per record (decision 0053)."""
    ids, keys, _feeds, files = archived_ids(cfg)
    missing_keys, extra_keys = _key_differences(keys, expected_keys)
    records = sum(ids.values())
    return {"records": records, "distinct_ids": len(ids), "missing": len(expected_ids - ids.keys()),
            "missing_keys": missing_keys, "extra_keys": extra_keys, "files": files,
            "bytes_per_record": round(archive_bytes(cfg) / records, 1) if records else 0}


def count_dead_letters(cfg: IngestConfig, timeout_s: float = 30.0) -> int:
    """Committed messages on the run's own dead-letter topic."""
    return len(committed_dead_letters(cfg.kafka.bootstrap_servers, cfg.kafka.dlq_topic, timeout_s))


def percentiles(values: list[float], points: tuple[int, ...] = (50, 95, 99)) -> dict[str, float]:
    """{"p50": ..., ...} of `values` (empty dict when there are none)."""
    if not values:
        return {}
    result = np.percentile(np.asarray(values, dtype=float), points)
    return {f"p{p}": round(float(v), 3) for p, v in zip(points, result, strict=True)}


def delete_s3_prefix(cfg: IngestConfig, url: str) -> int:
    """Delete every object under an s3://bucket/prefix/ URL; return how many were deleted."""
    return delete_prefix(s3_client(cfg.s3), url)


def drop_tables(cfg: IngestConfig) -> int:
    """Drop the run's Iceberg tables from the catalog and delete their files; return objects deleted."""
    from pyiceberg.exceptions import NoSuchTableError

    from connectors.iceberg import TABLES

    deleted = 0
    for name in TABLES:
        try:
            table: Any = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(name))
        except NoSuchTableError:
            continue
        location = table.location().rstrip("/") + "/"
        table.catalog.drop_table(f"{cfg.iceberg.namespace}.{cfg.iceberg.table(name)}")
        # pyiceberg's SQL catalog drops the entry only; the data and metadata files stay unless removed.
        deleted += delete_s3_prefix(cfg, location.replace("s3a://", "s3://", 1))
    return deleted


def iceberg_layout(cfg: IngestConfig, names: tuple[str, ...] = ("claims", "claim_lines")) -> dict[str, Any]:
    """What a run wrote to each table: data files, bytes and rows, and in its largest file each column's Parquet
    encodings (a dictionary kept shows as PLAIN_DICTIONARY or RLE_DICTIONARY; a column written plain, as PLAIN only)."""
    import pyarrow.parquet as pq

    layout: dict[str, Any] = {}
    for name in names:
        table: Any = iceberg_table(cfg.iceberg, cfg.s3, cfg.iceberg.table(name))
        files = [task.file for task in table.scan().plan_files()]
        if not files:
            continue
        largest = max(files, key=lambda f: f.record_count)
        with table.io.new_input(largest.file_path).open() as stream:
            metadata = pq.ParquetFile(stream).metadata
        columns = [metadata.row_group(0).column(i) for i in range(metadata.num_columns)]
        layout[name] = {
            "data_files": len(files), "bytes": sum(f.file_size_in_bytes for f in files),
            "rows": sum(f.record_count for f in files), "largest_file_rows": largest.record_count,
            "largest_file_bytes": largest.file_size_in_bytes,
            "encodings": {c.path_in_schema: sorted(set(c.encodings) - {"RLE", "BIT_PACKED"}) for c in columns},
        }
    return layout
