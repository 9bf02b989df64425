"""Iceberg maintenance on the local stack: fewer files, same rows, old snapshots and old orphans gone."""

from __future__ import annotations

import dataclasses
import datetime
import json
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.iceberg_maintenance import MaintenanceConfig
from connectors.properties import LOCAL_PROPERTIES, load_ingest_config, read_property_groups
from infra.local.settings import StackSettings
from notebooks.lake import open_catalog

pytestmark = [pytest.mark.integration, pytest.mark.flink]
COMMITS = 30
DAYS = (datetime.date(2026, 11, 1), datetime.date(2026, 11, 2))
ORPHAN_AGE_S = 4.0


def stack_properties(stack: StackSettings, home: Path, iceberg: dict[str, str]) -> Path:
    """The local properties file pointed at this stack's ports, with `iceberg` overrides (a run-unique namespace)."""
    groups = json.loads(LOCAL_PROPERTIES.read_text())
    endpoints = {"s3": {"endpoint": stack.s3_endpoint()}, "phi": {"endpoint": stack.s3_endpoint()},
                 "kafka": {"bootstrap.servers": stack.bootstrap_servers()}, "iceberg": iceberg}
    for group in groups:
        group["PropertyMap"].update(endpoints.get(group["PropertyGroupId"], {}))
    path = home / "application_properties.json"
    path.write_text(json.dumps(groups))
    return path


def seed_table(catalog: Any, identifier: str) -> Any:
    """A table partitioned by day, filled by COMMITS small appends: one snapshot and two files each."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import IdentityTransform
    from pyiceberg.types import DateType, LongType, NestedField, StringType

    schema = Schema(NestedField(1, "id", LongType(), required=False), NestedField(2, "sent_date", DateType(), False),
                    NestedField(3, "note", StringType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=IdentityTransform(), name="sent_date"))
    namespace = identifier.rsplit(".", 1)[0]
    if (namespace,) not in catalog.list_namespaces():
        catalog.create_namespace(namespace)
    table = catalog.create_table(identifier, schema=schema, partition_spec=spec, properties={"format-version": "2"})
    for commit in range(COMMITS):
        table.append(batch(range(commit * 10, commit * 10 + 10)))
    return table


def batch(ids: range) -> pa.Table:
    """Rows with the given ids, spread over both days."""
    return pa.table({"id": pa.array(list(ids), pa.int64()),
                     "sent_date": pa.array([DAYS[i % 2] for i in ids], pa.date32()),
                     "note": pa.array([f"row {i}" for i in ids])})


def ids_in(table: Any) -> Counter[int]:
    """Row ids in the table's current snapshot, counted (a duplicate shows as 2)."""
    table.refresh()
    return Counter(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def objects_under(s3: Any, location: str) -> dict[str, Any]:
    """Object keys under a table location -> last-modified."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    found: dict[str, Any] = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix.rstrip("/") + "/"):
        found |= {obj["Key"]: obj["LastModified"] for obj in page.get("Contents", [])}
    return found


def referenced_keys(table: Any) -> set[str]:
    """Object keys of every file the table's metadata references (metadata log, manifest lists, manifests, data)."""
    table.refresh()
    io = table.io
    paths = {table.metadata_location, *(entry.metadata_file for entry in table.metadata.metadata_log)}
    for snapshot in table.metadata.snapshots:
        paths.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            paths.add(manifest.manifest_path)
            paths.update(entry.data_file.file_path for entry in manifest.fetch_manifest_entry(io))
    return {path.removeprefix("s3://").partition("/")[2] for path in paths}


def put(s3: Any, location: str, relative: str) -> str:
    """Write a stray object under the table location; returns its key."""
    bucket, _, prefix = location.removeprefix("s3://").partition("/")
    key = f"{prefix.rstrip('/')}/{relative}"
    s3.put_object(Bucket=bucket, Key=key, Body=b"not referenced by any snapshot")
    return key


def test_maintenance_compacts_expires_and_removes_only_old_orphans(
    stack: StackSettings, flink_process_env: None, run_id: str, tmp_path: Path
) -> None:
    from jobs.maintenance import create_maintainer, run_pass
    from tools.readback import s3_client

    properties = stack_properties(stack, tmp_path, {"namespace": f"maint_t{run_id}"})
    cfg = load_ingest_config(read_property_groups(properties))
    catalog, namespace = open_catalog(properties)
    table = seed_table(catalog, f"{namespace}.small_files")
    history = [s.snapshot_id for s in table.metadata.snapshots]
    assert len(history) == COMMITS and len(table.inspect.files()) == 2 * COMMITS
    settings = MaintenanceConfig(interval_s=60, target_file_size_bytes=128 * 1024 * 1024, snapshot_max_age_s=0,
                                 snapshot_retain_last=3, orphan_min_age_s=ORPHAN_AGE_S)
    maintainer = create_maintainer(cfg, settings)  # the JVM start first: the pass's clock starts at run_pass
    s3 = s3_client(cfg.s3)
    old_orphans = [put(s3, table.location(), "data/sent_date=2026-11-01/00000-crashed-writer.parquet"),
                   put(s3, table.location(), "metadata/stale-manifest-m0.avro")]
    time.sleep(ORPHAN_AGE_S + 2)  # S3 keeps whole seconds: leave a clear gap to the recent orphan
    recent_orphan = put(s3, table.location(), "data/sent_date=2026-11-02/00000-in-flight.parquet")
    [report] = run_pass(maintainer)

    assert not report.error
    assert (report.data_files_before, report.data_files_after) == (2 * COMMITS, 2)  # one file per day
    assert (report.files_rewritten, report.files_added) == (2 * COMMITS, 2)
    assert report.rows_before == report.rows_after == 10 * COMMITS
    assert ids_in(table) == Counter(range(10 * COMMITS))  # every id exactly once
    # 30 appends + the compaction's replace; the last 3 of that history stay, all older ones go.
    table.refresh()
    kept = [s.snapshot_id for s in table.metadata.snapshots]
    assert table.metadata.snapshots[-1].summary.operation.value == "replace"
    assert kept == [*history[-2:], table.current_snapshot().snapshot_id]
    assert report.snapshots_expired == COMMITS + 1 - 3
    for snapshot in table.metadata.snapshots:  # every kept snapshot still reads in full: its files are there
        rows = table.scan(snapshot_id=snapshot.snapshot_id).to_arrow().num_rows
        assert rows == int(snapshot.summary["total-records"]) >= 10 * (COMMITS - 2)
    stored = set(objects_under(s3, table.location()))
    assert not set(old_orphans) & stored and report.orphans_removed == len(old_orphans)
    assert recent_orphan in stored and report.orphans_too_young == 1
    assert stored - referenced_keys(table) == {recent_orphan}  # nothing else unreferenced is left ...
    assert referenced_keys(table) <= stored  # ... and every referenced file is still there
    assert report.stored_files_after == len(stored)

    # A later pass that keeps only the compaction's snapshot: the small files are unreferenced now and
    # (like the once-recent orphan) older than the safety age, so they go for good.
    [second] = run_pass(create_maintainer(cfg, dataclasses.replace(settings, snapshot_retain_last=1)))
    data = {key for key in objects_under(s3, table.location()) if "/data/" in key}
    assert second.snapshots_expired == 2 and second.orphans_removed == 2 * COMMITS + 1
    assert data == {key for key in referenced_keys(table) if "/data/" in key} and len(data) == 2
    assert second.stored_files_after < report.stored_files_after and ids_in(table) == Counter(range(10 * COMMITS))


def test_compaction_beside_a_concurrent_writer_loses_and_doubles_nothing(
    stack: StackSettings, flink_process_env: None, run_id: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI's one pass (default settings, no `maintenance` group) while another client keeps appending."""
    from pyiceberg.exceptions import CommitFailedException
    from sqlalchemy.exc import OperationalError

    from jobs import maintenance

    properties = stack_properties(stack, tmp_path, {"namespace": f"maint_c{run_id}"})
    catalog, namespace = open_catalog(properties)
    table = seed_table(catalog, f"{namespace}.busy")
    committed: list[int] = []
    retries: list[str] = []
    done = threading.Event()

    def writer() -> None:
        next_id = 100_000
        while not done.is_set():
            ids = range(next_id, next_id + 5)
            writer_table = catalog.load_table(f"{namespace}.busy")
            try:
                writer_table.append(batch(ids))
            except (CommitFailedException, OperationalError) as err:  # lost the race: retry on fresh metadata
                retries.append(type(err).__name__)
                continue
            committed.extend(ids)
            next_id += 5
            time.sleep(0.2)

    thread = threading.Thread(target=writer, name="concurrent-writer")
    thread.start()
    try:
        exit_code = maintenance.main(["--once", "--properties", str(properties)])
    finally:
        done.set()
        thread.join(timeout=60)
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]

    assert exit_code == 0 and not line["error"]
    assert line["files_rewritten"] >= 2 * COMMITS and line["snapshots_expired"] == 0  # default: 24 h, none that old
    assert line["orphans_removed"] == 0
    assert len(committed) >= 10  # the writer really ran beside the compaction
    assert ids_in(table) == Counter([*range(10 * COMMITS), *committed])
    operations = [s.summary.operation.value for s in table.metadata.snapshots]
    replace = operations.index("replace")
    # Appends landed on both sides of the compaction's commit: it ran while the writer committed.
    assert "append" in operations[COMMITS:replace] and "append" in operations[replace + 1:]
