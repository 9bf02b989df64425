"""`medistream freshness`: the sinks' freshness read from what they committed, on the local stack's Iceberg
catalog and S3 (moto server). Tables and archive files are written here with pyiceberg and boto3 in the
layout the ingest job writes; the job's own tables are read the same way during the demo."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from connectors.iceberg import pyiceberg_catalog
from connectors.metrics.targets import targets_dir
from connectors.properties import IngestConfig, default_properties_path, load_ingest_config, read_property_groups
from infra.local.settings import StackSettings
from tools.readback import s3_client, split_s3_url
from tools.sink_freshness import FreshnessWatch, archive_commits, iceberg_commit, latest_append, watch

pytestmark = pytest.mark.integration

T0 = dt.datetime(2026, 3, 2, 8, 0, tzinfo=dt.UTC)
SCHEMA = pa.schema([("record_id", pa.string()), ("feed", pa.string()), ("ingested_at", pa.timestamp("us", tz="UTC"))])


def rows(first: int, n: int, start: dt.datetime, feeds: tuple[str, ...] = ("feed_a",)) -> pa.Table:
    """n synthetic rows, ingested a second apart from `start`, the feeds in turn (ids only: no record content)."""
    return pa.table({"record_id": [f"r{first + i}" for i in range(n)],
                     "feed": [feeds[i % len(feeds)] for i in range(n)],
                     "ingested_at": [start + dt.timedelta(seconds=i) for i in range(n)]}, schema=SCHEMA)


@pytest.fixture
def cfg(stack: StackSettings) -> Iterator[IngestConfig]:
    """The local configuration with a run-unique table suffix; its tables dropped afterwards."""
    base = load_ingest_config(read_property_groups(default_properties_path()))
    cfg = dataclasses.replace(base, iceberg=dataclasses.replace(base.iceberg, table_suffix=f"_f{uuid.uuid4().hex[:8]}"))
    catalog = pyiceberg_catalog(cfg.iceberg, cfg.s3)
    if (cfg.iceberg.namespace,) not in catalog.list_namespaces():
        catalog.create_namespace(cfg.iceberg.namespace)
    yield cfg
    for table in catalog.list_tables(cfg.iceberg.namespace):
        if table[-1].endswith(cfg.iceberg.table_suffix):
            catalog.drop_table(table)


def test_the_latest_append_gives_commit_time_and_ingest_bounds(cfg: IngestConfig) -> None:
    catalog = pyiceberg_catalog(cfg.iceberg, cfg.s3)
    table = catalog.create_table(f"{cfg.iceberg.namespace}.{cfg.iceberg.table('claims')}", schema=SCHEMA)
    assert latest_append(table) is None and iceberg_commit(table, "iceberg_claims") is None

    table.append(rows(0, 5, T0))
    commit = iceberg_commit(table, "iceberg_claims")
    assert commit is not None
    assert commit.committed_s == table.current_snapshot().timestamp_ms / 1000
    assert (commit.oldest_ingested_s, commit.newest_ingested_s) == (T0.timestamp(), T0.timestamp() + 4)
    assert commit.delay_s == pytest.approx(commit.committed_s - T0.timestamp())

    later = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    table.append(rows(5, 3, later, feeds=("feed_b", "feed_c")))  # the newest batch only: the first's rows are not
    commit = iceberg_commit(table, "iceberg_claims", by_feed=True)  # this commit's
    assert commit is not None
    assert (commit.oldest_ingested_s, commit.newest_ingested_s) == (later.timestamp(), later.timestamp() + 2)
    assert commit.newest_by_feed == {"feed_b": later.timestamp() + 2, "feed_c": later.timestamp() + 1}
    assert 0 < commit.delay_s < 120
    appended = table.current_snapshot().snapshot_id

    # A row delete rewrites the file that held it: old rows in new files, under an `overwrite` snapshot
    # (compaction's `replace` is the same case). Neither is an append: the newest append still answers.
    table.delete("record_id = 'r6'")
    assert table.current_snapshot().snapshot_id != appended
    assert table.current_snapshot().summary.operation.value == "overwrite"
    assert latest_append(table).snapshot_id == appended
    assert iceberg_commit(table, "iceberg_claims").newest_ingested_s == later.timestamp() + 2


def test_the_archive_reads_each_feeds_newest_committed_file_of_its_newest_days(cfg: IngestConfig) -> None:
    s3 = s3_client(cfg.s3)
    bucket, _ = split_s3_url(cfg.archive.path)
    prefix = f"freshness-test-{uuid.uuid4().hex[:8]}/"
    keys = {
        "feed=feed_a/dt=2020-01-01/part-old": "an old day: not among the feed's newest two",
        "feed=feed_a/dt=2026-03-01/part-1": "committed",
        "feed=feed_a/dt=2026-03-02/.part-2.inprogress": "in progress: not committed",
        "feed=feed_b/dt=2026-03-01/part-3": "committed",
        "feed=feed_c/dt=2026-03-01/_SUCCESS": "a marker, not a file of records",
    }
    stamps: dict[str, float] = {}
    try:
        for key in keys:
            s3.put_object(Bucket=bucket, Key=prefix + key, Body=io.BytesIO(b"synthetic"))
            stamps[key] = s3.head_object(Bucket=bucket, Key=prefix + key)["LastModified"].timestamp()
            time.sleep(1.1)  # LastModified has second resolution: each file its own second
        newest = archive_commits(s3, bucket, prefix, ["feed_a", "feed_b", "feed_c", "feed_d"], partitions=2)
        everything = archive_commits(s3, bucket, prefix, ["feed_a"], partitions=3)
    finally:
        for key in keys:
            s3.delete_object(Bucket=bucket, Key=prefix + key)
    assert newest == {"feed_a": stamps["feed=feed_a/dt=2026-03-01/part-1"],
                      "feed_b": stamps["feed=feed_b/dt=2026-03-01/part-3"]}
    assert everything == {"feed_a": stamps["feed=feed_a/dt=2026-03-01/part-1"]}  # part-old is older still


def scrape(folder: Path) -> str:
    [target_file] = folder.glob("sink_freshness-*.json")
    target = re.search(r"127\.0\.0\.1:\d+", target_file.read_text())
    assert target is not None
    with urllib.request.urlopen(f"http://{target.group(0)}/metrics", timeout=5) as answer:
        return str(answer.read().decode())


def test_the_watch_serves_the_gauges_the_sink_delay_alert_reads(cfg: IngestConfig, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDISTREAM_HOME", str(tmp_path))  # its scrape target goes to this test's home
    catalog = pyiceberg_catalog(cfg.iceberg, cfg.s3)
    table = catalog.create_table(f"{cfg.iceberg.namespace}.{cfg.iceberg.table('payments')}", schema=SCHEMA)
    ingested = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=200)  # committed 200 s after ingest: too late
    table.append(rows(0, 4, ingested, feeds=("feed_a", "someone_elses_feed")))

    report = FreshnessWatch(cfg, ["feed_a"]).check()
    assert "payments" in report["iceberg"] and "claims" in report["not_created_yet"]
    assert report["errors"] == []
    assert report["iceberg"]["payments"]["delay_s"] >= 200

    seen: dict[str, Any] = {}

    class Out(io.StringIO):
        def flush(self) -> None:  # after its first pass, while it still serves: scrape it
            super().flush()
            if not seen:
                seen["text"] = scrape(targets_dir(tmp_path))

    assert watch(cfg, ["feed_a"], 0.1, Out(), passes=1) == 0
    text = seen["text"]
    delay = re.search(r'^medistream_door_sink_delay_seconds\{sink="iceberg_payments"\} (\S+)$', text, re.M)
    assert delay is not None and float(delay.group(1)) >= 200
    assert re.search(r'^medistream_sink_newest_record_timestamp_seconds\{sink="iceberg_payments"\} ', text, re.M)
    per_feed = re.findall(r'^medistream_sink_feed_newest_record_timestamp_seconds'
                          r'\{feed="(\w+)",sink="iceberg_payments"\} ', text, re.M)
    assert sorted(per_feed) == ["feed_a", "unknown"]  # a feed that is not a contract's: a bounded label
    assert "iceberg_claims" not in text  # a table not created yet is neither a value nor an error
    assert not list(targets_dir(tmp_path).glob("sink_freshness-*.json"))  # withdrawn on a clean stop


def test_the_demo_summary_reads_the_watchs_last_pass(cfg: IngestConfig, tmp_path: Path) -> None:
    import json

    from tools.demo import freshness_verdict

    catalog = pyiceberg_catalog(cfg.iceberg, cfg.s3)
    table = catalog.create_table(f"{cfg.iceberg.namespace}.{cfg.iceberg.table('claims')}", schema=SCHEMA)
    table.append(rows(0, 2, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)))
    log = tmp_path / "freshness-watch.log"
    assert freshness_verdict(log).startswith("no commit read")
    log.write_text(json.dumps(FreshnessWatch(cfg, []).check(), default=str) + "\n")
    verdict = freshness_verdict(log)
    assert re.fullmatch(r"claims \d+\.\d s", verdict), verdict
