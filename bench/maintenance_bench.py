"""Maintenance on an hour of streaming commits: small files and run time before and after.

Simulates what the Iceberg sink leaves after one hour with a 5 s checkpoint interval: N (default
720) small appends to one day partition of a claims-shaped table, each its own snapshot, data file
and manifest. Then runs two maintenance passes and records what each did and how long it took:

1. the hourly pass with the default settings (compaction; nothing is old enough to expire yet);
2. a pass as it runs a day later (snapshot age 0 h, keep 10, orphan age 0 h): expiry and orphan
   removal reclaim the storage of the replaced small files.

It also times a full pyiceberg scan before and after compaction (what a reader pays). Needs the
local stack (./medistream stack up); writes bench/results/maintenance-<date>.json.

    python -m bench.maintenance_bench --commits 720
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from connectors.properties import (
    default_properties_path,
    load_ingest_config,
    local_aws_environment,
    read_property_groups,
)
from notebooks.lake import open_catalog

RESULTS = Path(__file__).resolve().parent / "results"
DAY = datetime.date(2026, 11, 22)


def commit_batch(first: int, rows: int) -> pa.Table:
    """One checkpoint's worth of claims-like rows."""
    ids = range(first, first + rows)
    sent = datetime.datetime(2026, 11, 22, 12, tzinfo=datetime.UTC)
    return pa.table({
        "record_id": [f"r{i:09d}" for i in ids], "feed": [f"hospital_{i % 7}_claims" for i in ids],
        "payer_id": [f"P{i % 40:03d}" for i in ids],
        "total_charge": pa.array([Decimal(i % 5000) / 4 for i in ids], pa.decimal128(14, 2)),
        "business_key": [uuid.UUID(int=i).hex for i in ids],
        "sent_at": pa.array([sent] * rows, pa.timestamp("us", tz="UTC")),
        "sent_date": pa.array([DAY] * rows, pa.date32()),
    })


def seed(catalog: Any, identifier: str, commits: int, rows: int) -> tuple[Any, float]:
    """Create the table and make `commits` appends; returns (table, seconds)."""
    started = time.monotonic()
    table = catalog.create_table(identifier, schema=commit_batch(0, 1).schema, properties={"format-version": "2"})
    with table.update_spec() as spec:
        spec.add_identity("sent_date")
    for commit in range(commits):
        table.append(commit_batch(commit * rows, rows))
    return table, time.monotonic() - started


def timed_scan(table: Any) -> tuple[int, float]:
    """(rows, seconds) of a full scan of the current snapshot."""
    table.refresh()
    started = time.monotonic()
    rows = table.scan().to_arrow().num_rows
    return rows, time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    """Seed, run both passes, write and print the result."""
    parser = argparse.ArgumentParser(prog="python -m bench.maintenance_bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=720)
    parser.add_argument("--rows", type=int, default=50, help="rows per commit")
    parser.add_argument("--properties", help="application_properties.json (default: MEDISTREAM_PROPERTIES or conf/)")
    args = parser.parse_args(argv)
    local_aws_environment()
    from jobs.maintenance import create_maintainer, load_maintenance_config, run_pass

    path = Path(args.properties) if args.properties else default_properties_path()
    groups = read_property_groups(path)
    cfg = load_ingest_config(groups)
    cfg = dataclasses.replace(cfg, iceberg=dataclasses.replace(cfg.iceberg, namespace=f"bench_{uuid.uuid4().hex[:8]}"))
    catalog, _ = open_catalog(path)
    catalog.create_namespace(cfg.iceberg.namespace)
    table, seed_s = seed(catalog, f"{cfg.iceberg.namespace}.claims", args.commits, args.rows)
    scan_before = timed_scan(table)

    hourly = load_maintenance_config(groups)
    started = time.monotonic()
    maintainer = create_maintainer(cfg, hourly)
    jvm_start_s = time.monotonic() - started
    [first] = run_pass(maintainer)
    scan_after = timed_scan(table)
    day_later = dataclasses.replace(hourly, snapshot_max_age_s=0, snapshot_retain_last=10, orphan_min_age_s=0)
    [second] = run_pass(create_maintainer(cfg, day_later))
    assert first.rows_before == first.rows_after == second.rows_after == args.commits * args.rows, "rows changed"

    result = {
        "date": datetime.date.today().isoformat(), "commits": args.commits, "rows_per_commit": args.rows,
        "seed_s": round(seed_s, 1), "jvm_start_s": round(jvm_start_s, 1),
        "scan_before": {"rows": scan_before[0], "seconds": round(scan_before[1], 2)},
        "scan_after": {"rows": scan_after[0], "seconds": round(scan_after[1], 2)},
        "hourly_pass": {"settings": dataclasses.asdict(hourly), "report": dataclasses.asdict(first)},
        "day_later_pass": {"settings": dataclasses.asdict(day_later), "report": dataclasses.asdict(second)},
    }
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"maintenance-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    catalog.drop_table(f"{cfg.iceberg.namespace}.claims")  # its files go with the stack's in-memory S3
    return 0


if __name__ == "__main__":
    sys.exit(main())
